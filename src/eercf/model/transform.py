"""The video transform a checkpoint carries: how a video becomes the model's input. Training
validation, ``eercf eval``, ``eercf index`` and search all take it from the model, so a video
is sampled, sized, normalised and encoded the same way everywhere."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import EercfError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("fp32", "bf16")
RESIZE_MODES = ("crop", "squash")  # the same names as data.clips reads


@dataclass(frozen=True)
class VideoTransform:
    """``frames`` sampled per video, at ``fps`` frames a second capped to ``frames`` (None:
    spread uniformly over the video), resized to ``image_size`` as ``resize`` says (``crop``:
    shorter side, centre cut, CLIP's way; ``squash``: the whole frame into the square, so
    nothing near the edges of a wide frame is lost), normalised with ``mean``/``std``, and
    encoded in ``precision`` (``bf16``: autocast)."""

    frames: int
    image_size: int
    fps: float | None = None
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    precision: str = "fp32"
    resize: str = "crop"

    def __post_init__(self) -> None:
        if self.frames < 1 or self.image_size < 1:
            raise EercfError(f"a transform needs frames and image_size >= 1, got {self.frames}, "
                             f"{self.image_size}")
        if self.fps is not None and not self.fps > 0:
            raise EercfError(f"fps must be positive or None (uniform), got {self.fps}")
        if self.precision not in PRECISIONS:
            raise EercfError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.resize not in RESIZE_MODES:
            raise EercfError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "VideoTransform":
        """The transform of a model config: frames from ``eercf.max_frames``, the size from the
        vision tower, the rest from ``preprocess`` (older checkpoints carry only mean/std:
        uniform sampling, centre crop, fp32, as they were trained and indexed)."""
        pre = config.get("preprocess", {})
        return cls(frames=config["eercf"]["max_frames"], image_size=config["vision"]["image_size"],
                   fps=pre.get("fps"), mean=tuple(pre.get("mean", CLIP_MEAN)),
                   std=tuple(pre.get("std", CLIP_STD)), precision=pre.get("precision", "fp32"),
                   resize=pre.get("resize", "crop"))

    def preprocess_config(self) -> dict[str, Any]:
        """What a checkpoint's ``preprocess`` section holds (frames and size live elsewhere)."""
        return {"mean": list(self.mean), "std": list(self.std), "fps": self.fps,
                "precision": self.precision, "resize": self.resize}

    def with_options(self, **changes: Any) -> "VideoTransform":
        """This transform with some fields changed (None values leave a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
