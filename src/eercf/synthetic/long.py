"""The long-video benchmark (``eercf synth OUT --design long``): clips of the synthetic world
joined into videos of 1 to 10 minutes. Each caption names what one clip shows all through it
(its moving shape and its corner square), so the truth is the clip's span in its video: video
corpus moment retrieval, as TVR's VCMR.

Layout, ActivityNet Captions' (``eercf eval --dataset activitynet --moments`` reads it)::

    videos/v_long0.mp4 ...     the long videos (10 fps)
    val_ids.json, val_1.json   {video: {duration, timestamps: [[start, end]], sentences}}
    train_ids.json, train.json empty: train on a short benchmark (``eercf synth``)
    clips/                     every clip again as a video of its own, with ``clips.json``
                               (its caption, video and span): the short-video reference
    synth.json                 every clip's attributes, video, span and caption
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..errors import EercfError
from .designs import DESIGNS
from .render import frame_count, frame_size, render
from .scenes import (CORNER_COLOURS, CORNERS, FLASH_COLOURS, SHAPE_COLOURS, SHAPES, SynthVideo,
                     caption)

FPS = 10                 # every clip of a long video shares one frame rate
KIND = "motion+corner"   # visible in every frame of its clip: what a stretch shows
MINUTES = (1.0, 10.0)


def _clips(n: int, rng: np.random.Generator, seconds: tuple[float, float]) -> list[SynthVideo]:
    """``n`` clips; their (motion, corner) pairs are distinct while the 256 last."""
    base = DESIGNS["flash"]
    pairs = list(itertools.product(SHAPE_COLOURS, SHAPES, base.directions, CORNER_COLOURS, CORNERS))
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(-(-n // len(pairs)))])
    clips = []
    for i in range(n):
        colour, shape, direction, corner_colour, corner = pairs[order[i]]
        clips.append(SynthVideo(
            video_id=f"clip{i}", split="test", group=i, colour=colour, shape=shape,
            direction=direction, flash_background=str(rng.choice(FLASH_COLOURS)),
            flash_colour=str(rng.choice(SHAPE_COLOURS)), flash_shape=str(rng.choice(SHAPES)),
            flash_direction=str(rng.choice(base.directions)), corner_colour=corner_colour,
            corner=corner, fps=FPS, seconds=float(np.round(rng.uniform(*seconds), 1)),
            background=tuple(int(c) for c in rng.integers(10, 55, size=3)),
            lane=float(rng.uniform(0.38, 0.62)), flash_lane=float(rng.uniform(0.38, 0.62)),
            flash_start=float(rng.uniform(*base.flash_window)),
            flash_fraction=base.flash_fraction))
    return clips


def _clip_frames(clip: SynthVideo, size: int, backgrounds: list[tuple[int, int, int]]):
    """``clip``'s frames, cut into ``1 + len(backgrounds)`` equal shots: after each cut the
    background takes the next colour (the shape and the corner square go on: one scene, seen
    by several cameras)."""
    n = frame_count(clip)
    for k, rgb in enumerate(render(clip, size)):
        shot = k * (len(backgrounds) + 1) // n
        if shot:
            rgb = rgb.copy()
            rgb[(rgb == clip.background).all(axis=-1)] = backgrounds[shot - 1]
        yield rgb


def _encode(frames, path: Path, width: int, height: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _other_backgrounds(clip: SynthVideo, count: int, rng: np.random.Generator
                       ) -> list[tuple[int, int, int]]:
    """Dark backgrounds as far from the clip's own as the dark range allows (a visible cut)."""
    return [tuple(int(rng.integers(45, 56)) if c < 32 else int(rng.integers(10, 21))
                  for c in clip.background) for _ in range(count)]


def make_long(out: str | Path, videos: int = 4, seed: int = 0, *, size: int = 64,
              minutes: tuple[float, float] = MINUTES, clip_seconds: tuple[float, float] = (4.0, 8.0),
              shots_per_clip: int = 1, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the long-video benchmark under ``out``: ``videos`` videos, each ``minutes`` long
    (drawn uniformly), made of clips of ``clip_seconds``, each cut into ``shots_per_clip``
    shots (the background changes, the scene goes on). A clip whose (motion, corner) pair
    another clip shares gets no caption (its caption would fit both)."""
    from tqdm import tqdm

    out = Path(out)
    if videos < 1:
        raise EercfError(f"--videos must be at least 1, got {videos}")
    if not 0 < minutes[0] <= minutes[1] or not 0 < clip_seconds[0] <= clip_seconds[1]:
        raise EercfError(f"video minutes {minutes} and clip seconds {clip_seconds} must be "
                         "positive ranges (low <= high)")
    if shots_per_clip < 1:
        raise EercfError(f"--shots-per-clip must be at least 1, got {shots_per_clip}")
    if (out / "val_1.json").exists() and not overwrite:
        raise EercfError(f"{out} already holds a benchmark (val_1.json); pass --overwrite")
    rng = np.random.default_rng(seed)
    lengths = [60.0 * float(rng.uniform(*minutes)) for _ in range(videos)]
    per_video = [max(1, int(np.ceil(length / np.mean(clip_seconds)))) for length in lengths]
    clips = _clips(sum(per_video), rng, clip_seconds)
    pairs = [(c.motion, c.corner_colour, c.corner) for c in clips]
    unique = {p for p in pairs if pairs.count(p) == 1}
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "clips" / "videos" / "all").mkdir(parents=True, exist_ok=True)
    annotations, truth, starts = {}, [], np.cumsum([0] + per_video)
    backgrounds = {c.video_id: _other_backgrounds(c, shots_per_clip - 1, rng) for c in clips}
    width, height = frame_size(clips[0], size)
    for v in tqdm(range(videos), desc="long videos", unit="video", disable=not progress):
        video_id, members = f"v_long{v}", clips[starts[v]:starts[v + 1]]
        ends = np.cumsum([frame_count(c) for c in members]) / FPS
        spans = [(float(a), float(b)) for a, b in zip(np.concatenate([[0.0], ends[:-1]]), ends)]
        _encode((rgb for c in members for rgb in _clip_frames(c, size, backgrounds[c.video_id])),
                out / "videos" / f"{video_id}.mp4", width, height)
        entry = {"duration": spans[-1][1], "timestamps": [], "sentences": []}
        for clip, span in zip(members, spans):
            _encode(_clip_frames(clip, size, backgrounds[clip.video_id]),
                    out / "clips" / "videos" / "all" / f"{clip.video_id}.mp4", width, height)
            text = None
            if (clip.motion, clip.corner_colour, clip.corner) in unique:
                text = caption(clip, KIND, rng)
                entry["timestamps"].append(list(span))
                entry["sentences"].append(text)
            truth.append({**asdict(replace(clip)), "video": video_id, "span": list(span),
                          "caption": text})
        annotations[video_id] = entry
    (out / "val_ids.json").write_text(json.dumps(list(annotations)) + "\n")
    (out / "val_1.json").write_text(json.dumps(annotations, indent=1) + "\n")
    (out / "train_ids.json").write_text("[]\n")
    (out / "train.json").write_text("{}\n")
    (out / "synth.json").write_text(json.dumps(truth, indent=1) + "\n")
    (out / "clips" / "clips.json").write_text(json.dumps(
        [{"clip": t["video_id"], "caption": t["caption"], "video": t["video"], "span": t["span"]}
         for t in truth], indent=1) + "\n")
    captions = sum(t["caption"] is not None for t in truth)
    return {"out": str(out), "design": "long", "size": size, "videos": videos,
            "clips": len(clips), "hours": round(sum(a["duration"] for a in annotations.values())
                                                / 3600, 3),
            "shots_per_clip": shots_per_clip,
            "captions": {f"test:{KIND}": captions}, "train": 0, "test": videos,
            "groups": len(clips)}
