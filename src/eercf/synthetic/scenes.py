"""A synthetic text-video benchmark in MSR-VTT layout, built so that every level of EERCF matters.

Each video has two shots and an overlay. The *main* shot, most of the clip, shows a large shape
moving across a dark background with a fading trail behind it (the *motion*). The *flash* is a
cut, for 1/8 of the clip (one or two of 12 uniformly sampled frames), to a bright background of
one colour where another shape moves. A small square sits in one corner throughout (the
*corner*, inside one patch of the ``tiny`` model's 4x4 grid). Both shots draw their shapes,
colours and directions from the same vocabulary, so a caption about the flash ("the screen
flashes yellow as a blue square moves up") also partly fits videos whose *main* shot shows
a blue square moving up. The video-level vector averages the frames: the main shot outweighs
the flash five to one and mixes its attributes in, so it confuses the two; one frame of the
flash holds the whole caption, which is what the frame level's near-max over frames finds.
Training videos carry captions of every kind (motion, flash, corner and their combinations,
worded from templates with synonyms); each test video has one caption that fits no other test
video, naming what one moment shows: its flash (with the corner if needed), or its motion and
corner. Test videos come in groups whose flashes differ in one attribute (hard negatives).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import EercfError
from .designs import DESIGNS, EVERY_KIND, Design

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "blue": (50, 90, 235), "white": (240, 240, 240),
    "green": (40, 190, 60), "yellow": (245, 220, 30), "cyan": (0, 210, 230),
    "pink": (245, 110, 190), "orange": (255, 140, 0), "lime": (175, 240, 60),
    "magenta": (225, 30, 225), "teal": (0, 140, 140), "beige": (230, 205, 160),
    "purple": (150, 60, 220), "grey": (140, 140, 140),
}
# Shapes in either shot take these colours; the flash's background, and the corner square,
# have their own palettes.
SHAPE_COLOURS = ("red", "blue", "white", "green")
FLASH_COLOURS = ("yellow", "cyan", "pink", "orange", "lime", "magenta", "teal", "beige")
CORNER_COLOURS = ("purple", "grey")
SHAPES = ("circle", "square", "triangle", "star")
DIRECTIONS = ("left", "right")
CORNERS = ("top left", "top right", "bottom left", "bottom right")

SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball", "round shape"),
    "square": ("square", "box", "block", "square shape"),
    "triangle": ("triangle", "triangle", "triangular shape", "wedge"),
    "star": ("star", "star", "star shape", "star figure"),
}
# Each phrase names its direction once (never "from right to left").
DIRECTION_WORDS = {
    "left": ("moves left", "goes left", "slides left"),
    "right": ("moves right", "goes right", "slides right"),
    "up": ("moves up", "goes up", "rises"),
    "down": ("moves down", "goes down", "sinks"),
    "still": ("stays still", "does not move", "stays in place"),
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
STILL_TEMPLATES = ("a {colour} {shape} {moves}", "the {colour} {shape} {moves}",
                   "{a_colour} {shape} {moves} in the frame",
                   "a video where a {colour} {shape} {moves}")
# the overlay design's brief event: a small shape over the main shot
OVERLAY_TEMPLATES = ("a small {colour} {shape} appears briefly and {moves}",
                     "for a moment a little {colour} {shape} {moves}",
                     "a tiny {colour} {shape} shows up for a second and {moves}",
                     "briefly a small {colour} {shape} {moves}")
FLASH_TEMPLATES = ("the screen flashes {bg} as {a_colour} {shape} {moves}",
                   "for a moment {a_colour} {shape} {moves} on {a_bg} background",
                   "a quick cut to {a_bg} scene where {a_colour} {shape} {moves}",
                   "briefly the screen turns {bg} and {a_colour} {shape} {moves}")
CORNER_OBJECTS = ("a small {colour} square in the {corner} corner",
                  "a tiny {colour} square at the {corner} corner",
                  "a little {colour} box in the {corner} corner",
                  "a small {colour} patch in the {corner} corner")
OVERLAY_CORNER_OBJECTS = ("a tiny {colour} marker in the {corner} corner",
                          "a small {colour} dot at the {corner} corner",
                          "a little {colour} mark in the {corner} corner",
                          "a tiny {colour} square in the {corner} corner")
CORNER_TEMPLATES = ("{object}", "there is {object}", "{object} stays still",
                    "{object} does not move")
FLASH_JOINERS = (", then ", " and then ", "; later ", ", until ")
CORNER_JOINERS = (" with ", ", and there is ", "; there is also ", " next to ")

# Training captions cycle through this list (from a random start): the flash, seen least,
# comes up most; motion+flash+corner is left out, as it often runs past 32 tokens.
TRAIN_KINDS = ("flash", "motion+flash", "corner", "motion+corner", "flash", "flash+corner",
               "motion", "flash")
CAPTION_KINDS = EVERY_KIND


@dataclass(frozen=True)
class SynthVideo:
    """Everything needed to render one synthetic video and to caption it (its ground truth)."""

    video_id: str
    split: str
    group: int
    colour: str          # the main shot
    shape: str
    direction: str
    flash_background: str  # the flash
    flash_colour: str
    flash_shape: str
    flash_direction: str
    corner_colour: str
    corner: str
    fps: int
    seconds: float
    background: tuple[int, int, int]
    lane: float          # the height each shot's shape crosses at, as a fraction of the frame
    flash_lane: float
    flash_start: float   # fraction of the duration
    flash_fraction: float = 1.5 / 12  # how long the flash lasts, as a fraction of the duration
    aspect: float = 1.0  # frame width / height
    overlay: bool = False  # the flash is a small shape over the main shot (no background)
    corner_size: float = 0.19  # the corner square's side, as a fraction of the height

    @property
    def motion(self) -> tuple[str, str, str]:
        return self.colour, self.shape, self.direction

    @property
    def flash(self) -> tuple[str, str, str, str]:
        return self.flash_background, self.flash_colour, self.flash_shape, self.flash_direction


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _mover_words(colour: str, shape: str, direction: str, rng: np.random.Generator) -> dict:
    return {"colour": colour, "a_colour": _article(colour),
            "shape": _pick(rng, SHAPE_WORDS[shape]),
            "moves": _pick(rng, DIRECTION_WORDS[direction])}


def _motion_phrase(v: SynthVideo, rng: np.random.Generator) -> str:
    templates = STILL_TEMPLATES if v.direction == "still" else MOTION_TEMPLATES
    return _pick(rng, templates).format(**_mover_words(*v.motion, rng))


def _flash_phrase(v: SynthVideo, rng: np.random.Generator) -> str:
    if v.overlay:
        return _pick(rng, OVERLAY_TEMPLATES).format(
            **_mover_words(v.flash_colour, v.flash_shape, v.flash_direction, rng))
    return _pick(rng, FLASH_TEMPLATES).format(
        bg=v.flash_background, a_bg=_article(v.flash_background),
        **_mover_words(v.flash_colour, v.flash_shape, v.flash_direction, rng))


def _corner_object(v: SynthVideo, rng: np.random.Generator) -> str:
    objects = OVERLAY_CORNER_OBJECTS if v.overlay else CORNER_OBJECTS
    return _pick(rng, objects).format(
        colour=v.corner_colour, corner=_pick(rng, CORNER_WORDS[v.corner]))


def caption(v: SynthVideo, kind: str, rng: np.random.Generator) -> str:
    """One caption of ``kind`` (see ``CAPTION_KINDS``) for ``v``, worded at random."""
    parts = kind.split("+")
    text = ""
    if "motion" in parts:
        text = _motion_phrase(v, rng)
    if "flash" in parts:
        flash = _flash_phrase(v, rng)
        text = text + _pick(rng, FLASH_JOINERS) + flash if text else flash
    if "corner" in parts:
        corner = _corner_object(v, rng)
        text = (text + _pick(rng, CORNER_JOINERS) + corner if text
                else _pick(rng, CORNER_TEMPLATES).format(object=corner))
    return text


def fits(other: SynthVideo, v: SynthVideo, kind: str) -> bool:
    """Whether a caption of ``kind`` about ``v`` is true of ``other``: the same main motion,
    the same flash (background, colour, shape and direction), the same corner square."""
    parts = kind.split("+")
    return (("motion" not in parts or other.motion == v.motion)
            and ("flash" not in parts or other.flash == v.flash)
            and ("corner" not in parts or (other.corner_colour, other.corner)
                 == (v.corner_colour, v.corner)))


def flash_choices(design: Design) -> dict[str, tuple[str, ...]]:
    """What a flash is drawn from: a cut to a coloured background with a shape on it, or (the
    overlay design) a small shape in a colour of its own over the main shot."""
    if design.overlay:
        return {"flash_background": ("none",), "flash_colour": FLASH_COLOURS,
                "flash_shape": SHAPES, "flash_direction": DIRECTIONS}
    return {"flash_background": FLASH_COLOURS, "flash_colour": SHAPE_COLOURS,
            "flash_shape": SHAPES, "flash_direction": DIRECTIONS}


def _group_flashes(rng: np.random.Generator, size: int, taken: set[tuple], new_flash: bool,
                   choices: dict[str, tuple[str, ...]]) -> list[dict]:
    """A base flash, then members that each change one of its attributes (hard negatives),
    each with a corner square. No two videos in ``taken`` (the test split's) share a flash
    when ``new_flash``, else a flash and a corner."""
    def key(member: dict) -> tuple:
        flash = tuple(member[name] for name in choices)
        return flash if new_flash else flash + (member["corner_colour"], member["corner"])

    def corner() -> dict:
        return {"corner_colour": _pick(rng, CORNER_COLOURS), "corner": _pick(rng, CORNERS)}

    for _ in range(100):
        base = dict({name: _pick(rng, c) for name, c in choices.items()}, **corner())
        if key(base) not in taken:
            break
    else:
        return []
    members = [base]
    taken.add(key(base))
    for _ in range(50 * size):
        if len(members) == size:
            break
        name = _pick(rng, tuple(choices))
        member = dict(base, **{name: _pick(rng, choices[name])}, **corner())
        if key(member) not in taken:
            members.append(member)
            taken.add(key(member))
    return members


# The flash lasts 1.5 sampling intervals of 12 uniform frames (the default design): always in
# one or two of them.
FLASH_FRACTION = DESIGNS["flash"].flash_fraction


def plan(videos: int, seed: int, test_fraction: float = 0.2,
         design: Design = DESIGNS["flash"]) -> list[SynthVideo]:
    """The attributes of every video: deterministic for ``seed``, independent of rendering."""
    if videos < 2:
        raise EercfError(f"--videos must be at least 2, got {videos}")
    if not 0.0 < test_fraction < 1.0:
        raise EercfError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    n_test = max(1, round(videos * test_fraction))
    choices = flash_choices(design)
    flashes = math.prod(len(c) for c in choices.values())
    capacity = int(0.9 * flashes * len(CORNER_COLOURS) * len(CORNERS))  # distinct flash+corner
    if n_test > capacity:
        raise EercfError(
            f"--videos {videos}: the {design.name} design's test split holds at most "
            f"{capacity} videos; use about {int(capacity / test_fraction)} or fewer")
    # a test caption naming the flash alone singles a video out while flashes are not reused
    new_flash = n_test <= 0.8 * flashes
    specs: list[dict] = []
    taken: dict[str, set[tuple]] = {"train": set(), "test": set()}
    group = n_test_now = idle = 0
    while len(specs) < videos:
        if idle > 1000:  # cannot happen below the capacity; a loop that never ends would be worse
            raise EercfError(f"--videos {videos}: no free flash left for the test split")
        before = len(specs)
        split = "test" if n_test_now < n_test else "train"
        size = min(int(rng.integers(3, 7)), videos - len(specs))
        if split == "test":
            size = min(size, n_test - n_test_now)
        else:  # training videos may share a flash
            taken["train"].clear()
        for details in _group_flashes(rng, size, taken[split], new_flash, choices):
            motion = {"colour": _pick(rng, SHAPE_COLOURS), "shape": _pick(rng, SHAPES),
                      "direction": _pick(rng, design.directions)}
            specs.append({"group": group, "split": split, **motion, **details})
            n_test_now += split == "test"
        group += 1
        idle = idle + 1 if len(specs) == before else 0
    order = rng.permutation(len(specs))
    out = []
    for index, spec_index in enumerate(order):
        background = tuple(int(c) for c in rng.integers(10, 55, size=3))
        out.append(SynthVideo(
            video_id=f"video{index}", fps=int(rng.integers(*design.fps)),
            seconds=float(np.round(rng.uniform(*design.seconds), 2)), background=background,
            lane=float(rng.uniform(0.38, 0.62)), flash_lane=float(rng.uniform(0.38, 0.62)),
            flash_start=float(rng.uniform(*design.flash_window)),
            flash_fraction=design.flash_fraction, aspect=design.aspect, overlay=design.overlay,
            corner_size=design.corner_size, **specs[spec_index]))
    return _singled_out(out, design.test_kinds)




def _singles_out(v: SynthVideo, kind: str, test: list[SynthVideo]) -> bool:
    """Whether a test caption of ``kind`` about ``v`` fits no other test video."""
    return not any(fits(o, v, kind) for o in test if o is not v)


def _singled_out(videos: list[SynthVideo], kinds: tuple[str, ...]) -> list[SynthVideo]:
    """Moves to the training split any test video that no test caption could single out."""
    out = list(videos)
    test = [v for v in out if v.split == "test"]
    for i, v in enumerate(out):
        if v.split == "test" and not any(_singles_out(v, kind, test) for kind in kinds):
            test.remove(v)
            out[i] = replace(v, split="train")
    return out


def _test_kind(v: SynthVideo, test: list[SynthVideo], rng: np.random.Generator,
               design: Design) -> str:
    """A caption kind that fits no other test video, tried in the design's order (the flash
    design: mostly the flash, a quarter of the time the motion and the corner)."""
    kinds = design.test_kinds
    if design.preferred is None:
        first = int(rng.integers(len(kinds)))
        order = kinds[first:] + kinds[:first]
    else:
        order = kinds if rng.random() < design.preferred else kinds[::-1]
    for kind in order:
        if _singles_out(v, kind, test):
            return kind
    raise EercfError(f"synthetic test video {v.video_id} is indistinguishable from another")


def annotate(videos: list[SynthVideo], seed: int, captions_per_video: int = 8,
             design: Design = DESIGNS["flash"]) -> dict[str, list[tuple[str, str]]]:
    """Captions per video id as ``(kind, text)``: training videos cycle through
    ``TRAIN_KINDS`` from a random start; each test video gets one distinguishing caption."""
    rng = np.random.default_rng([seed, 1])
    test = [v for v in videos if v.split == "test"]
    train_kinds = design.train_kinds or TRAIN_KINDS
    out: dict[str, list[tuple[str, str]]] = {}
    for v in videos:
        if v.split == "test":
            kind = _test_kind(v, test, rng, design)
            out[v.video_id] = [(kind, caption(v, kind, rng))]
        else:
            first = int(rng.integers(len(train_kinds)))
            kinds = [train_kinds[(first + i) % len(train_kinds)]
                     for i in range(captions_per_video)]
            out[v.video_id] = [(k, caption(v, k, rng)) for k in kinds]
    return out
