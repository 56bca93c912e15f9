"""What an index records about itself (``eercf-index.json``): the layout format, and the model
whose features define its vector space, with the video transform its videos were sampled
with. A query model must have the recorded fingerprint."""
from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import EercfError
from ..weights.factory import run_checkpoint

if TYPE_CHECKING:
    from .location import Location
    from ..model import EERCF, VideoTransform

FORMAT = 3                    # the index layout this code writes; it reads this and older
# 2: the manifest names a codec for the fine levels; the store may be pq-coded (a blob of
#    exact patches beside their codes); format 1 indexes are exact and read as before
# 3: rows may be segments of a long video (segment_start, segment_end), the manifest says
#    how long videos are cut; format 2 stores gain the columns when a long video is added
MANIFEST = "eercf-index.json"
KIND = "eercf-index"


# model -> (its tensors, their versions, fingerprint)
_fingerprints: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, tuple, str]]" = (
    weakref.WeakKeyDictionary())


def model_fingerprint(model: "EERCF") -> str:
    """SHA-256 of the architecture and every weight (as fp32), so an index can refuse a query
    model whose features would not be comparable. The fusion settings (the paper's and the
    fitted ones) are left out: they do not change a feature. Cached until a parameter changes in place."""
    # in-place changes (load_state_dict, an optimiser step) bump a tensor's version; walking
    # the modules for the tensors costs 1.8 ms a search at ViT-B/32, reading the versions of
    # the cached ones 0.02 ms (a model whose parameters are replaced by assignment is a new
    # model: make a new one, as loading a checkpoint does)
    cached = _fingerprints.get(model)
    tensors = cached[0] if cached else (*model.parameters(), *model.buffers())
    versions = tuple(t._version for t in tensors)
    if cached and cached[1] == versions:
        return cached[2]
    config = {k: v for k, v in model.config.items() if k != "eercf"}
    config["eercf"] = {k: v for k, v in model.config["eercf"].items()
                       if k not in ("rerank", "fitted", "loss")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy())
    fingerprint = digest.hexdigest()
    _fingerprints[model] = (tensors, versions, fingerprint)
    return fingerprint


@dataclass(frozen=True)
class ModelInfo:
    """The model an index was built with: its features define the index's vector space.
    ``source`` is what ``eercf.load_model`` loads it from (None for a model made in Python);
    ``transform`` is how every video of the index was sampled and encoded."""

    name: str
    fingerprint: str
    source: str | None
    embed_dim: int
    frames: int
    patches: int
    transform: dict[str, Any] | None = None  # None: an index from before transforms were kept

    @classmethod
    def of(cls, model: "EERCF", source: str | os.PathLike | None = None,
           transform: "VideoTransform | None" = None) -> "ModelInfo":
        """What an index built by ``model`` records: where the model loads from and the video
        transform its videos are sampled with (default: the model's)."""
        vision = model.config["vision"]
        if source is not None and Path(source).exists():
            source = str(run_checkpoint(Path(source)).resolve())
        return cls(name=model.config.get("name", "unnamed"), fingerprint=model_fingerprint(model),
                   source=None if source is None else str(source),
                   embed_dim=model.config["embed_dim"], frames=model.config["eercf"]["max_frames"],
                   patches=(vision["image_size"] // vision["patch_size"]) ** 2,
                   transform=(transform or model.transform).to_dict())

    def video_transform(self, model: "EERCF") -> "VideoTransform":
        """The transform the index's videos were sampled with (an index from before the
        transform was recorded: the model's, which is how it was built)."""
        from ..model import VideoTransform

        if self.transform is None:
            return model.transform
        return VideoTransform(**self.transform)  # lists from JSON become tuples there


def read_manifest(location: "Location") -> dict[str, Any]:
    """The manifest of the index at ``location``; a missing folder, a foreign one or a newer
    format gets one clear error."""
    from .. import __version__

    if location.local is not None and not location.local.is_dir():
        raise EercfError(f"index {location} does not exist")
    try:
        manifest = json.loads(location.read_bytes(MANIFEST))
    except FileNotFoundError:
        raise EercfError(f"{location} is not an eercf index (no {MANIFEST})") from None
    except (OSError, ValueError) as err:
        raise EercfError(f"{location.join(MANIFEST)} is unreadable: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise EercfError(f"{location} is not an eercf index ({MANIFEST} is not an index manifest)")
    if not isinstance(manifest.get("format"), int) or manifest["format"] > FORMAT:
        raise EercfError(f"index {location} has format {manifest.get('format')!r}, written by "
                         f"eercf {manifest.get('eercf_version', '?')}; this eercf "
                         f"{__version__} reads formats up to {FORMAT}: upgrade eercf")
    return manifest


def check_model(info: ModelInfo, model: "EERCF", where: Any) -> None:
    """Refuse a query model whose features do not live in the space of the index at ``where``."""
    fingerprint = model_fingerprint(model)
    if fingerprint != info.fingerprint:
        raise EercfError(
            f"index {where} was built with model {info.name!r} (fingerprint "
            f"{info.fingerprint[:12]}); the query model {model.config.get('name', '?')!r} has "
            f"fingerprint {fingerprint[:12]}: use the model that built the index, or rebuild it")
