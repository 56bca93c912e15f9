"""What a training run keeps to resume exactly: ``checkpoints/NAME/`` holds the model folder
plus ``trainer.pt`` (optimiser, scheduler, sampler position, RNG states, step, best so far).
Checkpoints are written beside their final place and renamed into it, so a crash never leaves
half of one; of the ``step-S`` checkpoints only the newest is kept."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..weights import save_model

if TYPE_CHECKING:
    from ..model import EERCF

TRAINER_STATE = "trainer.pt"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(root: Path, name: str, model: "EERCF", state: dict[str, Any]) -> Path:
    """Write ``root/name`` (model + trainer state) atomically; older step checkpoints go."""
    staging = root / f".staging-{name}"
    if staging.exists():
        shutil.rmtree(staging)
    save_model(model, staging)
    torch.save(state, staging / TRAINER_STATE)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in root.glob("step-*"):  # step checkpoints: only the newest is useful
        if old.name != name and step_of(old) < state["step"]:
            shutil.rmtree(old)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint a resumed run continues from: the highest step, an epoch end winning."""
    found = [p.parent for p in root.glob(f"*/{TRAINER_STATE}") if not p.parent.name.startswith(".")]
    if not found:
        return None
    return max(found, key=lambda p: (step_of(p), p.name.startswith("epoch-")))


def step_of(folder: Path) -> int:
    """The step a checkpoint was taken at (read without loading its tensors)."""
    if folder.name.startswith("step-"):
        return int(folder.name.split("-", 1)[1])
    state = torch.load(folder / TRAINER_STATE, map_location="cpu", mmap=True, weights_only=False)
    return int(state["step"])


def trim_log(log: Path, step: int) -> None:
    """The log continues from a checkpoint: drop the lines written after its step."""
    lines = log.read_text().splitlines() if log.exists() else []
    kept = [line for line in lines if line and json.loads(line)["step"] <= step]
    log.write_text("".join(line + "\n" for line in kept))
