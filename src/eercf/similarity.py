"""The five EERCF similarities (DESIGN.md §1) as pure functions.

Two front-ends share one core: ``dense_scores`` (every text against every video, for training
and all-pairs evaluation) and ``candidate_scores`` (each query against its own K candidates,
for stage 2 of retrieval). Evaluation and the search engine both call these, so they rank
identically. All maths runs in fp32; padded frames never enter a softmax, a sum or a mean.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

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


def _frame_levels(text: torch.Tensor, a: torch.Tensor, frame_mask: torch.Tensor,
                  frame_weight: torch.Tensor, scale: torch.Tensor, temps: Temperatures,
                  pool_temporal: Callable[[torch.Tensor], torch.Tensor],
                  mix_frames: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the text-frame gates ``a [T, V, F]`` to ``S_fw``, ``S_fs`` ``[T, V]`` and the strong
    frame gate ``[T, V, F]``. ``pool_temporal(gate)`` pools the temporal vectors with gate
    weights, ``mix_frames(gate, W_f)`` is ``gate @ W_f``."""
    a = a.masked_fill(~frame_mask, 0.0)
    weak_frame_gate = mix_frames(masked_softmax(a, frame_mask, temps.frame_weak),
                                 frame_weight.float())
    frame_weak = scale * (a * weak_frame_gate).sum(-1)
    strong_frame_gate = masked_softmax(a, frame_mask, temps.frame_strong)
    pooled = F.normalize(pool_temporal(strong_frame_gate), dim=-1)
    frame_strong = scale * (pooled * text[:, None, :]).sum(-1)
    return frame_weak, frame_strong, strong_frame_gate


_workspace = threading.local()


def _scratch(name: str, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """This thread's fp32 buffer ``name``, reused from call to call. Stage 2 needs a few MB of
    scratch per query, and a fresh allocation that size page-faults: on a CPU that costs
    more than the arithmetic done in it."""
    buffers = _workspace.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    # a buffer made under inference mode cannot be written outside it, and vice versa
    key = (name, torch.is_inference_mode_enabled())
    held = buffers.get(key)
    if held is None or held.numel() < numel or held.device != device:
        held = buffers[key] = torch.empty(numel, device=device)
    return held[:numel].view(*shape)


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
    frame_weak, frame_strong, _ = _frame_levels(
        text, a, frame_mask, frame_weight, scale, temps,
        pool_temporal=lambda w: torch.einsum("tvf,vfd->tvd", w, temporal.float()),
        mix_frames=torch.matmul)
    b = b.masked_fill(~patch_mask, 0.0)
    patch_gate = masked_softmax(b, patch_mask, temps.patch)
    patch_weak = scale * (b * patch_gate).sum(-1)
    pooled = F.normalize(torch.einsum("tvn,vnd->tvd", patch_gate, flat_patches), dim=-1)
    patch_strong = scale * (pooled * text[:, None, :]).sum(-1)
    return {"video": video_score, "frame_weak": frame_weak, "frame_strong": frame_strong,
            "patch_weak": patch_weak, "patch_strong": patch_strong}


@torch.no_grad()
def candidate_scores(text: torch.Tensor, video: torch.Tensor, frames: torch.Tensor,
                     temporal: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, *,
                     global_weight: torch.Tensor, frame_weight: torch.Tensor,
                     scale: torch.Tensor, temps: Temperatures, with_weights: bool = True,
                     levels: Collection[str] = LEVELS) -> dict[str, torch.Tensor]:
    """Each query ``text[t]`` against its own K candidates: the video tensors carry a leading
    ``[T, K]`` (``video [T, K, D]``, ``frames [T, K, F, D]``, ``patches [T, K, F, P, D]``,
    ``mask [T, K, F]``). Returns the ``[T, K]`` logits of ``levels``, plus the gate weights
    that say *when* (``frame_weights [T, K, F]``) and *where* (``patch_weights [T, K, F*P]``)
    the match is.

    Stage 2's cost is reading and scoring the candidates' patches (30 MB of fp16 for K = 50 at
    ViT-B/32 shapes), so the fine levels may come in fp16, as an index stores them, and each
    candidate's patches are widened to fp32 in a reused scratch and used while they sit in
    cache. Every candidate is scored by the same operations on same-shaped operands,
    whatever its position or the other candidates, so a candidate's scores are bit-identical
    in any order or company: the search engine (candidates in storage order) and evaluation
    (in stage-1 order) agree exactly. Stage 2 is inference: no gradient flows through here."""
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown levels {sorted(unknown)}")
    text = text.float()
    n_queries, k, n_frames, n_patches, dim = patches.shape
    out: dict[str, torch.Tensor] = {}
    # products and sums rather than BLAS calls over the candidates: a candidate's result then
    # depends on its row alone, where a BLAS kernel may round a row by where it falls
    if "video" in levels:
        query = text @ global_weight.float()
        out["video"] = scale * (video.float() * query[:, None, :]).sum(-1)

    def widened(features: torch.Tensor) -> torch.Tensor:  # an fp32 copy to work in
        return _scratch("frames", features.shape, text.device).copy_(features)

    a = widened(frames).mul_(text[:, None, None, :]).sum(-1)
    frame_weak, frame_strong, frame_gate = _frame_levels(
        text, a, mask, frame_weight, scale, temps,
        pool_temporal=lambda w: widened(temporal).mul_(w[..., None]).sum(-2),
        mix_frames=lambda w, x: (w[..., :, None] * x).sum(-2))
    out.update(frame_weak=frame_weak, frame_strong=frame_strong)
    flat_patches = patches.reshape(n_queries, k, n_frames * n_patches, dim)
    patch_mask = mask.repeat_interleave(n_patches, dim=2)
    b = _patch_products(flat_patches, text[:, None, :].expand(n_queries, k, dim))
    b = b.masked_fill(~patch_mask, 0.0)
    patch_gate = masked_softmax(b, patch_mask, temps.patch)
    out["patch_weak"] = scale * (b * patch_gate).sum(-1)
    if "patch_strong" in levels:
        pooled = _patch_products(flat_patches, patch_gate, transposed=True)
        out["patch_strong"] = scale * (F.normalize(pooled, dim=-1) * text[:, None, :]).sum(-1)
    out = {level: out[level] for level in LEVELS if level in levels}
    if with_weights:
        out["frame_weights"] = frame_gate
        out["patch_weights"] = patch_gate
    return out


def _patch_products(patches: torch.Tensor, vectors: torch.Tensor,
                    transposed: bool = False) -> torch.Tensor:
    """``x @ v`` (or ``x.T @ v``) for each candidate's patches ``x = patches[q, c]`` (``[N, D]``,
    any float dtype) and its vector ``v = vectors[q, c]``. Each ``x`` is widened into one fp32
    scratch (1.2 MB at ViT-B/32 shapes) that the matrix-vector product then reads from cache,
    where converting all K candidates at once would send 60 MB through memory."""
    n_queries, k, n, dim = patches.shape
    scratch = _scratch("patches", (n, dim), vectors.device)
    out = torch.empty(n_queries, k, dim if transposed else n, device=vectors.device)
    for q in range(n_queries):
        for c in range(k):
            x = scratch.copy_(patches[q, c])
            torch.mv(x.T if transposed else x, vectors[q, c], out=out[q, c])
    return out


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
