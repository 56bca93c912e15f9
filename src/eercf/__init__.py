"""eercf: text-to-video retrieval with coarse-to-fine CLIP features and two-stage search."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import EercfError  # noqa: E402

__all__ = ["EercfError", "__version__"]
