"""eercf: text-to-video retrieval with coarse-to-fine CLIP features and two-stage search."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import EercfError  # noqa: E402

# Public names imported on first use, so that ``import eercf`` (and ``eercf --help``) stays
# fast without torch. Add an entry here to export another name: name -> module.
_LAZY = {
    "load_model": "eercf.weights",
    "save_model": "eercf.weights",
    "EERCF": "eercf.model",
    "VideoFeatures": "eercf.model",
    "VideoTransform": "eercf.model",
    "LossWeights": "eercf.model",
    "CLIPTokenizer": "eercf.model.tokenizer",
    "VideoIndex": "eercf.index",
}

__all__ = ["EercfError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eercf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
