"""Drawing a planned synthetic video: the moving shape with its trail, the flash, the corner
square, frame by frame, and writing it as H.264 (PyAV)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .scenes import COLOURS, SynthVideo


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a))
                for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    if kind == "star":
        return [(cx + (r if i % 2 == 0 else 0.5 * r) * math.cos(math.pi / 2 + i * math.pi / 5),
                 cy - (r if i % 2 == 0 else 0.5 * r) * math.sin(math.pi / 2 + i * math.pi / 5))
                for i in range(10)]
    raise ValueError(kind)


def _draw(draw, kind: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r), fill=colour)


SHAPE_RADIUS, CORNER_SIZE, CORNER_MARGIN = 0.19, 0.19, 0.03
# the overlay design: a smaller main shape, and the brief one a third of its size
OVERLAY_MAIN_RADIUS, OVERLAY_SMALL_RADIUS, OVERLAY_OFFSET = 0.15, 0.08, 0.22
# A moving shape leaves a fading trail (distance behind it in radii, opacity), like motion
# blur: each frame shows which way it goes, as in real footage of something moving.
TRAIL = ((3.3, 0.2), (2.2, 0.4), (1.1, 0.65))
_HEADING = {"right": 1, "left": -1}


def frame_count(v: SynthVideo) -> int:
    return max(1, round(v.seconds * v.fps))


def in_flash(v: SynthVideo, progress: float) -> bool:
    """Whether the flash shows at ``progress`` (a fraction of the duration)."""
    return v.flash_start <= progress < v.flash_start + v.flash_fraction


def _draw_mover(draw, width: int, height: int, progress: float, shape: str, colour: str,
                direction: str, lane: float, background: tuple[int, int, int],
                radius: float) -> None:
    """A shape crossing the frame (left/right along the height ``lane``, up/down along the
    width ``lane``) with its trail, or standing still at ``lane`` across."""
    if direction == "still":
        _draw(draw, shape, lane * width, 0.5 * height, radius, COLOURS[colour])
        return
    horizontal = direction in _HEADING
    heading = _HEADING[direction] if horizontal else (1 if direction == "down" else -1)
    extent = width if horizontal else height
    lo, hi = 0.22 * extent, 0.78 * extent
    along = lo + (hi - lo) * (progress if heading > 0 else 1 - progress)
    across = lane * (height if horizontal else width)

    def at(offset: float) -> tuple[float, float]:
        return (along + offset, across) if horizontal else (across, along + offset)

    for behind, opacity in TRAIL:
        ghost = tuple(round(b + opacity * (c - b)) for c, b in zip(COLOURS[colour], background))
        _draw(draw, shape, *at(-heading * behind * radius), radius, ghost)
    _draw(draw, shape, *at(0.0), radius, COLOURS[colour])


def frame_size(v: SynthVideo, size: int) -> tuple[int, int]:
    """(width, height) of ``v``'s frames at height ``size`` (even, as H.264 wants)."""
    return 2 * round(size * v.aspect / 2), size


def render(v: SynthVideo, size: int):
    """The RGB frames (``uint8 [size, width, 3]``) of ``v``, one per 1/fps second."""
    from PIL import Image, ImageDraw

    n = frame_count(v)
    width, height = frame_size(v, size)
    side = v.corner_size * height
    margin = CORNER_MARGIN * height
    corner_x = margin if "left" in v.corner else width - margin - side
    corner_y = margin if "top" in v.corner else height - margin - side
    radius = (OVERLAY_MAIN_RADIUS if v.overlay else SHAPE_RADIUS) * height
    flash_background = None if v.overlay else COLOURS[v.flash_background]
    # the overlay's small shape crosses the half of the frame the main shape's lane is not in
    small_lane = v.flash_lane + (-OVERLAY_OFFSET if v.lane >= 0.5 else OVERLAY_OFFSET)
    for k in range(n):
        progress = (k + 0.5) / n
        flash = in_flash(v, progress)
        if flash and not v.overlay:
            image = Image.new("RGB", (width, height), flash_background)
            _draw_mover(ImageDraw.Draw(image), width, height, progress, v.flash_shape,
                        v.flash_colour, v.flash_direction, v.flash_lane, flash_background, radius)
        else:
            image = Image.new("RGB", (width, height), v.background)
            _draw_mover(ImageDraw.Draw(image), width, height, progress, v.shape, v.colour,
                        v.direction, v.lane, v.background, radius)
            if flash:
                _draw_mover(ImageDraw.Draw(image), width, height,
                            (progress - v.flash_start) / v.flash_fraction, v.flash_shape,
                            v.flash_colour, v.flash_direction, small_lane, v.background,
                            OVERLAY_SMALL_RADIUS * height)
        ImageDraw.Draw(image).rectangle(
            [corner_x, corner_y, corner_x + side - 1, corner_y + side - 1],
            fill=COLOURS[v.corner_colour])
        yield np.asarray(image)


def write_video(v: SynthVideo, path: Path, size: int) -> None:
    """Encode ``v`` as H.264 (yuv420p) mp4, the same bytes for the same video every time (one
    encoder thread, no macroblock tree)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=v.fps)
        stream.width, stream.height = frame_size(v, size)
        stream.pix_fmt = "yuv420p"
        # x264's macroblock tree made the same frames encode differently from run to run (seen
        # with one thread, more often under load); without it the bytes depend on the frames only
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for rgb in render(v, size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
