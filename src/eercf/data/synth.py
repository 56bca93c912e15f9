"""A synthetic text-video benchmark in MSR-VTT layout, built so that every level of EERCF matters.

Each video shows a large shape moving across a dark background, with a fading trail behind it
(the *motion*, in every frame), a second shape that flashes for 1/8 of the clip (the *flash*,
in one or two of 12 uniformly sampled frames) and a small square in one corner (the *corner*
object, inside one patch of the ``tiny`` model's 4x4 grid). The three take three different
colours of one palette. Videos come in groups that share the motion and differ in one flash or
corner attribute (hard negatives). Training videos carry captions of every kind (motion, flash,
corner and their combinations, worded from templates with synonyms); each test video has one
caption naming its motion and the detail that tells it apart from every other test video. The
video-level vector averages frames, so it recalls the right group, but a colour it holds may be
the flash, the corner or the moving shape; one frame and one patch tell them apart, which is
the work of the frame and patch levels in stage 2.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import EercfError

# One palette for every object, three different colours in each video: a colour in the
# averaged video vector does not say whether it was the big moving shape, the brief flash or
# the small square; a single frame (flash) or a single patch (corner) does.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "green": (40, 200, 60), "blue": (50, 90, 235),
    "yellow": (245, 220, 30), "white": (240, 240, 240), "purple": (165, 55, 215),
}
MAIN_SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
FLASH_SHAPES = ("star", "cross", "diamond")
CORNERS = ("top left", "top right", "bottom left", "bottom right")

SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball", "round shape"),
    "square": ("square", "box", "block", "square shape"),
    "triangle": ("triangle", "triangle", "triangular shape", "wedge"),
    "star": ("star", "star", "star shape", "five-pointed star"),
    "cross": ("cross", "plus sign", "cross shape", "cross"),
    "diamond": ("diamond", "rhombus", "diamond shape", "diamond"),
}
# Each phrase names its direction once (never "from right to left"): the wording varies, the
# meaning is one word away.
DIRECTION_WORDS = {
    "left": ("moves left", "slides to the left", "travels leftward", "heads left",
             "drifts to the left"),
    "right": ("moves right", "slides to the right", "travels rightward", "heads right",
              "drifts to the right"),
    "up": ("moves up", "slides upward", "travels up", "heads up", "drifts upward"),
    "down": ("moves down", "slides downward", "travels down", "heads down", "drifts downward"),
}
CORNER_WORDS = {
    "top left": ("top left", "upper left", "top-left"),
    "top right": ("top right", "upper right", "top-right"),
    "bottom left": ("bottom left", "lower left", "bottom-left"),
    "bottom right": ("bottom right", "lower right", "bottom-right"),
}
MOTION_TEMPLATES = ("a {colour} {shape} {moves}", "the {colour} {shape} {moves}",
                    "{a_colour} {shape} {moves} across the screen",
                    "a video where a {colour} {shape} {moves}")
FLASH_TEMPLATES = ("a {colour} {shape} flashes", "a {colour} {shape} appears briefly",
                   "for a moment a {colour} {shape} shows up", "a {colour} {shape} blinks once",
                   "a {colour} {shape} pops up for an instant")
CORNER_OBJECTS = ("a small {colour} square in the {corner} corner",
                  "a tiny {colour} square at the {corner} corner",
                  "a little {colour} box in the {corner} corner",
                  "a small {colour} patch in the {corner} corner")
CORNER_TEMPLATES = ("{object}", "there is {object}", "{object} stays still",
                    "{object} does not move")
JOINERS = (" while ", " and ", ", and ", " as ")
CORNER_JOINERS = (" with ", ", and there is ", "; there is also ", " next to ")

# Training captions cycle through this list (from a random start): details (flash, corner)
# come up in most of them, since they are what is hard to learn from a few hundred steps.
TRAIN_KINDS = ("flash", "corner", "motion+flash", "motion+corner", "flash", "corner", "motion",
               "motion+flash+corner")
CAPTION_KINDS = ("motion", "flash", "corner", "motion+flash", "motion+corner",
                 "motion+flash+corner")


@dataclass(frozen=True)
class SynthVideo:
    """Everything needed to render one synthetic video and to caption it (its ground truth)."""

    video_id: str
    split: str
    group: int
    colour: str
    shape: str
    direction: str
    flash_colour: str
    flash_shape: str
    corner_colour: str
    corner: str
    fps: int
    seconds: float
    background: tuple[int, int, int]
    lane: float          # position across the motion, as a fraction of the frame
    flash_start: float   # fraction of the duration when the flash appears
    flash_xy: tuple[float, float]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _motion_phrase(v: SynthVideo, rng: np.random.Generator) -> str:
    colour, shape = v.colour, _pick(rng, SHAPE_WORDS[v.shape])
    return _pick(rng, MOTION_TEMPLATES).format(
        colour=colour, shape=shape, moves=_pick(rng, DIRECTION_WORDS[v.direction]),
        a_colour=_article(colour))


def _flash_phrase(v: SynthVideo, rng: np.random.Generator) -> str:
    return _pick(rng, FLASH_TEMPLATES).format(
        colour=v.flash_colour, shape=_pick(rng, SHAPE_WORDS[v.flash_shape]))


def _corner_object(v: SynthVideo, rng: np.random.Generator) -> str:
    return _pick(rng, CORNER_OBJECTS).format(
        colour=v.corner_colour, corner=_pick(rng, CORNER_WORDS[v.corner]))


def caption(v: SynthVideo, kind: str, rng: np.random.Generator) -> str:
    """One caption of ``kind`` (see ``CAPTION_KINDS``) for ``v``, worded at random."""
    parts = kind.split("+")
    text = ""
    if "motion" in parts:
        text = _motion_phrase(v, rng)
    if "flash" in parts:
        flash = _flash_phrase(v, rng)
        text = text + _pick(rng, JOINERS) + flash if text else flash
    if "corner" in parts:
        corner = _corner_object(v, rng)
        text = (text + _pick(rng, CORNER_JOINERS) + corner if text
                else _pick(rng, CORNER_TEMPLATES).format(object=corner))
    return text


def _facets(v: SynthVideo, kind: str) -> tuple:
    """The attributes a caption of ``kind`` states; two videos it fits equally share them."""
    out: tuple = ()
    if "motion" in kind:
        out += (v.colour, v.shape, v.direction)
    if "flash" in kind:
        out += (v.flash_colour, v.flash_shape)
    if "corner" in kind:
        out += (v.corner_colour, v.corner)
    return out


_DETAIL_CHOICES = {"flash_colour": tuple(COLOURS), "flash_shape": FLASH_SHAPES,
                   "corner_colour": tuple(COLOURS), "corner": CORNERS}
# How often a hard negative changes each attribute: mostly a colour.
_CHANGE_WEIGHTS = {"flash_colour": 0.35, "flash_shape": 0.15, "corner_colour": 0.35,
                   "corner": 0.15}


def _distinct_colours(motion: dict[str, str], details: dict[str, str]) -> bool:
    return len({motion["colour"], details["flash_colour"], details["corner_colour"]}) == 3


def _details(rng: np.random.Generator, motion: dict[str, str]) -> dict[str, str]:
    while True:
        details = {name: _pick(rng, choices) for name, choices in _DETAIL_CHOICES.items()}
        if _distinct_colours(motion, details):
            return details


def _group_details(rng: np.random.Generator, size: int, motion: dict[str, str],
                   taken: set[tuple]) -> list[dict[str, str]]:
    """A base detail set, then members that each change one attribute of it (hard negatives);
    no two videos of the benchmark get the same attributes (``taken`` holds those used)."""
    key = tuple(motion.values())
    base = _details(rng, motion)
    while key + tuple(base.values()) in taken:
        base = _details(rng, motion)
    members = [base]
    taken.add(key + tuple(base.values()))
    attrs = tuple(_CHANGE_WEIGHTS)
    weights = np.array([_CHANGE_WEIGHTS[a] for a in attrs])
    for _ in range(50 * size):
        if len(members) == size:
            break
        attr = attrs[int(rng.choice(len(attrs), p=weights))]
        member = dict(base, **{attr: _pick(rng, _DETAIL_CHOICES[attr])})
        if _distinct_colours(motion, member) and key + tuple(member.values()) not in taken:
            members.append(member)
            taken.add(key + tuple(member.values()))
    return members


def plan(videos: int, seed: int, test_fraction: float = 0.2) -> list[SynthVideo]:
    """The attributes of every video: deterministic for ``seed``, independent of rendering."""
    if videos < 2:
        raise EercfError(f"--videos must be at least 2, got {videos}")
    if not 0.0 < test_fraction < 1.0:
        raise EercfError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    specs: list[dict] = []
    taken: set[tuple] = set()
    group = 0
    while len(specs) < videos:
        motion = {"colour": _pick(rng, tuple(COLOURS)), "shape": _pick(rng, MAIN_SHAPES),
                  "direction": _pick(rng, DIRECTIONS)}
        size = min(int(rng.integers(3, 7)), videos - len(specs))
        for details in _group_details(rng, size, motion, taken):
            specs.append({"group": group, **motion, **details})
        group += 1
    n_test = max(1, round(videos * test_fraction))
    test_groups: set[int] = set()
    for g in rng.permutation(group):
        if sum(s["group"] in test_groups for s in specs) >= n_test:
            break
        test_groups.add(int(g))
    order = rng.permutation(len(specs))
    out = []
    for index, spec_index in enumerate(order):
        spec = specs[spec_index]
        background = tuple(int(c) for c in rng.integers(10, 55, size=3))
        out.append(SynthVideo(
            video_id=f"video{index}", split="test" if spec["group"] in test_groups else "train",
            fps=int(rng.integers(8, 13)), seconds=float(np.round(rng.uniform(4.0, 8.0), 2)),
            background=background, lane=float(rng.uniform(0.38, 0.62)),
            flash_start=float(rng.uniform(0.1, 0.9 - FLASH_FRACTION)),
            flash_xy=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))), **spec))
    return out


# The flash lasts 1.5 sampling intervals of 12 uniform frames: always in one or two of them.
FLASH_FRACTION = 1.5 / 12


def _test_kind(v: SynthVideo, others: list[SynthVideo], rng: np.random.Generator) -> str:
    """The shortest caption kind naming ``v``'s motion that fits no other test video."""
    def unique(kind: str) -> bool:
        mine = _facets(v, kind)
        return all(_facets(o, kind) != mine for o in others if o is not v)

    short = [k for k in ("motion+flash", "motion+corner") if unique(k)]
    if short:
        return _pick(rng, tuple(short))
    if unique("motion+flash+corner"):
        return "motion+flash+corner"
    raise EercfError(f"synthetic test video {v.video_id} is indistinguishable from another")


def annotate(videos: list[SynthVideo], seed: int, captions_per_video: int = 8
             ) -> dict[str, list[tuple[str, str]]]:
    """Captions per video id as ``(kind, text)``: training videos cycle through
    ``TRAIN_KINDS`` from a random start; each test video gets one distinguishing caption."""
    rng = np.random.default_rng([seed, 1])
    test = [v for v in videos if v.split == "test"]
    out: dict[str, list[tuple[str, str]]] = {}
    for v in videos:
        if v.split == "test":
            kind = _test_kind(v, test, rng)
            out[v.video_id] = [(kind, caption(v, kind, rng))]
        else:
            first = int(rng.integers(len(TRAIN_KINDS)))
            kinds = [TRAIN_KINDS[(first + i) % len(TRAIN_KINDS)]
                     for i in range(captions_per_video)]
            out[v.video_id] = [(k, caption(v, k, rng)) for k in kinds]
    return out


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a))
                for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
    if kind == "star":
        return [(cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(math.pi / 2 + i * math.pi / 5),
                 cy - (r if i % 2 == 0 else 0.45 * r) * math.sin(math.pi / 2 + i * math.pi / 5))
                for i in range(10)]
    if kind == "cross":
        w = 0.35 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(kind)


def _draw(draw, kind: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r), fill=colour)


MAIN_RADIUS, FLASH_RADIUS, CORNER_SIZE, CORNER_MARGIN = 0.15, 0.16, 0.19, 0.03
# The moving shape leaves a fading trail (distance behind it in radii, opacity), like motion
# blur: each frame shows which way it goes, as in real footage of something moving.
TRAIL = ((1.5, 0.15), (1.0, 0.3), (0.5, 0.55))
_HEADING = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def frame_count(v: SynthVideo) -> int:
    return max(1, round(v.seconds * v.fps))


def render(v: SynthVideo, size: int):
    """The RGB frames (``uint8 [size, size, 3]``) of ``v``, one per 1/fps second."""
    from PIL import Image, ImageDraw

    n = frame_count(v)
    lo, hi = 0.22 * size, 0.78 * size
    lane = v.lane * size
    c0 = CORNER_MARGIN * size
    c1 = size - c0 - CORNER_SIZE * size
    corner_x = c0 if "left" in v.corner else c1
    corner_y = c0 if "top" in v.corner else c1
    for k in range(n):
        progress = (k + 0.5) / n
        travel = lo + (hi - lo) * progress
        x, y = {"right": (travel, lane), "left": (lo + hi - travel, lane),
                "down": (lane, travel), "up": (lane, lo + hi - travel)}[v.direction]
        image = Image.new("RGB", (size, size), v.background)
        draw = ImageDraw.Draw(image)
        radius = MAIN_RADIUS * size
        dx, dy = _HEADING[v.direction]
        for behind, opacity in TRAIL:
            ghost = tuple(round(b + opacity * (c - b)) for c, b in zip(COLOURS[v.colour], v.background))
            _draw(draw, v.shape, x - dx * behind * radius, y - dy * behind * radius, radius, ghost)
        _draw(draw, v.shape, x, y, radius, COLOURS[v.colour])
        if v.flash_start <= progress < v.flash_start + FLASH_FRACTION:
            _draw(draw, v.flash_shape, v.flash_xy[0] * size, v.flash_xy[1] * size,
                  FLASH_RADIUS * size, COLOURS[v.flash_colour])
        draw.rectangle([corner_x, corner_y, corner_x + CORNER_SIZE * size - 1,
                        corner_y + CORNER_SIZE * size - 1], fill=COLOURS[v.corner_colour])
        yield np.asarray(image)


def write_video(v: SynthVideo, path: Path, size: int) -> None:
    """Encode ``v`` as H.264 (yuv420p) mp4; one encoder thread keeps the output deterministic."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=v.fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        stream.codec_context.thread_count = 1
        for rgb in render(v, size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def write_annotations(out: Path, videos: list[SynthVideo],
                      captions: dict[str, list[tuple[str, str]]]) -> None:
    """The three MSR-VTT annotation files, plus ``synth.json`` (every video's ground truth and
    each caption's kind, for analyses per kind)."""
    train = [v for v in videos if v.split == "train"]
    test = [v for v in videos if v.split == "test"]
    with open(out / "MSRVTT_train.9k.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id"])
        writer.writerows([v.video_id] for v in train)
    with open(out / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, v in enumerate(test):
            writer.writerow([f"ret{i}", f"msr{v.video_id[len('video'):]}", v.video_id,
                             captions[v.video_id][0][1]])
    sentences = []
    for v in videos:
        for _, text in captions[v.video_id]:
            sentences.append({"caption": text, "video_id": v.video_id, "sen_id": len(sentences)})
    data = {"info": {"description": "eercf synthetic benchmark"},
            "videos": [{"video_id": v.video_id, "split": v.split, "id": i,
                        "start time": 0.0, "end time": v.seconds}
                       for i, v in enumerate(videos)],
            "sentences": sentences}
    (out / "MSRVTT_data.json").write_text(json.dumps(data, indent=1) + "\n")
    meta = [dict(asdict(v), captions=[{"kind": k, "caption": c} for k, c in captions[v.video_id]])
            for v in videos]
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")


def make_synthetic(out: str | Path, videos: int = 1000, seed: int = 0, *, size: int = 64,
                   test_fraction: float = 0.2, captions_per_video: int = 8,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """Write a synthetic benchmark in MSR-VTT layout under ``out`` and return a summary
    (counts per split and per caption kind)."""
    from tqdm import tqdm

    out = Path(out)
    if size < 32 or size % 2:
        raise EercfError(f"--size must be an even number of pixels >= 32, got {size}")
    if captions_per_video < 1:
        raise EercfError(f"--captions must be at least 1, got {captions_per_video}")
    if (out / "MSRVTT_data.json").exists() and not overwrite:
        raise EercfError(f"{out} already holds a benchmark (MSRVTT_data.json); "
                         "pass --overwrite to replace it")
    specs = plan(videos, seed, test_fraction)
    captions = annotate(specs, seed, captions_per_video)
    folder = out / "videos" / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for v in tqdm(specs, desc="synth videos", unit="video", disable=not progress):
        write_video(v, folder / f"{v.video_id}.mp4", size)
    write_annotations(out, specs, captions)
    kinds: dict[str, int] = {}
    for v in specs:
        for kind, _ in captions[v.video_id]:
            key = f"{v.split}:{kind}"
            kinds[key] = kinds.get(key, 0) + 1
    return {"out": str(out), "videos": len(specs),
            "train": sum(v.split == "train" for v in specs),
            "test": sum(v.split == "test" for v in specs),
            "groups": len({v.group for v in specs}), "captions": dict(sorted(kinds.items()))}


def contact_sheet(root: str | Path, png: str | Path, rows: int = 4, num_frames: int = 12,
                  scale: int = 2) -> Path:
    """Draw ``rows`` test videos of the benchmark in ``root`` (its ``num_frames`` uniformly
    sampled frames, as training sees them, with times) and their captions into ``png``."""
    from PIL import Image, ImageDraw, ImageFont

    from .video import decode_clip

    root, png = Path(root), Path(png)
    try:
        meta = json.loads((root / "synth.json").read_text())
    except (OSError, ValueError) as err:
        raise EercfError(f"{root / 'synth.json'}: not a synthetic benchmark ({err})") from None
    test = [m for m in meta if m["split"] == "test"]
    # one row per test caption kind first, so the sheet shows each kind
    picked: list[dict] = []
    for kind in ("motion+flash", "motion+corner", "motion+flash+corner"):
        picked += [m for m in test if m["captions"][0]["kind"] == kind][:1]
    picked += [m for m in test if m not in picked][: max(0, rows - len(picked))]
    picked = picked[:rows]
    clips = [decode_clip(root / "videos" / "all" / f"{m['video_id']}.mp4", num_frames=num_frames,
                         image_size=64 * scale) for m in picked]
    tile = max(c.frames.shape[2] for c in clips)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=10)
    row_h, pad = tile + 34, 4
    sheet = Image.new("RGB", (num_frames * (tile + pad) + pad, len(clips) * row_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (m, clip) in enumerate(zip(picked, clips)):
        top = r * row_h + pad
        text = f"{m['video_id']} [{m['captions'][0]['kind']}]: {m['captions'][0]['caption']}"
        draw.text((pad, top), text, fill="black", font=font)
        for i, (pixels, t) in enumerate(zip(clip.frames, clip.timestamps)):
            x = pad + i * (tile + pad)
            sheet.paste(Image.fromarray(pixels), (x, top + 18))
            draw.text((x + 2, top + 20), f"{t:.1f}s", fill="white", font=small)
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(png)
    return png
