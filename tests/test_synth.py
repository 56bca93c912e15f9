"""The synthetic benchmark: MSR-VTT layout, determinism, and the properties its claims rest on
(a flash in one or two of 12 sampled frames holding the whole flash caption, a corner square in
one patch, test captions that name exactly one test video, hard negatives and decoys)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eercf.data.datasets import load_dataset
from eercf.synthetic import make_synthetic
from eercf.synthetic.designs import get_design
from eercf.synthetic.render import CORNER_MARGIN, CORNER_SIZE
from eercf.synthetic.scenes import CAPTION_KINDS, COLOURS, TRAIN_KINDS, annotate, fits, plan
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


def test_flash_in_one_or_two_sampled_frames_and_corner_always(bench: Path):
    meta = {v.video_id: v for v in plan(30, seed=7)}
    for video_id, v in meta.items():
        clip = decode_clip(bench / "videos" / "all" / f"{video_id}.mp4", image_size=64)
        assert len(clip.frames) == 12
        # the flash fills the background with its colour in one or two sampled frames, and
        # shows its shape in its colour: one frame holds the whole flash caption
        flash = np.array(COLOURS[v.flash_background])
        flash_frames = [(np.abs(f.astype(int) - flash).max(-1) < 40).mean() > 0.5
                        for f in clip.frames]
        assert 1 <= sum(flash_frames) <= 2, (video_id, flash_frames)
        for f, is_flash in zip(clip.frames, flash_frames):
            shape = np.array(COLOURS[v.flash_colour if is_flash else v.colour])
            assert (np.abs(f.astype(int) - shape).max(-1) < 40).sum() > 50, video_id
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
    kinds = []
    for v in test:
        (kind, text), = captions[v.video_id]
        kinds.append(kind)
        assert [o for o in test if fits(o, v, kind)] == [v], text
        if "flash" in kind:
            assert v.flash_background in text and v.flash_colour in text, text
    # mostly the flash: what one moment shows
    assert kinds.count("flash") / len(kinds) > 0.6 and "motion+corner" in kinds
    # hard negatives: most test videos have another whose flash differs in one attribute
    def one_apart(a, b):
        return sum(x != y for x, y in zip(a.flash, b.flash)) == 1
    assert sum(any(one_apart(o, v) for o in test) for v in test) / len(test) > 0.8
    # and many have one whose *main* shot shows the flash's shape, colour and direction: the
    # averaged video vector mixes the two shots and is drawn to it
    def decoy(o, v):
        return o.motion == v.flash[1:]
    assert sum(any(decoy(o, v) for o in test) for v in test) / len(test) > 0.3


def test_training_captions_cover_every_training_kind():
    videos = plan(60, seed=4)
    captions = annotate(videos, seed=4)
    kinds = {kind for v in videos if v.split == "train" for kind, _ in captions[v.video_id]}
    assert kinds == set(TRAIN_KINDS) and kinds < set(CAPTION_KINDS)


def test_large_benchmarks_share_flashes_and_too_large_is_one_clear_error():
    videos = plan(2500, seed=5)
    test = [v for v in videos if v.split == "test"]
    assert len(test) > 450 and len({v.flash for v in test}) < len(test)
    captions = annotate(videos, seed=5)
    assert all([o for o in test if fits(o, v, captions[v.video_id][0][0])] == [v] for v in test)
    with pytest.raises(EercfError, match="test split holds at most 1843 videos"):
        plan(10000, seed=0)


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


@pytest.mark.parametrize("name", ["motion", "corner", "mixed", "overlay"])
def test_every_design_keeps_the_benchmarks_promises(name, tmp_path: Path):
    """Each design: test captions single out their video, the flash shows in a few of twelve
    sampled frames (one or two at 1/8 of the clip, up to three at 1/6), and the test captions
    lean on the design's levels."""

    design = get_design(name)
    videos = plan(400, seed=5, design=design)
    captions = annotate(videos, seed=5, design=design)
    test = [v for v in videos if v.split == "test"]
    kinds = [captions[v.video_id][0][0] for v in test]
    for v, kind in zip(test, kinds):
        assert sum(fits(o, v, kind) for o in test) == 1  # only its own video
    leading = design.test_kinds[0]
    if design.preferred is not None:
        assert kinds.count(leading) == max(kinds.count(k) for k in set(kinds))
    assert len(set(kinds)) >= 2
    summary = make_synthetic(tmp_path / name, videos=12, seed=5, design=name, progress=False)
    assert summary["size"] == design.size
    for v in plan(12, seed=5, design=design):
        clip = decode_clip(tmp_path / name / "videos" / "all" / f"{v.video_id}.mp4",
                           image_size=design.size, resize="squash")
        if design.overlay:  # a small shape of its own colour, about 1 % of the frame
            small = np.array(COLOURS[v.flash_colour])
            shown = sum((np.abs(f.astype(int) - small).max(-1) < 30).mean() > 0.004
                        for f in clip.frames)
        else:  # a whole shot of the flash's background
            flash = np.array(COLOURS[v.flash_background])
            shown = sum((np.abs(f.astype(int) - flash).max(-1) < 40).mean() > 0.5
                        for f in clip.frames)
        longest = int(design.flash_fraction * 12) + 1  # sampling intervals it can overlap
        assert 1 <= shown <= longest, (name, v.video_id)
        assert v.fps in range(*design.fps) and design.seconds[0] <= v.seconds <= design.seconds[1]


def test_the_whole_wide_frame_reaches_the_model_when_squashed(tmp_path: Path):
    """The overlay design's corner marker sits near the edge of a 4:3 frame: squashing the
    frame into the square keeps it in every sampled frame; CLIP's centre crop cuts it off."""
    make_synthetic(tmp_path / "o", videos=6, seed=3, design="overlay", progress=False)
    for v in plan(6, seed=3, design=get_design("overlay")):
        path = tmp_path / "o" / "videos" / "all" / f"{v.video_id}.mp4"
        marker = np.array(COLOURS[v.corner_colour])
        rows = slice(0, 12) if "top" in v.corner else slice(-12, None)
        cols = slice(0, 12) if "left" in v.corner else slice(-12, None)

        def marked(resize: str) -> list[bool]:
            frames = decode_clip(path, num_frames=6, image_size=64, resize=resize).frames
            return [bool((np.abs(f[rows, cols].astype(int) - marker).max(-1) < 40).sum() >= 2)
                    for f in frames]

        assert all(marked("squash")), v.video_id
        assert not any(marked("crop")), v.video_id
