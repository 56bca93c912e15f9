"""A synthetic text-video benchmark in MSR-VTT layout, built so that every level of EERCF matters.

Each video shows a large shape moving across a dark background, with a fading trail behind it
(the *motion*, in every frame); two brief *flashes*, one early and one late, in which the
screen splits into two halves of different colours for 1/8 of the clip (one or two of 12
uniformly sampled frames); and a small square in one corner (inside one patch of the ``tiny``
model's 4x4 grid). Videos of a group flash the same four colours: only which two flash
*together* tells them apart. The video-level vector averages the frames, which mixes the two
moments, so it cannot see the pairing from colour alone; a single frame can. Videos come in
groups that share the motion and differ in the pairing or the corner square (hard negatives).
Training videos carry captions of every kind (motion, flash, corner and their combinations,
worded from templates with synonyms); each test video has one caption naming its motion and
the detail that tells it apart from every other test video: stage 1 recalls the right group,
stage 2 must pick the right member.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import EercfError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "blue": (50, 90, 235), "white": (240, 240, 240),
    "yellow": (245, 220, 30), "green": (40, 200, 60), "cyan": (0, 210, 230),
    "pink": (245, 110, 190), "orange": (255, 140, 0), "purple": (150, 60, 220),
    "grey": (140, 140, 140),
}
# Each object has its own palette, so a colour word says which object it is about.
MAIN_COLOURS = ("red", "blue", "white")
FLASH_COLOURS = ("yellow", "green", "cyan", "pink", "orange")  # four of them in each video
CORNER_COLOURS = ("purple", "grey")


def _pairings() -> tuple[tuple[tuple[str, str], tuple[str, str]], ...]:
    """Every way to flash four of the flash colours as two pairs (5 choices x 3 pairings)."""
    out = []
    for missing in FLASH_COLOURS:
        a, b, c, d = (colour for colour in FLASH_COLOURS if colour != missing)
        out += [((a, b), (c, d)), ((a, c), (b, d)), ((a, d), (b, c))]
    return tuple(out)


PAIRINGS = _pairings()
MAIN_SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right")
CORNERS = ("top left", "top right", "bottom left", "bottom right")

SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball", "round shape"),
    "square": ("square", "box", "block", "square shape"),
    "triangle": ("triangle", "triangle", "triangular shape", "wedge"),
}
# Each phrase names its direction once (never "from right to left").
DIRECTION_WORDS = {
    "left": ("moves left", "slides to the left", "travels leftward", "heads left"),
    "right": ("moves right", "slides to the right", "travels rightward", "heads right"),
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
FLASH_TEMPLATES = ("the screen flashes {a} and {b}",
                   "for a moment the screen turns {a} and {b}",
                   "{an_a} and {b} flash fills the screen",
                   "the screen splits into {a} and {b} for an instant",
                   "{a} and {b} flash together")
CORNER_OBJECTS = ("a small {colour} square in the {corner} corner",
                  "a tiny {colour} square at the {corner} corner",
                  "a little {colour} box in the {corner} corner",
                  "a small {colour} patch in the {corner} corner")
CORNER_TEMPLATES = ("{object}", "there is {object}", "{object} stays still",
                    "{object} does not move")
JOINERS = (" while ", " and ", ", and ", " as ")
CORNER_JOINERS = (" with ", ", and there is ", "; there is also ", " next to ")

# Training captions cycle through this list (from a random start): the flashes, hardest to
# learn, come up most.
TRAIN_KINDS = ("flash", "motion+flash", "corner", "motion+corner", "flash", "motion+flash",
               "motion", "motion+flash+corner")
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
    pairing: int         # index into PAIRINGS
    corner_colour: str
    corner: str
    fps: int
    seconds: float
    background: tuple[int, int, int]
    lane: float          # position across the motion, as a fraction of the frame
    flash_order: int     # which pair of the pairing flashes first (0 or 1)
    flash_starts: tuple[float, float]  # fractions of the duration, early then late

    @property
    def flashes(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """The colour pairs in the order they flash."""
        pairs = PAIRINGS[self.pairing]
        return (pairs[self.flash_order], pairs[1 - self.flash_order])


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _motion_phrase(v: SynthVideo, rng: np.random.Generator) -> str:
    colour, shape = v.colour, _pick(rng, SHAPE_WORDS[v.shape])
    return _pick(rng, MOTION_TEMPLATES).format(
        colour=colour, shape=shape, moves=_pick(rng, DIRECTION_WORDS[v.direction]),
        a_colour=_article(colour))


def _flash_phrase(pair: tuple[str, str], rng: np.random.Generator) -> str:
    a, b = pair if rng.integers(2) else pair[::-1]
    return _pick(rng, FLASH_TEMPLATES).format(a=a, b=b, an_a=_article(a))


def _corner_object(v: SynthVideo, rng: np.random.Generator) -> str:
    return _pick(rng, CORNER_OBJECTS).format(
        colour=v.corner_colour, corner=_pick(rng, CORNER_WORDS[v.corner]))


def caption(v: SynthVideo, kind: str, rng: np.random.Generator,
            pair: tuple[str, str] | None = None) -> str:
    """One caption of ``kind`` (see ``CAPTION_KINDS``) for ``v``, worded at random; a flash
    caption names ``pair`` (one of the two pairs that flashed together; default: either)."""
    parts = kind.split("+")
    text = ""
    if "motion" in parts:
        text = _motion_phrase(v, rng)
    if "flash" in parts:
        flash = _flash_phrase(pair or _pick(rng, v.flashes), rng)
        text = text + _pick(rng, JOINERS) + flash if text else flash
    if "corner" in parts:
        corner = _corner_object(v, rng)
        text = (text + _pick(rng, CORNER_JOINERS) + corner if text
                else _pick(rng, CORNER_TEMPLATES).format(object=corner))
    return text


def _motion(v: SynthVideo) -> tuple[str, str, str]:
    return v.colour, v.shape, v.direction


def fits(other: SynthVideo, v: SynthVideo, kind: str, pair: tuple[str, str] | None = None) -> bool:
    """Whether a caption of ``kind`` about ``v`` (naming ``pair`` if a flash one) is true of
    ``other``: same motion, the named pair flashing together, the same corner square."""
    if "motion" in kind and _motion(other) != _motion(v):
        return False
    if "flash" in kind and frozenset(pair) not in {frozenset(p) for p in other.flashes}:
        return False
    if "corner" in kind and (other.corner_colour, other.corner) != (v.corner_colour, v.corner):
        return False
    return True


_DETAIL_CHOICES = {"pairing": tuple(range(len(PAIRINGS))), "corner_colour": CORNER_COLOURS,
                   "corner": CORNERS}
# How often a hard negative changes each attribute: mostly how the same four colours pair up.
_CHANGE_WEIGHTS = {"pairing": 0.6, "corner_colour": 0.2, "corner": 0.2}


def _repaired(pairing: int, rng: np.random.Generator) -> int:
    """Another pairing of the same four colours."""
    first = pairing - pairing % 3
    return first + (pairing % 3 + 1 + int(rng.integers(2))) % 3


def _details(rng: np.random.Generator) -> dict:
    return {name: _pick(rng, choices) for name, choices in _DETAIL_CHOICES.items()}


def _group_details(rng: np.random.Generator, size: int, motion: tuple,
                   taken: set[tuple]) -> list[dict]:
    """A base detail set, then members that each change one attribute of it (hard negatives);
    no two videos of a split get the same attributes (``taken`` holds those used)."""
    for _ in range(100):
        base = _details(rng)
        if motion + tuple(base.values()) not in taken:
            break
    else:
        return []
    members = [base]
    taken.add(motion + tuple(base.values()))
    attrs = tuple(_CHANGE_WEIGHTS)
    weights = np.array([_CHANGE_WEIGHTS[a] for a in attrs])
    for _ in range(50 * size):
        if len(members) == size:
            break
        attr = attrs[int(rng.choice(len(attrs), p=weights))]
        value = (_repaired(base["pairing"], rng) if attr == "pairing"
                 else _pick(rng, _DETAIL_CHOICES[attr]))
        member = dict(base, **{attr: value})
        if motion + tuple(member.values()) not in taken:
            members.append(member)
            taken.add(motion + tuple(member.values()))
    return members


# Each flash lasts 1.5 sampling intervals of 12 uniform frames: always in one or two of them.
FLASH_FRACTION = 1.5 / 12
# When each flash may start (fractions of the duration): one early, one late, never together.
FLASH_WINDOWS = ((0.08, 0.35), (0.55, 0.87 - FLASH_FRACTION))


def plan(videos: int, seed: int, test_fraction: float = 0.2) -> list[SynthVideo]:
    """The attributes of every video: deterministic for ``seed``, independent of rendering."""
    if videos < 2:
        raise EercfError(f"--videos must be at least 2, got {videos}")
    if not 0.0 < test_fraction < 1.0:
        raise EercfError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    n_test = max(1, round(videos * test_fraction))
    # no two videos of a split share every attribute, so a split holds at most this many
    distinct = (len(MAIN_COLOURS) * len(MAIN_SHAPES) * len(DIRECTIONS)
                * math.prod(len(c) for c in _DETAIL_CHOICES.values()))
    too_many = EercfError(f"--videos {videos}: a split of the synthetic benchmark holds at most "
                          f"{distinct} distinct videos; use about "
                          f"{int(0.95 * distinct / (1 - test_fraction))} or fewer")
    if max(n_test, videos - n_test) > distinct:
        raise too_many
    specs: list[dict] = []
    taken: dict[str, set[tuple]] = {"train": set(), "test": set()}
    group = n_test_now = idle = 0
    while len(specs) < videos:
        if idle > 1000:  # the split's last free attribute sets are too rare to draw
            raise too_many
        before = len(specs)
        split = "test" if n_test_now < n_test else "train"
        motion = {"colour": _pick(rng, MAIN_COLOURS), "shape": _pick(rng, MAIN_SHAPES),
                  "direction": _pick(rng, DIRECTIONS)}
        size = min(int(rng.integers(3, 7)), videos - len(specs))
        for details in _group_details(rng, size, tuple(motion.values()), taken[split]):
            specs.append({"group": group, "split": split, **motion, **details})
            n_test_now += split == "test"
        group += 1
        idle = idle + 1 if len(specs) == before else 0
    order = rng.permutation(len(specs))
    out = []
    for index, spec_index in enumerate(order):
        background = tuple(int(c) for c in rng.integers(10, 55, size=3))
        starts = tuple(float(rng.uniform(lo, hi)) for lo, hi in FLASH_WINDOWS)
        out.append(SynthVideo(
            video_id=f"video{index}", fps=int(rng.integers(8, 13)),
            seconds=float(np.round(rng.uniform(4.0, 8.0), 2)), background=background,
            lane=float(rng.uniform(0.38, 0.62)), flash_order=int(rng.integers(2)),
            flash_starts=starts, **specs[spec_index]))
    return _singled_out(out)


# Every test caption names the motion, so only test videos of the same motion can also fit it.
_TEST_KINDS = ("motion+flash", "motion+corner", "motion+flash+corner")


def _test_by_motion(videos: list[SynthVideo]) -> dict[tuple, list[SynthVideo]]:
    groups: dict[tuple, list[SynthVideo]] = {}
    for v in videos:
        if v.split == "test":
            groups.setdefault(_motion(v), []).append(v)
    return groups


def _singles_out(v: SynthVideo, kind: str, pair: tuple[str, str] | None,
                 same_motion: list[SynthVideo]) -> bool:
    """Whether a test caption of ``kind`` about ``v`` (naming ``pair``) fits no other test
    video (``same_motion``: the test videos of ``v``'s motion)."""
    return not any(fits(o, v, kind, pair) for o in same_motion if o is not v)


def _singled_out(videos: list[SynthVideo]) -> list[SynthVideo]:
    """Moves to the training split any test video that no test caption could single out
    (naming one flash pair can fit a video of another group that flashes the same pair)."""
    out = list(videos)
    groups = _test_by_motion(out)
    for i, v in enumerate(out):
        same_motion = groups.get(_motion(v), [])
        if v.split == "test" and not any(_singles_out(v, kind, pair, same_motion)
                                         for kind in _TEST_KINDS for pair in v.flashes):
            same_motion.remove(v)
            out[i] = replace(v, split="train")
    return out


def _test_caption(v: SynthVideo, same_motion: list[SynthVideo], rng: np.random.Generator
                  ) -> tuple[str, tuple[str, str] | None]:
    """A caption kind naming ``v``'s motion (and, for a flash, which pair) that fits no other
    test video: mostly a flash pair, otherwise the corner, otherwise both."""
    def choices(kind: str) -> list:
        if "flash" not in kind:
            return [None]
        return [v.flashes[i] for i in rng.permutation(2)]

    first = ("motion+flash", "motion+corner") if rng.random() < 0.7 else (
        "motion+corner", "motion+flash")
    for kind in first + _TEST_KINDS[2:]:
        for pair in choices(kind):
            if _singles_out(v, kind, pair, same_motion):
                return kind, pair
    raise EercfError(f"synthetic test video {v.video_id} is indistinguishable from another")


def annotate(videos: list[SynthVideo], seed: int, captions_per_video: int = 8
             ) -> dict[str, list[tuple[str, str]]]:
    """Captions per video id as ``(kind, text)``: training videos cycle through
    ``TRAIN_KINDS`` from a random start; each test video gets one distinguishing caption."""
    rng = np.random.default_rng([seed, 1])
    groups = _test_by_motion(videos)
    out: dict[str, list[tuple[str, str]]] = {}
    for v in videos:
        if v.split == "test":
            kind, pair = _test_caption(v, groups[_motion(v)], rng)
            out[v.video_id] = [(kind, caption(v, kind, rng, pair))]
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
    if kind == "star":
        return [(cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(math.pi / 2 + i * math.pi / 5),
                 cy - (r if i % 2 == 0 else 0.45 * r) * math.sin(math.pi / 2 + i * math.pi / 5))
                for i in range(10)]
    raise ValueError(kind)


def _draw(draw, kind: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r), fill=colour)


MAIN_RADIUS, CORNER_SIZE, CORNER_MARGIN = 0.15, 0.19, 0.03
# The moving shape leaves a fading trail (distance behind it in radii, opacity), like motion
# blur: each frame shows which way it goes, as in real footage of something moving.
TRAIL = ((3.3, 0.2), (2.2, 0.4), (1.1, 0.65))
_HEADING = {"right": 1, "left": -1}


def frame_count(v: SynthVideo) -> int:
    return max(1, round(v.seconds * v.fps))


def flash_halves(v: SynthVideo, event: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """Which colour fills which half of the screen during flash ``event``."""
    a, b = v.flashes[event]
    return ("left", a), ("right", b)


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
    radius = MAIN_RADIUS * size
    heading = _HEADING[v.direction]
    trail = [(behind, tuple(round(b + opacity * (c - b))
                            for c, b in zip(COLOURS[v.colour], v.background)))
             for behind, opacity in TRAIL]
    for k in range(n):
        progress = (k + 0.5) / n
        x = lo + (hi - lo) * (progress if heading > 0 else 1 - progress)
        y = lane
        image = Image.new("RGB", (size, size), v.background)
        draw = ImageDraw.Draw(image)
        for behind, ghost in trail:
            _draw(draw, v.shape, x - heading * behind * radius, y, radius, ghost)
        _draw(draw, v.shape, x, y, radius, COLOURS[v.colour])
        for event, start in enumerate(v.flash_starts):
            if start <= progress < start + FLASH_FRACTION:
                for side, colour in flash_halves(v, event):
                    x0 = 0 if side == "left" else size // 2
                    draw.rectangle([x0, 0, x0 + size // 2 - 1, size - 1], fill=COLOURS[colour])
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


def read_meta(root: str | Path) -> list[dict]:
    """``synth.json`` of the benchmark in ``root``: per video its attributes and captions."""
    path = Path(root) / "synth.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EercfError(f"{path}: not a synthetic benchmark ({err})") from None


def read_truth(root: str | Path) -> dict[str, SynthVideo]:
    """Every video of the benchmark in ``root`` as the :class:`SynthVideo` it was drawn from."""
    fields = SynthVideo.__dataclass_fields__
    return {m["video_id"]: SynthVideo(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in m.items() if k in fields})
            for m in read_meta(root)}


def contact_sheet(root: str | Path, png: str | Path, rows: int = 4, num_frames: int = 12,
                  scale: int = 2) -> Path:
    """Draw ``rows`` test videos of the benchmark in ``root`` (its ``num_frames`` uniformly
    sampled frames, as training sees them, with times) and their captions into ``png``."""
    from PIL import Image, ImageDraw, ImageFont

    from .video import decode_clip

    root, png = Path(root), Path(png)
    test = [m for m in read_meta(root) if m["split"] == "test"]
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
