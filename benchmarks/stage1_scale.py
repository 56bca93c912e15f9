"""Stage 1 at scale: exact (``Flat``) against FAISS IVF and HNSW factories, as an index builds
them (``eercf.index.ann.build``, the factory string and search parameters a user passes to
``eercf index --index-factory ... --search-params ...``), over N video vectors of 512-d.

Two kinds of collections, since approximate search depends on how vectors cluster:
- ``random``: unit vectors, uniform on the sphere (no structure: the worst case for IVF);
- ``clustered``: unit vectors around N / 100 random centres (cosine about 0.7 to their
  centre), closer to how real video embeddings group by topic.

Queries are stored vectors perturbed to a cosine of about 0.6 (each query has one video it was
made from, its *match*). For every factory: build seconds, bytes per vector, per-query search
time (one query at a time, median; and in batches), recall@K of the exact top K (the
candidates stage 2 would re-score) and how often the match is among the top K. Stage 2 does not
depend on N (it reads K candidates), so this is the part of two-stage search that grows.

    python benchmarks/stage1_scale.py --sizes 100000 1000000
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from eercf.index import ann

DIM = 512
HERE = Path(__file__).resolve().parent


def collection(kind: str, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors ``[n, DIM]`` fp32 of ``kind`` (``random`` or ``clustered``)."""
    generator = torch.Generator().manual_seed(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    centres = F.normalize(torch.randn(max(1, n // 100), DIM, generator=generator), dim=-1)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        noise = torch.randn(rows, DIM, generator=generator)
        if kind == "random":
            block = noise
        elif kind == "clustered":
            at = torch.randint(len(centres), (rows,), generator=generator)
            # |noise| ~ sqrt(DIM): scaled so the cosine to the centre is about 0.7
            block = centres[at] + F.normalize(noise, dim=-1)
        else:
            raise SystemExit(f"unknown collection kind {kind!r}: random or clustered")
        out[start:start + rows] = F.normalize(block, dim=-1).numpy()
    return out


def queries_of(vectors: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` queries made from random stored vectors (cosine about 0.6), and those rows."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), count, replace=False)
    noise = rng.standard_normal((count, DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = vectors[rows] + 1.33 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries, dtype=np.float32), rows


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(stage1: ann.Stage1, queries: np.ndarray, depth: int, batch: int,
            repeats: int) -> dict[str, float]:
    """Median seconds per query, one at a time and in batches of ``batch``."""
    stage1.search(queries[:1], depth)  # warm
    single = [timed(lambda: stage1.search(queries[i:i + 1], depth)) for i in range(len(queries))]
    batched = [timed(lambda: stage1.search(queries[:batch], depth)) / batch
               for _ in range(repeats)]
    return {"single": statistics.median(single), "batched": statistics.median(batched)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    parser.add_argument("--factories", nargs="+", default=None, help=(
        "FACTORY or FACTORY|PARAMS (default: Flat; IVF{sqrt N},Flat at nprobe 16, 64; "
        "HNSW32 at efSearch 64, 256)"))
    parser.add_argument("--hnsw-max", type=int, default=1_000_000,
                        help="largest N to build the default HNSW at")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--topk", type=int, default=50, help="K, the candidates of stage 2")
    parser.add_argument("--threads", type=int, default=1, help="threads searches are timed on")
    parser.add_argument("--build-threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "stage1_scale.json")
    args = parser.parse_args()

    build_threads = args.build_threads or faiss.omp_get_max_threads()
    results = []
    for n in args.sizes:
        lists = 1 << round(np.log2(np.sqrt(n)))  # FAISS trains on 256 a list: 1M trains in minutes
        factories = args.factories or ["Flat", f"IVF{lists},Flat|nprobe=16",
                                       f"IVF{lists},Flat|nprobe=64"] + (
            ["HNSW32|efSearch=64", "HNSW32|efSearch=256"] if n <= args.hnsw_max else [])
        for kind in args.kinds:
            vectors = collection(kind, n, args.seed)
            queries, matches = queries_of(vectors, max(args.queries, args.batch), args.seed + 1)
            truth = None
            built: dict[str, tuple[ann.Stage1, float]] = {}
            for spec in factories:
                factory, _, params = spec.partition("|")
                if factory not in built:
                    built.clear()  # one built index in memory at a time
                    faiss.omp_set_num_threads(build_threads)
                    started = time.perf_counter()
                    stage1 = ann.build(vectors, factory, "", version=0)
                    built[factory] = stage1, time.perf_counter() - started
                stage1, build_seconds = built[factory]
                if params:
                    faiss.ParameterSpace().set_index_parameters(stage1.index, params)
                faiss.omp_set_num_threads(args.threads)
                torch.set_num_threads(args.threads)
                times = measure(stage1, queries[:args.queries], args.topk, args.batch, args.repeats)
                _, labels = stage1.search(queries, args.topk)
                if truth is None:
                    if factory != ann.EXACT:
                        raise SystemExit("the first factory must be Flat (the recall reference)")
                    truth = labels
                recall = np.mean([len(np.intersect1d(a, b)) / args.topk
                                  for a, b in zip(labels, truth)])
                row = {"videos": n, "kind": kind, "factory": factory, "params": params,
                       "build_seconds": build_seconds,
                       "bytes_per_vector": ann.bytes_per_vector(stage1, DIM),
                       "seconds": times, f"recall_at_{args.topk}": float(recall),
                       f"match_in_top_{args.topk}": float(np.mean(
                           [m in set(row_labels) for m, row_labels in zip(matches, labels)]))}
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
            built.clear()
            del vectors
    report = {"command": " ".join(["python", "benchmarks/stage1_scale.py"] + sys.argv[1:]),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "threads": args.threads, "build_threads": build_threads,
                          "faiss": faiss.__version__},
              "topk": args.topk, "batch": args.batch, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    k = report["topk"]
    lines = [f"| N | vectors | factory | build s | B / vector | single ms | batched ms | "
             f"recall@{k} of exact | match in top {k} |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["results"]:
        name = row["factory"] + (f" ({row['params']})" if row["params"] else "")
        lines.append(f"| {row['videos']:,} | {row['kind']} | {name} | {row['build_seconds']:.0f} | "
                     f"{row['bytes_per_vector']:,} | {1e3 * row['seconds']['single']:.2f} | "
                     f"{1e3 * row['seconds']['batched']:.3f} | {row[f'recall_at_{k}']:.3f} | "
                     f"{row[f'match_in_top_{k}']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
