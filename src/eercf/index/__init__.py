"""The index: a folder holding a Lance dataset of per-video features (the source of truth,
``store``) and a derived FAISS stage-1 file (``ann``), wrapped by :class:`VideoIndex`; two-stage
search over one snapshot (``search``); and ingest, the decode-encode-add loop (``ingest``)."""
from .manifest import FORMAT, MANIFEST, ModelInfo, model_fingerprint
from .search import Hit, Moment, SearchResult, Where
from .video_index import DATASET, Snapshot, VideoIndex

__all__ = ["VideoIndex", "ModelInfo", "Snapshot", "model_fingerprint", "FORMAT", "MANIFEST",
           "DATASET", "Hit", "Moment", "SearchResult", "Where"]
