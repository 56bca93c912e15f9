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
# A moving shape leaves a fading trail (distance behind it in radii, opacity), like motion
# blur: each frame shows which way it goes, as in real footage of something moving.
TRAIL = ((3.3, 0.2), (2.2, 0.4), (1.1, 0.65))
_HEADING = {"right": 1, "left": -1}


def frame_count(v: SynthVideo) -> int:
    return max(1, round(v.seconds * v.fps))


def in_flash(v: SynthVideo, progress: float) -> bool:
    """Whether the flash shows at ``progress`` (a fraction of the duration)."""
    return v.flash_start <= progress < v.flash_start + v.flash_fraction


def _draw_mover(draw, size: int, progress: float, shape: str, colour: str, direction: str,
                lane: float, background: tuple[int, int, int]) -> None:
    """A shape crossing the frame along ``lane`` (a height), with its trail."""
    lo, hi = 0.22 * size, 0.78 * size
    heading = _HEADING[direction]
    x = lo + (hi - lo) * (progress if heading > 0 else 1 - progress)
    y = lane * size
    radius = SHAPE_RADIUS * size
    for behind, opacity in TRAIL:
        ghost = tuple(round(b + opacity * (c - b)) for c, b in zip(COLOURS[colour], background))
        _draw(draw, shape, x - heading * behind * radius, y, radius, ghost)
    _draw(draw, shape, x, y, radius, COLOURS[colour])


def render(v: SynthVideo, size: int):
    """The RGB frames (``uint8 [size, size, 3]``) of ``v``, one per 1/fps second."""
    from PIL import Image, ImageDraw

    n = frame_count(v)
    c0 = CORNER_MARGIN * size
    c1 = size - c0 - CORNER_SIZE * size
    corner_x = c0 if "left" in v.corner else c1
    corner_y = c0 if "top" in v.corner else c1
    flash_background = COLOURS[v.flash_background]
    for k in range(n):
        progress = (k + 0.5) / n
        if in_flash(v, progress):
            image = Image.new("RGB", (size, size), flash_background)
            _draw_mover(ImageDraw.Draw(image), size, progress, v.flash_shape, v.flash_colour,
                   v.flash_direction, v.flash_lane, flash_background)
        else:
            image = Image.new("RGB", (size, size), v.background)
            _draw_mover(ImageDraw.Draw(image), size, progress, v.shape, v.colour, v.direction,
                   v.lane, v.background)
        ImageDraw.Draw(image).rectangle(
            [corner_x, corner_y, corner_x + CORNER_SIZE * size - 1,
             corner_y + CORNER_SIZE * size - 1], fill=COLOURS[v.corner_colour])
        yield np.asarray(image)


def write_video(v: SynthVideo, path: Path, size: int) -> None:
    """Encode ``v`` as H.264 (yuv420p) mp4, the same bytes for the same video every time (one
    encoder thread, no macroblock tree)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=v.fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        # x264's macroblock tree made the same frames encode differently from run to run (seen
        # with one thread, more often under load); without it the bytes depend on the frames only
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for rgb in render(v, size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
