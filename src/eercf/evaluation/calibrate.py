"""Fusion weights fitted to data: choose stage 2's weights and K on a validation split so that
re-ranking helps on the data at hand, not only on the data the paper tuned for.

Every level's score of each caption's top ``max(topks)`` stage-1 candidates is computed once
(``EERCF.rerank``, the code search runs); any weights and any K <= that are then a weighted sum
and a sort away, so a grid of a few thousand settings costs seconds. Stage 1 alone (every fine
weight zero) is among the candidates, and a setting is admissible only if its t2v R@1 is at
least stage 1's, so the fitted two-stage is never below stage 1 on the split it was fitted on.
The paper's weights are kept unless an admissible setting beats them clearly in mean
reciprocal rank (smoother than R@1 on a few hundred queries); see :func:`fit_fusion`."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import EercfError
from ..model.similarity import LEVELS

if TYPE_CHECKING:
    from ..model import EERCF
    from .evaluator import EncodedSet

TOPKS = (10, 20, 50, 100)
GRID = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)   # each fine level's weight, the video level's fixed below
VIDEO_WEIGHTS = (0.0, 0.5)              # only ratios matter, so 0.5 (the paper's) or none at all
FINE = ("frame_weak", "frame_strong", "patch_weak", "patch_strong")


def level_scores(model: "EERCF", text: torch.Tensor, videos, depth: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each caption's top ``depth`` stage-1 candidates ``[C, depth]`` (best first) and every
    level's ``[C, depth]`` scores of them, as stage 2 computes them."""
    from .evaluator import CandidateGather, queries_per_chunk, stage1_scores

    videos = videos.as_stored().to(model.device)
    every = {level: 1.0 for level in LEVELS}
    with torch.inference_mode():
        stage1 = stage1_scores(model, text.to(model.device), videos)
        candidates = stage1.topk(depth, dim=1).indices
        out = {level: np.empty(candidates.shape, np.float64) for level in LEVELS}
        step = queries_per_chunk(videos, depth)
        gather = CandidateGather(videos, min(step, len(text)) * depth)
        for start in range(0, len(text), step):
            rows = slice(start, start + step)
            _, scores = model.rerank(text[rows].to(model.device),
                                     gather(candidates[rows].reshape(-1)), depth, every,
                                     with_weights=False)
            for level in LEVELS:
                out[level][rows] = scores[level].double().cpu().numpy()
    return candidates.cpu().numpy(), out


def ranks_of(candidates: np.ndarray, scores: dict[str, np.ndarray], truth: np.ndarray,
             weights: dict[str, float], k: int) -> np.ndarray:
    """1-based t2v rank of each caption's video under two-stage retrieval with ``weights``
    and ``k``; a video past the ``k`` candidates keeps its stage-1 rank (0: past the depth,
    counted as not found). Ties count against the query, as in the metrics."""
    fused = sum(w * scores[level][:, :k] for level, w in weights.items() if w)
    hit = candidates[:, :k] == truth[:, None]
    inside = hit.any(1)
    own = np.where(hit, fused, -np.inf).max(1)
    rank_in = 1 + ((fused >= own[:, None]) & ~hit).sum(1)
    deeper = candidates[:, k:] == truth[:, None]
    rank_out = np.where(deeper.any(1), k + 1 + deeper.argmax(1), 0) if deeper.shape[1] else 0
    return np.where(inside, rank_in, rank_out)


def _summary(ranks: np.ndarray) -> dict[str, float]:
    found = ranks > 0
    return {"R1": float(100 * np.mean(found & (ranks <= 1))),
            "R5": float(100 * np.mean(found & (ranks <= 5))),
            "MRR": float(np.mean(_reciprocal(ranks)))}


def _reciprocal(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)


def fit_fusion(model: "EERCF", encoded: "EncodedSet", topks: Sequence[int] = TOPKS,
               margin: float = 2.0) -> dict[str, Any]:
    """The fusion weights and K that stage 2 should use on data like ``encoded`` (a validation
    split): ``{"weights", "topk", "validation": {"stage1", "paper", "fitted"}}``, each of the
    last three ``{"R1", "R5", "MRR"}`` on t2v.

    The paper's weights stay unless another admissible choice beats their mean reciprocal rank
    by ``margin`` standard errors of the paired per-caption difference (a few hundred captions
    cannot tell small differences from noise, and a grid of thousands finds noise); where the
    paper's are not admissible (below stage 1's R@1), the best admissible choice is taken."""
    n_videos = len(encoded.video_ids)
    topks = sorted({min(int(k), n_videos) for k in topks})
    if len(encoded.captions) < 10 or n_videos < 2:
        raise EercfError(f"{len(encoded.captions)} captions of {n_videos} videos are too few to "
                         "fit fusion weights on")
    candidates, scores = level_scores(model, encoded.text, encoded.videos, topks[-1])
    truth = encoded.caption_video.numpy()
    paper = model.fusion_weights(paper=True)
    paper_k = min(model.default_topk(paper=True), topks[-1])
    stage1 = _summary(ranks_of(candidates, scores, truth, {"video": 1.0}, 1))
    paper_ranks = ranks_of(candidates, scores, truth, paper, paper_k)
    paper_rr = _reciprocal(paper_ranks)
    paper_ok = _summary(paper_ranks)["R1"] >= stage1["R1"]
    best_key, best = None, (paper, paper_k) if paper_ok else ({"video": 1.0}, 1)
    for video, *fine in itertools.product(VIDEO_WEIGHTS, *[GRID] * len(FINE)):
        weights = {"video": video, **dict(zip(FINE, fine))}
        if not any(weights.values()):
            continue
        for k in topks if any(fine) else topks[:1]:  # stage 1 alone ranks alike at every K
            ranks = ranks_of(candidates, scores, truth, weights, k)
            if _summary(ranks)["R1"] < stage1["R1"]:
                continue
            gain = _reciprocal(ranks) - paper_rr
            error = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
            if paper_ok and gain.mean() <= margin * error:
                continue
            key = (float(gain.mean()), -sum(abs(weights[level] - paper[level]) for level in weights))
            if best_key is None or key > best_key:
                best_key, best = key, (weights, k)
    weights, k = best
    fitted = _summary(ranks_of(candidates, scores, truth, weights, k))
    return {"weights": {level: float(weights.get(level, 0.0)) for level in LEVELS}, "topk": int(k),
            "validation": {"stage1": stage1, "paper": _summary(paper_ranks),
                           "fitted": fitted, "paper_kept": best_key is None and paper_ok,
                           "videos": n_videos, "captions": len(encoded.captions)}}


def apply_fitted(model: "EERCF", fitted: dict[str, Any]) -> None:
    """Record fitted weights in the model's config (``eercf.fitted``), which search and
    ``eercf eval`` then use by default; the paper's stay in ``eercf.rerank``."""
    model.config = {**model.config, "eercf": {**model.config["eercf"], "fitted": fitted}}
