"""The text-gated interaction block (TIB, ``docs/method.md`` §2): the one place where a text
gates a video's frames or patches. It has no parameters: a gate is a masked softmax of the
text-frame (or text-patch) products at a temperature, a *weak* score is the gate-weighted sum
of those products, a *strong* feature is the video re-pooled with the gate's weights.

Every caller (all-pairs scores, stage 2 over candidates, the training loss with each video
gated by its own caption) brings its own layout of texts and videos; each passes ``pool``,
the gate-weighted sum over the frame (or patch) axis for that layout, so the maths is written
once while the memory-friendly product stays the caller's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Pool = Callable[[torch.Tensor], torch.Tensor]  # gate [..., N] -> gate-weighted sum [..., D]
Mix = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (gate [..., F], W_f) -> gate @ W_f


@dataclass(frozen=True)
class Temperatures:
    """Softmax temperatures of the gates (the paper's: 0.01 weak frame, 0.1 strong frame,
    0.01 patch)."""

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


def weak_score(products: torch.Tensor, gate: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``s * sum_n gate_n * products_n``: the weak score of a gate over its products."""
    return scale * (products * gate).sum(-1)


def pooled(gate: torch.Tensor, pool: Pool) -> torch.Tensor:
    """The strong feature: the video re-pooled with the gate's weights, L2-normalised."""
    return F.normalize(pool(gate), dim=-1)


def strong_score(text: torch.Tensor, feature: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``s * t . feature`` for texts ``[T, D]`` and pooled features ``[T, V, D]``."""
    return scale * (feature * text[:, None, :]).sum(-1)


def frame_levels(text: torch.Tensor, products: torch.Tensor, mask: torch.Tensor,
                 frame_weight: torch.Tensor, scale: torch.Tensor, temps: Temperatures,
                 pool: Pool, mix: Mix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text-frame products ``a [T, V, F]`` -> ``S_fw``, ``S_fs`` ``[T, V]`` and the strong
    frame gate ``[T, V, F]`` (what says *when* a video matched). ``pool(gate)`` sums the
    temporal features with the gate's weights; ``mix(gate, W_f)`` is ``gate @ W_f``."""
    products = products.masked_fill(~mask, 0.0)
    weak_gate = mix(masked_softmax(products, mask, temps.frame_weak), frame_weight.float())
    strong_gate = masked_softmax(products, mask, temps.frame_strong)
    return (weak_score(products, weak_gate, scale),
            strong_score(text, pooled(strong_gate, pool), scale), strong_gate)


def patch_gate(products: torch.Tensor, mask: torch.Tensor,
               temps: Temperatures) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-patch products ``b [..., F*P]`` with padded frames' patches zeroed, and the patch
    gate (what says *where*); the weak and strong patch scores both use this one gate."""
    products = products.masked_fill(~mask, 0.0)
    return products, masked_softmax(products, mask, temps.patch)
