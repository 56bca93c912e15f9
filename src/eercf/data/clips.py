"""The model's input from pixels: when to sample (``sample_times``), resize and centre-crop
as CLIP's transform does (or squash the whole frame into the square), normalise, and the two forms a sampled clip takes (uint8 pixels as
the frame cache keeps them; the normalised, padded, masked tensor the model reads)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import EercfError
from ..model.transform import CLIP_MEAN, CLIP_STD, RESIZE_MODES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class SampledClip:
    """Model input for one video: ``frames [F, 3, S, S]`` normalised (padded slots are zeros),
    ``mask [F]`` True for real frames, one timestamp (seconds) per real frame."""

    frames: torch.Tensor
    mask: torch.Tensor
    timestamps: list[float]
    duration: float
    source: str


@dataclass
class DecodedClip:
    """The sampled frames as uint8 pixels ``[n, S, S, 3]`` (resized and cropped, not
    normalised): what the frame cache stores, so one cache serves any mean/std."""

    frames: np.ndarray
    timestamps: list[float]
    duration: float
    source: str

    def to_sampled(self, num_frames: int, mean: Sequence[float] = CLIP_MEAN,
                   std: Sequence[float] = CLIP_STD) -> SampledClip:
        """Normalise and pad to ``num_frames`` slots."""
        n = len(self.timestamps)
        if n > num_frames:
            raise EercfError(f"{self.source}: {n} decoded frames do not fit in {num_frames} slots")
        size = self.frames.shape[1]
        frames = torch.zeros(num_frames, 3, size, self.frames.shape[2])
        if n:
            frames[:n] = normalize(self.frames, mean, std)
        mask = torch.zeros(num_frames, dtype=torch.bool)
        mask[:n] = True
        return SampledClip(frames=frames, mask=mask, timestamps=list(self.timestamps),
                           duration=self.duration, source=self.source)


# ----------------------------------------------------------------------------- pixels

def _rgb_array(image: Any) -> np.ndarray:
    if hasattr(image, "convert"):  # PIL image
        return np.array(image.convert("RGB"))
    array = np.require(image, requirements=["C", "W"])  # torch wants writable memory
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise EercfError(f"expected an HxWx3 uint8 image, got shape {array.shape} {array.dtype}")
    return array[:, :, :3]


def resized_size(width: int, height: int, image_size: int,
                 resize: str = "crop") -> tuple[int, int]:
    """(width, height) to resize to: the shorter side equal to ``image_size`` with the aspect
    kept (``crop``), or the square itself (``squash``)."""
    if resize not in RESIZE_MODES:
        raise EercfError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if resize == "squash":
        return image_size, image_size
    scale = image_size / min(width, height)
    return max(image_size, round(width * scale)), max(image_size, round(height * scale))


def center_crop(array: np.ndarray, image_size: int) -> np.ndarray:
    """The central ``image_size`` square of an HxWxC array whose shorter side is >= it."""
    height, width = array.shape[:2]
    top, left = (height - image_size) // 2, (width - image_size) // 2
    return np.ascontiguousarray(array[top:top + image_size, left:left + image_size])


def resize_frame(image: Any, image_size: int, resize: str = "crop") -> np.ndarray:
    """The ``image_size`` square the model sees: resized (bicubic, antialiased, like CLIP's PIL
    transform) as ``resize`` says, then centre-cropped; an HxWx3 uint8 array or PIL image in,
    uint8 array out."""
    array = _rgb_array(image)
    height, width = array.shape[:2]
    new_width, new_height = resized_size(width, height, image_size, resize)
    if (new_width, new_height) != (width, height):
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()
        x = torch.nn.functional.interpolate(x, size=(new_height, new_width), mode="bicubic",
                                            antialias=True, align_corners=False)
        array = x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return center_crop(array, image_size)


def normalize(frames: np.ndarray | torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` pixels to float ``[N, 3, H, W]`` with the model's mean/std."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def preprocess(images: Sequence[Any], image_size: int = 224, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD, resize: str = "crop") -> torch.Tensor:
    """Images (HxWx3 uint8 arrays or PIL images) to the model's input ``[N, 3, S, S]``."""
    if not len(images):
        return torch.zeros(0, 3, image_size, image_size)
    return normalize(np.stack([resize_frame(image, image_size, resize) for image in images]), mean, std)


# ----------------------------------------------------------------------------- sampling

def sample_times(duration: float, num_frames: int = 12, fps: float | None = None,
                 span: tuple[float, float] | None = None) -> list[float]:
    """Target times (seconds) for ``num_frames`` samples of a ``duration``-second video.

    ``fps=None``: the centres of ``num_frames`` equal segments. ``fps=r``: one target every
    ``1/r`` s from the start, uniformly sub-sampled to ``num_frames`` when there are more
    (CLIP4Clip's ``slice_framepos=2``). ``span`` restricts sampling to ``[start, end]``."""
    if num_frames < 1:
        raise EercfError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and not fps > 0:
        raise EercfError(f"fps must be > 0, got {fps}")
    start, end = 0.0, max(0.0, float(duration))
    if span is not None:
        start, end = max(start, float(span[0])), min(end, float(span[1]))
        if end < start:
            raise EercfError(f"span {span} lies outside the video (duration {duration:.2f} s)")
    length = end - start
    if length <= 0:
        return [start]
    if fps is None:
        return [start + (k + 0.5) * length / num_frames for k in range(num_frames)]
    count = max(1, math.ceil(length * fps - 1e-9))
    times = [start + k / fps for k in range(count)]
    if count > num_frames:
        times = [times[i] for i in np.linspace(0, count - 1, num=num_frames, dtype=int)]
    return times
