"""Argument parsing shared by several commands (not a command itself)."""
from __future__ import annotations

from ..errors import EercfError


def parse_weights(items: list[str], flag: str) -> dict[str, float]:
    """``["frame_weak=1", ...]`` -> ``{"frame_weak": 1.0}`` (level names are checked where the
    weights are used, by ``EERCF.fusion_weights``)."""
    weights = {}
    for item in items:
        level, sep, value = item.partition("=")
        if not sep:
            raise EercfError(f"{flag} {item!r}: expected LEVEL=NUMBER, e.g. patch_weak=0")
        try:
            weights[level.strip()] = float(value)
        except ValueError:
            raise EercfError(f"{flag} {item!r}: {value!r} is not a number") from None
    return weights
