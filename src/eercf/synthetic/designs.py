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
    size: int                 # default frame size (pixels)

    @property
    def flash_window(self) -> tuple[float, float]:
        """When the flash may start, as fractions of the duration."""
        return 0.2, 0.8 - self.flash_fraction


TEST_KINDS = ("flash", "flash+corner", "motion+corner")  # each visible whole in one frame
DESIGNS = {
    "flash": Design("flash", TEST_KINDS, 0.75, 1.5 / 12, (4.0, 8.0), (8, 13), 64),
    "motion": Design("motion", ("motion+corner", "flash+corner", "flash"), 0.9, 1.5 / 12,
                     (4.0, 8.0), (8, 13), 64),
    "corner": Design("corner", ("flash+corner", "motion+corner", "flash"), 0.9, 1.5 / 12,
                     (4.0, 8.0), (8, 13), 64),
    "mixed": Design("mixed", TEST_KINDS, None, 1.0 / 6, (3.0, 5.0), (10, 11), 96),
}


def get_design(name: str) -> Design:
    if name not in DESIGNS:
        raise EercfError(f"unknown benchmark design {name!r}: choose {', '.join(DESIGNS)}")
    return DESIGNS[name]
