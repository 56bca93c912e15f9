"""Shot cuts of a long video, so that its segments do not straddle them.

A model scores a segment as it was trained to score a clip: frames of one scene. A segment
that straddles a hard cut mixes two scenes (its video-level vector averages both) and loses to
segments of neither, which is what joined clips and edited footage are made of. So the video is
read once at ``SAMPLE_FPS``, as tiny thumbnails, and a cut is where consecutive thumbnails
differ far more than their neighbours do (``CUT`` and ``RATIO``, the content-change test of
shot detectors such as PySceneDetect's, in plain numpy on the frames PyAV decodes anyway). A
brief cut away and back to nearly the same picture (a flash, an insert: within ``INSERT``
seconds, the pictures before and after differing less than half as much as either cut) is no
shot change, and shots shorter than ``MIN_SHOT`` join a neighbour.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from ..errors import EercfError

SAMPLE_FPS = 4.0   # thumbnails a second
THUMB = 24         # thumbnail side (pixels)
STEP_THUMB = 8     # every frame's thumbnail, to find the frame a cut falls on
CUT = 0.05         # a cut: mean absolute difference (0-1) of consecutive thumbnails above this
RATIO = 3.0        # ... and this many times the median difference around it (the motion level)
CONTEXT = 5.0      # seconds either side of a difference that set its median
INSERT = 5.0       # seconds: away and back to the same picture within this is not a cut
MIN_SHOT = 2.0     # seconds: a shorter shot joins its neighbour


def _thumbnails(path: Path, timeout: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, thumbnails ``[n, THUMB, THUMB, 3]`` in 0-1) at about ``SAMPLE_FPS``, and every
    frame's (time, change from the frame before) ``[m, 2]``, to place each cut on its frame."""
    from .video import SCALE_OPTIONS, _FrameReader, _header

    deadline = time.monotonic() + timeout
    container, stream, _ = _header(path, timeout, deadline)
    times, thumbs, steps, due, previous = [], [], [], 0.0, None
    with container:
        try:
            stream.thread_type = "AUTO"  # decoding every frame: let the codec use the cores
        except (AttributeError, ValueError):
            pass
        reader = _FrameReader(container, stream, path, deadline, timeout)
        while (item := reader.next_frame()) is not None:
            at, frame = item
            small = _change_sample(frame)
            if previous is not None:
                steps.append((at, float(np.abs(small - previous).mean())))
            previous = small
            if at + 1e-6 < due:
                continue
            times.append(at)
            thumbs.append(frame.to_ndarray(width=THUMB, height=THUMB, format="rgb24",
                                           **SCALE_OPTIONS))
            due = at + 1.0 / SAMPLE_FPS
    if not thumbs:
        raise EercfError(f"{path}: no decodable video frame")
    return (np.asarray(times), np.stack(thumbs).astype(np.float32) / 255.0,
            np.asarray(steps, dtype=np.float64).reshape(-1, 2))


PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                         "nv12", "nv21", "gray"})  # plane 0: one byte of luma a pixel


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``STEP_THUMB`` rows and columns spread over a ``height`` x ``width`` picture."""
    return (np.linspace(0, height - 1, STEP_THUMB).astype(int)[:, None],
            np.linspace(0, width - 1, STEP_THUMB).astype(int)[None, :])


def _change_sample(frame) -> np.ndarray:
    """A small sample of ``frame`` to measure its change from the one before: the luma plane on
    a grid of ``STEP_THUMB`` x ``STEP_THUMB`` points where the frame is 8-bit YUV or grey (a
    view of the decoded plane: no conversion, which for 1080p costs twice the decoding), else
    an RGB thumbnail. Only its argmax over a few frames is used (where a cut falls), so any
    sample that changes with the picture will do."""
    from .video import SCALE_OPTIONS

    if frame.format.name in PLANAR_8BIT:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        rows, cols = _grid(frame.height, frame.width)
        return luma[rows, cols].astype(np.float32)
    return frame.to_ndarray(width=STEP_THUMB, height=STEP_THUMB, format="rgb24",
                            **SCALE_OPTIONS).astype(np.float32)


def _on_frame(cut: float, before: float, steps: np.ndarray) -> float:
    """The time of the frame in ``(before, cut]`` that changes most from the one before it."""
    inside = steps[(steps[:, 0] > before + 1e-6) & (steps[:, 0] <= cut + 1e-6)]
    return float(inside[np.argmax(inside[:, 1]), 0]) if len(inside) else cut


def find_cuts(times: np.ndarray, thumbs: np.ndarray) -> list[float]:
    """Cut times (seconds: the first sample of each new shot) from sampled thumbnails."""
    if len(thumbs) < 3:
        return []
    flat = thumbs.reshape(len(thumbs), -1)
    diffs = np.abs(np.diff(flat, axis=0)).mean(axis=1)  # between sample i and i + 1
    ends = times[1:]
    low = np.searchsorted(ends, ends - CONTEXT, side="left")
    high = np.searchsorted(ends, ends + CONTEXT, side="right")
    cuts = [i + 1 for i, d in enumerate(diffs)
            if d > CUT and d > RATIO * max(float(np.median(diffs[low[i]:high[i]])), 1e-3)]
    skip = set()
    for a, b in zip(cuts, cuts[1:]):  # away at a, back at b, to (nearly) the picture before a
        back = np.abs(flat[b] - flat[a - 1]).mean()
        if times[b] - times[a] <= INSERT and back < 0.5 * min(diffs[a - 1], diffs[b - 1]):
            skip.update((a, b))
    kept = [c for c in cuts if c not in skip]
    return [float(times[c]) for c in kept]


def shots(cuts: list[float], duration: float) -> list[tuple[float, float]]:
    """The shots between ``cuts`` over ``[0, duration]``, a shorter one than ``MIN_SHOT``
    joined to the shorter of its neighbours."""
    edges = [0.0] + [round(c, 3) for c in cuts if 0.0 < c < duration] + [round(duration, 3)]
    spans = [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
    while len(spans) > 1:
        lengths = [b - a for a, b in spans]
        i = int(np.argmin(lengths))
        if lengths[i] >= MIN_SHOT:
            break
        if i == 0 or (i < len(spans) - 1 and lengths[i + 1] < lengths[i - 1]):
            spans[i:i + 2] = [(spans[i][0], spans[i + 1][1])]
        else:
            spans[i - 1:i + 1] = [(spans[i - 1][0], spans[i][1])]
    return spans


def video_shots(path: str | Path, duration: float, *, timeout: float = 600.0
                ) -> list[tuple[float, float]]:
    """The shots of the video at ``path`` (a frame folder: one shot)."""
    path = Path(path)
    if path.is_dir():
        return [(0.0, duration)]
    times, thumbs, steps = _thumbnails(path, timeout)
    cuts = find_cuts(times, thumbs)
    at = np.searchsorted(times, cuts)  # each cut's sample: the frame is after the one before
    return shots([_on_frame(c, times[i - 1], steps) for c, i in zip(cuts, at)], duration)
