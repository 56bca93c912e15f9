"""Two-stage search over an index snapshot (DESIGN.md §1): stage 1 recalls the top K videos
with one FAISS inner-product search of ``q = t W_g``; stage 2 reads only those K candidates'
fine features from the store and re-scores them with ``model.rerank`` (the code ``eercf eval``'s
``two_stage`` mode runs, so both rank identically). Re-scored candidates rank above all others.

Each re-scored hit also says *when* it matched (the frame the strong TIB gate weighs most, and
the run of frames around it weighing at least half as much) and *where* (the patch the patch
gate weighs most, as a row/column of the patch grid).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import EercfError
from .index import store

if TYPE_CHECKING:
    import lance

    from .index.ann import Stage1
    from .model import EERCF

WINDOW_FRACTION = 0.5      # frames weighing at least this fraction of the best join the moment


@dataclass
class Moment:
    """When a video matched, in seconds: the best frame's time and a window around it."""

    time: float | None
    start: float | None
    end: float | None


@dataclass
class Where:
    """Where it matched: the frame and patch-grid cell with the largest patch weight."""

    frame: int
    time: float | None
    row: int
    col: int


@dataclass
class Hit:
    """One retrieved video. ``score`` is the fused stage-2 logit (None for a video past the K
    re-scored candidates, which keeps only its stage-1 score)."""

    video_id: str
    uri: str | None
    score: float | None
    stage1_score: float
    stage1_rank: int
    moment: Moment | None
    where: Where | None
    duration: float | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    """The hits of one query, best first, with the timings (seconds) of the batch it ran in
    and the Lance version of the store it searched."""

    query: str | None
    hits: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits],
                "timings": dict(self.timings), "version": self.version}


def _seconds(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def matched_moment(frame_weights: np.ndarray, timestamps: np.ndarray, mask: np.ndarray,
                   duration: float | None) -> Moment:
    """The moment from the strong TIB frame gate ``frame_weights [F]``: the best frame's time,
    and the contiguous run of real frames weighing at least half the best, widened to the
    midpoints between that run and its neighbouring samples (the video's start and end
    beyond the first and last samples)."""
    real = np.flatnonzero(mask)
    weights, times = frame_weights[real], timestamps[real]
    best = int(np.argmax(weights))
    first = last = best
    while first > 0 and weights[first - 1] >= WINDOW_FRACTION * weights[best]:
        first -= 1
    while last < len(real) - 1 and weights[last + 1] >= WINDOW_FRACTION * weights[best]:
        last += 1
    start = 0.0 if first == 0 else (times[first - 1] + times[first]) / 2
    if last < len(real) - 1:
        end = (times[last] + times[last + 1]) / 2
    elif duration is not None and duration >= times[last]:
        end = duration
    elif len(real) > 1:
        end = times[last] + (times[last] - times[last - 1]) / 2
    else:
        end = times[last]
    return Moment(_seconds(times[best]), _seconds(start), _seconds(end))


def matched_where(patch_weights: np.ndarray, timestamps: np.ndarray, patches: int) -> Where:
    """The frame and grid cell (row-major, ``sqrt(P)`` a side) of the largest patch weight."""
    best = int(np.argmax(patch_weights))
    frame, patch = divmod(best, patches)
    side = max(1, math.isqrt(patches))
    row, col = divmod(patch, side)
    return Where(frame=frame, time=_seconds(timestamps[frame]), row=row, col=col)


def rerank_weights(model: "EERCF", weights: dict[str, float] | None) -> dict[str, float]:
    """The model's fusion weights (config ``eercf.rerank``) with ``weights`` overriding."""
    from .similarity import LEVELS

    merged = {k: v for k, v in model.config["eercf"]["rerank"].items() if k in LEVELS}
    unknown = sorted(set(weights or {}) - set(LEVELS))
    if unknown:
        raise EercfError(f"unknown fusion weight {unknown[0]!r}: levels are {', '.join(LEVELS)}")
    merged.update({k: float(v) for k, v in (weights or {}).items()})
    return merged


def two_stage(dataset: "lance.LanceDataset", stage1: "Stage1", text: torch.Tensor,
              model: "EERCF", *, k: int, topk: int, weights: dict[str, float] | None = None,
              queries: Sequence[str | None] | None = None,
              timings: dict[str, float] | None = None) -> list[SearchResult]:
    """Search the snapshot (``dataset`` pinned at ``stage1.version``) with encoded queries
    ``text [T, D]``: stage 1 top ``max(k, topk)``, stage 2 re-scores the top ``topk``; ``k``
    hits per query."""
    if k < 1 or topk < 1:
        raise EercfError(f"k and topk must be at least 1 (got k={k}, topk={topk})")
    fusion = rerank_weights(model, weights)
    timings = dict(timings or {})
    queries = list(queries) if queries is not None else [None] * len(text)
    rows = int(stage1.index.ntotal)
    if rows == 0 or len(text) == 0:
        return [SearchResult(q, [], {**timings, "stage1": 0.0, "stage2": 0.0}, stage1.version)
                for q in queries]
    text = text.to(model.device).float()

    started = time.perf_counter()
    with torch.inference_mode():
        query_vectors = model.stage1_query(text).cpu().numpy()
        scale = float(model.logit_scale)
    inner, labels = stage1.search(query_vectors, min(max(k, topk), rows))
    timings["stage1"] = time.perf_counter() - started

    started = time.perf_counter()
    n_cand = min(topk, labels.shape[1])
    patches = store.dims(dataset.schema)[2]
    buffers = _buffers()
    results: list[SearchResult] = []
    read_seconds = 0.0
    for row in range(len(text)):
        # one query at a time: its K candidates are distinct rows, read once into reused
        # memory, in storage order (Lance takes sorted offsets many times faster)
        ranks = np.flatnonzero(labels[row, :n_cand] >= 0)
        ranks = ranks[np.argsort(labels[row, ranks], kind="stable")]
        found = labels[row, ranks]
        hits: list[Hit] = []
        if len(found):
            read_started = time.perf_counter()
            cand, info = store.take_features(dataset, found, buffers, model.device)
            read_seconds += time.perf_counter() - read_started
            if len(found) < n_cand:  # an approximate index found fewer than K: pad, then drop
                cand = cand.index(torch.arange(n_cand).clamp(max=len(found) - 1))
            with torch.inference_mode():
                fused, scores = model.rerank(text[row:row + 1], cand, n_cand, fusion)
            fused = fused[0, :len(found)].float().cpu().numpy()
            frame_weights = scores["frame_weights"][0].float().cpu().numpy()
            patch_weights = scores["patch_weights"][0].float().cpu().numpy()
            mask = cand.mask.cpu().numpy()
            for j in np.lexsort((ranks, -fused))[:k]:  # best fused first, ties by stage 1
                times, duration = info.timestamps[j], info.durations[j]
                hits.append(Hit(
                    video_id=info.ids[j], uri=info.uris[j], score=float(fused[j]),
                    stage1_score=scale * float(inner[row, ranks[j]]),
                    stage1_rank=int(ranks[j]) + 1,
                    moment=matched_moment(frame_weights[j], times, mask[j], duration),
                    where=matched_where(patch_weights[j], times, patches),
                    duration=duration, metadata=info.metadata[j]))
        results.append(SearchResult(queries[row], hits, version=stage1.version))
    _append_stage1_hits(dataset, results, inner, labels, n_cand, k, scale)
    timings["stage2"] = time.perf_counter() - started
    timings["stage2_read"] = read_seconds
    for result in results:
        result.timings = dict(timings)
    return results


_local = threading.local()


def _buffers() -> store.FeatureBuffers:
    """This thread's reused candidate memory (about K x 1.2 MB at ViT-B/32 shapes)."""
    if not hasattr(_local, "buffers"):
        _local.buffers = store.FeatureBuffers()
    return _local.buffers


def _append_stage1_hits(dataset: "lance.LanceDataset", results: list[SearchResult],
                        inner: np.ndarray, labels: np.ndarray, n_cand: int, k: int,
                        scale: float) -> None:
    """When ``k`` exceeds K, fill each query's hits past the re-scored candidates with the
    next stage-1 results, in stage-1 order."""
    extra = labels[:, n_cand:k]
    wanted = np.unique(extra[extra >= 0])
    if wanted.size == 0:
        return
    info = store.take_rows(dataset, wanted)  # ascending: Lance takes sorted offsets fastest
    position = {int(offset): i for i, offset in enumerate(wanted)}
    for row, result in enumerate(results):
        for j in range(n_cand, min(k, labels.shape[1])):
            offset = int(labels[row, j])
            if offset < 0:
                break
            i = position[offset]
            result.hits.append(Hit(video_id=info.ids[i], uri=info.uris[i], score=None,
                                   stage1_score=scale * float(inner[row, j]), stage1_rank=j + 1,
                                   moment=None, where=None, duration=info.durations[i],
                                   metadata=info.metadata[i]))
