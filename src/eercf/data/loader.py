"""PyTorch datasets and loaders over ``VideoRecord`` lists: every caption of every training
video (``CaptionPairs``), or every video once (``VideoClips``, for evaluation and indexing).

A video that cannot be decoded does not stop the run: its item comes back marked failed, the
collate function leaves it out of the batch and lists it in ``batch["failed"]``, and the loader
reports each failure once. ``EpochSampler`` gives a reproducible order per epoch that a
training run can resume mid-epoch.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..errors import EercfError
from .batching import similar_groups
from .datasets import VideoRecord
from .frames import FrameCache
from ..model.transform import VideoTransform
from .clips import SampledClip
from .video import decode_clip

logger = logging.getLogger("eercf.data")


class _ClipDataset(Dataset):
    """Sampling with a model's :class:`~eercf.model.VideoTransform`, the optional frame cache,
    and failure handling shared by both datasets."""

    def __init__(self, records: Sequence[VideoRecord], transform: VideoTransform, *,
                 timeout: float = 30.0, folder_fps: float = 1.0,
                 cache_dir: str | Path | None = None):
        self.records = list(records)
        self.transform = transform
        self.timeout, self.folder_fps = timeout, folder_fps
        self.cache = FrameCache(cache_dir) if cache_dir is not None else None
        self._failed: dict[int, str] = {}  # video index -> reason, so a bad video is tried once

    def with_cache(self, cache_dir: str | Path) -> "_ClipDataset":
        """A copy of this dataset that reads and fills the frame cache in ``cache_dir``."""
        clone = copy.copy(self)
        clone.cache = FrameCache(cache_dir)
        return clone

    def clip(self, video_index: int) -> SampledClip:
        """The model input of video ``video_index`` (from the cache when it holds it)."""
        record, t = self.records[video_index], self.transform
        settings = {"num_frames": t.frames, "fps": t.fps, "image_size": t.image_size,
                    "span": record.span, "folder_fps": self.folder_fps, "resize": t.resize}
        key = self.cache.key(record.path, **settings) if self.cache and record.path.exists() else None
        decoded = self.cache.get(key) if key else None
        if decoded is None:
            decoded = decode_clip(record.path, timeout=self.timeout, **settings)
            if key:
                self.cache.put(key, decoded)
        return decoded.to_sampled(t.frames, t.mean, t.std)

    def _empty_frames(self) -> dict[str, torch.Tensor]:
        n, size = self.transform.frames, self.transform.image_size
        return {"frames": torch.zeros(0, n, 3, size, size), "mask": torch.zeros(0, n, dtype=torch.bool)}

    def _try_clip(self, video_index: int) -> SampledClip | dict[str, Any]:
        reason = self._failed.get(video_index)
        if reason is None:
            try:
                return self.clip(video_index)
            except EercfError as err:
                reason = self._failed[video_index] = str(err)
        record = self.records[video_index]
        return {"video_id": record.video_id, "path": str(record.path), "reason": reason}


class VideoClips(_ClipDataset):
    """One item per video: ``frames [F, 3, S, S]``, ``mask [F]``, ``timestamps``, ``duration``
    (seconds), ``video_id``, ``index`` (position in ``records``) and ``path``."""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self._try_clip(index)
        if isinstance(clip, dict):
            return {"failed": clip}
        record = self.records[index]
        return {"frames": clip.frames, "mask": clip.mask, "timestamps": clip.timestamps,
                "duration": clip.duration, "video_id": record.video_id, "index": index,
                "path": str(record.path)}

    def empty_batch(self) -> dict[str, Any]:
        return {**self._empty_frames(), "timestamps": [], "duration": [], "video_id": [],
                "index": torch.zeros(0, dtype=torch.long), "path": []}


class CaptionPairs(_ClipDataset):
    """One item per (video, caption) pair, every caption of every video ("expanded" training):
    ``frames``, ``mask``, ``caption`` and ``video_index`` (position in ``records``)."""

    def __init__(self, records: Sequence[VideoRecord], transform: VideoTransform, **settings):
        super().__init__(records, transform, **settings)
        self.pairs = [(v, c) for v, record in enumerate(self.records)
                      for c in range(len(record.captions))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_index, caption_index = self.pairs[index]
        clip = self._try_clip(video_index)
        if isinstance(clip, dict):
            return {"failed": clip}
        return {"frames": clip.frames, "mask": clip.mask,
                "caption": self.records[video_index].captions[caption_index],
                "video_index": video_index}

    def empty_batch(self) -> dict[str, Any]:
        return {**self._empty_frames(), "caption": [],
                "video_index": torch.zeros(0, dtype=torch.long)}


class SkipFailed:
    """Collate function: stacks the items that decoded and lists the others in ``"failed"``
    (a batch whose items all failed keeps every key, with zero rows)."""

    def __init__(self, empty: dict[str, Any]):
        self.empty = empty

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        good = [item for item in items if "failed" not in item]
        if not good:
            batch = {key: value.clone() if torch.is_tensor(value) else list(value)
                     for key, value in self.empty.items()}
        else:
            batch = {}
            for key, first in good[0].items():
                values = [item[key] for item in good]
                if torch.is_tensor(first) or isinstance(first, int):
                    # in a worker, default_collate stacks straight into shared memory
                    batch[key] = default_collate(values)
                else:
                    batch[key] = values
        batch["failed"] = [item["failed"] for item in items if "failed" in item]
        return batch


class EpochSampler(Sampler[int]):
    """A fresh random order of ``range(n)`` each epoch, fixed by ``(seed, epoch)`` so a run can
    stop and resume exactly: save ``state_dict(consumed)``, later ``load_state_dict`` it and
    the sampler yields only the items the run had not consumed yet. With ``num_replicas > 1``
    each rank takes its own equal share of the order (the tail that does not divide is dropped).

    With ``neighbours`` (``[n, k]``, see :mod:`eercf.data.batching`) and ``group_size > 1`` the
    order is made of shuffled groups of up to ``group_size`` similar items, so a batch holds
    hard negatives. A global batch is a contiguous run of the order whatever the number of
    processes (rank r takes positions r, r + world, ...), so groups stay within batches."""

    def __init__(self, n: int, seed: int = 0, *, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0, neighbours: "np.ndarray | None" = None, group_size: int = 1):
        if neighbours is not None and len(neighbours) != n:
            raise EercfError(f"neighbours cover {len(neighbours)} items, the sampler {n}")
        if n < num_replicas:
            raise EercfError(f"{n} items cannot be shared among {num_replicas} processes")
        if not 0 <= rank < num_replicas:
            raise EercfError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.neighbours = neighbours if group_size > 1 else None
        self.group_size = group_size
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the order of ``epoch``, skipping its first ``start`` items (of this rank)."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This rank's full order for the current epoch (before skipping ``start``)."""
        if self.shuffle and self.neighbours is not None:
            rng = np.random.default_rng([self.seed, self.epoch])
            groups = similar_groups(self.neighbours, self.group_size, rng)
            order = [i for group in groups for i in group]
        elif self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        usable = self.n - self.n % self.num_replicas
        return order[:usable][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return max(0, self.n // self.num_replicas - self.start)

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Where the run stands: ``consumed`` is how many items of this epoch (this rank) the
        run has used, counting any it skipped on resume (default: just the skipped ones)."""
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch,
                "start": self.start if consumed is None else consumed,
                "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n or state.get("num_replicas", 1) != self.num_replicas:
            raise EercfError(f"sampler state is for {state['n']} items on "
                             f"{state.get('num_replicas', 1)} processes; this run has {self.n} "
                             f"on {self.num_replicas}")
        self.seed = state["seed"]
        self.set_epoch(state["epoch"], state["start"])


class ClipLoader(DataLoader):
    """A DataLoader that logs each video it had to skip once (id + reason) and keeps the
    list in ``failures``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures: list[dict[str, Any]] = []
        self._reported: set[tuple[str, str]] = set()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in super().__iter__():
            for failure in batch["failed"]:
                key = (failure["path"], failure["reason"])
                if key not in self._reported:
                    self._reported.add(key)
                    self.failures.append(failure)
                    logger.warning("skipped video %s: %s", failure["video_id"], failure["reason"])
            yield batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding is the work; one process per core, no oversubscription


def make_loader(dataset: VideoClips | CaptionPairs, *, batch_size: int, shuffle: bool = False,
                workers: int = 0, seed: int = 0, drop_last: bool = False,
                cache_dir: str | Path | None = None, sampler: Sampler | None = None,
                pin_memory: bool = False, start_method: str | None = None) -> ClipLoader:
    """A loader over ``dataset`` with ``workers`` decoding processes. ``shuffle`` uses an
    ``EpochSampler(len(dataset), seed)`` (reach it as ``loader.sampler`` to set the epoch or
    resume); ``cache_dir`` turns on the pre-decoded frame cache. ``start_method`` starts the
    workers some other way than forking (a parent holding a Lance dataset must not fork)."""
    if batch_size < 1:
        raise EercfError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise EercfError(f"workers must be >= 0, got {workers}")
    if cache_dir is not None:
        dataset = dataset.with_cache(cache_dir)
    if sampler is None and shuffle:
        sampler = EpochSampler(len(dataset), seed)
    return ClipLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=SkipFailed(dataset.empty_batch()), drop_last=drop_last,
                      pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
                      persistent_workers=workers > 0,
                      multiprocessing_context=start_method if workers else None,
                      generator=torch.Generator().manual_seed(seed))
