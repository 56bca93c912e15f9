"""A pre-decoded frame cache: the sampled, resized uint8 frames of each video, so that later
epochs (or a second evaluation) read one small file instead of decoding the video again.

One safetensors file per (video, sampling settings); the key hashes the source's path, size and
modification time with the settings, so an edited video or a different sampling is a miss, never
a stale hit. Frames are stored before normalisation, so one cache serves any mean/std. At the
default 12 frames of 224 px a video takes 1.8 MB.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .clips import DecodedClip

CACHE_VERSION = 1


class FrameCache:
    """Decoded clips on disk under ``root``; safe to share between DataLoader workers
    (writes are atomic renames, a damaged entry reads as a miss)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, source: str | Path, **settings) -> str:
        """Cache key of ``source`` decoded with ``settings`` (num_frames, fps, size, ...)."""
        path = Path(source).resolve()
        stat = path.stat()
        ident = {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                 "version": CACHE_VERSION, **settings}
        return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> DecodedClip | None:
        """The cached clip, or None on a miss (or an unreadable entry)."""
        file = self._file(key)
        if not file.is_file():
            return None
        try:
            with safe_open(str(file), framework="pt") as entry:
                meta = entry.metadata()
                return DecodedClip(frames=entry.get_tensor("frames").numpy(),
                                   timestamps=entry.get_tensor("timestamps").tolist(),
                                   duration=float(meta["duration"]), source=meta["source"])
        except (SafetensorError, OSError, KeyError, ValueError):
            return None

    def put(self, key: str, clip: DecodedClip) -> None:
        """Store ``clip`` under ``key`` (atomically: readers never see a partial file)."""
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"frames": torch.from_numpy(np.ascontiguousarray(clip.frames)),
                   "timestamps": torch.tensor(clip.timestamps, dtype=torch.float64)}
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"duration": repr(clip.duration),
                                              "source": clip.source})
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
