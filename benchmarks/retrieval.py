"""Retrieval latency: stage 1 alone vs two-stage search (K = 50) vs all-pairs fine-grained
scoring, at ViT-B/32 shapes (D 512, F 12, P 49) with random unit features, in one run.

For each collection size N that fits on disk (``--store-max``) the features go through a real
``eercf.VideoIndex`` (Lance store + FAISS), and:
- stage 1 alone: ``q = t W_g`` and the FAISS inner-product search (top k);
- two-stage: ``VideoIndex.search_encoded`` (stage 1 top K, then a Lance ``take`` of the K
  candidates' features, as stored in fp16, and ``model.rerank``);
- all-pairs: the fused score of every video, streaming the whole store through
  ``model.similarity`` in chunks (what a system without stage 1 must do per query).
Larger N (patches cost ~600 KB per video, so 100k videos need ~60 GB) are measured as stage 1
through FAISS over N random video vectors, plus the stage 2 of the largest store measured in
the same run (stage 2 reads K rows whatever N is); they are marked ``"composed": true``.
Queries run one at a time (median over ``--queries``) and in batches of ``--batch``
(per-query time, median over ``--repeats``). Writes a JSON result and a PNG plot.

    python benchmarks/retrieval.py --sizes 1000 10000 100000 --store-max 10000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F

from eercf.model.config import get_model_config
from eercf.index import VideoIndex, ann, store
from eercf.model import EERCF, VideoFeatures
from eercf.model.similarity import fuse

DIM, FRAMES, PATCHES = 512, 12, 49
# Arrow's buffers are read-only; they are only ever copied from here
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
HERE = Path(__file__).resolve().parent


def random_features(n: int, generator: torch.Generator) -> VideoFeatures:
    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1)
    return VideoFeatures(video=unit(n, DIM), frames=unit(n, FRAMES, DIM),
                         temporal=unit(n, FRAMES, DIM), patches=unit(n, FRAMES, PATCHES, DIM),
                         mask=torch.ones(n, FRAMES, dtype=torch.bool))


def grow(index: VideoIndex, target: int, generator: torch.Generator, chunk: int = 250) -> float:
    """Add random videos until the index holds ``target``; returns the seconds spent."""
    started = time.perf_counter()
    stamps = [[0.5 + f for f in range(FRAMES)]] * chunk
    while (n := len(index)) < target:
        count = min(chunk, target - n)
        ids = [f"v{n + i:07d}" for i in range(count)]
        index.add(ids, [f"/videos/{i}.mp4" for i in ids], [float(FRAMES)] * count,
                  stamps[:count], random_features(count, generator), save_stage1=False)
        print(f"  indexed {n + count}/{target}", file=sys.stderr, end="\r")
    index.save_stage1()
    os.sync()  # searches are timed on a settled store, not against the write-back of this one
    print(file=sys.stderr)
    return time.perf_counter() - started


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def stage1_alone(model: EERCF, stage1: ann.Stage1, text: torch.Tensor, k: int) -> None:
    with torch.inference_mode():
        query = model.stage1_query(text).numpy()
    stage1.search(query, k)


def all_pairs(model: EERCF, dataset, text: torch.Tensor, k: int, chunk: int = 256) -> None:
    """Fused score of every stored video for every query, keeping each query's top k. The
    store is streamed into fp32 buffers reused from chunk to chunk, so the baseline pays for
    reading and scoring, not for page faults."""
    weights = model.config["eercf"]["rerank"]
    best = torch.full((len(text), 0), float("-inf"))
    shapes = {"video": (DIM,), "frames": (FRAMES, DIM), "temporal": (FRAMES, DIM),
              "patches": (FRAMES, PATCHES, DIM)}
    buffers = {name: torch.empty(chunk, *shape) for name, shape in shapes.items()}
    for batch in dataset.to_batches(columns=[*shapes, "mask"], batch_size=chunk):
        n = batch.num_rows
        levels = {name: buffers[name][:n].copy_(torch.from_numpy(
            batch.column(name).flatten().to_numpy(zero_copy_only=False)).view(n, *shape))
            for name, shape in shapes.items()}
        mask = torch.from_numpy(batch.column("mask").flatten().to_numpy(zero_copy_only=False))
        part = VideoFeatures(mask=mask.view(n, FRAMES), **levels)
        with torch.inference_mode():
            fused = fuse(model.similarity(text, part), weights)
        best = torch.cat([best, fused], 1).topk(min(k, best.shape[1] + n), dim=1).values


def per_query(fn, text: torch.Tensor, queries: int, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per query, one at a time and in batches."""
    single = [timed(lambda: fn(text[i:i + 1])) for i in range(queries)]
    batched = [timed(lambda: fn(text[:batch])) / batch for _ in range(repeats)]
    return {"single": statistics.median(single), "batched": statistics.median(batched)}


def stage2_times(index: VideoIndex, model: EERCF, text: torch.Tensor, queries: int, batch: int,
                 repeats: int, k: int, topk: int) -> dict[str, dict[str, float]]:
    """Two-stage per-query time and its breakdown from the search's own timings."""
    out: dict[str, dict[str, float]] = {}
    for mode, rows, n_runs in (("single", 1, queries), ("batched", batch, repeats)):
        runs = []
        for r in range(n_runs):
            part = text[r:r + 1] if rows == 1 else text[:batch]
            wall = timed(lambda: runs.append(index.search_encoded(part, k=k, topk=topk,
                                                                 model=model)[0].timings))
            runs[-1] = {**runs[-1], "total": wall}
        out[mode] = {key: statistics.median(run[key] for run in runs) / rows
                     for key in ("total", "stage1", "stage2", "stage2_read")}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--store-max", type=int, default=10000,
                        help="largest N written to a real index (disk: ~600 KB per video)")
    parser.add_argument("--all-pairs-max", type=int, default=10000,
                        help="largest N at which all-pairs scoring is run")
    parser.add_argument("--queries", type=int, default=20, help="single queries timed")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="batches timed")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="where the index is built")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "retrieval.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "retrieval.png")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = EERCF(get_model_config("ViT-B-32")).eval()
    text = F.normalize(torch.randn(max(args.queries, args.batch), DIM, generator=generator), dim=-1)
    workdir = Path(tempfile.mkdtemp(prefix="eercf-retrieval-", dir=args.workdir))
    index = VideoIndex.create(workdir / "index", model)
    results = []
    stored_stage2 = None
    try:
        for n in sorted(args.sizes):
            row: dict = {"videos": n}
            if n <= args.store_max:
                row["build_seconds"] = grow(index, n, generator)
                snap = index.snapshot()
                row["stage1"] = per_query(lambda t: stage1_alone(model, snap.stage1, t, args.k),
                                          text, args.queries, args.batch, args.repeats)
                stored_stage2 = stage2_times(index, model, text, args.queries, args.batch,
                                             args.repeats, args.k, args.topk)
                row["two_stage"] = stored_stage2
                row["bytes_per_video_on_disk"] = index.bytes_on_disk() / n
                if n <= args.all_pairs_max:
                    row["all_pairs"] = per_query(lambda t: all_pairs(model, snap.dataset, t, args.k),
                                                 text, 1, args.batch, 1)
            else:
                vectors = F.normalize(torch.randn(n, DIM, generator=generator), dim=-1).numpy()
                stage1 = ann.build(vectors, "Flat", "", version=0)
                row["stage1"] = per_query(lambda t: stage1_alone(model, stage1, t, args.k),
                                          text, args.queries, args.batch, args.repeats)
                row["composed"] = True
                row["two_stage"] = {
                    mode: {"stage1": row["stage1"][mode],
                           "stage2": stored_stage2[mode]["stage2"],
                           "stage2_read": stored_stage2[mode]["stage2_read"],
                           "total": row["stage1"][mode] + stored_stage2[mode]["stage2"]}
                    for mode in ("single", "batched")}
            for mode in ("single", "batched"):
                s1, two = row["stage1"][mode], row["two_stage"][mode]["total"]
                ratios = row.setdefault("ratios", {}).setdefault(mode, {})
                ratios["two_stage_over_stage1"] = two / s1
                if "all_pairs" in row:
                    ratios["all_pairs_over_two_stage"] = row["all_pairs"][mode] / two
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "command": " ".join(["python", "benchmarks/retrieval.py"] + sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "faiss": faiss.__version__},
        "shape": {"dim": DIM, "frames": FRAMES, "patches": PATCHES, "topk": args.topk, "k": args.k,
                  "batch": args.batch},
        "feature_bytes_per_video": store.bytes_per_video(DIM, FRAMES, PATCHES),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(results, args.plot, args.topk)
    print(f"wrote {args.out} and {args.plot}", file=sys.stderr)
    return 0


def plot(results: list[dict], path: Path, topk: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for mode, style in (("single", "-"), ("batched", "--")):
        sizes = [r["videos"] for r in results]
        ax.plot(sizes, [1e3 * r["stage1"][mode] for r in results], style + "o", color="tab:blue",
                label=f"stage 1 alone ({mode})")
        ax.plot(sizes, [1e3 * r["two_stage"][mode]["total"] for r in results], style + "s",
                color="tab:green", label=f"two-stage, K={topk} ({mode})")
        composed = [r for r in results if r.get("composed")]
        ax.plot([r["videos"] for r in composed],
                [1e3 * r["two_stage"][mode]["total"] for r in composed], "s", color="white",
                markeredgecolor="tab:green",
                label="two-stage composed: stage 1 at N + stage 2 of the largest store"
                if mode == "single" and composed else None)
        pairs = [r for r in results if "all_pairs" in r]
        ax.plot([r["videos"] for r in pairs], [1e3 * r["all_pairs"][mode] for r in pairs],
                style + "^", color="tab:red", label=f"all-pairs ({mode})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("videos in the collection (N)")
    ax.set_ylabel("ms per query")
    ax.set_title("Retrieval latency, ViT-B/32 shapes (batched: per query, in batches)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
