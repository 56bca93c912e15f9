"""Retrieval latency per fine-store codec: stage 1 alone vs two-stage search (K = 50) vs
all-pairs fine-grained scoring, at ViT-B/32 shapes (D 512, F 12, P 49) with random unit
features, in one run.

For each collection size N and each codec (``exact``: fp16 patches read whole; ``pq``: codes
read for every candidate, exact patches read only where the codes point) the features go
through a real ``eercf.VideoIndex`` (Lance store + FAISS; a pq index is built as a user's grows:
the first videos exact, the codebook trained on them, the rest encoded with it), and:
- stage 1 alone: ``q = t W_g`` and the FAISS inner-product search (top k; exact ``Flat``
  unless ``--index-factory`` names another, e.g. ``IVF256,Flat`` with ``--search-params nprobe=16``);
- two-stage: ``VideoIndex.search_encoded`` (stage 1 top K, then stage 2 through the codec),
  with the search's own breakdown (stage-2 reads of the hot and the cold tier);
- all-pairs: the fused score of every video, streaming the whole exact store through
  ``model.similarity`` in chunks (what a system without stage 1 must do per query).
Queries run one at a time (median over ``--queries``; all-pairs: one) and in batches of
``--batch`` (per-query time, median over ``--repeats``, all-pairs too). Writes a JSON result and a PNG plot. Every figure
is measured on a built index: an N whose store does not fit on disk is not run.

    python benchmarks/retrieval.py --sizes 1000 10000 --codecs exact pq pq+ram
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


def grow(index: VideoIndex, target: int, generator: torch.Generator, chunk: int = 250,
         codebook_after: int = 1000, threads: int | None = None) -> float:
    """Add random videos until the index holds ``target`` (a pq index trains its codebook
    once it holds ``codebook_after``), on ``threads`` threads (then back to the ones set);
    returns the seconds spent."""
    searching = torch.get_num_threads(), faiss.omp_get_max_threads()
    if threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    try:
        return _grow(index, target, generator, chunk, codebook_after)
    finally:
        torch.set_num_threads(searching[0])
        faiss.omp_set_num_threads(searching[1])


def _grow(index: VideoIndex, target: int, generator: torch.Generator, chunk: int,
          codebook_after: int) -> float:
    started = time.perf_counter()
    stamps = [[0.5 + f for f in range(FRAMES)]] * chunk
    while (n := len(index)) < target:
        if n >= min(codebook_after, target) and index.stored_codec() != index.codec:
            index.apply_codec()
        count = min(chunk, target - n)
        ids = [f"v{n + i:07d}" for i in range(count)]
        index.add(ids, [f"/videos/{i}.mp4" for i in ids], [float(FRAMES)] * count,
                  stamps[:count], random_features(count, generator), save_stage1=False)
        print(f"  indexed {n + count}/{target}", file=sys.stderr, end="\r")
    if index.stored_codec() != index.codec:
        index.apply_codec()
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
                     for key in ("total", "stage1", "stage2", "stage2_read", "stage2_read_cold")
                     if key in runs[0]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--codecs", nargs="+", default=["exact", "pq", "pq+ram"])
    parser.add_argument("--all-pairs-max", type=int, default=10000,
                        help="largest N at which all-pairs scoring is run")
    parser.add_argument("--queries", type=int, default=20, help="single queries timed")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="batches timed")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="threads searches are timed on")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count(),
                        help="threads the indexes are built on")
    parser.add_argument("--workdir", type=Path, default=None, help="where the index is built")
    parser.add_argument("--index-factory", default=ann.EXACT,
                        help="stage 1's FAISS factory string (e.g. IVF256,Flat)")
    parser.add_argument("--search-params", default="", help="its search parameters (nprobe=16)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "retrieval.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "retrieval.png")
    parser.add_argument("--table", action="store_true", help="print --out as Markdown and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return 0

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = EERCF(get_model_config("ViT-B-32")).eval()
    text = F.normalize(torch.randn(max(args.queries, args.batch), DIM, generator=generator), dim=-1)
    workdir = Path(tempfile.mkdtemp(prefix="eercf-retrieval-", dir=args.workdir))
    results = []
    try:
        stores = sorted({codec.split("+")[0] for codec in args.codecs})
        for name in stores:  # pq+ram: the pq index again, its hot tier held in memory
            index = VideoIndex.create(workdir / name, model, index_factory=args.index_factory,
                                      search_params=args.search_params, codec=name)
            for n in sorted(args.sizes):
                build = grow(index, n, generator, threads=args.build_threads)
                snap = index.snapshot()
                for codec in [c for c in args.codecs if c.split("+")[0] == name]:
                    index.hot_in_memory = codec.endswith("+ram")
                    index.search_encoded(text[:1], k=args.k, topk=args.topk, model=model)  # warm
                    row: dict = {"videos": n, "codec": codec, "build_seconds": build}
                    row["stage1"] = per_query(lambda t: stage1_alone(model, snap.stage1, t, args.k),
                                              text, args.queries, args.batch, args.repeats)
                    row["two_stage"] = stage2_times(index, model, text, args.queries, args.batch,
                                                    args.repeats, args.k, args.topk)
                    row["stats"] = index.stats()
                    if n <= args.all_pairs_max and codec == "exact":
                        row["all_pairs"] = per_query(
                            lambda t: all_pairs(model, snap.dataset, t, args.k), text, 1,
                            args.batch, args.repeats)
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
            shutil.rmtree(workdir / name, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in results:
        pairs = next((r["all_pairs"] for r in results if r["videos"] == row["videos"]
                      and "all_pairs" in r), None)
        for mode in ("single", "batched"):
            s1, two = row["stage1"][mode], row["two_stage"][mode]["total"]
            ratios = row.setdefault("ratios", {}).setdefault(mode, {})
            ratios["two_stage_over_stage1"] = two / s1
            if pairs is not None:
                ratios["all_pairs_over_two_stage"] = pairs[mode] / two

    report = {
        "command": " ".join(["python", "benchmarks/retrieval.py"] + sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "faiss": faiss.__version__},
        "stage1": {"factory": args.index_factory, "search_params": args.search_params},
        "shape": {"dim": DIM, "frames": FRAMES, "patches": PATCHES, "topk": args.topk, "k": args.k,
                  "batch": args.batch},
        "feature_bytes_per_video": {codec: store.bytes_per_video(
            DIM, FRAMES, PATCHES, DIM // 16 if codec.startswith("pq") else 0)
            for codec in args.codecs},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(results, args.plot, args.topk)
    print(f"wrote {args.out} and {args.plot}", file=sys.stderr)
    return 0


def markdown(report: dict) -> str:
    """The results as the Markdown table docs/benchmarks.md shows (ms per query)."""
    lines = ["| N | codec | queries | stage 1 alone | two-stage | stage 2 | hot read | cold read "
             "| all-pairs | two-stage / stage 1 | all-pairs / two-stage | hot / cold B per video |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["results"]:
        sizes = row["stats"]["bytes_per_video"]
        pairs = next((r["all_pairs"] for r in report["results"] if r["videos"] == row["videos"]
                      and "all_pairs" in r), None)
        for mode in ("single", "batched"):
            two = row["two_stage"][mode]
            cold = two.get("stage2_read_cold", 0.0)
            ratios = row["ratios"][mode]
            lines.append(
                f"| {row['videos']:,} | {row['codec']} | {mode} | {1e3 * row['stage1'][mode]:.2f} | "
                f"{1e3 * two['total']:.1f} | {1e3 * two['stage2']:.1f} | "
                f"{1e3 * (two['stage2_read'] - cold):.1f} | {1e3 * cold:.1f} | "
                + (f"{1e3 * pairs[mode]:,.0f} | " if pairs else "- | ")
                + f"{ratios['two_stage_over_stage1']:.1f}x | "
                + (f"{ratios['all_pairs_over_two_stage']:.0f}x | " if pairs else "- | ")
                + f"{sizes['hot']:,} / {sizes['cold']:,} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, topk: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colours = {"exact": "tab:green", "pq": "tab:purple", "pq+ram": "tab:orange"}
    for mode, style in (("single", "-"), ("batched", "--")):
        first = [r for r in results if r["codec"] == results[0]["codec"]]
        ax.plot([r["videos"] for r in first], [1e3 * r["stage1"][mode] for r in first],
                style + "o", color="tab:blue", label=f"stage 1 alone ({mode})")
        for codec, colour in colours.items():
            rows = [r for r in results if r["codec"] == codec]
            ax.plot([r["videos"] for r in rows], [1e3 * r["two_stage"][mode]["total"] for r in rows],
                    style + "s", color=colour, label=f"two-stage {codec}, K={topk} ({mode})")
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
