"""What a run does with its validation videos (held out of the training videos): choose the
best epoch by a metric, and at the end fit stage 2's fusion weights for the best model."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from tqdm import tqdm

from ..errors import EercfError
from ..weights import load_model, save_model

if TYPE_CHECKING:
    from ..evaluation import EncodedSet
    from ..model import EERCF


def best_metric_value(results: dict, dotted: str) -> float:
    """``results[mode][direction][metric]`` for ``dotted`` = ``mode.direction.metric``."""
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise EercfError(f"best_metric {dotted!r} is not in the validation results "
                             f"(modes: {', '.join(results)})")
        node = node[part]
    return float(node)


def is_better(dotted: str, value: float, best: float) -> bool:
    """Ranks are better low, recalls high."""
    if dotted.rsplit(".", 1)[-1] in ("MdR", "MnR"):
        return value < best
    return value > best


def calibrate_best(folder: Path, current: "EERCF", encode: Callable[["EERCF"], "EncodedSet"],
                   device: torch.device, progress: bool) -> dict[str, Any] | None:
    """Fit the fusion weights and K of the model in ``folder`` (``best/``; the current model
    where validation never ran) on the validation set ``encode(model)`` gives, and save it
    there with them: search and ``eercf eval`` then use them by default. A validation set too
    small to fit on is reported and leaves the paper's weights (None)."""
    from ..evaluation.calibrate import apply_fitted, fit_fusion

    model = load_model(folder).to(device) if folder.is_dir() else current
    try:
        fitted = fit_fusion(model, encode(model))
    except EercfError as err:  # a run too small to fit on still leaves a usable model
        print(f"eercf train: fusion weights not fitted ({err}); search uses the paper's",
              file=sys.stderr)
        return None
    apply_fitted(model, fitted)
    save_model(model, folder)
    if progress:
        v = fitted["validation"]
        paper = f"{v['paper']['R1']:.1f}" if v["paper"] else "-"
        tqdm.write(f"fusion fitted on {v['videos']} validation videos: K {fitted['topk']}, "
                   f"t2v R@1 stage 1 {v['stage1']['R1']:.1f}, paper {paper}, fitted "
                   f"{v['fitted']['R1']:.1f}", file=sys.stderr)
    return fitted
