"""What long videos cost (issue 16): HOURS of video as one-hour videos stored at the default
segments (12 s every 6 s: 599 rows an hour), against an index of the same number of rows as
short videos, both built through a real ``VideoIndex`` (pq codec, the default) with random unit
features: bytes (on disk, and per hour), build time, and search latency with the default
grouping by video (stage 1 recalls until k distinct videos are in) against the short index.

    python benchmarks/long_cost.py --hours 100 --shape tiny [--workdir /tmp]

``--shape tiny`` (D 128, F 12, P 16) keeps 100 hours (60k rows) to a few GB on this VM;
``--shape vit-b-32`` (D 512, F 12, P 49) is the real model's row. Writes
benchmarks/results/long_cost-SHAPE.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from eercf.index import VideoIndex
from eercf.index.segments import Segmenting
from eercf.model import EERCF, VideoFeatures
from eercf.model.config import get_model_config

warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
HERE = Path(__file__).resolve().parent
SHAPES = {"tiny": (128, 12, 16, "tiny"), "vit-b-32": (512, 12, 49, "ViT-B-32")}
CODEBOOK_AFTER = 1000  # rows added exact before the pq codebook is trained on them


def features(n: int, dim: int, frames: int, patches: int, g: torch.Generator) -> VideoFeatures:
    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=g), dim=-1)
    return VideoFeatures(video=unit(n, dim), frames=unit(n, frames, dim),
                         temporal=unit(n, frames, dim), patches=unit(n, frames, patches, dim),
                         mask=torch.ones(n, frames, dtype=torch.bool))


def build(index: VideoIndex, videos: list[tuple[str, list | None]], shape: tuple,
          g: torch.Generator) -> float:
    """Add ``videos`` (id, spans or None for a short one), 600 rows a commit at most."""
    dim, frames, patches, _ = shape
    started = time.perf_counter()
    pending: list[tuple[str, tuple | None]] = []
    rows = 0

    def flush() -> None:
        nonlocal rows
        if not pending:
            return
        if rows >= CODEBOOK_AFTER and index.stored_codec() != index.codec:
            index.apply_codec()
        spans = [s for _, s in pending]
        stamps = [[(s[0] if s else 0.0) + 0.5 + f for f in range(frames)] for s in spans]
        index.add([v for v, _ in pending], [f"/videos/{v}.mp4" for v, _ in pending],
                  [3600.0 if s else 10.0 for s in spans], stamps,
                  features(len(pending), dim, frames, patches, g), save_stage1=False,
                  spans=spans if any(spans) else None)
        rows += len(pending)
        pending.clear()
        print(f"  {rows} rows", file=sys.stderr, end="\r")

    for video_id, spans in videos:
        parts = [(video_id, s) for s in spans] if spans else [(video_id, None)]
        if len(pending) + len(parts) > 600:
            flush()
        pending.extend(parts)
    flush()
    if index.stored_codec() != index.codec:
        index.apply_codec()
    index.save_stage1()
    os.sync()
    print(file=sys.stderr)
    return time.perf_counter() - started


def latency(index: VideoIndex, model: EERCF, text: torch.Tensor, per: str, queries: int,
            batch: int, repeats: int) -> dict[str, float]:
    def run(part: torch.Tensor) -> float:
        started = time.perf_counter()
        index.search_encoded(part, k=10, topk=50, model=model, per=per)
        return time.perf_counter() - started
    run(text[:1])  # warm the caches once
    single = [run(text[i:i + 1]) for i in range(queries)]
    batched = [run(text[:batch]) / batch for _ in range(repeats)]
    return {"single_ms": round(1e3 * statistics.median(single), 2),
            "batched_ms_per_query": round(1e3 * statistics.median(batched), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=100.0)
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    shape = SHAPES[args.shape]
    model = EERCF(get_model_config(shape[3])).eval()
    spans = Segmenting().spans(3600.0)
    n_long = max(1, round(args.hours))
    long_videos = [(f"hour{i:04d}", spans) for i in range(n_long)]
    rows = n_long * len(spans)
    short_videos = [(f"v{i:07d}", None) for i in range(rows)]
    text = F.normalize(torch.randn(max(args.queries, args.batch), shape[0],
                                   generator=torch.Generator().manual_seed(7)), dim=-1)
    report = {"hours": n_long, "shape": args.shape, "segments_per_hour": len(spans),
              "rows": rows, "segmenting": Segmenting().to_dict(), "torch_threads":
              torch.get_num_threads(), "indexes": {}}
    for name, videos in (("long", long_videos), ("short", short_videos)):
        folder = args.workdir / f"long-cost-{args.shape}-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        index = VideoIndex.create(folder, model)
        seconds = build(index, videos, shape, torch.Generator().manual_seed(1))
        stats = index.stats()
        entry = {"videos": stats["videos"], "rows": stats["rows"], "build_seconds": round(seconds, 1),
                 "bytes_on_disk": stats["bytes_on_disk"],
                 "bytes_per_row": stats["bytes_per_video"],
                 "disk_bytes_per_hour": round(stats["bytes_on_disk"] / n_long)}
        entry["search"] = {"per_video": latency(index, model, text, "video", args.queries,
                                                args.batch, args.repeats)}
        if name == "long":
            entry["search"]["per_segment"] = latency(index, model, text, "segment", args.queries,
                                                     args.batch, args.repeats)
        report["indexes"][name] = entry
        print(name, json.dumps(entry), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    long, short = report["indexes"]["long"]["search"], report["indexes"]["short"]["search"]
    report["long_vs_short"] = {k: round(long["per_video"][k] / short["per_video"][k], 2)
                               for k in short["per_video"]}
    out = HERE / "results" / f"long_cost-{args.shape}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["long_vs_short"]), "wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
