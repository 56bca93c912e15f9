"""Two-stage search over an index snapshot (``docs/method.md`` §5): stage 1 recalls the top K
videos with one FAISS inner-product search of ``q = t W_g``; stage 2 reads only those K
candidates' fine features from the store and re-scores them with ``model.rerank`` (what
``eercf eval``'s ``two_stage`` mode runs, so both rank identically; only the levels with a
non-zero fusion weight are computed). Re-scored candidates rank above all others.

Each re-scored hit also says *when* it matched (the frame the strong TIB gate weighs most, and
the run of frames around it that show the text: nearer the best frame than the query's typical
frame) and *where* (the patch the patch gate weighs most, as a row/column of the patch grid).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import EercfError
from . import codecs, store
from .hot import HotTier
from .segments import ScoredMoment, Span, distinct_videos, group_by_video

if TYPE_CHECKING:
    import lance

    from ..model import EERCF, VideoFeatures
    from .ann import Stage1
    from .codecs import PQCodec

WEIGHT_FLOOR = 1e-6        # gate weights below this fraction of the best count as it
BRIDGE_FRAMES = 2          # a moment goes on over this many frames that do not show the text
#                            (a flash, a cut-away) when frames after them do
SHARED_QUERIES = 32        # a batch's queries whose candidates' hot tier is read in one take
EXACT_READ_QUERIES = 4     # ... whose best candidates are read whole in one (9 MB a query;
#                            benchmarks/exact_read_queries.py: larger shared reads are slower)


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
    """One retrieved video (or, searching per segment, one segment of it). ``score`` is the
    fused stage-2 logit (None for a video past the K re-scored candidates, which keeps only its
    stage-1 score). ``segment`` is the span of the segment that matched (None: a video stored
    whole); ``moments`` the video's strong moments, best first (``segments``)."""

    video_id: str
    uri: str | None
    score: float | None
    stage1_score: float
    stage1_rank: int
    moment: Moment | None
    where: Where | None
    duration: float | None = None
    metadata: dict[str, Any] | None = None
    segment: Span | None = None
    moments: list[ScoredMoment] = field(default_factory=list)

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
                   duration: float | None, span: tuple[float, float] | None = None,
                   similarity: np.ndarray | None = None, background: float | None = None
                   ) -> Moment:
    """The moment from the strong TIB frame gate ``frame_weights [F]``: the best frame's time,
    and the contiguous run of real frames around it that show the text, widened to the
    midpoints between that run and its neighbouring samples (the video's start and end, or
    the segment's ``span``, beyond the first and last samples).

    A frame shows the text when its gate logit (``similarity``, the text-frame products the
    gate is the softmax of; without it the log weights, the same up to scale and shift) lies
    nearer the best frame's than the reference: this video's worst frame or, when lower, the
    ``background`` (the query's typical frame among all its candidates: two-stage search
    passes their median). So frames all as good as the best make the whole video (or
    segment), and a brief event among unrelated frames only its own frames, whatever the
    gate's temperature. The run bridges
    dips of up to ``BRIDGE_FRAMES`` frames (a flash or a cut-away inside the moment)."""
    real = np.flatnonzero(mask)
    # a dozen frames: plain floats, as numpy's per-call cost would exceed the arithmetic
    if similarity is not None:
        logits = similarity[real].tolist()
    else:
        weights = frame_weights[real].astype(np.float64)
        logits = np.log(np.maximum(weights, WEIGHT_FLOOR * max(weights.max(), 1e-300))).tolist()
    times = timestamps[real].tolist()
    best = max(range(len(logits)), key=logits.__getitem__)  # the first best, as argmax
    reference = min(logits) if background is None else min(float(background), min(logits))
    bar = (logits[best] + reference) / 2
    shows = [value >= bar for value in logits]
    first = last = best
    while True:  # grow over frames that show it, bridging dips of up to BRIDGE_FRAMES
        before = [i for i in range(max(0, first - BRIDGE_FRAMES - 1), first) if shows[i]]
        after = [i for i in range(last + 1, min(len(real), last + BRIDGE_FRAMES + 2)) if shows[i]]
        if not before and not after:
            break
        first = min(before or [first])
        last = max(after or [last])
    if span is not None:
        duration = span[1]
    start = (span[0] if span else 0.0) if first == 0 else (times[first - 1] + times[first]) / 2
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


def two_stage(dataset: "lance.LanceDataset", stage1: "Stage1", text: torch.Tensor,
              model: "EERCF", *, k: int, topk: int, weights: dict[str, float] | None = None,
              queries: Sequence[str | None] | None = None,
              timings: dict[str, float] | None = None,
              codec: "PQCodec | None" = None,
              hot: "HotTier | None" = None,
              allowed: np.ndarray | None = None,
              groups: np.ndarray | None = None,
              exact_candidates: int | None = None) -> list[SearchResult]:
    """Search the snapshot (``dataset`` pinned at ``stage1.version``) with encoded queries
    ``text [T, D]``: stage 1 top ``max(k, topk)``, stage 2 re-scores the top ``topk``; ``k``
    hits per query. A pq-coded store needs its ``codec``: stage 2 then reads the hot tier
    (codes and frame levels) of every candidate, from memory when ``hot`` holds it, and the
    exact patches the codes select. With ``allowed`` (row offsets, ascending: the rows a
    filter matched) both stages consider only those rows. With ``groups`` (the video of each
    row: ``segments.row_groups``) hits are grouped by video, and stage 1 recalls rows until
    ``k`` distinct videos are among them. Under pq, ``exact_candidates`` of the K (default: the
    larger of ``codecs.EXACT_CANDIDATES`` and ``k``, so every re-scored hit shown has the
    exact codec's score, *when* and *where*) are read whole and scored exactly; 0 reads none
    (the codes' scores stand, and the cold tier is never read)."""
    if k < 1 or topk < 1:
        raise EercfError(f"k and topk must be at least 1 (got k={k}, topk={topk})")
    exact_wanted = codecs.exact_width(exact_candidates, k)
    fusion = model.fusion_weights(weights)  # checked before any work
    timings = dict(timings or {})
    queries = list(queries) if queries is not None else [None] * len(text)
    rows = int(stage1.index.ntotal) if allowed is None else len(allowed)
    if rows == 0 or len(text) == 0:
        return [SearchResult(q, [], {**timings, "stage1": 0.0, "stage2": 0.0}, stage1.version)
                for q in queries]
    text = text.to(model.device).float()

    started = time.perf_counter()
    with torch.inference_mode():
        query_vectors = model.stage1_query(text).cpu().numpy()
        scale = float(model.logit_scale)
    def recall(n: int) -> tuple[np.ndarray, np.ndarray]:
        return stage1.search(query_vectors, n, allowed, lambda offsets: store.column_array(
            dataset.take(offsets.tolist(), columns=["video"]), "video"))

    videos_wanted, n = k, min(max(k, topk), rows)
    inner, labels = recall(n)
    if groups is not None:  # rows are segments: recall until k videos are in, keep every row
        while n < rows and distinct_videos(groups, labels) < k:
            n = min(rows, 4 * n)
            inner, labels = recall(n)
        k = n
    timings["stage1"] = time.perf_counter() - started

    started = time.perf_counter()
    n_cand = min(topk, labels.shape[1])
    patches = store.dims(dataset.schema)[2]
    # a lone query reads its candidates' id, uri, ... with their features (one Lance call
    # fewer); a batch reads those of the videos it shows once, after scoring
    info_with_features = len(text) == 1
    info: dict[int, tuple[store.Rows, int]] = {}  # row offset -> (rows read, index in them)
    rescored: list[list[_Rescored]] = [[] for _ in range(len(text))]
    reads = {"hot": 0.0, "cold": 0.0}
    shared: _SharedHot | None = None
    pending: list[tuple] = []  # pq queries scored from codes, awaiting their exact patches

    def finish(row: int, found: np.ndarray, ranks: np.ndarray, cand: "VideoFeatures",
               fused: torch.Tensor, scores: dict[str, torch.Tensor]) -> None:
        fused_np = fused[0].float().cpu().numpy()
        frame_weights = scores["frame_weights"][0].float().cpu().numpy()
        patch_weights = scores["patch_weights"][0].float().cpu().numpy()
        similarity = scores["frame_similarity"][0].float().cpu().numpy()
        mask = cand.mask.cpu().numpy()
        background = float(np.median(similarity[mask]))  # the query's typical frame
        rescored[row] = [_Rescored(int(found[j]), float(fused_np[j]), int(ranks[j]),
                                   frame_weights[j], patch_weights[j], mask[j], similarity[j],
                                   background)
                         for j in np.lexsort((ranks, -fused_np))[:k]]  # ties by stage 1

    def read_exact() -> None:
        """One cold-tier read of every pending query's best candidates, whole (one byte range
        a candidate), then their exact pass (a batch of searches shares the read)."""
        if not pending:
            return
        started_cold = time.perf_counter()
        offsets = np.concatenate([found[first.top.numpy()] for _, found, _, _, first in pending])
        per_row = pending[0][3].mask.shape[1] * patches  # every patch of every frame
        exact = (hot.read_whole(dataset, offsets, per_row, model.device) if hot is not None
                 else store.read_whole(dataset, offsets, per_row, model.device))
        reads["cold"] += time.perf_counter() - started_cold
        start = 0
        for row, found, ranks, cand, first in pending:
            n = len(first.top)
            with torch.inference_mode():
                fused, scores = codecs.sharpen(model, text[row:row + 1], cand, first,
                                               exact[start:start + n], fusion)
            finish(row, found, ranks, cand, fused, scores)
            start += n
        pending.clear()

    for row in range(len(text)):
        # one query at a time: its K candidates are distinct rows, read once, in storage order
        # (Lance takes sorted offsets many times faster; a candidate's scores do not depend
        # on its position among the others)
        ranks = np.flatnonzero(labels[row, :n_cand] >= 0)
        ranks = ranks[np.argsort(labels[row, ranks], kind="stable")]
        found = labels[row, ranks]
        if not len(found):
            continue
        read_started = time.perf_counter()
        if codec is None:
            cand, rows_read = store.take_features(dataset, found, model.device,
                                                  info=info_with_features)
        elif hot is not None:
            cand, codes, rows_read = hot.take(found)
        elif len(text) == 1:
            cand, codes, rows_read = store.take_hot(dataset, found, model.device)
        else:  # a batch reads the hot tier of its queries' candidates once
            if shared is None or not shared.holds(found):
                read_exact()
                shared = _SharedHot.read(dataset, labels[row:row + SHARED_QUERIES, :n_cand],
                                         model.device)
            cand, codes = shared.take(found)
            rows_read = None
        reads["hot"] += time.perf_counter() - read_started
        if rows_read is not None:
            info.update((int(offset), (rows_read, i)) for i, offset in enumerate(found))
        with torch.inference_mode():
            if codec is None:
                finish(row, found, ranks, cand, *model.rerank(text[row:row + 1], cand,
                                                              len(found), fusion))
            else:
                first = codecs.rough(model, text[row:row + 1], cand, codes, fusion, codec,
                                     exact=exact_wanted)
                if len(first.top):
                    pending.append((row, found, ranks, cand, first))
                else:
                    finish(row, found, ranks, cand, first.fused, first.scores)
        if len(pending) >= EXACT_READ_QUERIES:
            read_exact()
    read_exact()

    past_k = labels[:, n_cand:k]
    shown = {r.offset for best in rescored for r in best} | set(past_k[past_k >= 0].tolist())
    missing = np.array(sorted(shown - info.keys()), dtype=np.int64)
    if missing.size:
        read_started = time.perf_counter()
        rows_read = store.take_rows(dataset, missing)
        reads["hot"] += time.perf_counter() - read_started
        info.update((int(offset), (rows_read, i)) for i, offset in enumerate(missing))
    results = []
    for row, best in enumerate(rescored):
        hits = [_hit(*info[r.offset], r.score, scale * float(inner[row, r.rank]), r.rank, r,
                     patches) for r in best]
        for j in range(n_cand, min(k, labels.shape[1])):  # past the K: stage-1 order
            if labels[row, j] < 0:
                break
            hits.append(_hit(*info[int(labels[row, j])], None, scale * float(inner[row, j]), j,
                             None, patches))
        if groups is not None:
            hits = group_by_video(hits, videos_wanted)
        results.append(SearchResult(queries[row], hits, version=stage1.version))
    timings["stage2"] = time.perf_counter() - started
    timings["stage2_read"] = reads["hot"] + reads["cold"]
    if codec is not None:
        timings["stage2_read_cold"] = reads["cold"]
    for result in results:
        result.timings = dict(timings)
    return results


@dataclass
class _Rescored:
    """A re-scored candidate kept for its hit: row offset, fused score, 0-based stage-1 rank,
    and for the moment and the place its gate weights (``[F]`` and ``[F * P]``) and frame mask."""

    offset: int
    score: float
    rank: int
    frame_weights: np.ndarray
    patch_weights: np.ndarray
    mask: np.ndarray
    similarity: np.ndarray  # the frame gate's logits [F], and the query's median of them
    background: float


def _hit(info: store.Rows, i: int, score: float | None, stage1_score: float, rank: int,
         rescored: _Rescored | None, patches: int) -> Hit:
    """Hit for row ``i`` of ``info`` (``patches`` per frame); a video past the K re-scored has
    no score, moment or place."""
    times, duration, span = info.timestamps[i], info.durations[i], info.spans[i]
    moment = where = None
    moments = []
    if rescored is not None:
        moment = matched_moment(rescored.frame_weights, times, rescored.mask, duration, span,
                                rescored.similarity, rescored.background)
        where = matched_where(rescored.patch_weights, times, patches)
        if moment.start is not None and moment.end is not None:
            moments = [ScoredMoment(moment.start, moment.end, score)]
    return Hit(video_id=info.ids[i], uri=info.uris[i], score=score, stage1_score=stage1_score,
               stage1_rank=rank + 1, moment=moment, where=where, duration=duration,
               metadata=info.metadata[i], segment=None if span is None else Span(*span),
               moments=moments)


@dataclass
class _SharedHot:
    """The hot tier of several queries' candidates, read in one take (sorted offsets)."""

    offsets: np.ndarray
    features: "VideoFeatures"
    codes: torch.Tensor

    @classmethod
    def read(cls, dataset: "lance.LanceDataset", labels: np.ndarray,
             device: torch.device) -> "_SharedHot":
        offsets = np.unique(labels[labels >= 0])
        features, codes, _ = store.take_hot(dataset, offsets, device, info=False)
        return cls(offsets, features, codes)

    def holds(self, found: np.ndarray) -> bool:
        at = np.searchsorted(self.offsets, found)
        return bool((at < len(self.offsets)).all() and (self.offsets[np.minimum(
            at, len(self.offsets) - 1)] == found).all())

    def take(self, found: np.ndarray) -> tuple["VideoFeatures", torch.Tensor]:
        at = torch.from_numpy(np.searchsorted(self.offsets, found))
        return self.features.index(at), self.codes[at]
