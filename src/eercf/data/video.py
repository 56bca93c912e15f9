"""Frames from videos and frame folders: decode only what sampling needs, with PyAV.

Sampling picks target times first (``sample_times``) and then the frame *displayed* at each
target (the last frame whose timestamp is <= the target). Video files are read with PyAV:
the reader seeks to the keyframe before a target whenever that skips work, drops frames that
nothing depends on while far from any target, converts only the chosen frames to RGB, and
lets swscale do the bicubic resize in the same step (so a 4K frame never exists as a
full-size RGB array). A target that lands on an already chosen frame (video
shorter than the sample interval) adds nothing: the clip gets fewer real frames and a mask,
never repeated frames.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

import av
import numpy as np

from ..errors import EercfError
from ..model.transform import CLIP_MEAN, CLIP_STD
from .clips import (IMAGE_EXTENSIONS, DecodedClip, SampledClip, center_crop, resize_frame,
                    resized_size, sample_times)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ts", ".ogv")
# Without a keyframe index, seek only when the next target is this far ahead (seconds):
# closer targets are cheaper to reach by decoding on.
NO_INDEX_SEEK_GAP = 5.0
# A stream that ends more than this (seconds, or the last frame's own duration if longer)
# before a sample target is truncated: its header promises frames that are not there.
TRUNCATION_TOLERANCE = 1.0
# Frames more than this many frame steps before the next target are decoded with
# ``skip_frame=NONREF``: frames nothing else depends on are dropped unseen (about a third of
# an H.264 stream), while every frame near a target is decoded in full.
SKIP_MARGIN_FRAMES = 6
# One swscale thread a conversion: decoding runs one process per core already, and PyAV 17+
# (whose default, 0, starts a slice-thread pool per scaler) deadlocked in forked DataLoader
# workers under 18.1.1 (a worker waited in avpriv_slicethread_execute for ever)
SCALE_OPTIONS = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


# ----------------------------------------------------------------------------- video files

def _describe(err: BaseException) -> str:
    """FFmpeg's reason without the path PyAV appends to it."""
    return str(getattr(err, "strerror", None) or err).strip()


def _open(path: Path, timeout: float):
    if not path.exists():
        raise EercfError(f"{path}: no such file")
    if not path.is_file():
        raise EercfError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise EercfError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), timeout=timeout)
    except av.ExitError:
        raise EercfError(f"{path}: opening took longer than {timeout:g} s, gave up") from None
    except av.FFmpegError as err:
        raise EercfError(f"{path}: not a readable video ({_describe(err)})") from None
    except OSError as err:
        raise EercfError(f"{path}: cannot read ({err.strerror or err})") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        raise EercfError(f"{path}: no video stream (has {', '.join(kinds)} streams only)")
    return container.streams.video[0]


def _check_complete(stream, path: Path) -> None:
    """A file shorter than its own index (an interrupted download or copy) is truncated."""
    entries = stream.index_entries
    expected = max((e.pos + e.size for e in entries if e.pos >= 0), default=0)
    size = path.stat().st_size
    if expected > size:
        raise EercfError(f"{path}: truncated (or a corrupt index): {size} bytes of the "
                         f"{expected} its index describes")


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return None


def _scan_duration(container, stream, path: Path, deadline: float, timeout: float) -> float:
    """Duration from the packets (demux only, no decoding) when the header lacks it: the last
    timestamp, or for raw streams without timestamps the sum of packet durations. The
    container is read to its end; reopen it to decode."""
    start = stream.start_time or 0
    last, total, count = None, 0, 0
    try:
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise EercfError(f"{path}: reading took longer than {timeout:g} s, gave up")
            count += packet.size > 0
            total += packet.duration or 0
            if packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                last = end if last is None else max(last, end)
    except av.FFmpegError as err:
        raise EercfError(f"{path}: corrupt video data ({_describe(err)})") from None
    if not count:
        raise EercfError(f"{path}: no decodable video frame")
    if last is not None:
        return float((last - start) * stream.time_base)
    if total:
        return float(total * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise EercfError(f"{path}: neither timestamps nor a frame rate to place frames in time")
    return float(count / rate)


def _header(path: Path, timeout: float, deadline: float):
    """Open ``path``, check it, and find its duration: (container, stream, duration)."""
    container = _open(path, timeout)
    try:
        stream = _video_stream(container, path)
        _check_complete(stream, path)
        duration = _stream_duration(container, stream)
        if duration is None:
            duration = _scan_duration(container, stream, path, deadline, timeout)
            container.close()
            container = _open(path, timeout)
            stream = container.streams.video[0]
    except BaseException:
        container.close()
        raise
    return container, stream, duration


class _FrameReader:
    """Walks one video stream forward, returning the frame displayed at each (increasing)
    target time, seeking past keyframes it does not need to decode from."""

    def __init__(self, container, stream, path: Path, deadline: float, timeout: float):
        self.container, self.stream, self.path = container, stream, path
        self.deadline, self.timeout = deadline, timeout
        self.time_base = float(stream.time_base)  # float math: Fractions cost 10% per clip
        self.start = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate
        self.frame_step = float(1 / rate) if rate else 1 / 30
        self.indexed = -1
        self._read_index()
        # Raw streams carry no timestamps: their frames are placed by their durations, so
        # every frame must come out of the decoder in order (no seeking, no skipping).
        self.timed = stream.start_time is not None
        self.clock = 0.0
        self.frames = container.decode(stream)
        self.current: tuple[float, Any] | None = None
        self.lookahead: tuple[float, Any] | None = None
        self.position: float | None = 0.0  # latest decoded frame's time; None: just seeked
        self.aim: float | None = None  # where the last seek aimed, until a frame <= target
        self.aim_early = 0.0  # how far before a target seeks aim, learnt from overshoots
        self.skip_until = 0.0  # decode only reference frames before this time
        self.skip_mode = "DEFAULT"
        self.decoded = 0

    def _read_index(self) -> None:
        """Keyframe times from the demuxer's index (Matroska adds its cues on the first seek)."""
        entries = self.stream.index_entries
        if len(entries) == self.indexed:
            return
        self.indexed = len(entries)
        self.keyframes = sorted((e.timestamp - self.start) * self.time_base
                                for e in entries if e.is_keyframe)
        self.index_end = max(((e.timestamp - self.start) * self.time_base for e in entries),
                             default=0.0)

    def _seek_helps(self, target: float) -> bool:
        if not self.timed:
            return False
        position = self.position or 0.0
        if self.keyframes and target <= self.index_end + self.frame_step:
            before = [k for k in self.keyframes if k <= target]
            return bool(before) and before[-1] > position + 1e-3
        return target - position > NO_INDEX_SEEK_GAP

    def _seek(self, target: float) -> None:
        aim = max(0.0, target - self.aim_early)
        try:
            self.container.seek(self.start + int(round(aim / self.time_base)),
                                stream=self.stream, backward=True)
        except av.FFmpegError:
            if aim <= 0:
                raise EercfError(f"{self.path}: cannot seek back to the start") from None
            self.timed = False  # unseekable: decoding on from here still reaches every target
            return
        self.frames = self.container.decode(self.stream)
        self.current = self.lookahead = None
        self.position = None  # unknown until the first frame: decode everything until then
        self.aim = aim
        self._read_index()

    def _overshot(self, target: float) -> bool:
        """After a seek, the first frame lies past the target: without a keyframe index the
        demuxer can land between keyframes, and decoding restarts at the next one."""
        return (self.current is None and self.aim is not None and self.aim > 0
                and self.lookahead[0] > target + self.frame_step)

    def _frame_time(self, frame) -> float:
        if frame.pts is not None:
            return (frame.pts - self.start) * self.time_base
        ftime = self.clock
        self.clock += frame.duration * self.time_base if frame.duration else self.frame_step
        return ftime

    def next_frame(self) -> tuple[float, Any] | None:
        if time.monotonic() > self.deadline:
            raise EercfError(f"{self.path}: decoding took longer than {self.timeout:g} s, gave up")
        skip = self.timed and self.position is not None and self.position < self.skip_until
        mode = "NONREF" if skip else "DEFAULT"
        if mode != self.skip_mode:
            self.stream.codec_context.skip_frame = self.skip_mode = mode
        try:
            frame = next(self.frames, None)
        except av.ExitError:
            raise EercfError(f"{self.path}: reading took longer than {self.timeout:g} s, "
                             "gave up") from None
        except av.FFmpegError as err:
            if not self.decoded:
                raise EercfError(f"{self.path}: no decodable video frame ({_describe(err)})") from None
            raise EercfError(f"{self.path}: corrupt video data after {self.position or 0:.2f} s "
                             f"({_describe(err)})") from None
        if frame is None:
            return None
        ftime = self._frame_time(frame)
        self.position = ftime if self.position is None else max(self.position, ftime)
        self.decoded += 1
        return ftime, frame

    def frame_at(self, target: float) -> tuple[float, Any]:
        if self._seek_helps(target):
            self._seek(target)
        self.skip_until = target - SKIP_MARGIN_FRAMES * self.frame_step
        while True:
            if self.lookahead is None:
                self.lookahead = self.next_frame()
                if self.lookahead is None:  # end of stream
                    return self._last_frame(target)
            if self.lookahead[0] > target + 1e-6:
                if self.current is not None:
                    return self.current
                if self._overshot(target):
                    self.aim_early = max(1.0, 2 * self.aim_early, target - self.aim)
                    self._seek(target)
                    continue
                return self.lookahead  # the first frame comes after the target
            self.current, self.lookahead = self.lookahead, None
            self.aim = None

    def _last_frame(self, target: float) -> tuple[float, Any]:
        if self.current is None:
            raise EercfError(f"{self.path}: no decodable video frame")
        ftime, frame = self.current
        held = float(frame.duration * self.time_base) if frame.duration else 0.0
        if target > ftime + max(TRUNCATION_TOLERANCE, held):
            raise EercfError(f"{self.path}: truncated: frames end at {ftime:.2f} s but the file "
                             f"claims to run past {target:.2f} s")
        return self.current


def _frame_pixels(frame, image_size: int, resize: str) -> np.ndarray:
    """RGB pixels of ``frame`` at the target size: swscale converts and resizes in one pass,
    then the display rotation is applied and the centre cropped."""
    rotation = round((frame.rotation or 0) / 90) % 4
    width, height = resized_size(frame.width, frame.height, image_size, resize)
    array = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BICUBIC",
                             **SCALE_OPTIONS)
    if rotation:
        array = np.rot90(array, k=rotation)
    return center_crop(array, image_size)


def _decode_video(path: Path, num_frames: int, fps: float | None, image_size: int,
                  span: tuple[float, float] | None, timeout: float, resize: str) -> DecodedClip:
    deadline = time.monotonic() + timeout
    container, stream, duration = _header(path, timeout, deadline)
    with container:
        reader = _FrameReader(container, stream, path, deadline, timeout)
        chosen: dict[float, np.ndarray] = {}
        for target in sample_times(duration, num_frames, fps, span):
            ftime, frame = reader.frame_at(target)
            if ftime not in chosen:
                chosen[ftime] = _frame_pixels(frame, image_size, resize)
    times = sorted(chosen)
    return DecodedClip(frames=np.stack([chosen[t] for t in times]),
                       timestamps=[round(t, 6) for t in times], duration=duration,
                       source=str(path))


# ----------------------------------------------------------------------------- frame folders

def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def folder_images(folder: Path) -> list[Path]:
    """The images of a frame folder in frame order (numbers in names compared as numbers)."""
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(images, key=lambda p: _natural_key(p.name))


def _read_image(path: Path, image_size: int, resize: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (image_size, image_size))  # JPEG: decode at reduced scale
            return resize_frame(image.convert("RGB"), image_size, resize)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise EercfError(f"{path}: unreadable image in frame folder ({err})") from None


def _decode_folder(folder: Path, num_frames: int, fps: float | None, image_size: int,
                   span: tuple[float, float] | None, timeout: float,
                   folder_fps: float, resize: str) -> DecodedClip:
    deadline = time.monotonic() + timeout
    images = folder_images(folder)
    if not images:
        raise EercfError(f"{folder}: frame folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
    duration = len(images) / folder_fps
    indices = sorted({min(len(images) - 1, int(math.floor(t * folder_fps + 1e-6)))
                      for t in sample_times(duration, num_frames, fps, span)})
    frames = []
    for index in indices:
        if time.monotonic() > deadline:
            raise EercfError(f"{folder}: reading frames took longer than {timeout:g} s, gave up")
        frames.append(_read_image(images[index], image_size, resize))
    return DecodedClip(frames=np.stack(frames),
                       timestamps=[round(i / folder_fps, 6) for i in indices],
                       duration=duration, source=str(folder))


# ----------------------------------------------------------------------------- public entry points

def decode_clip(path: str | Path, *, num_frames: int = 12, fps: float | None = None,
                image_size: int = 224, span: tuple[float, float] | None = None,
                timeout: float = 30.0, folder_fps: float = 1.0,
                resize: str = "crop") -> DecodedClip:
    """Sample and decode ``num_frames`` frames of a video file or frame folder as uint8 pixels.

    ``folder_fps`` is the rate a frame folder was extracted at (its images carry no times);
    ``resize`` how a frame becomes the square (``crop`` or ``squash``, see ``clips``).
    Raises ``EercfError`` naming the file on anything unreadable, and when decoding runs
    past ``timeout`` seconds."""
    path = Path(path)
    resized_size(1, 1, image_size, resize)  # a bad mode fails before any decoding
    if path.is_dir():
        if not folder_fps > 0:
            raise EercfError(f"folder_fps must be > 0, got {folder_fps}")
        return _decode_folder(path, num_frames, fps, image_size, span, timeout, folder_fps, resize)
    return _decode_video(path, num_frames, fps, image_size, span, timeout, resize)


def load_clip(path: str | Path, *, num_frames: int = 12, fps: float | None = None,
              image_size: int = 224, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD, span: tuple[float, float] | None = None,
              timeout: float = 30.0, folder_fps: float = 1.0, resize: str = "crop") -> SampledClip:
    """Model input for a video file or frame folder: ``num_frames`` frames sampled uniformly
    (``fps=None``) or at ``fps`` per second capped to ``num_frames``, normalised, padded."""
    clip = decode_clip(path, num_frames=num_frames, fps=fps, image_size=image_size, span=span,
                       timeout=timeout, folder_fps=folder_fps, resize=resize)
    return clip.to_sampled(num_frames, mean, std)


def duration_of(path: str | Path, *, timeout: float = 30.0, folder_fps: float = 1.0) -> float:
    """A video's (or frame folder's) duration in seconds, from its header (scanning the packets
    only when the header has none): what deciding to segment it needs, no frame decoded."""
    path = Path(path)
    if path.is_dir():
        images = folder_images(path)
        if not images:
            raise EercfError(f"{path}: frame folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return len(images) / folder_fps
    container, _, duration = _header(path, timeout, time.monotonic() + timeout)
    container.close()
    return duration


def probe(path: str | Path, *, timeout: float = 30.0, folder_fps: float = 1.0) -> dict[str, Any]:
    """Duration, frame rate, codec, displayed size and rotation of a video (or frame folder),
    from the header and the first decoded frame only."""
    path = Path(path)
    if path.is_dir():
        images = folder_images(path)
        if not images:
            raise EercfError(f"{path}: frame folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(images[0]) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as err:
            raise EercfError(f"{images[0]}: unreadable image in frame folder ({err})") from None
        return {"duration": len(images) / folder_fps, "fps": folder_fps, "codec": "frames",
                "width": width, "height": height, "rotation": 0, "frames": len(images)}
    deadline = time.monotonic() + timeout
    container, stream, duration = _header(path, timeout, deadline)
    with container:
        rate = stream.average_rate or stream.guessed_rate
        reader = _FrameReader(container, stream, path, deadline, timeout)
        first = reader.next_frame()
        if first is None:
            raise EercfError(f"{path}: no decodable video frame")
        frame = first[1]
        rotation = int(frame.rotation or 0)
        width, height = frame.width, frame.height
        if round(rotation / 90) % 2:
            width, height = height, width
        return {"duration": duration, "fps": float(rate) if rate else None,
                "codec": stream.codec_context.name, "width": width, "height": height,
                "rotation": rotation, "frames": stream.frames or None}
