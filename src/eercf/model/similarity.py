"""The five EERCF similarities (``docs/method.md`` §3) as pure functions over the TIB gates.

Two front-ends share one core: ``dense_scores`` (every text against every video, for training
and all-pairs evaluation) and ``candidate_scores`` (each query against its own K candidates,
for stage 2 of retrieval). Evaluation and the search engine both call these, so they rank
identically. All maths runs in fp32; padded frames never enter a softmax, a sum or a mean.
"""
from __future__ import annotations

import math
import threading
from typing import Collection, Sequence

import torch

from . import tib
from .tib import Temperatures

LEVELS = ("video", "frame_weak", "frame_strong", "patch_weak", "patch_strong")


_workspace = threading.local()


def scratch(name: str, shape: Sequence[int], device: torch.device,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """This thread's buffer ``name``, reused from call to call. Stage 2 needs a few MB of
    scratch per query, and a fresh allocation that size page-faults: on a CPU that costs
    more than the arithmetic done in it."""
    buffers = _workspace.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    # a buffer made under inference mode cannot be written outside it, and vice versa
    key = (name, dtype, torch.is_inference_mode_enabled())
    held = buffers.get(key)
    if held is None or held.numel() < numel or held.device != device:
        held = buffers[key] = torch.empty(numel, device=device, dtype=dtype)
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
    frame_weak, frame_strong, _ = tib.frame_levels(
        text, a, frame_mask, frame_weight, scale, temps,
        pool=lambda w: torch.einsum("tvf,vfd->tvd", w, temporal.float()), mix=torch.matmul)
    b, patch_gate = tib.patch_gate(b, patch_mask, temps)
    patch_weak = tib.weak_score(b, patch_gate, scale)
    patch_strong = tib.strong_score(
        text, tib.pooled(patch_gate, lambda w: torch.einsum("tvn,vnd->tvd", w, flat_patches)), scale)
    return {"video": video_score, "frame_weak": frame_weak, "frame_strong": frame_strong,
            "patch_weak": patch_weak, "patch_strong": patch_strong}


@torch.no_grad()
def candidate_scores(text: torch.Tensor, video: torch.Tensor, frames: torch.Tensor,
                     temporal: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, *,
                     global_weight: torch.Tensor, frame_weight: torch.Tensor,
                     scale: torch.Tensor, temps: Temperatures, with_weights: bool = True,
                     levels: Collection[str] = LEVELS, patches_only: bool = False
                     ) -> dict[str, torch.Tensor]:
    """Each query ``text[t]`` against its own K candidates: the video tensors carry a leading
    ``[T, K]`` (``video [T, K, D]``, ``frames [T, K, F, D]``, ``patches [T, K, F, P, D]``,
    ``mask [T, K, F]``; for one query, ``patches`` may instead be a codec's view with
    ``products(text)``, ``pooled_sum(gate)`` and ``per_frame``, see ``index.codecs``).
    Returns the ``[T, K]`` logits of ``levels``, plus the gate weights
    that say *when* (``frame_weights [T, K, F]``, and ``frame_similarity``, the text-frame
    products they are the softmax of) and *where* (``patch_weights [T, K, F*P]``) the match is.
    With ``patches_only`` only the patch levels and weights are computed: a compact codec's
    exact pass changes nothing else.

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
    n_queries, k, n_frames, dim = frames.shape
    out: dict[str, torch.Tensor] = {}
    # products and sums rather than BLAS calls over the candidates: a candidate's result then
    # depends on its row alone, where a BLAS kernel may round a row by where it falls
    if patches_only:
        levels = [level for level in levels if level.startswith("patch")]
    if "video" in levels:
        query = text @ global_weight.float()
        out["video"] = scale * (video.float() * query[:, None, :]).sum(-1)

    def widened(features: torch.Tensor) -> torch.Tensor:  # an fp32 copy to work in
        return scratch("frames", features.shape, text.device).copy_(features)

    if not patches_only:
        a = widened(frames).mul_(text[:, None, None, :]).sum(-1)
        frame_weak, frame_strong, frame_gate = tib.frame_levels(
            text, a, mask, frame_weight, scale, temps,
            pool=lambda w: widened(temporal).mul_(w[..., None]).sum(-2),
            mix=lambda w, x: (w[..., :, None] * x).sum(-2))
        out.update(frame_weak=frame_weak, frame_strong=frame_strong)
    if isinstance(patches, torch.Tensor):
        n_patches = patches.shape[3]
        flat_patches = patches.reshape(n_queries, k, n_frames * n_patches, dim)
        b = patch_products(flat_patches, text[:, None, :].expand(n_queries, k, dim))
        pool = lambda w: patch_products(flat_patches, w, transposed=True)  # noqa: E731
    else:  # a codec's view (index.codecs: SelectedPatches, WholePatches)
        n_patches = patches.per_frame
        b, pool = patches.products(text), patches.pooled_sum
    patch_mask = mask.repeat_interleave(n_patches, dim=2)
    b, patch_gate = tib.patch_gate(b, patch_mask, temps)
    out["patch_weak"] = tib.weak_score(b, patch_gate, scale)
    if "patch_strong" in levels:
        out["patch_strong"] = tib.strong_score(text, tib.pooled(patch_gate, pool), scale)
    out = {level: out[level] for level in LEVELS if level in levels}
    if with_weights:
        if not patches_only:
            out["frame_weights"] = frame_gate
            out["frame_similarity"] = a.clone()  # the frame gate's logits before its temperature
        out["patch_weights"] = patch_gate
    return out


def patch_products(patches: torch.Tensor | Sequence[Sequence[torch.Tensor]],
                   vectors: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``x @ v`` (or ``x.T @ v``) for each candidate's patches ``x = patches[q][c]`` (``[N, D]``,
    any float dtype: a ``[T, K, N, D]`` tensor, or per query a list of ``[N, D]`` tensors, such
    as views of a memory-mapped cold tier) and its vector ``v = vectors[q, c]``. Each ``x`` is
    widened into one fp32 scratch (1.2 MB at ViT-B/32 shapes) that the matrix-vector product
    then reads from cache, where converting all K candidates at once would send 60 MB through
    memory. The same operations whatever holds ``x``: the same products to the bit."""
    n_queries, k = vectors.shape[:2]
    n, dim = patches[0][0].shape
    widened = scratch("patches", (n, dim), vectors.device)
    out = torch.empty(n_queries, k, dim if transposed else n, device=vectors.device)
    for q in range(n_queries):
        candidates = patches[q]
        for c in range(k):
            x = widened.copy_(candidates[c])
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
