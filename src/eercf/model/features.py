"""Per-video features at every level, as ``EERCF.encode_video`` returns them and an index
stores them."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch


@dataclass
class VideoFeatures:
    """Per-video features at every level; rows are videos. Padded frames are zero and masked."""

    video: torch.Tensor     # [V, D]       norm(mean of valid norm(h_i)), text-agnostic
    frames: torch.Tensor    # [V, F, D]    norm(f_i), raw CLIP frame features
    temporal: torch.Tensor  # [V, F, D]    norm(h_i), after the temporal block
    patches: torch.Tensor   # [V, F, P, D] norm(p_j)
    mask: torch.Tensor      # [V, F] bool, True = a real frame

    def __len__(self) -> int:
        return self.video.shape[0]

    def _map(self, fn) -> "VideoFeatures":
        return VideoFeatures(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def index(self, idx) -> "VideoFeatures":
        """Rows ``idx`` (an int tensor, list, slice or bool mask)."""
        if isinstance(idx, torch.Tensor) and idx.dim() == 1 and not idx.dtype.is_floating_point \
                and idx.dtype != torch.bool:
            # index_select: 5-20x faster than advanced indexing for a few rows of a large tensor
            return self._map(lambda t: t.index_select(0, idx.to(t.device)))
        return self._map(lambda t: t[idx])

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "VideoFeatures":
        """Move to ``device``; ``dtype`` applies to the float features only, never the mask."""
        return VideoFeatures(*(getattr(self, n).to(device=device, dtype=dtype)
                               for n in ("video", "frames", "temporal", "patches")),
                             mask=self.mask.to(device=device))

    def as_stored(self) -> "VideoFeatures":
        """The features as an index keeps them: fine levels rounded through fp16, video fp32."""
        def rounded(t: torch.Tensor) -> torch.Tensor:
            return t.to(torch.float16).to(torch.float32)
        return replace(self, video=self.video.float(), frames=rounded(self.frames),
                       temporal=rounded(self.temporal), patches=rounded(self.patches))

    @staticmethod
    def cat(parts: Sequence["VideoFeatures"]) -> "VideoFeatures":
        return VideoFeatures(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                for f in fields(VideoFeatures)})


__all__ = ["VideoFeatures"]
