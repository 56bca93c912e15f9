"""Training configurations: presets in ``configs/train/*.json`` (``tiny``: from scratch;
``clip``: the authors' fine-tuning recipe), a JSON file of one's own, and ``key=value``
overrides on top. Every key of a preset is a setting; nothing is read from anywhere else."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import EercfError
from ..model.config import merge
from ..model.loss import LossWeights

# Keys whose value is a free-form dict: overrides may add keys inside them.
OPEN_KEYS = ("model_config", "dataset_options")
# Keys whose value is a dict of known settings: overrides may change those (``loss.strong_weight=0``).
NESTED_KEYS = ("loss",)


def _preset_dir() -> Path:
    return Path(str(resources.files("eercf") / "configs" / "train"))


def list_presets() -> list[str]:
    return sorted(p.stem for p in _preset_dir().glob("*.json"))


def preset_for_model(model: str | None) -> str:
    """The preset a model trains with by default: its own if one is named after it (``tiny``),
    else the CLIP fine-tuning recipe."""
    return model if model in list_presets() else "clip"


def read_config(path_or_preset: str) -> dict[str, Any]:
    """A preset by name, or a JSON file; files are laid over the ``tiny`` preset's keys so
    that a file may hold only what it changes."""
    preset = _preset_dir() / f"{path_or_preset}.json"
    if preset.is_file():
        return json.loads(preset.read_text())
    path = Path(path_or_preset)
    if not path.is_file():
        raise EercfError(f"--config {path_or_preset}: no such file or preset "
                         f"(presets: {', '.join(list_presets())})")
    try:
        own = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EercfError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(own, dict):
        raise EercfError(f"{path}: a training config is a JSON object")
    legacy = own.get("model_config", {}).get("eercf", {}).pop("loss", None)
    if legacy:  # a run saved when loss weights lived in the model config goes on with them
        own["loss"] = {**legacy, **own.get("loss", {})}
    base = read_config(preset_for_model(own.get("model")))
    _check_keys(own, base, str(path))
    return merge(base, own)


def _check_keys(own: dict, base: dict, source: str) -> None:
    unknown = sorted(set(own) - set(base))
    if unknown:
        raise EercfError(f"{source}: unknown training setting(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(base))})")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare string, e.g. model=ViT-B-32


def apply_override(config: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``config`` with ``key=value`` applied (``key`` dotted for nested settings, ``value``
    JSON or a bare string). Unknown keys are refused, except inside ``model_config`` and
    ``dataset_options``, which are free-form; ``loss.NAME`` sets one loss weight."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise EercfError(f"--set {assignment!r}: expected KEY=VALUE")
    path = key.strip().split(".")
    if path[0] not in config:
        raise EercfError(f"--set {key}: unknown training setting "
                         f"(known: {', '.join(sorted(config))})")
    if len(path) > 1 and path[0] not in OPEN_KEYS + NESTED_KEYS:
        raise EercfError(f"--set {key}: {path[0]} has no sub-settings")
    if len(path) > 1 and path[0] in NESTED_KEYS and (len(path) > 2 or path[1] not in config[path[0]]):
        raise EercfError(f"--set {key}: unknown setting in {path[0]} "
                         f"(known: {', '.join(sorted(config[path[0]]))})")
    override: dict[str, Any] = {}
    node = override
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = _parse_value(value)
    if len(path) == 1:  # a whole value replaces, never merges
        out = dict(config)
        out[path[0]] = override[path[0]]
        return out
    return merge(config, override)


def load_train_config(config: str | None = None, model: str | None = None,
                      overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a run: ``config`` (a preset name or JSON file; default: the preset for
    ``model``), then ``model`` if given, then each ``key=value`` of ``overrides`` in order."""
    cfg = read_config(config or preset_for_model(model))
    if model is not None:
        cfg["model"] = model
    for assignment in overrides:
        cfg = apply_override(cfg, assignment)
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict[str, Any]) -> None:
    """Refuse settings that cannot work, naming the setting."""
    def positive(key: str, kind=(int,)) -> None:
        if not isinstance(cfg[key], kind) or isinstance(cfg[key], bool) or cfg[key] <= 0:
            raise EercfError(f"{key} must be a positive number, got {cfg[key]!r}")

    for key in ("epochs", "batch_size", "grad_accum"):
        positive(key)
    for key in ("lr", "coef_lr", "max_logit_scale"):
        positive(key, (int, float))
    for key in ("weight_decay", "clip_grad", "warmup", "checkpoint_every", "workers",
                "caption_views"):
        value = cfg[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise EercfError(f"{key} must be a number >= 0, got {value!r}")
    if not isinstance(cfg["caption_views"], int):
        raise EercfError(f"caption_views must be a whole number, got {cfg['caption_views']!r}")
    positive("similar_group")
    if cfg["similar_group"] > 1 and not cfg["caption_views"]:
        raise EercfError("similar_group > 1 needs caption_views > 0: with one item per caption, "
                         "a group of similar items would pair a video with itself")
    start = cfg["gate_temperature_start"]
    if start is not None and (not isinstance(start, (int, float)) or isinstance(start, bool)
                              or start <= 0):
        raise EercfError(f"gate_temperature_start must be null (off) or > 0, got {start!r}")
    anneal = cfg["gate_anneal"]
    if not isinstance(anneal, (int, float)) or isinstance(anneal, bool) or not 0 <= anneal <= 1:
        raise EercfError(f"gate_anneal is a fraction of the steps (0 to 1), got {anneal!r}")
    if cfg["warmup"] >= 1:
        raise EercfError(f"warmup is a fraction of the steps (0 <= warmup < 1), got {cfg['warmup']}")
    fraction = cfg["val_fraction"]
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise EercfError(f"val_fraction is the share of training videos held out (0 < f < 1), "
                         f"got {fraction!r}")
    if cfg["val_split"] is not None and not isinstance(cfg["val_split"], str):
        raise EercfError(f"val_split is a split name or null (hold out val_fraction of the "
                         f"training videos), got {cfg['val_split']!r}")
    if cfg["init"] not in ("auto", "scratch", "pretrained"):
        raise EercfError(f"init must be auto, scratch or pretrained, got {cfg['init']!r}")
    if not isinstance(cfg["loss"], dict):
        raise EercfError(f"loss must be an object of loss weights, got {cfg['loss']!r}")
    LossWeights.from_dict(cfg["loss"])
    if cfg["precision"] not in ("auto", "fp32", "bf16"):
        raise EercfError(f"precision must be auto, fp32 or bf16, got {cfg['precision']!r}")
    if cfg["frame_rate"] is not None and not (isinstance(cfg["frame_rate"], (int, float))
                                              and cfg["frame_rate"] > 0):
        raise EercfError(f"frame_rate must be null (uniform) or > 0, got {cfg['frame_rate']!r}")
    if cfg["batch_size"] % cfg["grad_accum"]:
        raise EercfError(f"batch_size {cfg['batch_size']} is not a multiple of grad_accum "
                         f"{cfg['grad_accum']}")
    for key in OPEN_KEYS:
        if not isinstance(cfg[key], dict):
            raise EercfError(f"{key} must be an object, got {cfg[key]!r}")
    if "loss" in cfg["model_config"].get("eercf", {}):
        raise EercfError("loss weights are the training setting 'loss', not part of the model: "
                         "set them as loss.NAME=VALUE (e.g. loss.strong_weight=0)")
    if len(cfg["best_metric"].split(".")) != 3:
        raise EercfError(f"best_metric is MODE.DIRECTION.METRIC (e.g. two_stage.t2v.R1), "
                         f"got {cfg['best_metric']!r}")
