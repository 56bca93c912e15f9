"""Optimiser set-up of the CLIP4Clip family: AdamW with CLIP's pretrained parameters at
``lr * coef_lr`` and the new ones at ``lr``, no weight decay on biases, norms, embeddings and
the identity-initialised similarity matrices; linear warm-up then cosine decay to zero; and
the schedule of the gates' temperatures when they start warm."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..model import Temperatures

# New EERCF parameters initialised to the identity: decay would pull them towards zero.
IDENTITY_INIT = ("global_weight", "frame_weight")


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices only: not to biases and norm gains (1-D), nor
    to embeddings, nor to ``W_g`` / ``W_f``."""
    return param.ndim >= 2 and "embedding" not in name and name not in IDENTITY_INIT


def param_groups(model: torch.nn.Module, lr: float, coef_lr: float,
                 weight_decay: float) -> list[dict]:
    """Four groups: CLIP / new x decayed / not decayed (empty groups are dropped)."""
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("clip."), decays(name, param)), []).append(param)
    out = []
    for (is_clip, decayed), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * coef_lr if is_clip else lr,
                    "weight_decay": weight_decay if decayed else 0.0,
                    "name": f"{'clip' if is_clip else 'new'}{'' if decayed else '_no_decay'}"})
    return out


def make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg["lr"], cfg["coef_lr"], cfg["weight_decay"]),
                             lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor at step s (0-based): linear warm-up to 1 over ``warmup_steps``, then a cosine
    from 1 down to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: float,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(int(warmup * total_steps), total_steps))


def gate_temperatures(final: "Temperatures", start: float | None, anneal: float, step: int,
                      total_steps: int) -> "Temperatures":
    """The text-gated softmaxes' temperatures for ``step``. From scratch, a near-hard max never
    picks a frame whose features the first steps left unlike every caption, so what only such
    frames show is never learnt; starting warm (``gate_temperature_start``) lets every frame
    take gradient, then each temperature decays geometrically to its configured value over the
    first ``anneal`` of the steps (checkpoints, validation and retrieval use the configured
    values)."""
    done = step / (anneal * total_steps) if anneal else 1.0
    if start is None or done >= 1.0:
        return final

    def warm(value: float) -> float:
        high = max(start, value)
        return high ** (1.0 - done) * value ** done

    return replace(final, frame_weak=warm(final.frame_weak),
                   frame_strong=warm(final.frame_strong), patch=warm(final.patch))
