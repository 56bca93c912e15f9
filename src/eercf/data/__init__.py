"""Video and dataset ingestion: sampling and pixels (``clips``), decoding (``video``), benchmark
readers (``datasets``), videos found in a folder or list (``sources``), PyTorch loaders
(``loader``), the frame cache (``frames``), batches of similar videos (``batching``).

Names are imported on first use, so ``import eercf.data`` stays cheap for the CLI.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SampledClip": "clips", "DecodedClip": "clips", "preprocess": "clips",
    "sample_times": "clips", "load_clip": "video", "decode_clip": "video", "probe": "video",
    "find_videos": "sources",
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
