"""Latency of the exact pass's width: the search option ``exact_candidates`` (candidates read
whole and scored exactly) swept on one pq index, its hot tier in memory, one thread, interleaved in one
process; single queries and batches of 100, median ms a query. Builds a 10k-video pq index of
random ViT-B/32-shaped features at ``--index`` if none is there (on every core, as
``retrieval.py`` builds; searches on one thread). (Accuracy of the same sweep:
``benchmarks/codec_accuracy.py --exact-candidates N``.)

    python benchmarks/exact_candidates.py --index /tmp/pq10k --values 10 15 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F

from eercf.errors import EercfError
from eercf.index import VideoIndex
from eercf.model import EERCF
from eercf.model.config import get_model_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from retrieval import DIM, grow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=10000)
    parser.add_argument("--values", type=int, nargs="+", default=[10, 15, 20])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "exact_candidates.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = EERCF(get_model_config("ViT-B-32")).eval()
    build_seconds = None
    try:
        index = VideoIndex.open(args.index)
    except EercfError:
        index = VideoIndex.create(args.index, model, codec="pq")
        build_seconds = grow(index, args.videos, torch.Generator().manual_seed(0),
                             threads=os.cpu_count())  # as retrieval.py builds
        print(f"built in {build_seconds:.0f} s")
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    index.hot_in_memory = True
    text = F.normalize(torch.randn(100, DIM, generator=torch.Generator().manual_seed(1)), dim=-1)
    index.search_encoded(text[:1], k=10, topk=50, model=model)  # warm
    times = {e: {"single": [], "batched": []} for e in args.values}
    for _ in range(args.repeats):
        for e in args.values:
            for i in range(len(text)):
                started = time.perf_counter()
                index.search_encoded(text[i:i + 1], k=10, topk=50, model=model,
                                     exact_candidates=e)
                times[e]["single"].append(time.perf_counter() - started)
            started = time.perf_counter()
            index.search_encoded(text, k=10, topk=50, model=model, exact_candidates=e)
            times[e]["batched"].append((time.perf_counter() - started) / len(text))
    report = {"command": "python benchmarks/exact_candidates.py " + " ".join(sys.argv[1:]),
              "videos": len(index), "build_seconds": build_seconds, "ms_per_query": {
                  str(e): {m: round(1e3 * statistics.median(v), 2) for m, v in d.items()}
                  for e, d in times.items()}}
    print(json.dumps(report["ms_per_query"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
