"""Batched encoding shared by evaluation and indexing: videos from a loader, texts in batches.

Encoding runs under ``torch.inference_mode`` with the model in eval mode (its previous mode is
restored afterwards, so a training loop can validate in the middle of an epoch).
"""
from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from .eercf import EERCF
    from .features import VideoFeatures


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a transform's ``precision`` (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _loader_size(loader: Iterable) -> int | None:
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


def encode_videos(model: "EERCF", loader: Iterable[dict[str, Any]],
                  device: torch.device | str | None = None, precision: str | None = None,
                  progress: bool = True) -> Iterator[tuple[dict[str, Any], "VideoFeatures | None"]]:
    """Encode every batch of ``loader`` (``eercf.data.loader.make_loader`` over ``VideoClips``),
    yielding ``(batch, features)`` with features on ``device`` (default: the model's).

    ``precision`` (default: the model's transform's) ``bf16`` runs the encoder under autocast;
    features come back in fp32. Items the loader could not decode are listed in ``batch["failed"]``: they are counted
    on the progress bar and left out of ``features``; a batch whose items all failed is still
    yielded (with ``features=None``) so callers see every failure."""
    device = torch.device(device) if device is not None else model.device
    precision = precision or model.transform.precision
    bar = tqdm(total=_loader_size(loader), unit="video", desc="encode videos", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    failed = 0
    with _evaluating(model), bar:
        for batch in loader:
            n_failed = len(batch.get("failed") or ())
            features = None
            if len(batch["index"]):
                with autocast(device, precision):
                    features = model.encode_video(batch["frames"].to(device, non_blocking=True),
                                                  batch["mask"].to(device, non_blocking=True))
                features = features.to(dtype=torch.float32)
            failed += n_failed
            bar.update(len(batch["index"]) + n_failed)
            if failed:
                bar.set_postfix(failed=failed, refresh=False)
            yield batch, features


def encode_texts(model: "EERCF", texts: Sequence[str], batch_size: int = 256,
                 progress: bool = True) -> torch.Tensor:
    """Tokenise and encode ``texts`` in batches: L2-normalised features ``[T, D]`` on the
    model's device (``[0, D]`` for no text)."""
    chunks = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    parts = []
    with _evaluating(model):
        for chunk in tqdm(chunks, unit="batch", desc="encode texts", file=sys.stderr,
                          disable=not progress or len(chunks) <= 1, dynamic_ncols=True):
            parts.append(model.encode_text(model.tokenize(chunk)))
    if not parts:
        return torch.empty(0, model.config["embed_dim"], device=model.device)
    return torch.cat(parts)
