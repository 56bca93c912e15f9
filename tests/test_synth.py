"""The synthetic benchmark: MSR-VTT layout, determinism, and the properties its claims rest on
(a flash in one or two of 12 sampled frames, a corner square in one patch, test captions that
name exactly one test video)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eercf.data.datasets import load_dataset
from eercf.data.synth import (COLOURS, CORNER_MARGIN, CORNER_SIZE, FLASH_COLOURS, annotate,
                              fits, flash_halves, make_synthetic, plan)
from eercf.data.video import decode_clip
from eercf.errors import EercfError

ANNOTATIONS = ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", "MSRVTT_data.json", "synth.json")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    make_synthetic(out, videos=30, seed=7, progress=False)
    return out


def test_layout_reads_as_msrvtt(bench: Path):
    train = load_dataset("msrvtt", bench, "train")
    test = load_dataset("msrvtt", bench, "test")
    assert len(train) + len(test) == 30
    assert 3 <= len(test) <= 9  # about a fifth, whole groups at a time
    assert {r.video_id for r in train}.isdisjoint(r.video_id for r in test)
    assert all(r.path.is_file() and r.path.suffix == ".mp4" for r in train + test)
    assert all(len(r.captions) == 8 for r in train)
    assert all(len(r.captions) == 1 for r in test)
    data = json.loads((bench / "MSRVTT_data.json").read_text())
    assert {v["video_id"] for v in data["videos"]} == {r.video_id for r in train + test}
    assert [s["sen_id"] for s in data["sentences"]] == list(range(len(data["sentences"])))


def test_videos_are_h264(bench: Path):
    import av

    with av.open(str(bench / "videos" / "all" / "video0.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (64, 64)
        assert 8 <= float(stream.average_rate) <= 12


def test_same_seed_same_benchmark(bench: Path, tmp_path: Path):
    again = tmp_path / "b"
    make_synthetic(again, videos=30, seed=7, progress=False)
    for name in ANNOTATIONS:
        assert (again / name).read_bytes() == (bench / name).read_bytes(), name
    for video in ("video0.mp4", "video17.mp4"):
        first = decode_clip(bench / "videos" / "all" / video, image_size=64)
        second = decode_clip(again / "videos" / "all" / video, image_size=64)
        np.testing.assert_array_equal(first.frames, second.frames)


def test_another_seed_another_benchmark():
    a, b = plan(30, seed=1), plan(30, seed=2)
    assert [v.colour for v in a] != [v.colour for v in b] or [v.seconds for v in a] != [v.seconds for v in b]


def test_flashes_in_one_or_two_sampled_frames_and_corner_always(bench: Path):
    meta = {v.video_id: v for v in plan(30, seed=7)}
    for video_id, v in meta.items():
        clip = decode_clip(bench / "videos" / "all" / f"{video_id}.mp4", image_size=64)
        assert len(clip.frames) == 12
        # each flash fills the two halves of the screen in one or two sampled frames
        seen_at = []
        for event in range(2):
            for side, colour in flash_halves(v, event):
                x = 16 if side == "left" else 48
                seen = [np.abs(f[32, x].astype(int) - COLOURS[colour]).max() < 40 for f in clip.frames]
                assert 1 <= sum(seen) <= 2, (video_id, event, colour, seen)
            seen_at.append({i for i, s in enumerate(seen) if s})
        assert not seen_at[0] & seen_at[1]  # the two pairs never flash together
        # the corner square sits in one 16x16 patch of the 4x4 grid, in every frame
        side = round(CORNER_MARGIN * 64 + CORNER_SIZE * 64 / 2)
        cx = side if "left" in v.corner else 63 - side
        cy = side if "top" in v.corner else 63 - side
        corner = np.array(COLOURS[v.corner_colour])
        assert all(np.abs(f[cy, cx].astype(int) - corner).max() < 40 for f in clip.frames)
    assert (CORNER_MARGIN + CORNER_SIZE) * 64 <= 16


def test_test_captions_name_one_test_video():
    videos = plan(400, seed=3)
    captions = annotate(videos, seed=3)
    test = [v for v in videos if v.split == "test"]
    assert len(test) > 60
    kinds = set()
    for v in test:
        (kind, text), = captions[v.video_id]
        kinds.add(kind)
        assert kind.startswith("motion+")  # recall by motion, decide by a detail
        named = [w.strip(",;") for w in text.split() if w.strip(",;") in FLASH_COLOURS]
        pair = tuple(named) if "flash" in kind else None
        if pair:  # one pair that flashed together, never both
            assert len(pair) == 2 and frozenset(pair) in {frozenset(p) for p in v.flashes}, text
        assert [o for o in test if fits(o, v, kind, pair)] == [v], text
    assert {"motion+flash", "motion+corner"} <= kinds
    # every test video has a hard negative: another test video with the same motion
    assert sum(sum(fits(o, v, "motion") for o in test) > 1 for v in test) / len(test) > 0.9
    # most have one that flashes the same four colours, paired otherwise: the averaged video
    # vector cannot tell them apart
    def colours(v):
        return frozenset(c for pair in v.flashes for c in pair)
    repaired = [v for v in test if any(fits(o, v, "motion") and colours(o) == colours(v)
                                       and o.pairing != v.pairing for o in test)]
    assert len(repaired) / len(test) > 0.5


def test_too_many_videos_is_one_clear_error():
    with pytest.raises(EercfError, match="holds at most 2160 distinct videos"):
        plan(3000, seed=0)


def test_refuses_to_overwrite(bench: Path):
    with pytest.raises(EercfError, match="already holds"):
        make_synthetic(bench, videos=4, seed=0, progress=False)


def test_cli_json(tmp_path: Path, capsys):
    from eercf.cli import main

    assert main(["synth", str(tmp_path / "c"), "--videos", "6", "--seed", "2", "--json",
                 "--sheet", str(tmp_path / "sheet.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 6 and summary["train"] + summary["test"] == 6
    from PIL import Image

    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width > 12 * 128
