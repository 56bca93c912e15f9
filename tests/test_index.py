"""VideoIndex: store round trip, two-stage results equal to `eercf eval`'s two_stage mode,
and reliability (crash, concurrent readers, stale/corrupt FAISS files, foreign folders)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from eercf.model.config import get_model_config
from eercf.errors import EercfError
from eercf.evaluation.evaluator import stage1_scores, two_stage_scores
from eercf.index import DATASET, MANIFEST, VideoIndex, ann, store
from eercf.model import EERCF, VideoFeatures
from eercf.index.search import matched_moment, matched_where

torch.set_num_threads(1)
FRAMES, PATCHES, DIM = 12, 16, 128  # the tiny model's shapes


@pytest.fixture(scope="module")
def model() -> EERCF:
    torch.manual_seed(0)
    return EERCF(get_model_config("tiny")).eval()


def random_features(n: int, seed: int, short: int = 0) -> VideoFeatures:
    """Unit features of the tiny shape; the first ``short`` videos have only 5 real frames."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, FRAMES, dtype=torch.bool)
    mask[:short, 5:] = False
    valid = mask[..., None].float()
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    temporal = unit(n, FRAMES, DIM) * valid
    return VideoFeatures(video=F.normalize(temporal.sum(1), dim=-1),
                         frames=unit(n, FRAMES, DIM) * valid, temporal=temporal,
                         patches=unit(n, FRAMES, PATCHES, DIM) * valid[..., None], mask=mask)


def add_random(index: VideoIndex, ids: list[str], seed: int, short: int = 0, **kw) -> VideoFeatures:
    features = random_features(len(ids), seed, short)
    stamps = [[0.5 + i for i in range(int(m.sum()))] for m in features.mask]
    index.add(ids, [f"/videos/{i}.mp4" for i in ids], [float(FRAMES)] * len(ids), stamps,
              features, **kw)
    return features


@pytest.fixture
def filled(tmp_path, model):
    """An index of 40 videos added in three commits, and their features in store order."""
    index = VideoIndex.create(tmp_path / "idx", model)
    parts = [add_random(index, [f"a{i}" for i in range(15)], 1, short=3),
             add_random(index, [f"b{i}" for i in range(5)], 2),
             add_random(index, [f"c{i}" for i in range(20)], 3, short=1)]
    return index, VideoFeatures.cat(parts)


def queries(n: int = 4, seed: int = 9) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_search_equals_eval_two_stage(filled, model):
    index, features = filled
    ids = index.ids()
    text = queries()
    results = index.search_encoded(text, k=12, topk=8, model=model)
    with torch.inference_mode():
        scores, promoted = two_stage_scores(model, text, features.as_stored(), 8)
        stage1 = stage1_scores(model, text, features)
    for q, result in enumerate(results):
        assert len(result.hits) == 12
        rescored = promoted[q].nonzero().flatten()
        expected = rescored[torch.argsort(scores[q, rescored], descending=True)].tolist()
        rest = (~promoted[q]).nonzero().flatten()
        expected += rest[torch.argsort(stage1[q, rest], descending=True)].tolist()[:4]
        assert [h.video_id for h in result.hits] == [ids[i] for i in expected]
        got = torch.tensor([h.score for h in result.hits[:8]])
        torch.testing.assert_close(got, scores[q, expected[:8]], rtol=0, atol=0)  # bit-identical
        assert all(h.score is None and h.moment is None for h in result.hits[8:])
        s1 = torch.tensor([h.stage1_score for h in result.hits], dtype=torch.float64)
        torch.testing.assert_close(s1, stage1[q, expected].double(), rtol=1e-5, atol=1e-5)
        ranks = [h.stage1_rank for h in result.hits]
        assert sorted(ranks[:8]) == list(range(1, 9)) and ranks[8:] == list(range(9, 13))
        assert result.version == index.version and set(result.timings) >= {"stage1", "stage2"}


def test_topk_beyond_collection_scores_everything(filled, model):
    index, features = filled
    text = queries(2)
    results = index.search_encoded(text, k=100, topk=500, model=model)
    with torch.inference_mode():
        scores, _ = two_stage_scores(model, text, features.as_stored(), len(features))
    for q, result in enumerate(results):
        assert len(result.hits) == len(features)
        assert [h.score for h in result.hits] == sorted(scores[q].tolist(), reverse=True)


def test_stage2_reads_only_the_candidates(filled, model, monkeypatch):
    index, _ = filled
    read = []
    original = lance.LanceDataset.take
    monkeypatch.setattr(lance.LanceDataset, "take", lambda ds, offsets, columns=None: (
        read.append((len(offsets), "patches" in columns)) or original(ds, offsets, columns)))
    index.search_encoded(queries(3), k=5, topk=6, model=model)
    patch_reads = [n for n, patches in read if patches]
    assert patch_reads and sum(patch_reads) <= 3 * 6


def test_hits_report_moment_and_where(filled, model):
    index, _ = filled
    hit = index.search_encoded(queries(1), k=1, model=model)[0].hits[0]
    assert hit.uri == f"/videos/{hit.video_id}.mp4" and hit.duration == FRAMES
    assert hit.moment.start <= hit.moment.time <= hit.moment.end
    assert 0 <= hit.where.frame < FRAMES and hit.where.time == hit.where.frame + 0.5
    assert 0 <= hit.where.row < 4 and 0 <= hit.where.col < 4


def test_matched_moment_window():
    times = np.array([0.5, 1.5, 2.5, 3.5, 4.5, np.nan], dtype=np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    weights = np.array([0.05, 0.3, 0.4, 0.05, 0.01, 0.0])  # logits -3.0 -1.2 -0.9 -3.0 -4.6
    m = matched_moment(weights, times, mask, duration=5.0)
    assert (m.time, m.start, m.end) == (2.5, 1.0, 3.0)  # frames 1-2 (>= -2.75), to midpoints
    m = matched_moment(np.full(6, 0.2), times, mask, duration=5.0)
    assert (m.start, m.end) == (0.0, 5.0)  # every frame as good: the whole video
    m = matched_moment(weights, times + 60, mask, duration=600.0, span=(60.0, 66.0))
    assert (m.time, m.start, m.end) == (62.5, 61.0, 63.0)  # a segment: its own timeline
    m = matched_moment(np.array([0.0, 0.0, 0.0, 0.4, 0.6, 0.0]), times + 60, mask,
                       duration=600.0, span=(60.0, 65.0))
    assert (m.start, m.end) == (63.0, 65.0)  # the segment's end, not the video's
    m = matched_moment(np.array([0.9, 1e-4, 0.0, 0.0, 0.05, 0.0]), times, mask, duration=5.0)
    assert (m.time, m.start, m.end) == (0.5, 0.0, 1.0)  # first frame: from the start
    sims = np.array([0.8, 0.79, -0.2, 0.8, 0.78, 0.0])  # a flash frame inside the moment
    m = matched_moment(weights, times, mask, duration=5.0, similarity=sims, background=0.3)
    assert (m.start, m.end) == (0.0, 5.0)  # the dip is bridged (weights give the best frame)
    sims = np.array([0.1, 0.1, 0.9, 0.15, 0.1, 0.0])  # a brief event among unrelated frames
    m = matched_moment(weights, times, mask, duration=5.0, similarity=sims, background=0.12)
    assert (m.start, m.end) == (2.0, 3.0)
    m = matched_moment(np.array([0.0, 0.0, 0.0, 0.4, 0.6, 0.0]), times, mask, duration=None)
    assert (m.time, m.start, m.end) == (4.5, 3.0, 5.0)  # last frame, no duration: half a gap


def test_matched_where_grid():
    weights = np.zeros(3 * 16)
    weights[16 + 7] = 1.0  # frame 1, patch 7 of a 4x4 grid
    where = matched_where(weights, np.array([0.0, 2.0, 4.0]), 16)
    assert (where.frame, where.time, where.row, where.col) == (1, 2.0, 1, 3)


def test_add_rejects_bad_input(tmp_path, model):
    index = VideoIndex.create(tmp_path / "idx", model)
    add_random(index, ["x", "y"], 1)
    with pytest.raises(EercfError, match="already in index"):
        add_random(index, ["y", "z"], 2)
    with pytest.raises(EercfError, match="twice"):
        add_random(index, ["z", "z"], 2)
    bad = random_features(1, 3)
    with pytest.raises(EercfError, match="patches has shape"):
        index.add(["w"], [None], [None], [[0.0] * 12],
                  VideoFeatures(bad.video, bad.frames, bad.temporal, bad.patches[:, :, :4], bad.mask))
    with pytest.raises(EercfError, match="3 timestamps for 12 real frames"):
        index.add(["w"], [None], [None], [[0.0, 1.0, 2.0]], bad)
    assert index.ids() == ["x", "y"] and index.version == 2  # nothing committed


def test_remove_and_reindex(filled, model):
    index, features = filled
    before = index.ids()
    assert index.remove(["b1", "a3", "nope"]) == ["a3", "b1"]
    ids = index.ids()
    assert len(index) == 38 and ids == [i for i in before if i not in ("a3", "b1")]
    remaining = features.index(torch.tensor([before.index(i) for i in ids]))
    text = queries(3)
    with torch.inference_mode():
        scores, promoted = two_stage_scores(model, text, remaining.as_stored(), 5)
    for factory, params in (("IVF2,Flat", "nprobe=2"), ("Flat", "")):  # both exact
        index.reindex(factory, params)
        assert VideoIndex.open(index.folder).index_factory == factory
        for q, result in enumerate(index.search_encoded(text, k=5, topk=5, model=model)):
            rescored = promoted[q].nonzero().flatten()
            best = rescored[torch.argsort(scores[q, rescored], descending=True)]
            assert [h.video_id for h in result.hits] == [ids[i] for i in best]


def test_one_writer_at_a_time_readers_go_on(tmp_path, model):
    index = VideoIndex.create(tmp_path / "idx", model)
    other = VideoIndex.open(tmp_path / "idx")
    with index.writing():
        add_random(index, ["a", "b"], 1)  # the holder may write (the lock is re-entrant)
        with pytest.raises(EercfError, match="being written by another process"):
            with other.writing(wait=0):
                pass
        hits = other.search_encoded(queries(1), k=5, model=model)[0].hits
        assert sorted(h.video_id for h in hits) == ["a", "b"]
    with other.writing(wait=0):
        add_random(other, ["c"], 2)
    assert index.ids() == ["a", "b", "c"]


def test_model_mismatch_is_refused(filled):
    index, _ = filled
    torch.manual_seed(1)
    other = EERCF(get_model_config("tiny"))
    with pytest.raises(EercfError, match="was built with model 'tiny'"):
        index.search_encoded(queries(1), model=other)


@pytest.mark.parametrize("damage", ["missing", "stale", "corrupt"])
def test_stage1_file_is_rebuilt_not_trusted(tmp_path, model, damage):
    index = VideoIndex.create(tmp_path / "idx", model)
    add_random(index, [f"a{i}" for i in range(6)], 1)
    folder = index.folder
    old_stamp = (folder / ann.STAMP).read_text()
    old_files = {p.name: p.read_bytes() for p in folder.glob("stage1-v*.faiss")}
    add_random(index, [f"b{i}" for i in range(6)], 2)
    current = json.loads((folder / ann.STAMP).read_text())
    if damage == "missing":
        (folder / current["file"]).unlink()
    elif damage == "stale":  # the stage-1 file of the previous version comes back
        for name, data in old_files.items():
            (folder / name).write_bytes(data)
        (folder / ann.STAMP).write_text(old_stamp)
    else:
        data = bytearray((folder / current["file"]).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / current["file"]).write_bytes(bytes(data))
    reopened = VideoIndex.open(folder)
    hits = reopened.search_encoded(queries(1), k=12, topk=12, model=model)[0].hits
    assert sorted(h.video_id for h in hits) == sorted(reopened.ids())
    stage1, problem = ann.load(folder, reopened.version, 12, DIM, "")
    assert problem == "" and stage1.index.ntotal == 12  # the rebuilt file was saved


def test_foreign_and_newer_folders_get_clear_errors(tmp_path, model):
    with pytest.raises(EercfError, match="does not exist"):
        VideoIndex.open(tmp_path / "absent")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(EercfError, match="not an eercf index"):
        VideoIndex.open(tmp_path / "junk")
    with pytest.raises(EercfError, match="not empty"):
        VideoIndex.create(tmp_path / "junk", model)
    lance.write_dataset(pa.table({"x": [1]}), str(tmp_path / "plain"))  # Lance, not an index
    with pytest.raises(EercfError, match="not an eercf index"):
        VideoIndex.open(tmp_path / "plain")

    index = VideoIndex.create(tmp_path / "idx", model)
    with pytest.raises(EercfError, match="already"):
        VideoIndex.create(tmp_path / "idx", model)
    manifest = json.loads((index.folder / MANIFEST).read_text())
    (index.folder / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(EercfError, match="format 99.*upgrade eercf"):
        VideoIndex.open(index.folder)
    (index.folder / MANIFEST).write_text(json.dumps(manifest))
    for entry in (index.folder / DATASET / "_versions").iterdir():
        entry.unlink()
    with pytest.raises(EercfError, match="cannot read the Lance dataset"):
        VideoIndex.open(index.folder)


def test_trained_factory_waits_for_enough_videos(tmp_path, model):
    with pytest.raises(EercfError, match="invalid FAISS index factory 'IVF4,Bogus'"):
        VideoIndex.create(tmp_path / "bad", model, index_factory="IVF4,Bogus")
    index = VideoIndex.create(tmp_path / "idx", model, index_factory="IVF4,Flat",
                              search_params="nprobe=4")
    add_random(index, ["a0", "a1"], 1)
    assert json.loads((index.folder / ann.STAMP).read_text())["factory"] == "Flat"
    add_random(index, [f"b{i}" for i in range(10)], 2)  # FAISS could train 4 lists on 12
    assert json.loads((index.folder / ann.STAMP).read_text())["factory"] == "Flat"
    add_random(index, [f"c{i}" for i in range(4 * ann.MIN_TRAIN_PER_LIST - 12)], 3)
    assert json.loads((index.folder / ann.STAMP).read_text())["factory"] == "IVF4,Flat"
    hits = index.search_encoded(queries(1), k=12, topk=12, model=model)[0].hits
    assert len(hits) == 12  # nprobe covers every list: exact


def test_a_trained_factory_is_trained_again_as_the_collection_grows(tmp_path, model, caplog):
    """The lists are placed on the videos there when it first trains and then only extended:
    past ``RETRAIN_GROWTH`` times that sample, the next add trains them again on every video
    (the sample size is kept in the stamp, so a reopened index knows it too)."""
    index = VideoIndex.create(tmp_path / "idx", model, index_factory="IVF2,Flat",
                              search_params="nprobe=2")
    first = 2 * ann.MIN_TRAIN_PER_LIST
    add_random(index, [f"a{i}" for i in range(first)], 1)

    def stamp() -> dict:
        return json.loads((index.folder / ann.STAMP).read_text())

    assert (stamp()["factory"], stamp()["trained_on"]) == ("IVF2,Flat", first)
    add_random(index, [f"b{i}" for i in range((ann.RETRAIN_GROWTH - 1) * first)], 2)
    assert stamp()["rows"] == ann.RETRAIN_GROWTH * first and stamp()["trained_on"] == first
    index = VideoIndex.open(index.folder)  # the sample size comes back from the stamp
    with caplog.at_level(logging.INFO, logger="eercf.index.ann"):
        add_random(index, ["c0"], 3)
    assert "training it again" in caplog.text
    assert stamp()["trained_on"] == ann.RETRAIN_GROWTH * first + 1
    hits = index.search_encoded(queries(1), k=5, topk=5, model=model)[0].hits
    assert len(hits) == 5


WRITER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_index import add_random
    from eercf.index import VideoIndex
    index = VideoIndex.open(sys.argv[1])
    present = set(index.ids())
    for batch in range(int(sys.argv[2])):
        ids = [f"v{{batch}}-{{i}}" for i in range(5)]
        if ids[0] in present:
            continue
        add_random(index, ids, batch, short=1, save_stage1=batch % 2 == 0)
        print(batch, flush=True)
        time.sleep(float(sys.argv[3]))
""")


def start_writer(folder: Path, batches: int, pause: float = 0.0) -> subprocess.Popen:
    """A process adding ``batches`` batches of 5 videos (those not yet present)."""
    script = WRITER.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", script, str(folder), str(batches), str(pause)],
                            stdout=subprocess.PIPE, text=True, env=env)


def check_whole(folder: Path) -> list[str]:
    """Open the index as a user would and check every row is a whole video of a whole batch."""
    index = VideoIndex.open(folder)
    ids = index.ids()
    assert len(ids) == len(set(ids)) and len(ids) % 5 == 0
    batches = {}
    for vid in ids:
        batches.setdefault(vid.split("-")[0], []).append(vid)
    assert all(len(b) == 5 for b in batches.values())
    if ids:
        features, _ = store.take_features(lance.dataset(str(folder / DATASET)), range(len(ids)))
        assert features.mask.any(1).all() and torch.isfinite(features.patches.float()).all()
    return ids


def test_sigkill_while_adding_leaves_whole_videos_and_resumes(tmp_path, model):
    VideoIndex.create(tmp_path / "idx", model)
    before: list[str] = []
    for delay in (0.0, 0.006):  # an add takes ~15 ms: kill at different points of one
        writer = start_writer(tmp_path / "idx", 60)
        writer.stdout.readline()
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        ids = check_whole(tmp_path / "idx")
        assert len(before) < len(ids) < 300 and ids[:len(before)] == before
        before = ids
    writer = start_writer(tmp_path / "idx", 60)
    writer.communicate(timeout=120)
    assert writer.returncode == 0
    after = check_whole(tmp_path / "idx")
    assert len(after) == 300 and after[:len(before)] == before
    hits = VideoIndex.open(tmp_path / "idx").search_encoded(queries(1), k=300, topk=300,
                                                            model=model)[0].hits
    assert len(hits) == 300


def test_search_while_adding_sees_one_snapshot(tmp_path, model):
    index = VideoIndex.create(tmp_path / "idx", model)
    writer = start_writer(tmp_path / "idx", 15, pause=0.03)
    text = queries(1)
    seen = set()
    while writer.poll() is None or not seen:
        result = index.search_encoded(text, k=1000, topk=1000, model=model)[0]
        at_version = lance.dataset(str(tmp_path / "idx" / DATASET), version=result.version)
        assert sorted(h.video_id for h in result.hits) == sorted(store.all_ids(at_version))
        assert all(h.score is not None for h in result.hits)
        seen.add(len(result.hits))
    assert writer.wait() == 0
    assert len(seen) > 2  # searches really ran between commits


def test_exact_stage1_batches_by_matrix_product_as_faiss_searches(monkeypatch):
    """A batch over an exact index (one matrix product and a top-k, in chunks of queries)
    finds what FAISS's flat search finds, with -1 past the rows held; single queries and
    filtered searches stay with FAISS."""
    import faiss

    g = np.random.default_rng(0)
    vectors = g.standard_normal((500, 32)).astype(np.float32)
    queries = g.standard_normal((40, 32)).astype(np.float32)
    index = faiss.index_factory(32, "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    stage1 = ann.Stage1(index, version=1, factory=ann.EXACT)
    expected_scores, expected = index.search(queries, 10)
    monkeypatch.setattr(ann, "MATMUL_FLOATS", 500 * 7)  # 7 queries a product: 6 chunks
    scores, labels = stage1.search(queries, 10)
    assert (labels == expected).all() and np.allclose(scores, expected_scores, atol=1e-4)
    scores, labels = stage1.search(queries, 600)  # deeper than the rows held
    assert (labels[:, 500:] == -1).all() and (labels[:, :500] >= 0).all()
    assert set(labels[0, :500]) == set(range(500))
    calls = []
    monkeypatch.setattr(ann, "_flat_matmul", lambda *a: calls.append(a))
    stage1.search(queries[:1], 10)
    stage1.search(queries, 10, allowed=np.arange(0, 500, 2))
    assert not calls
