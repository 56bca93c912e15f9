"""Video and dataset ingestion: decoding and sampling (``video``), benchmark readers
(``datasets``), PyTorch loaders (``loader``), the frame cache (``frames``).

Names are imported on first use, so ``import eercf.data`` stays cheap for the CLI.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CLIP_MEAN": "video", "CLIP_STD": "video", "SampledClip": "video", "DecodedClip": "video",
    "load_clip": "video", "decode_clip": "video", "probe": "video", "preprocess": "video",
    "sample_times": "video",
    "VideoRecord": "datasets", "load_dataset": "datasets", "DATASETS": "datasets",
    "DatasetWarning": "datasets",
    "CaptionPairs": "loader", "VideoClips": "loader", "EpochSampler": "loader",
    "make_loader": "loader",
    "FrameCache": "frames",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
