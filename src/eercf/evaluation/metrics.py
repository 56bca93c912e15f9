"""Retrieval metrics of the field's multi-caption protocol: a caption ranks every video (t2v); a
video ranks every caption and counts its best-placed own caption (v2t). Ties always count
against the query, so a degenerate model can never look good. Items promoted by two-stage
retrieval (the re-scored candidates) rank above all others."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import EercfError

RECALL_AT = (1, 5, 10, 50)
METRIC_KEYS = tuple(f"R{k}" for k in RECALL_AT) + ("MdR", "MnR")
_ROW_CHUNK = 1024


def match_ranks(scores: torch.Tensor | np.ndarray, positive: torch.Tensor | np.ndarray,
                promoted: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """1-based rank of each query's best-placed positive item, ``[Q]``.

    ``scores [Q, N]`` orders items per query; ``positive [Q, N]`` marks the matches. Items in
    ``promoted`` (the re-scored candidates of two-stage retrieval) rank above every item not in
    it, whatever their scores. A non-matching item placed level with the best match counts
    against the query: rank = 1 + the number of non-matching items ranked at or above it.
    """
    scores = torch.as_tensor(scores)
    positive = torch.as_tensor(positive, dtype=torch.bool, device=scores.device)
    if scores.ndim != 2 or positive.shape != scores.shape:
        raise EercfError(f"scores must be a [queries, items] matrix with a same-shaped positive "
                         f"mask, got {tuple(scores.shape)} and {tuple(positive.shape)}")
    if torch.isnan(scores).any():
        raise EercfError("the similarity matrix contains NaN")
    if not positive.any(1).all():
        missing = int((~positive.any(1)).nonzero()[0])
        raise EercfError(f"query {missing} has no matching item")
    if promoted is None:
        promoted = torch.zeros_like(positive)
    promoted = torch.as_tensor(promoted, dtype=torch.bool, device=scores.device)
    ranks = []
    for start in range(0, scores.shape[0], _ROW_CHUNK):
        rows = slice(start, start + _ROW_CHUNK)
        s, pos, up = scores[rows], positive[rows], promoted[rows]
        best_up = (pos & up).any(1, keepdim=True)  # the best match is a promoted item
        same_tier = up == best_up
        best = torch.where(pos & same_tier, s, torch.full_like(s, float("-inf"))).amax(1, keepdim=True)
        above = ~pos & ((up & ~best_up) | (same_tier & (s >= best)))
        ranks.append(1 + above.sum(1))
    return torch.cat(ranks)


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray | Sequence[int]) -> dict[str, float]:
    """``R1 R5 R10 R50`` (percent of queries whose match ranks within k), median and mean rank."""
    ranks = np.asarray(torch.as_tensor(ranks).cpu(), dtype=np.float64)
    if ranks.size == 0:
        raise EercfError("no queries to score")
    out = {f"R{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    return out


def retrieval_metrics(sim: torch.Tensor | np.ndarray,
                      query_items: torch.Tensor | np.ndarray | Sequence[int] | None = None
                      ) -> dict[str, float]:
    """Metrics of ``sim[i, j]`` (score of query i for item j) where query i matches item
    ``query_items[i]`` (default: item i). Keys ``R1 R5 R10 R50 MdR MnR``; ties count against."""
    sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise EercfError(f"sim must be a [queries, items] matrix, got shape {tuple(sim.shape)}")
    n_queries, n_items = sim.shape
    if query_items is None:
        if n_queries > n_items:
            raise EercfError(f"{n_queries} queries but only {n_items} items: pass query_items")
        query_items = torch.arange(n_queries)
    query_items = torch.as_tensor(query_items, dtype=torch.long, device=sim.device)
    _check_index(query_items, n_queries, n_items, "query_items")
    positive = torch.nn.functional.one_hot(query_items, n_items).bool()
    return metrics_from_ranks(match_ranks(sim, positive))


def multi_caption_metrics(sim: torch.Tensor | np.ndarray,
                          caption_video: torch.Tensor | np.ndarray | Sequence[int], *,
                          v2t_sim: torch.Tensor | np.ndarray | None = None,
                          t2v_promoted: torch.Tensor | None = None,
                          v2t_promoted: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Both directions of the multi-caption protocol for ``sim [captions, videos]`` and
    ``caption_video[c]``, the video caption c describes.

    t2v: each caption ranks all videos. v2t: each video that has captions ranks all captions
    (``v2t_sim [videos, captions]``, default ``sim.T``) and counts its best-ranked own caption.
    ``*_promoted`` mark re-scored candidates ranked above all others (two-stage retrieval).
    """
    sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise EercfError(f"sim must be a [captions, videos] matrix, got shape {tuple(sim.shape)}")
    n_captions, n_videos = sim.shape
    caption_video = torch.as_tensor(caption_video, dtype=torch.long, device=sim.device)
    _check_index(caption_video, n_captions, n_videos, "caption_video")
    t2v_positive = torch.nn.functional.one_hot(caption_video, n_videos).bool()
    v2t_sim = sim.T if v2t_sim is None else torch.as_tensor(v2t_sim)
    v2t_positive = t2v_positive.T
    queried = v2t_positive.any(1)  # videos without captions stay in the gallery, not queries
    if v2t_promoted is not None:
        v2t_promoted = torch.as_tensor(v2t_promoted)[queried]
    return {
        "t2v": metrics_from_ranks(match_ranks(sim, t2v_positive, t2v_promoted)),
        "v2t": metrics_from_ranks(match_ranks(v2t_sim[queried], v2t_positive[queried],
                                              v2t_promoted)),
    }


def _check_index(index: torch.Tensor, n_queries: int, n_items: int, name: str) -> None:
    if index.shape != (n_queries,):
        raise EercfError(f"{name} must hold one item index per query ({n_queries}), "
                         f"got shape {tuple(index.shape)}")
    if n_queries and (int(index.min()) < 0 or int(index.max()) >= n_items):
        raise EercfError(f"{name} has an item index outside 0..{n_items - 1}")


def apply_dual_softmax(sim: torch.Tensor) -> torch.Tensor:
    """The dual-softmax (inverted softmax) re-normalisation over the query set: each score is
    scaled by its softmax over all queries (rows), which penalises items that match everything.
    Transductive: a query's ranking depends on the other queries. ``sim`` holds logits."""
    return sim * torch.softmax(sim.float(), dim=0).to(sim.dtype)
