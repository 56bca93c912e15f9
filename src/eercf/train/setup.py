"""How a training run gets its model (``build_model``): resumed, fresh, or from released
weights, with the run's video transform."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EercfError
from ..model.config import get_model_config, list_models, merge
from .distributed import Distributed, barrier

if TYPE_CHECKING:
    from ..model import EERCF

# Model settings a loaded checkpoint may change (the rest would not fit its weights).
PRETRAINED_OVERRIDABLE = ("eercf",)
PRETRAINED_FIXED_METHOD = ("max_frames", "temporal_layers", "max_words")


def build_model(cfg: dict[str, Any], out: Path, dist: Distributed, train_records: list,
                resume_from: Path | None, *, bf16: bool, progress: bool) -> "EERCF":
    """The model a run starts from: a checkpoint to resume, a fresh architecture (with a BPE
    learnt from the training captions unless a tokenizer is named), or released weights to
    fine-tune (``init`` auto: the latter when the model name has a release). It carries the
    run's video transform, and says which start it took."""
    from ..model import EERCF, Temperatures, VideoTransform
    from ..model.tokenizer import CLIPTokenizer
    from ..weights import load_model
    from ..weights.names import has_release

    init = cfg["init"]
    if init == "auto":  # a released model fine-tunes, a bare architecture (tiny) starts fresh
        init = "scratch" if cfg["model"] in list_models() and not has_release(cfg["model"]) \
            else "pretrained"
    if resume_from is not None:
        model = load_model(resume_from)
    elif init == "scratch":
        model = EERCF(merge(get_model_config(cfg["model"]), cfg["model_config"]))
        if cfg["tokenizer"]:
            model.tokenizer = CLIPTokenizer.from_file(cfg["tokenizer"])
        else:
            # a BPE of the training captions, learnt once and shared with every process
            path = out / "tokenizer.json"
            if dist.main:
                captions = [c for r in train_records for c in r.captions]
                CLIPTokenizer.train(captions, model.config["text"]["vocab_size"]).save(path)
            barrier()
            model.tokenizer = CLIPTokenizer.from_file(path)
    else:
        model = load_model(cfg["model"], tokenizer=cfg["tokenizer"])
        override = cfg["model_config"]
        bad = sorted(set(override) - set(PRETRAINED_OVERRIDABLE)) + sorted(
            set(override.get("eercf", {})) & set(PRETRAINED_FIXED_METHOD))
        if bad:
            raise EercfError(f"model_config: {', '.join(bad)} cannot change on a loaded "
                             "checkpoint (its weights fix them)")
        model.config = merge(model.config, override)
        model.temperatures = Temperatures.from_config(model.config["eercf"])
    if resume_from is None:
        # the checkpoint carries how its videos are sampled and encoded
        model.transform = VideoTransform(
            frames=model.max_frames, image_size=model.config["vision"]["image_size"],
            fps=cfg["frame_rate"], mean=model.transform.mean, std=model.transform.std,
            precision="bf16" if bf16 else "fp32", resize=model.transform.resize)
        if dist.main and progress:
            where = "from scratch" if init == "scratch" else f"from the weights of {cfg['model']}"
            print(f"eercf train: {model.config.get('name', cfg['model'])} {where}",
                  file=sys.stderr)
    if model.tokenizer is None:
        raise EercfError(f"model {cfg['model']} has no tokenizer: set tokenizer=PATH")
    model.to(dist.device)
    if dist.world > 1:  # identical start on every process, whatever the init RNG did
        for tensor in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(tensor.data, 0)
    return model
