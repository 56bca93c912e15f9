"""The cold tier's read, through Lance's blob API against memory maps of its files, with the
store's files in the page cache and evicted from it (``posix_fadvise(DONTNEED)``), in one run.

Each trial reads what one query's exact pass reads at K = 50 (the 10 candidates the codes rank
best, whole: 588 patches of 512-d fp16, 10 ranges of 602 KB), or a batch of ``--batch``
queries' (1,000 ranges at 100), from fresh random rows, by:
- ``lance``: ``store.read_patches`` (``read_blob_ranges``);
- ``mapped``: ``MappedCold.whole_rows`` (every range's pages asked for with ``MADV_WILLNEED``),
  then copied into one tensor (stage 2 itself copies each row into its scratch as it scores);
- ``mapped_serial``: the same slices copied without asking first (each page fault waits for
  its own read from disk).

    python benchmarks/cold_read.py --index DIR          # an existing pq index
    python benchmarks/cold_read.py --videos 2000        # or one built here at ViT-B/32 shapes
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eercf.index import VideoIndex, cold, store
from eercf.index.cold import MappedCold
from eercf.model import EERCF
from eercf.model.config import get_model_config

HERE = Path(__file__).resolve().parent


def evict(root: Path) -> None:
    """Drop the store's files from the page cache (clean pages only: the store is settled)."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="an existing pq index")
    parser.add_argument("--videos", type=int, default=2000, help="videos of an index built here")
    parser.add_argument("--trials", type=int, default=15, help="reads timed of one query's")
    parser.add_argument("--batch", type=int, default=100, help="queries in a batch's read")
    parser.add_argument("--batch-trials", type=int, default=3, help="reads timed of a batch's")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cold_read.json")
    args = parser.parse_args()
    built = None
    if args.index is None:
        sys.path.insert(0, str(HERE))
        from retrieval import grow

        built = Path(tempfile.mkdtemp(prefix="eercf-cold-", dir=args.workdir))
        index = VideoIndex.create(built / "idx", EERCF(get_model_config("ViT-B-32")), codec="pq")
        grow(index, args.videos, torch.Generator().manual_seed(0))
    else:
        index = VideoIndex.open(args.index)
    try:
        dataset = index.snapshot().dataset
        if not store.is_coded(dataset.schema):
            raise SystemExit(f"{args.index}: not a pq index (eercf index --reindex --codec pq)")
        mapped = MappedCold.open(dataset)
        if mapped is None:
            raise SystemExit("this store's blobs cannot be mapped (see the log)")
        _, frames, per_frame = store.dims(dataset.schema)
        positions = torch.arange(frames * per_frame)  # whole rows, as the exact pass reads
        saved_willneed = cold.WILLNEED

        def whole(offsets):
            return torch.stack(mapped.whole_rows(offsets, len(positions)))

        def serial(offsets, at):
            cold.WILLNEED = None
            try:
                return whole(offsets)
            finally:
                cold.WILLNEED = saved_willneed

        readers = {"lance": lambda o, at: store.read_patches(dataset, o, at),
                   "mapped": lambda o, at: whole(o), "mapped_serial": serial}
        rng = np.random.default_rng(0)
        shapes = {"query": 10, "batch": 10 * args.batch}  # rows read: one query, a batch
        root = Path(dataset.uri)
        report = {"command": " ".join(["python", "benchmarks/cold_read.py"] + sys.argv[1:]),
                  "videos": dataset.count_rows(), "ranges_per_query": 10,
                  "bytes_per_query": int(10 * len(positions) * 2 * mapped.dim), "ms": {}}
        for shape, rows in shapes.items():
            for scenario in ("in_page_cache", "evicted"):
                if scenario == "in_page_cache":
                    warm(root)
                times: dict[str, list[float]] = {name: [] for name in readers}
                trials = args.trials if shape == "query" else args.batch_trials
                for _ in range(trials):
                    for name, read in readers.items():
                        if shape == "batch" and name == "mapped_serial":
                            continue
                        offsets = np.sort(rng.choice(dataset.count_rows(), rows, replace=False))
                        if scenario == "evicted":
                            evict(root)
                        at = positions.expand(rows, -1)
                        started = time.perf_counter()
                        got = read(offsets, at)
                        times[name].append(1e3 * (time.perf_counter() - started))
                        if name == "mapped":  # and the same bytes
                            assert torch.equal(got, store.read_patches(dataset, offsets, at))
                key = f"{shape}_{scenario}"
                report["ms"][key] = {name: round(statistics.median(v), 2)
                                     for name, v in times.items() if v}
                print(key, report["ms"][key], file=sys.stderr)
    finally:
        if built is not None:
            shutil.rmtree(built, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
