"""The EERCF training loss (``docs/method.md`` §4): two symmetric contrastive terms over
fused logits and the Pearson constraint. Its weights are a training setting (the ``loss``
section of a training config), not part of a model: they change how a model learns, never
what its features are."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import EercfError
from . import tib
from .features import VideoFeatures
from .similarity import dense_scores
from .tib import Temperatures


@dataclass(frozen=True)
class LossWeights:
    """``L = weak_weight * symCE(weak_video*S_v + weak_frame*S_fw + weak_patch*S_pw)
    + strong_weight * symCE(strong_frame*S_fs + strong_patch*S_ps)
    + pearson_weight * (pearson_video*L_P(t, v) + pearson_frame*L_P(t, vt) + pearson_patch*L_P(t, vt_patch))``,
    with ``L_P = pearson_diag * sum (C_dd - 1)^2 + pearson_offdiag * sum C_de^2``. The
    defaults are the authors' MSR-VTT recipe."""

    weak_weight: float = 0.8
    strong_weight: float = 0.2
    weak_video: float = 0.5
    weak_frame: float = 0.5
    weak_patch: float = 0.05
    strong_frame: float = 1.0
    strong_patch: float = 0.0
    pearson_weight: float = 0.001
    pearson_diag: float = 0.14
    pearson_offdiag: float = 0.0
    pearson_video: float = 1.0
    pearson_frame: float = 1.0
    pearson_patch: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "LossWeights":
        """Weights from a config section; a key that is not a weight is one clear error."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EercfError(f"unknown loss weight {unknown[0]!r} (known: {', '.join(sorted(known))})")
        bad = [k for k, v in values.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise EercfError(f"loss weight {bad[0]} must be a number, got {values[bad[0]]!r}")
        return cls(**{k: float(v) for k, v in values.items()})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


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


def loss(text: torch.Tensor, video: VideoFeatures, *, global_weight: torch.Tensor,
         frame_weight: torch.Tensor, scale: torch.Tensor, temps: Temperatures,
         weights: LossWeights) -> dict[str, torch.Tensor]:
    """Every term of the loss and their weighted ``total`` for matched pairs (text i with
    video i). The strong scores gate each video by its own caption only, with the gate weights
    detached; the weak ones and ``S_v`` are all-pairs."""
    w = weights
    t = text.float()
    n_videos, n_frames, n_patches, dim = video.patches.shape
    dense = dense_scores(t, video.video, video.frames, video.temporal, video.patches, video.mask,
                         global_weight=global_weight, frame_weight=frame_weight, scale=scale,
                         temps=temps)
    flat_patches = video.patches.float().reshape(n_videos, n_frames * n_patches, dim)
    patch_mask = video.mask.repeat_interleave(n_patches, dim=1)
    own_a = torch.einsum("vd,vfd->vf", t, video.frames.float()).detach()
    own_b = torch.einsum("vd,vnd->vn", t, flat_patches).detach()
    temporal = video.temporal.float()
    frame_pooled = tib.pooled(tib.masked_softmax(own_a, video.mask, temps.frame_strong),
                              lambda g: torch.einsum("vf,vfd->vd", g, temporal))
    patch_pooled = tib.pooled(tib.masked_softmax(own_b, patch_mask, temps.patch),
                              lambda g: torch.einsum("vn,vnd->vd", g, flat_patches))
    weak = w.weak_video * dense["video"] + w.weak_frame * dense["frame_weak"] + w.weak_patch * dense["patch_weak"]
    strong = w.strong_frame * (scale * t @ frame_pooled.T) + w.strong_patch * (scale * t @ patch_pooled.T)
    out = {
        "contrastive_weak": symmetric_cross_entropy(weak),
        "contrastive_strong": symmetric_cross_entropy(strong),
        "pearson_video": pearson_constraint(t, video.video.float(), w.pearson_diag, w.pearson_offdiag),
        "pearson_frame": pearson_constraint(t, frame_pooled, w.pearson_diag, w.pearson_offdiag),
        "pearson_patch": pearson_constraint(t, patch_pooled, w.pearson_diag, w.pearson_offdiag),
    }
    out["total"] = (w.weak_weight * out["contrastive_weak"] + w.strong_weight * out["contrastive_strong"]
                    + w.pearson_weight * (w.pearson_video * out["pearson_video"]
                                          + w.pearson_frame * out["pearson_frame"]
                                          + w.pearson_patch * out["pearson_patch"]))
    return out
