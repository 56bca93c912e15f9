"""Benchmark designs: the same vocabulary of shots, flashes and corner squares, drawn and
captioned so that a different level of EERCF has to carry the test captions. No recipe is
tuned on one design alone: docs/benchmarks.md reports every level on each.

- ``flash`` (the default): test captions mostly name the brief flash (1/8 of the clip), which
  the frame-averaged video vector mixes with the main shot and one frame shows whole.
- ``motion``: test captions mostly name the whole-clip motion and the corner: the video vector
  sees the motion in every frame; the fine levels must not spoil what it gets right.
- ``corner``: test captions mostly name the flash with the small corner square, a few pixels
  inside one patch: where the patch level matters.
- ``mixed``: other frame sizes and clip lengths (96 px, 3-5 s at 10 fps, a flash of 1/6 of
  the clip), each test caption's kind drawn evenly.
- ``overlay``: another world on wide frames (128x96, 4 s at 10 fps): one shape moves left,
  right, up or down, or stays still, for the whole clip; a second, small shape shows over it
  for 1/6 of the clip (no cut); a tiny marker (a third of a ``tiny`` patch) sits in a corner.
  Captions of every kind, test captions naming one, two or all three of these. Centre-cropping
  its frames to a square would cut the marker off: the transform must keep the whole frame.
- ``stretch``: the ``flash`` world, every caption naming what the whole clip shows (the moving
  shape, the corner square, or both): the training set for the long-video benchmark
  (``eercf synth --design long``, ``eercf.synthetic.long``), whose captions name one clip of
  a long video that way.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EercfError


@dataclass(frozen=True)
class Design:
    """How a benchmark is drawn and captioned. ``test_kinds``: the kinds a test caption may
    take, tried in this order with probability ``preferred`` (else reversed; ``None``: a
    random rotation, every kind first equally often), the first that singles its video out."""

    name: str
    test_kinds: tuple[str, ...]
    preferred: float | None
    flash_fraction: float
    seconds: tuple[float, float]
    fps: tuple[int, int]      # drawn from [low, high)
    size: int                 # default frame height (pixels)
    aspect: float = 1.0       # width / height
    overlay: bool = False     # the brief event: a small shape over the main shot, not a cut
    corner_size: float = 0.19  # the corner square's side, as a fraction of the height
    directions: tuple[str, ...] = ("left", "right")
    train_kinds: tuple[str, ...] | None = None  # None: scenes.TRAIN_KINDS

    @property
    def flash_window(self) -> tuple[float, float]:
        """When the flash may start, as fractions of the duration."""
        return 0.2, 0.8 - self.flash_fraction


TEST_KINDS = ("flash", "flash+corner", "motion+corner")  # each visible whole in one frame
EVERY_KIND = ("motion", "flash", "corner", "motion+flash", "motion+corner", "flash+corner",
              "motion+flash+corner")
DESIGNS = {
    "flash": Design("flash", TEST_KINDS, 0.75, 1.5 / 12, (4.0, 8.0), (8, 13), 64),
    "motion": Design("motion", ("motion+corner", "flash+corner", "flash"), 0.9, 1.5 / 12,
                     (4.0, 8.0), (8, 13), 64),
    "corner": Design("corner", ("flash+corner", "motion+corner", "flash"), 0.9, 1.5 / 12,
                     (4.0, 8.0), (8, 13), 64),
    "mixed": Design("mixed", TEST_KINDS, None, 1.0 / 6, (3.0, 5.0), (10, 11), 96),
    "overlay": Design("overlay", EVERY_KIND, None, 1.0 / 6, (4.0, 4.0), (10, 11), 96,
                      aspect=4 / 3, overlay=True, corner_size=0.08,
                      directions=("left", "right", "up", "down", "still"),
                      train_kinds=EVERY_KIND),
    "stretch": Design("stretch", ("motion+corner", "motion", "corner"), 1.0, 1.5 / 12,
                      (4.0, 8.0), (8, 13), 64,
                      train_kinds=("motion+corner", "motion", "corner", "motion+corner",
                                   "motion+flash+corner")),
}


def get_design(name: str) -> Design:
    if name not in DESIGNS:
        raise EercfError(f"unknown benchmark design {name!r}: choose {', '.join(DESIGNS)}")
    return DESIGNS[name]
