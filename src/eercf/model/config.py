"""Model architectures as data: one JSON file per backbone in ``configs/`` (a registry)."""
from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import EercfError


def _config_dir() -> Path:
    return Path(str(resources.files("eercf") / "configs"))


def list_models() -> list[str]:
    """Names of the architectures shipped in ``configs/``."""
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def get_model_config(name: str) -> dict[str, Any]:
    """The architecture config for ``name`` (e.g. ``ViT-B-32``, ``tiny``), as a fresh dict."""
    path = _config_dir() / f"{name}.json"
    if not path.is_file():
        raise EercfError(f"unknown model {name!r}: choose one of {', '.join(list_models())}")
    return json.loads(path.read_text())


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update returning a new dict; ``override`` wins."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
