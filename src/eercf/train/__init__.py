"""Training EERCF (issue 4): ``train(cfg, out)`` runs one process of a (possibly ``torchrun``)
training run; ``load_train_config`` builds ``cfg`` from a preset or file plus overrides."""
from __future__ import annotations

from .config import apply_override, list_presets, load_train_config, preset_for_model
from .loop import Trainer, train

__all__ = ["Trainer", "apply_override", "list_presets", "load_train_config",
           "preset_for_model", "train"]
