"""Long videos: segment layout and timestamps, grouping and merging, search inside one video,
removal, a kill while a long video is indexed, and moments in the video's own timeline."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import lance
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eercf
from eercf.data.datasets import VideoRecord
from eercf.errors import EercfError
from eercf.index import DATASET, MANIFEST, VideoIndex
from eercf.index.ingest import ingest
from eercf.index.search import Hit, Moment
from eercf.index.segments import (ScoredMoment, Segmenting, Span, group_by_video, merge_moments,
                                  plan_rows, scene_spans)
from eercf.model import EERCF, VideoFeatures
from eercf.model.config import get_model_config
from eercf.model.tokenizer import CLIPTokenizer
from eercf.data.shots import find_cuts, shots, video_shots
from eercf.data.video import duration_of
from eercf.synthetic.long import make_long

from conftest import SHARED_DATA

torch.set_num_threads(1)
FRAMES, PATCHES, DIM = 12, 16, 128
REAL_CLIPS = SHARED_DATA / "msrvtt_sample" / "videos"


@pytest.fixture(scope="module")
def model() -> EERCF:
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).eval()
    model.tokenizer = CLIPTokenizer.train(["a red circle moves left with a grey square"] * 3, 600)
    return model


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def features(n: int, seed: int, towards: torch.Tensor | None = None) -> VideoFeatures:
    """Random unit features; with ``towards`` every row's levels lean to that direction."""
    lean = (lambda t: F.normalize(t + 3 * towards, dim=-1)) if towards is not None else (lambda t: t)
    temporal = lean(unit(n, FRAMES, DIM, seed=seed))
    return VideoFeatures(video=F.normalize(temporal.sum(1), dim=-1),
                         frames=lean(unit(n, FRAMES, DIM, seed=seed + 1)), temporal=temporal,
                         patches=lean(unit(n, FRAMES, PATCHES, DIM, seed=seed + 2)),
                         mask=torch.ones(n, FRAMES, dtype=torch.bool))


def add_video(index: VideoIndex, video_id: str, spans: list[tuple[float, float]], seed: int,
              towards: torch.Tensor | None = None) -> None:
    times = [list(np.linspace(a + 0.5, b - 0.5, FRAMES)) for a, b in spans]
    index.add([video_id] * len(spans), [f"/v/{video_id}.mp4"] * len(spans),
              [spans[-1][1]] * len(spans), times, features(len(spans), seed, towards),
              spans=spans)


def test_segment_rule_and_its_errors():
    rule = Segmenting()
    assert rule.spans(30.0) is None and rule.spans(40.0) is None and rule.spans(None) is None
    spans = rule.spans(100.0)
    assert spans[0] == (0.0, 12.0) and spans[-1] == (88.0, 100.0)
    assert all(b - a == 12.0 for a, b in spans) and len(spans) == 16  # 0, 6, ... 84, then 88
    assert all(s2[0] - s1[0] <= 6.0 for s1, s2 in zip(spans, spans[1:]))  # no gap
    assert Segmenting(10, 10, 0).spans(25.0) == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    for bad in ({"segment": 0}, {"stride": 20}, {"stride": -1}, {"long_after": float("nan")}):
        with pytest.raises(EercfError):
            Segmenting(**bad)
    # the manifest keeps the rule; one written before scene rows keeps getting none
    assert Segmenting.from_manifest(rule.to_dict()) == rule and rule.scenes
    older = {k: v for k, v in rule.to_dict().items() if k != "scenes"}
    assert Segmenting.from_manifest(older).scenes is False
    assert Segmenting.from_manifest(None) is None


@pytest.mark.needs_shared
def test_segments_of_real_clips_are_sampled_over_their_spans(tmp_path, model):
    """Real MSR-VTT clips cut into 4-second segments: the rows tile each clip, every frame time
    lies inside its segment (in the clip's own timeline), and a short clip stays whole."""
    clips = sorted(REAL_CLIPS.glob("*.mp4"))
    records = [VideoRecord(c.stem, c, [], "test") for c in clips]
    rule = Segmenting(segment=4.0, stride=2.0, long_after=5.0)
    cuts = {c.stem: video_shots(c, duration_of(c)) for c in clips}
    rows, failed = plan_rows(records, rule)
    assert not failed and len(rows) > len(records)
    index = VideoIndex.create(tmp_path / "idx", model, codec="exact", segmenting=rule)
    summary = ingest(index, model, records, workers=0, progress=False)
    assert summary["added"] == len(clips) and summary["segments"] == len(rows)
    table = lance.dataset(str(tmp_path / "idx" / DATASET)).to_table(
        columns=["id", "duration", "segment_start", "segment_end", "timestamps"])
    for clip in clips:
        mine = [r for r in table.to_pylist() if r["id"] == clip.stem]
        duration = mine[0]["duration"]
        spans = [(r["segment_start"], r["segment_end"]) for r in mine]
        assert spans == rule.spans(duration, cuts[clip.stem])
        edges = [a for a, _ in cuts[clip.stem][1:]]  # no segment straddles a cut
        assert not any(a < edge < b for a, b in spans for edge in edges)
        for r in mine:
            times = [t for t in r["timestamps"] if np.isfinite(t)]
            assert len(times) >= 4 and times == sorted(times)
            assert r["segment_start"] - 0.05 <= times[0] and times[-1] <= r["segment_end"] + 0.05
    assert len(index) == len(clips) and index.ids() == [c.stem for c in clips]
    plain = replace(rule, shots=False)  # windows over the whole clip
    assert plan_rows(records[:1], plain)[0][-1].span == plain.spans(duration_of(clips[0]))[-1]
    whole = VideoIndex.create(tmp_path / "whole", model, codec="exact")  # default rule: whole
    ingest(whole, model, records, workers=0, progress=False)
    assert whole.stats()["rows"] == len(clips)


def test_cuts_ignore_motion_flashes_and_inserts():
    """Thumbnails of three scenes with a moving dot, a one-sample flash and a 2-second insert
    (away and back): two cuts; a too-short shot joins its neighbour."""
    times = np.arange(0, 30, 0.25)
    thumbs = np.zeros((len(times), 24, 24, 3), np.float32)
    for i, t in enumerate(times):
        thumbs[i] = 0.2 if t < 10 else (0.6 if t < 20 else 0.9)  # scenes cut at 10 and 20
        thumbs[i, 10:14, int(t * 2) % 20:int(t * 2) % 20 + 4] = 1.0  # motion is no cut
    thumbs[times == 4.0] = 1.0                                       # a flash
    thumbs[(times >= 24.0) & (times < 26.0), :, :12] = 0.0           # an insert, then back
    assert find_cuts(times, thumbs) == [10.0, 20.0]
    assert shots([10.0, 20.0], 30.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert shots([10.0, 11.0, 20.0], 30.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert shots([], 30.0) == [(0.0, 30.0)]


def test_cuts_of_a_long_video_fall_on_its_clips_frames(tmp_path):
    """The cuts between the clips of a synthetic long video, to the frame, and no others (each
    clip's flash is a cut away and back)."""
    make_long(tmp_path, videos=1, seed=4, minutes=(1.5, 1.5), progress=False)
    truth = json.loads((tmp_path / "val_1.json").read_text())["v_long0"]
    clips = json.loads((tmp_path / "synth.json").read_text())
    found = video_shots(tmp_path / "videos" / "v_long0.mp4", truth["duration"])
    expected = [tuple(c["span"]) for c in clips]
    assert len(found) == len(expected)
    assert np.allclose(np.array(found), np.array(expected), atol=1e-3)


def test_scenes_join_adjacent_alike_shots_only():
    """Runs of meeting shots more alike than the video's far-apart pairs, of at most
    ``longest`` seconds; windows of one long shot (overlapping) never join; a video with too
    few shots to judge gets none."""
    g = torch.Generator().manual_seed(0)
    scene = {0: 0, 1: 0, 2: 0, 4: 1, 5: 1, 9: 2, 10: 2, 11: 2, 12: 2, 13: 2}  # shot -> scene
    looks = F.normalize(torch.randn(3, DIM, generator=g), dim=-1)
    vectors = F.normalize(torch.randn(16, DIM, generator=g), dim=-1)
    for shot, k in scene.items():
        vectors[shot] = F.normalize(looks[k] + 0.3 * vectors[shot], dim=-1)
    spans = [(5.0 * i, 5.0 * i + 5.0) for i in range(16)]
    order = torch.randperm(16, generator=g).tolist()  # any row order
    found = scene_spans([spans[i] for i in order], vectors[order], longest=20.0)
    assert found == [(0.0, 15.0), (20.0, 30.0), (45.0, 65.0)]  # the 5-shot scene is cut at 20 s
    assert scene_spans(spans[:4], vectors[:4], longest=40.0) == []  # 1 far pair: no judgement
    # a 24-s shot in overlapping windows, then a 5-s shot, all four alike: the windows never
    # join one another, the last one meets the next shot at the cut and joins it
    windows = [(0.0, 12.0), (6.0, 18.0), (12.0, 24.0), (24.0, 29.0)] + spans[6:]
    alike = torch.cat([looks[:1].repeat(4, 1), vectors[6:]])
    assert scene_spans(windows, alike, longest=40.0) == [(12.0, 29.0), (45.0, 70.0)]  # + scene 2


def test_ingest_adds_scene_rows_in_the_videos_commit(long_video, tmp_path, model, monkeypatch):
    """A scene found from a video's encoded shots is encoded over its joint span, as a row of
    that video, in the same commit; --no-scenes (``scenes=False``) adds none."""
    import eercf.index.segments as segments_module

    root, _ = long_video
    record = VideoRecord("v", root / "videos" / "b_long.mp4", [], "test")
    plain = VideoIndex.create(tmp_path / "plain", model, codec="exact",
                              segmenting=replace(Segmenting(), scenes=False))
    seen = []

    def first_two(spans, vectors, longest):
        seen.append((len(spans), tuple(vectors.shape)))
        first = sorted(spans)[:2]
        return [(first[0][0], first[1][1])]

    monkeypatch.setattr(segments_module, "scene_spans", first_two)
    assert ingest(plain, model, [record], workers=0, progress=False)["scenes"] == 0 and not seen
    table = plain._dataset().to_table(columns=["segment_start", "segment_end"])
    shot_spans = sorted(zip(table["segment_start"].to_pylist(), table["segment_end"].to_pylist()))
    scene = (shot_spans[0][0], shot_spans[1][1])

    index = VideoIndex.create(tmp_path / "idx", model, codec="exact")
    summary = ingest(index, model, [record], workers=0, progress=False)
    rows = index.stats()["rows"]
    assert seen == [(len(shot_spans), (len(shot_spans), DIM))]
    assert summary["scenes"] == 1 and summary["segments"] == rows == len(shot_spans) + 1
    assert index._dataset().version == 2  # created, then one commit
    table = index._dataset().to_table(columns=["segment_start", "segment_end", "timestamps"])
    stored = dict(zip(zip(table["segment_start"].to_pylist(), table["segment_end"].to_pylist()),
                      table["timestamps"].to_pylist()))
    assert sorted(stored) == sorted(shot_spans + [scene])
    times = stored[scene]
    assert len(times) == FRAMES and scene[0] <= min(times) < max(times) <= scene[1]


def test_merge_moments_joins_overlapping_strong_views_only():
    moments = [ScoredMoment(10, 14, 9.0), ScoredMoment(13, 18, 8.8),  # overlap: joins
               ScoredMoment(17, 30, 5.0),    # overlaps, too weak: dropped
               ScoredMoment(40, 44, 7.0),    # elsewhere: its own moment
               ScoredMoment(43, 46, 6.9),    # overlaps it: joins
               ScoredMoment(60, 64, 6.0),
               ScoredMoment(64, 68, 5.9)]    # only meets it (the next shot): its own moment
    merged = merge_moments(moments, spread=4.0)  # margin 0.25 * 4 = 1.0
    assert [(m.start, m.end, m.score) for m in merged] == [
        (10, 18, 9.0), (40, 46, 7.0), (60, 64, 6.0), (64, 68, 5.9)]
    # a scene row (50-70 s) scoring just below its shot (60-64 s): the shot's moment stands
    shot, scene = ScoredMoment(60, 64, 6.0), ScoredMoment(52, 68, 5.9)
    assert [(m.start, m.end) for m in merge_moments([scene, shot], 4.0,
                                                    rows=[(50, 70), (60, 64)])] == [(60, 64)]
    # the scene scoring best: the shot's moment joins it
    assert [(m.start, m.end) for m in merge_moments([replace(scene, score=6.5), shot], 4.0,
                                                    rows=[(50, 70), (60, 64)])] == [(52, 68)]


def hit(video: str, score: float | None, span: tuple[float, float] | None, moment=None) -> Hit:
    m = Moment(moment[0], moment[0], moment[1]) if moment else None
    return Hit(video, None, score, 0.0, 1, m, None, segment=Span(*span) if span else None,
               moments=[ScoredMoment(moment[0], moment[1], score)] if moment else [])


def test_group_by_video_keeps_order_and_merges():
    hits = [hit("a", 9.0, (0, 12), (8, 12)), hit("b", 8.5, None, (1, 3)),
            hit("a", 8.9, (6, 18), (9, 15)), hit("a", 3.0, (60, 72), (61, 63)),
            hit("c", None, (0, 12))]
    grouped = group_by_video(hits, k=10)
    assert [g.video_id for g in grouped] == ["a", "b", "c"]
    a = grouped[0]
    assert (a.moment.start, a.moment.end) == (8, 15) and a.moment.time == 8  # merged, best frame
    assert [(m.start, m.end) for m in a.moments] == [(8, 15), (61, 63)]
    assert a.segment == Span(0, 12) and grouped[2].moments == [] and grouped[2].moment is None
    assert len(group_by_video(hits, k=2)) == 2


def test_search_groups_segments_by_video(tmp_path, model):
    """A long video whose many segments fill stage 1's top rows still comes back once, and k
    distinct videos come back; per segment gives rows; --video stays inside one video."""
    index = VideoIndex.create(tmp_path / "idx", model, codec="exact")
    query = unit(1, DIM, seed=5)
    add_video(index, "long", [(6.0 * i, 6.0 * i + 12) for i in range(80)], seed=1, towards=query)
    for i in range(6):
        add_video(index, f"clip{i}", [(0.0, 10.0)], seed=10 + i)
        index.add([f"whole{i}"], [None], [8.0], [list(np.linspace(0.5, 7.5, FRAMES))],
                  features(1, 20 + i))
    hits = index.search_encoded(query, k=5, topk=20, model=model)[0].hits
    ids = [h.video_id for h in hits]
    assert ids[0] == "long" and len(ids) == 5 == len(set(ids))
    top = hits[0]
    assert top.segment is not None and top.moments and top.moments[0].start == top.moment.start
    assert top.segment.start <= top.moment.time <= top.segment.end
    assert all(top.duration == 486.0 and 0 <= m.start < m.end <= 486.0 for m in top.moments)
    assert hits[1].segment in (None, Span(0.0, 10.0))
    rows = index.search_encoded(query, k=5, topk=20, model=model, per="segment")[0].hits
    assert [h.video_id for h in rows] == ["long"] * 5
    inside = index.search_encoded(query, k=3, model=model, video="clip2")[0].hits
    assert [h.video_id for h in inside] == ["clip2"]
    assert index.search_encoded(query, k=3, model=model, video="nope")[0].hits == []
    with pytest.raises(EercfError, match="per must be"):
        index.search_encoded(query, model=model, per="frame")
    assert len(index) == 13 and index.stats()["rows"] == 92 and index.ids()[0] == "long"
    assert index.remove(["long"]) == ["long"]
    assert len(index) == 12 and index.stats()["rows"] == 12 and "long" not in index.ids()
    with pytest.raises(EercfError, match="already in index"):
        add_video(index, "clip0", [(0.0, 12.0), (6.0, 18.0)], seed=3)


def test_older_store_gains_span_columns(tmp_path, model):
    """A format-2 index (no span columns) opens and searches as before, and adding a long
    video to it upgrades it in place."""
    index = VideoIndex.create(tmp_path / "idx", model, codec="exact")
    index.add(["old"], [None], [8.0], [list(np.linspace(0.5, 7.5, FRAMES))], features(1, 1))
    dataset = lance.dataset(str(tmp_path / "idx" / DATASET))
    dataset.drop_columns(["segment_start", "segment_end"])
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    manifest["format"] = 2
    del manifest["segments"]
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    old = VideoIndex.open(tmp_path / "idx")
    assert old.segmenting is None
    assert [h.video_id for h in old.search_encoded(unit(1, DIM, seed=2), model=model)[0].hits] == ["old"]
    add_video(old, "long", [(0.0, 12.0), (6.0, 18.0)], seed=4)
    assert json.loads((tmp_path / "idx" / MANIFEST).read_text())["format"] == 3
    assert sorted(VideoIndex.open(tmp_path / "idx").ids()) == ["long", "old"]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, model):
    """A saved tiny model, and a folder with a short clip and a 3-minute synthetic video."""
    root = tmp_path_factory.mktemp("long")
    eercf.save_model(model, root / "model")
    summary = make_long(root / "bench", videos=1, seed=3, minutes=(3.0, 3.0), progress=False)
    videos = root / "videos"
    videos.mkdir()
    (videos / "b_long.mp4").symlink_to(root / "bench" / "videos" / "v_long0.mp4")
    (videos / "a_short.mp4").symlink_to(root / "bench" / "clips" / "videos" / "all" / "clip0.mp4")
    return root, summary


def test_kill_while_a_long_video_is_indexed_leaves_none_of_it(long_video, tmp_path):
    root, _ = long_video
    folder = tmp_path / "idx"
    command = [sys.executable, "-m", "eercf.cli", "index", str(root / "videos"), "--model",
               str(root / "model"), "--index", str(folder), "--batch-size", "1",
               "--workers", "0", "--codec", "exact"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    committed = False
    while proc.poll() is None and time.monotonic() < deadline and not committed:
        try:  # the short clip's commit: the long video's segments are being encoded
            committed = lance.dataset(str(folder / DATASET)).count_rows() > 0
        except (ValueError, OSError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = VideoIndex.open(folder)
    assert index.ids() == ["a_short"] and index.stats()["rows"] == 1
    done = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    duration = json.loads((root / "bench" / "val_1.json").read_text())["v_long0"]["duration"]
    long_video = root / "bench" / "videos" / "v_long0.mp4"
    segments = len(Segmenting().spans(duration, video_shots(long_video, duration)))
    segments += summary["scenes"]  # scene rows are rows of the video too
    assert summary["skipped"] == 1 and summary["added"] == 1 and summary["segments"] == segments
    index = VideoIndex.open(folder)
    assert index.ids() == ["a_short", "b_long"] and index.stats()["rows"] == 1 + segments


def test_moments_are_in_the_long_videos_timeline(long_video, tmp_path, model):
    """Searched with the caption of a clip, the long video's hit gives its segment and moments
    in its own timeline; the in-video search lists the video's moments."""
    root, _ = long_video
    truth = json.loads((root / "bench" / "val_1.json").read_text())["v_long0"]
    index = VideoIndex.create(tmp_path / "idx", model)
    ingest(index, model, [VideoRecord("v_long0", root / "bench" / "videos" / "v_long0.mp4",
                                      [], "test")], workers=0, progress=False)
    [result] = index.search(truth["sentences"][3], k=3, model=model)
    [top] = result.hits
    assert top.video_id == "v_long0" and top.duration == pytest.approx(truth["duration"], abs=0.2)
    assert top.segment.start <= top.moment.time <= top.segment.end <= top.duration + 1e-6
    assert top.moment.start <= top.moment.time <= top.moment.end
    assert 1 <= len(top.moments) <= 10 and all(0 <= m.start < m.end <= top.duration + 1e-6
                                                for m in top.moments)
    assert json.loads(json.dumps(result.to_dict()))["hits"][0]["segment"]["end"] == top.segment.end
    [inside] = index.search(truth["sentences"][3], k=1, model=model, video="v_long0")
    assert inside.hits[0].moments == top.moments
    fewer = replace(index.segmenting, segment=30.0, stride=15.0, shots=False)
    rows, _ = plan_rows([VideoRecord("v", root / "bench" / "videos" / "v_long0.mp4", [], "test")],
                        fewer)
    assert [r.span for r in rows] == fewer.spans(truth["duration"])


def test_index_flags_set_the_recorded_rule(long_video, tmp_path, capsys):
    """--segment/--no-scenes are recorded in the manifest at creation; --no-segments with
    them is one clear error."""
    from eercf.cli import main

    root, _ = long_video
    common = [str(root / "videos"), "--model", str(root / "model"), "--workers", "0",
              "--codec", "exact", "--json"]
    assert main(["index", *common, "--index", str(tmp_path / "a"), "--segment", "20",
                 "--no-scenes"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scenes"] == 0 and summary["segments"] > 0
    recorded = VideoIndex.open(tmp_path / "a").segmenting
    assert recorded == Segmenting(segment=20.0, stride=6.0, scenes=False)
    assert main(["index", *common, "--index", str(tmp_path / "b"), "--no-segments",
                 "--no-scenes"]) != 0
    assert "--no-segments contradicts" in capsys.readouterr().err
