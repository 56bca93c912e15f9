"""Decoding, sampling and preprocessing (eercf.data.video) on the real MSR-VTT clips and
frame folders, and on broken or unusual files written here with PyAV."""
from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from eercf.cli import main
from eercf.data.clips import preprocess, resize_frame, sample_times
from eercf.data.video import decode_clip, folder_images, load_clip, probe
from eercf.model.transform import CLIP_MEAN, CLIP_STD
from eercf.errors import EercfError

DATA = SHARED_DATA / "msrvtt_sample"
pytestmark = pytest.mark.needs_shared
CLIP_9770 = DATA / "videos" / "video9770.mp4"  # 11.0 s, 30 fps, 320x240
CLIP_9771 = DATA / "videos" / "video9771.mp4"  # 13.98 s, 29.97 fps, keyframes at 0 and 6.5 s
FOLDER_7020 = DATA / "frames" / "video7020"  # 35 JPEG frames, 298x224
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def gray(level: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), level, np.uint8)


def write_video(path: Path, frames: list[np.ndarray], *, fps: int = 10,
                pts_ms: list[int] | None = None, rotation: int | None = None,
                faststart: bool = False, keyframe_every: int | None = None) -> Path:
    """Encode ``frames`` (HxWx3 uint8) with PyAV; ``pts_ms`` gives variable frame times."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if keyframe_every:
            stream.codec_context.gop_size = keyframe_every
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def levels(frames: np.ndarray | torch.Tensor) -> list[int]:
    """Mean pixel level of each uint8 frame (the gray level a test frame was made with)."""
    return [int(round(float(f.astype(np.float64).mean()))) for f in np.asarray(frames)]


# ----------------------------------------------------------------------------- real files

def test_uniform_sampling_of_a_real_clip():
    clip = load_clip(CLIP_9770)
    assert clip.frames.shape == (12, 3, 224, 224) and clip.frames.dtype == torch.float32
    assert clip.mask.all() and len(clip.timestamps) == 12
    assert clip.duration == pytest.approx(11.0)
    # the frame displayed at each segment centre (frames every 1/30 s)
    expected = [int((k + 0.5) * 11.0 / 12 * 30 + 1e-6) / 30 for k in range(12)]
    assert clip.timestamps == pytest.approx(expected, abs=1e-4)
    # normalised with CLIP's statistics: pixel range maps to [-mean/std, (1-mean)/std]
    low = -max(m / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    assert clip.frames.min() >= low - 1e-4 and clip.frames.max() <= 1 / min(CLIP_STD)


def test_one_frame_per_second_capped_to_num_frames():
    clip = load_clip(CLIP_9770, fps=1.0)
    assert clip.timestamps == pytest.approx([float(s) for s in range(11)], abs=1e-4)
    assert clip.mask.tolist() == [True] * 11 + [False]
    assert clip.frames[11].abs().sum() == 0  # padding is zeros, not a repeated frame
    capped = load_clip(CLIP_9771, fps=1.0)  # 14 one-second targets -> 12, CLIP4Clip's linspace
    seconds = [int(t + 0.05) for t in capped.timestamps]
    assert seconds == list(np.linspace(0, 13, 12, dtype=int)) and capped.mask.all()


def test_sampled_frames_equal_the_frames_of_a_full_decode():
    """Seeking past the keyframe at 6.5 s and skipping non-reference frames must return
    exactly the frames that decoding everything and picking would."""
    clip = decode_clip(CLIP_9771, num_frames=12, image_size=64)
    with av.open(str(CLIP_9771)) as container:
        stream = container.streams.video[0]
        start = stream.start_time
        every = {round(float((f.pts - start) * stream.time_base), 6):
                 f.to_ndarray(width=85, height=64, format="rgb24", interpolation="BICUBIC")
                 for f in container.decode(stream)}
    assert len(every) == 419
    for t, frame in zip(clip.timestamps, clip.frames):
        assert np.array_equal(frame, every[t][:, 10:74])  # centre crop of 85x64


def test_probe_reads_the_header():
    info = probe(CLIP_9771)
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (320, 240)
    assert info["fps"] == pytest.approx(29.97, abs=0.01)
    assert info["duration"] == pytest.approx(13.98, abs=0.01) and info["rotation"] == 0


def test_frame_folder_is_sampled_by_index():
    images = folder_images(FOLDER_7020)
    assert len(images) == 35 and images[0].name == "video7020_0000.jpeg"
    clip = load_clip(FOLDER_7020, num_frames=12, folder_fps=1.0)
    assert clip.mask.all() and clip.duration == 35.0
    assert clip.timestamps == [float(int((k + 0.5) * 35 / 12)) for k in range(12)]
    twice = load_clip(FOLDER_7020, fps=1.0, folder_fps=2.0)  # 17.5 s at 2 images per second
    assert twice.timestamps[:3] == [0.0, 1.0, 3.0] and len(twice.timestamps) == 12
    # the pixels are those of the image at that index, resized and cropped
    from PIL import Image

    with Image.open(images[int(clip.timestamps[0])]) as first:
        expected = preprocess([first.convert("RGB")], 224)
    assert torch.allclose(clip.frames[0], expected[0], atol=0.05)


def test_preprocess_resizes_the_shorter_side_and_normalises():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, 25:75] = 255  # a white centre square survives the crop
    x = preprocess([image, gray(128)], image_size=32)
    assert x.shape == (2, 3, 32, 32)
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[0, :, 16, 16], white, atol=1e-4)
    mid = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(x[1, :, 5, 5], mid, atol=1e-4)
    assert resize_frame(np.zeros((10, 30, 3), np.uint8), 20).shape == (20, 20, 3)


def test_sample_times():
    assert sample_times(12.0, 4) == [1.5, 4.5, 7.5, 10.5]
    assert sample_times(3.5, 12, fps=1.0) == [0.0, 1.0, 2.0, 3.0]
    assert sample_times(100.0, 3, fps=1.0) == [0.0, 49.0, 99.0]
    assert sample_times(30.0, 2, span=(10.0, 20.0)) == [12.5, 17.5]
    assert sample_times(0.0, 5) == [0.0]
    with pytest.raises(EercfError, match="span"):
        sample_times(5.0, 2, span=(8.0, 9.0))


# ----------------------------------------------------------------------------- unusual files

def test_short_video_gets_fewer_real_frames_not_repeats(tmp_path):
    path = write_video(tmp_path / "short.mp4", [gray(40 + 40 * i) for i in range(4)], fps=10)
    clip = decode_clip(path, num_frames=12, image_size=32)
    assert clip.timestamps == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert levels(clip.frames) == pytest.approx([40, 80, 120, 160], abs=3)
    sampled = clip.to_sampled(12)
    assert sampled.mask.sum() == 4 and sampled.frames[4:].abs().sum() == 0


def numbered(i: int) -> np.ndarray:
    """A frame showing ``i`` (0..255) as 8 black or white stripes: survives lossy coding."""
    bits = np.array([(i >> b) & 1 for b in range(8)], np.uint8) * 255
    return np.repeat(np.repeat(bits[None, :, None], 8, axis=1), 3, axis=2).repeat(64, axis=0)


def number_of(pixels: np.ndarray) -> int:
    stripes = np.asarray(pixels, np.float64).mean(axis=(0, 2)).reshape(8, -1).mean(axis=1)
    return sum(1 << b for b, level in enumerate(stripes) if level > 128)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.ts", "clip.h264"])
def test_containers_with_and_without_an_index(tmp_path, name):
    """mp4 (keyframe index: seeks to keyframes), mkv, MPEG-TS (no index: seeks by time) and a
    raw H.264 stream (no timestamps, no seeking): each sample is the frame shown then."""
    path = write_video(tmp_path / name, [numbered(i) for i in range(200)], fps=10,
                       keyframe_every=20)
    for fps in (None, 0.5):
        clip = decode_clip(path, num_frames=4, fps=fps, image_size=32)
        assert clip.duration == pytest.approx(20.0, abs=0.05)
        expected = [int(t * 10 + 1e-6) for t in sample_times(20.0, 4, fps)]
        assert [number_of(f) for f in clip.frames] == expected
        assert clip.timestamps == pytest.approx([i / 10 for i in expected], abs=1e-6)


def test_variable_frame_rate_picks_the_frame_shown_at_each_time(tmp_path):
    pts = [0, 100, 150, 900, 1000, 1900]
    path = write_video(tmp_path / "vfr.mkv", [gray(20 + 30 * i) for i in range(6)], pts_ms=pts)
    clip = decode_clip(path, num_frames=8, image_size=32)
    targets = sample_times(clip.duration, 8)
    shown = sorted({max(p for p in pts if p / 1000 <= t + 1e-6) for t in targets})
    assert clip.timestamps == pytest.approx([p / 1000 for p in shown])
    assert levels(clip.frames) == pytest.approx([20 + 30 * pts.index(p) for p in shown], abs=3)


def test_rotation_metadata_is_applied(tmp_path):
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:16, :32] = (255, 0, 0)  # red top-left quadrant of a landscape frame
    path = write_video(tmp_path / "rotated.mp4", [frame] * 3, rotation=90)
    info = probe(path)
    assert (info["width"], info["height"], info["rotation"]) == (32, 64, 90)
    # displayed = rotated 90 degrees counter-clockwise: portrait, red now bottom-left.
    # Sampled at 32 px the portrait frame is 32x64 before the crop keeps rows 16..47.
    pixels = decode_clip(path, num_frames=1, image_size=32).frames[0].astype(int)
    assert pixels[28:, 4:12, 0].mean() > 200 and pixels[28:, 4:12, 2].mean() < 60  # red
    assert pixels[:4, 4:12].mean() < 40 and pixels[28:, 20:].mean() < 40  # black


def test_very_high_resolution_is_reduced_while_decoding(tmp_path):
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[:, 1920:] = 200
    path = write_video(tmp_path / "uhd.mp4", [big, big], fps=2)
    start = time.perf_counter()
    clip = decode_clip(path, num_frames=4, image_size=224)
    assert time.perf_counter() - start < 10
    assert clip.frames.shape == (2, 224, 224, 3)
    assert probe(path)["width"] == 3840
    assert clip.frames[0, :, :100].mean() < 30 and clip.frames[0, :, 124:].mean() > 170


# ----------------------------------------------------------------------------- broken files

def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EercfError, match=r"empty\.mp4: empty file"):
        load_clip(tmp_path / "empty.mp4")


def test_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not frames\n" * 20)
    with pytest.raises(EercfError, match=r"notes\.mp4: not a readable video"):
        load_clip(tmp_path / "notes.mp4")


def test_missing_file_and_folder_without_images(tmp_path):
    with pytest.raises(EercfError, match=r"nothere\.mp4: no such file"):
        load_clip(tmp_path / "nothere.mp4")
    with pytest.raises(EercfError, match="frame folder has no images"):
        load_clip(tmp_path)


def test_truncated_files(tmp_path):
    # moov atom at the end (the MSR-VTT clips): cut short, the file cannot be opened at all
    (tmp_path / "cut.mp4").write_bytes(CLIP_9770.read_bytes()[:200_000])
    with pytest.raises(EercfError, match=r"cut\.mp4: not a readable video"):
        load_clip(tmp_path / "cut.mp4")
    # moov first ("faststart"): it opens, and the frames stop before the stated duration
    noise = np.random.default_rng(0).integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    full = write_video(tmp_path / "fast.mp4", list(noise), fps=5, faststart=True)
    data = full.read_bytes()
    (tmp_path / "fastcut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(EercfError, match=r"fastcut\.mp4: truncated"):
        load_clip(tmp_path / "fastcut.mp4", num_frames=4)


def test_corrupt_data(tmp_path):
    raw = CLIP_9770.read_bytes()
    data = np.frombuffer(raw, np.uint8).copy()
    positions = np.arange(3000, raw.find(b"moov"), 997)  # one byte per KB of frame data
    data[positions] = np.random.default_rng(0).integers(0, 256, len(positions), dtype=np.uint8)
    (tmp_path / "corrupt.mp4").write_bytes(data.tobytes())
    with pytest.raises(EercfError, match=r"corrupt\.mp4: corrupt video data"):
        load_clip(tmp_path / "corrupt.mp4")


def test_no_decodable_frame(tmp_path):
    path = write_video(tmp_path / "ok.mp4", [gray(100)] * 5)
    data = bytearray(path.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)  # every frame's bytes zeroed
    (tmp_path / "blank.mp4").write_bytes(bytes(data))
    with pytest.raises(EercfError, match=r"blank\.mp4: no decodable video frame"):
        load_clip(tmp_path / "blank.mp4")


def test_audio_only(tmp_path):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(EercfError, match=r"speech\.m4a: no video stream \(has audio streams only\)"):
        load_clip(path)


def test_unreadable_image_in_frame_folder(tmp_path):
    folder = tmp_path / "video1"
    folder.mkdir()
    from PIL import Image

    for i in range(6):
        Image.fromarray(gray(30 * i)).save(folder / f"video1_{i:04d}.jpg")
    (folder / "video1_0003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(EercfError, match=r"video1_0003\.jpg: unreadable image"):
        load_clip(folder, num_frames=6)
    clip = load_clip(folder, num_frames=2)  # samples 1 and 4: the bad image is not read
    assert clip.timestamps == [1.0, 4.0]


def test_a_runaway_decode_is_cut_off():
    start = time.perf_counter()
    with pytest.raises(EercfError, match=r"video9771\.mp4: .*took longer than 0\.02 s"):
        load_clip(CLIP_9771, timeout=0.02)
    assert time.perf_counter() - start < 5


# ----------------------------------------------------------------------------- eercf inspect

def test_inspect_json_and_contact_sheet(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    code = main(["inspect", str(CLIP_9770), "--frames", "6", "--sheet", str(sheet),
                 "--tile", "64", "--json"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert {"duration", "fps", "codec", "width", "height", "timestamps"} <= set(info)
    assert info["codec"] == "h264" and info["fps"] == 30 and len(info["timestamps"]) == 6
    from PIL import Image

    with Image.open(sheet) as image:  # 4 columns x 2 rows of 64 px tiles with captions
        assert image.size[0] > 4 * 64 and image.size[1] > 2 * 64


def test_inspect_human_output(capsys):
    assert main(["inspect", str(FOLDER_7020), "--frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "duration  35.00 s" in out and "3 frames at 5.00, 17.00, 29.00 s" in out


def test_inspect_reports_a_bad_file_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.mp4").write_bytes(b"nope")
    assert main(["inspect", str(tmp_path / "bad.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.mp4: not a readable video" in err
