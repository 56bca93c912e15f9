"""How many queries of a batch should share one read of the cold tier's whole rows
(``eercf.index.search.EXACT_READ_QUERIES``)? Each query's exact pass reads its 10 best
candidates whole (6 MB at ViT-B/32): a larger shared read means fewer calls but a larger buffer
written and read back through memory. Searches a batch of ``--batch`` random queries over an
existing pq index (its hot tier in memory, as ``eercf serve`` holds it) with each setting in
turn, ``--repeats`` times, and prints the median ms a query, in one process.

    python benchmarks/exact_read_queries.py --index DIR [--settings 1 4 8 32 100]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F

from eercf.index import VideoIndex, search
from eercf.model import EERCF
from eercf.model.config import get_model_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True,
                        help="a pq index of random ViT-B/32-shaped videos (benchmarks/retrieval.py)")
    parser.add_argument("--settings", type=int, nargs="+", default=[1, 4, 8, 32, 100])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    torch.manual_seed(0)
    model = EERCF(get_model_config("ViT-B-32")).eval()
    text = F.normalize(torch.randn(args.batch, model.config["embed_dim"],
                                   generator=torch.Generator().manual_seed(0)), dim=-1)
    index = VideoIndex.open(args.index)
    index.hot_in_memory = True
    index.search_encoded(text[:1], k=10, topk=50, model=model)  # load the hot tier, map the cold
    runs: dict[int, list[tuple[float, float]]] = {s: [] for s in args.settings}
    for _ in range(args.repeats):  # the settings interleaved
        for setting in args.settings:
            search.EXACT_READ_QUERIES = setting
            started = time.perf_counter()
            results = index.search_encoded(text, k=10, topk=50, model=model)
            wall = (time.perf_counter() - started) / len(text)
            runs[setting].append((wall, results[0].timings["stage2_read_cold"] / len(text)))
    print(f"{len(index)} videos, batches of {args.batch}: median ms a query")
    for setting, times in runs.items():
        print(f"  {setting:4d} queries a read: total {1e3 * statistics.median(t for t, _ in times):6.2f}"
              f"  cold read {1e3 * statistics.median(c for _, c in times):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
