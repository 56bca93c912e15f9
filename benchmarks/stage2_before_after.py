"""Stage 2 before and after a change, in one run: the eercf package of an earlier commit
(``--before``, extracted with ``git archive``) and the working tree search the same index of
random ViT-B/32-shaped videos with the same model and queries, interleaved, one query at a
time and in batches. Prints per-query medians and their ratios, and checks both return the
same hits.

    python benchmarks/stage2_before_after.py --before d18a764 --videos 1500
    python benchmarks/stage2_before_after.py --before ef6c91b --index DIR --hot-in-memory
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F

from eercf.model.config import get_model_config
from eercf.index import VideoIndex
from eercf.model import EERCF
from retrieval import DIM, grow

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("total", "stage1", "stage2", "stage2_read")


def package_at(rev: str, into: Path) -> str:
    """Extract ``src/eercf`` of commit ``rev`` as the package ``eercf_before`` and return
    that name (its imports are relative, so it runs beside the current one)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/eercf"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "eercf").rename(into / "eercf_before")
    sys.path.insert(0, str(into))
    return "eercf_before"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="d18a764", help="commit to compare against")
    parser.add_argument("--videos", type=int, default=1500)
    parser.add_argument("--queries", type=int, default=30, help="single queries timed")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=4, help="batches timed")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="where the index is built")
    parser.add_argument("--index", type=Path, default=None,
                        help="search this existing index (of random ViT-B/32-shaped videos, as "
                             "benchmarks/retrieval.py builds) instead of building one")
    parser.add_argument("--hot-in-memory", action="store_true",
                        help="hold a pq index's hot tier in memory (as eercf serve does)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="eercf-stage2-", dir=args.workdir))
    try:
        name = package_at(args.before, workdir / "code")
        old_config, old_model_module, old_index = (importlib.import_module(f"{name}.{module}")
                                                   for module in ("model.config", "model", "index"))
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = EERCF(get_model_config("ViT-B-32")).eval()
        old_model = old_model_module.EERCF(old_config.get_model_config("ViT-B-32")).eval()
        old_model.load_state_dict(model.state_dict())
        folder = args.index
        if folder is None:
            folder = workdir / "index"
            grow(VideoIndex.create(folder, model), args.videos, generator)
        engines = {"before": (old_index.VideoIndex.open(folder), old_model),
                   "after": (VideoIndex.open(folder), model)}
        for engine, _ in engines.values():
            engine.hot_in_memory = args.hot_in_memory
        text = F.normalize(torch.randn(args.queries + args.batch, DIM, generator=generator), dim=-1)
        for engine, m in engines.values():  # open files, fill caches
            engine.search_encoded(text[:1], k=args.k, topk=args.topk, model=m)

        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {"single": [], "batched": []} for name in engines}
        same_hits = True
        parts = [("single", text[i:i + 1]) for i in range(args.queries)]
        parts += [("batched", text[args.queries:]) for _ in range(args.repeats)]
        for i, (mode, part) in enumerate(parts):
            hits = {}
            for name in (("before", "after") if i % 2 else ("after", "before")):  # alternate
                engine, m = engines[name]
                started = time.perf_counter()
                results = engine.search_encoded(part, k=args.k, topk=args.topk, model=m)
                wall = time.perf_counter() - started
                times = {**results[0].timings, "total": wall}
                runs[name][mode].append({key: times[key] / len(part) for key in KEYS})
                hits[name] = [[h.video_id for h in r.hits] for r in results]
            same_hits &= hits["before"] == hits["after"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    videos = len(engines["after"][0])
    report = {"command": " ".join(["python", "benchmarks/stage2_before_after.py"] + sys.argv[1:]),
              "videos": videos, "same_hits": same_hits, "ms_per_query": {}}
    print(f"{videos} videos, K = {args.topk}; same hits before and after: {same_hits}")
    for mode in ("single", "batched"):
        print(f"{mode}: median ms per query ({len(runs['after'][mode])} runs)")
        figures = report["ms_per_query"][mode] = {}
        for key in KEYS:
            old = 1e3 * statistics.median(r[key] for r in runs["before"][mode])
            new = 1e3 * statistics.median(r[key] for r in runs["after"][mode])
            figures[key] = {"before": old, "after": new, "speed-up": old / new}
            print(f"  {key:12s} before {old:8.2f}  after {new:8.2f}  {old / new:5.2f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
