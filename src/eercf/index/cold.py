"""A local pq store's cold tier read through memory maps of the files Lance keeps its blobs in.

The rows a query reads whole come from slices of memory maps of the blobs' files, after asking
the kernel for every row at once (``MADV_WILLNEED``, so reads from disk overlap as Lance's
do), several times faster than through Lance's blob API, in the page cache and from disk
(figures: docs/search.md, ``benchmarks/cold_read.py``). Lance never changes a file once
written (a new version writes new files; an old one is removed only by a cleanup, and a mapped
file stays readable after that), so a map made for one version holds for it and, extended by
the new fragments, for later versions that only append.

Where a fragment's blobs lie is Lance's business and has changed between releases, so a map
is made only when every row's blob lies within a file found beside its fragment's data file,
starting at an even byte (its fp16 values are viewed in place), and the first and last bytes
of one blob of each file read the same through the map as through Lance. Otherwise (an object
store, a layout this code does not know, more files than the open-file limit allows: each map
holds a descriptor) the cold tier is read through Lance.
"""
from __future__ import annotations

import logging
import mmap
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lance
import numpy as np
import torch

from . import store
from .location import is_remote

log = logging.getLogger(__name__)
WILLNEED = getattr(mmap, "MADV_WILLNEED", None)  # not on every platform
CHECK_BYTES = 4096  # of a blob's head and of its tail compared, per file, before mapping it
FD_HEADROOM = 1024  # descriptors left free for sockets, Lance and the rest once files are mapped

# where a blob file may lie beside its fragment's data file ``data/<stem>.lance``, by blob id;
# the first is how pylance 14 names its packed blob files, the next the names other Lance
# releases give packed and dedicated blobs, the last blobs kept inside the data file
SIDECARS: tuple[Callable[[Path, int], Path], ...] = (
    lambda stem, blob: stem / (f"{blob:032b}"[::-1] + ".blob"),
    lambda stem, blob: stem / f"{blob:08x}.blob",
    lambda stem, blob: stem / f"{blob:08x}.pack",
    lambda stem, blob: stem / f"{blob:08x}.raw",
    lambda stem, blob: stem.with_suffix(".lance"),
)


@dataclass
class MappedCold:
    """Each row's patch blob as ``(file, position)`` in memory-mapped files: ``file_of [N]``
    indexes ``files`` (read-only maps), ``position [N]`` is where the blob starts."""

    files: list[mmap.mmap]
    file_of: np.ndarray
    position: np.ndarray
    dim: int

    @classmethod
    def open(cls, dataset: lance.LanceDataset, start: int = 0,
             fragments: Sequence[lance.LanceFragment] | None = None) -> "MappedCold | None":
        """A map of the rows of ``fragments`` (all by default), which are the store's rows
        from offset ``start`` on; None when the blobs cannot be mapped (a remote store, an
        unknown layout: the reason is logged)."""
        if is_remote(dataset.uri):
            return None
        try:
            return cls._open(dataset, start, list(
                dataset.get_fragments() if fragments is None else fragments))
        except (KeyError, ValueError, TypeError, OSError) as err:  # descriptions of another kind
            return _unmapped(f"{type(err).__name__}: {err}")

    @classmethod
    def _open(cls, dataset: lance.LanceDataset, start: int,
              fragments: list[lance.LanceFragment]) -> "MappedCold | None":
        dim = store.dims(dataset.schema)[0]
        table = dataset.scanner(columns=["patches"], with_row_address=True, scan_in_order=True,
                                fragments=fragments, blob_handling="blobs_descriptions"
                                ).to_table()
        blobs = table.column("patches").combine_chunks()
        if len(blobs) == 0:
            return cls([], np.zeros(0, np.int32), np.zeros(0, np.int64), dim)
        fields = {blobs.type.field(i).name for i in range(blobs.type.num_fields)}
        if "blob_uri" in fields and any(blobs.field("blob_uri").to_pylist()):
            return _unmapped("some patch blobs live outside the store")
        position = blobs.field("position").to_numpy().astype(np.int64)
        if (position % 2).any():
            return _unmapped("a patch blob starts at an odd byte: its fp16 values cannot be "
                             "viewed in place")
        end = position + blobs.field("size").to_numpy().astype(np.int64)
        blob_ids = (blobs.field("blob_id").to_numpy().astype(np.int64) if "blob_id" in fields
                    else np.zeros(len(blobs), np.int64))
        fragment = (table.column("_rowaddr").to_numpy() >> 32).astype(np.int64)
        data_dir = Path(dataset.uri) / "data"
        stems = {f.fragment_id: [data_dir / Path(file.path).stem for file in f.metadata.files]
                 for f in fragments}
        # one file per (fragment, blob id): its rows' first row and the end of its last blob
        unique, file_of = np.unique(np.stack([fragment, blob_ids], 1), axis=0,
                                    return_inverse=True)
        file_of = file_of.reshape(-1)
        order = np.argsort(file_of, kind="stable")
        bounds = np.searchsorted(file_of[order], np.arange(len(unique)))
        first_rows = order[bounds].tolist()
        needed = np.maximum.reduceat(end[order], bounds).tolist()
        if not _room_for(len(unique)):
            return _unmapped(f"{len(unique)} blob files to map would pass the limit on open "
                             f"files (each map holds one): eercf index --index DIR --reindex compacts it")
        files = []
        for (fragment_id, blob), size in zip(unique.tolist(), needed):
            path = _find(stems[fragment_id], blob, size)
            if path is None:
                return _unmapped(f"no file of fragment {fragment_id} holds its blobs")
            files.append(_map(path))
        mapped = cls(files, file_of.astype(np.int32), position, dim)
        # the head and the tail of one blob per file, through Lance and through the map
        checks = []
        for row in first_rows:
            size = int(end[row] - position[row])
            checks += [(row, 0, min(CHECK_BYTES, size)),
                       (row, max(0, size - CHECK_BYTES), min(CHECK_BYTES, size))]
        through_lance = dataset.read_blob_ranges(
            "patches", [(start + row, at, n) for row, at, n in checks], selector="indices")
        for (row, at, n), (_, _, expected) in zip(checks, through_lance):
            begin = int(position[row]) + at
            if files[file_of[row]][begin:begin + n] != bytes(expected):
                return _unmapped("a mapped blob does not read as Lance reads it")
        return mapped

    def __post_init__(self) -> None:
        # each map as one byte tensor, made once: a row is a slice of it, viewed as fp16
        with warnings.catch_warnings():  # read-only maps: only ever read (scoring copies them)
            warnings.simplefilter("ignore", UserWarning)
            self._bytes = [torch.frombuffer(file, dtype=torch.uint8) for file in self.files]

    def __len__(self) -> int:
        return len(self.file_of)

    def extended(self, more: "MappedCold") -> "MappedCold":
        """This map followed by ``more`` (the rows appended after it)."""
        return MappedCold(self.files + more.files,
                          np.concatenate([self.file_of, more.file_of + len(self.files)]),
                          np.concatenate([self.position, more.position]), self.dim)

    def whole_rows(self, offsets: Sequence[int] | np.ndarray, patches: int,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Every patch of the rows at ``offsets``: per row ``[patches, D]`` fp16, a view of
        the map where ``device`` is the CPU. Stage 2 widens each into a cached scratch as it
        scores it, so the 9 MB a query reads whole are read once, not copied first (copying
        them cost 1.5 ms a query at 10k videos, 1.8 in batches:
        ``benchmarks/results/stage2_zero_copy.json``)."""
        width = 2 * patches * self.dim
        files = self.file_of[offsets].tolist()
        begins = self.position[offsets].tolist()
        if WILLNEED is not None:  # every row's pages requested at once: the reads overlap
            for file, begin in zip(files, begins):
                page = begin - begin % mmap.PAGESIZE
                self.files[file].madvise(WILLNEED, page, begin + width - page)
        return [self._bytes[file][begin:begin + width].view(torch.float16).view(patches, self.dim)
                .to(device) for file, begin in zip(files, begins)]


def _find(stems: list[Path], blob: int, needed: int) -> Path | None:
    """The first file beside one of a fragment's data files that may hold blob ``blob``
    (``needed`` bytes long at least); which one does is checked by reading it."""
    for stem in stems:
        for sidecar in SIDECARS:
            path = sidecar(stem, blob)
            if path.is_file() and path.stat().st_size >= needed:
                return path
    return None


def _room_for(files: int) -> bool:
    """Whether ``files`` more descriptors fit under the process's limit (raising the soft
    limit up to the hard one if that is what it takes), leaving room for everything else."""
    try:
        import resource
    except ImportError:  # not a POSIX system: no such limit to mind
        return True
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 256
    wanted += files + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or wanted <= soft:
        return True
    if hard != resource.RLIM_INFINITY and wanted > hard:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return False
    return True


def _map(path: Path) -> mmap.mmap:
    with open(path, "rb") as handle:  # the map outlives the descriptor
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def _unmapped(reason: str) -> None:
    log.info("reading the cold tier through Lance: %s", reason)
    return None
