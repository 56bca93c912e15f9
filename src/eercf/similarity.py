"""The five EERCF similarities (DESIGN.md §1) as pure functions.

Two front-ends share one core: ``dense_scores`` (every text against every video, for training
and all-pairs evaluation) and ``candidate_scores`` (each query against its own K candidates,
for stage 2 of retrieval). Evaluation and the search engine both call these, so they rank
identically. All maths runs in fp32; padded frames never enter a softmax, a sum or a mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

LEVELS = ("video", "frame_weak", "frame_strong", "patch_weak", "patch_strong")


@dataclass(frozen=True)
class Temperatures:
    frame_weak: float = 0.01
    frame_strong: float = 0.1
    patch: float = 0.01

    @classmethod
    def from_config(cls, method: dict) -> "Temperatures":
        return cls(method["frame_weak_temperature"], method["frame_strong_temperature"],
                   method["patch_temperature"])


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of ``logits / temperature`` over the last axis, zero where ``mask`` is False."""
    return (logits / temperature).masked_fill(~mask, float("-inf")).softmax(dim=-1)


def _core(text: torch.Tensor, a: torch.Tensor, b: torch.Tensor, frame_mask: torch.Tensor,
          patch_mask: torch.Tensor, video_score: torch.Tensor,
          pool_temporal: Callable[[torch.Tensor], torch.Tensor],
          pool_patches: Callable[[torch.Tensor], torch.Tensor],
          frame_weight: torch.Tensor, scale: torch.Tensor, temps: Temperatures,
          with_weights: bool) -> dict[str, torch.Tensor]:
    """From the text-frame gates ``a [T, V, F]`` and text-patch gates ``b [T, V, N]`` to the
    five logits ``[T, V]``. ``pool_*`` turn gate weights into pooled unit-less vectors ``[T, V, D]``."""
    a = a.masked_fill(~frame_mask, 0.0)
    b = b.masked_fill(~patch_mask, 0.0)
    weak_frame_gate = masked_softmax(a, frame_mask, temps.frame_weak) @ frame_weight.float()
    frame_weak = scale * (a * weak_frame_gate).sum(-1)
    patch_gate = masked_softmax(b, patch_mask, temps.patch)
    patch_weak = scale * (b * patch_gate).sum(-1)
    strong_frame_gate = masked_softmax(a, frame_mask, temps.frame_strong)
    pooled = F.normalize(pool_temporal(strong_frame_gate), dim=-1)
    frame_strong = scale * (pooled * text[:, None, :]).sum(-1)
    pooled = F.normalize(pool_patches(patch_gate), dim=-1)
    patch_strong = scale * (pooled * text[:, None, :]).sum(-1)
    out = {"video": video_score, "frame_weak": frame_weak, "frame_strong": frame_strong,
           "patch_weak": patch_weak, "patch_strong": patch_strong}
    if with_weights:
        out["frame_weights"] = strong_frame_gate
        out["patch_weights"] = patch_gate
    return out


def dense_scores(text: torch.Tensor, video: torch.Tensor, frames: torch.Tensor,
                 temporal: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, *,
                 global_weight: torch.Tensor, frame_weight: torch.Tensor, scale: torch.Tensor,
                 temps: Temperatures) -> dict[str, torch.Tensor]:
    """Every text ``[T, D]`` against every video (``video [V, D]``, ``frames``/``temporal``
    ``[V, F, D]``, ``patches [V, F, P, D]``, ``mask [V, F]``): five ``[T, V]`` logits.
    Memory grows as ``T * V * (F * P + D)``: callers chunk."""
    text = text.float()
    n_videos, n_frames, n_patches, dim = patches.shape
    flat_patches = patches.float().reshape(n_videos, n_frames * n_patches, dim)
    frame_mask = mask[None]
    patch_mask = mask.repeat_interleave(n_patches, dim=1)[None]
    a = torch.einsum("td,vfd->tvf", text, frames.float())
    b = torch.einsum("td,vnd->tvn", text, flat_patches)
    video_score = scale * (text @ global_weight.float()) @ video.float().T
    return _core(text, a, b, frame_mask, patch_mask, video_score,
                 lambda w: torch.einsum("tvf,vfd->tvd", w, temporal.float()),
                 lambda w: torch.einsum("tvn,vnd->tvd", w, flat_patches),
                 frame_weight, scale, temps, with_weights=False)


def candidate_scores(text: torch.Tensor, video: torch.Tensor, frames: torch.Tensor,
                     temporal: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, *,
                     global_weight: torch.Tensor, frame_weight: torch.Tensor,
                     scale: torch.Tensor, temps: Temperatures,
                     with_weights: bool = True) -> dict[str, torch.Tensor]:
    """Each query ``text[t]`` against its own K candidates: the video tensors carry a leading
    ``[T, K]`` (``video [T, K, D]``, ``frames [T, K, F, D]``, ``patches [T, K, F, P, D]``,
    ``mask [T, K, F]``). Returns ``[T, K]`` logits, plus the gate weights that say *when*
    (``frame_weights [T, K, F]``) and *where* (``patch_weights [T, K, F*P]``) the match is."""
    text = text.float()
    n_queries, k, n_frames, n_patches, dim = patches.shape
    flat_patches = patches.float().reshape(n_queries, k, n_frames * n_patches, dim)
    patch_mask = mask.repeat_interleave(n_patches, dim=2)
    a = torch.einsum("td,tkfd->tkf", text, frames.float())
    b = torch.einsum("td,tknd->tkn", text, flat_patches)
    query = text @ global_weight.float()
    video_score = scale * torch.einsum("td,tkd->tk", query, video.float())
    return _core(text, a, b, mask, patch_mask, video_score,
                 lambda w: torch.einsum("tkf,tkfd->tkd", w, temporal.float()),
                 lambda w: torch.einsum("tkn,tknd->tkd", w, flat_patches),
                 frame_weight, scale, temps, with_weights=with_weights)


def fuse(scores: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Stage-2 score: a weighted sum of the levels (default ``0.8*S_fw + 0.2*S_fs + 0.2*S_pw
    + 0.5*S_v``); ``weights`` maps level names to weights, other keys are ignored."""
    total = None
    for level in LEVELS:
        w = float(weights.get(level, 0.0))
        if w:
            term = w * scores[level]
            total = term if total is None else total + term
    if total is None:
        raise ValueError("fusion weights are all zero")
    return total


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``(CE over rows + CE over columns) / 2`` with the diagonal as target."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pearson_constraint(text: torch.Tensor, other: torch.Tensor, diagonal: float,
                       off_diagonal: float) -> torch.Tensor:
    """``L_P``: standardise both feature batches (unbiased std), correlate dimension-wise, and
    pull the diagonal of the cross-correlation to 1 (and, if weighted, the rest to 0)."""
    z_t = (text - text.mean(0)) / text.std(0)
    z_x = (other - other.mean(0)) / other.std(0)
    corr = z_t.T @ z_x / text.shape[0]
    diag = torch.diagonal(corr)
    on = (diag - 1).pow(2).sum()
    off = corr.pow(2).sum() - diag.pow(2).sum()
    return diagonal * on + off_diagonal * off
