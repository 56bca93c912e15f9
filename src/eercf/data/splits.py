"""A validation split held out of the training videos, so that nothing learnt or chosen (the
best epoch, the fusion weights) ever sees the test split. Membership is decided per video by a
hash of its id, so the same videos are held out whatever the order of the annotation file,
the number of processes, or a resumed run."""
from __future__ import annotations

import hashlib
from typing import Sequence

from ..errors import EercfError
from .datasets import VideoRecord

BUCKETS = 10_000


def held_out(video_id: str, fraction: float) -> bool:
    """Whether ``video_id`` belongs to the held-out ``fraction`` (0 to 1)."""
    digest = hashlib.sha1(f"eercf-validation:{video_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS < round(fraction * BUCKETS)


def split_off(records: Sequence[VideoRecord], fraction: float
              ) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """``(kept, held_out)``: about ``fraction`` of the videos held out for validation."""
    if not 0.0 < fraction < 1.0:
        raise EercfError(f"the validation fraction must be between 0 and 1, got {fraction}")
    kept = [r for r in records if not held_out(r.video_id, fraction)]
    val = [r for r in records if held_out(r.video_id, fraction)]
    if not kept or not val:
        raise EercfError(f"{len(records)} videos are too few to hold out {fraction:.0%} for "
                         "validation and train on the rest")
    return kept, val
