"""PQ encoding, the bulk of a pq ingest: FAISS's ``ProductQuantizer.compute_codes`` against
``PQCodec.encode`` (batched matrix products), on the patches of ``--videos`` videos at ViT-B/32
shapes (588 patch vectors of 512-d a video), interleaved in one process, with how often the
codes agree.

    python benchmarks/pq_encode.py --videos 100 --threads 1 2
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

from eercf.index import codecs

DIM, PATCHES_PER_VIDEO = 512, 12 * 49
HERE = Path(__file__).resolve().parent


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around 64 centres (patches of a collection are far from uniform)."""
    centres = rng.standard_normal((64, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pq_encode.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = clustered(args.videos * PATCHES_PER_VIDEO, rng)
    codec = codecs.PQCodec.train(vectors[:codecs.TRAIN_SAMPLE])
    pq = faiss.ProductQuantizer(codec.dim, codec.m, codecs.BITS)
    faiss.copy_array_to_vector(codec.centroids.reshape(-1), pq.centroids)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        times: dict[str, list[float]] = {"faiss": [], "eercf": []}
        for _ in range(args.repeats):  # interleaved: both see the same machine
            for name, encode in (("faiss", pq.compute_codes), ("eercf", codec.encode)):
                started = time.perf_counter()
                codes = encode(vectors)
                times[name].append(time.perf_counter() - started)
                if name == "faiss":
                    reference = codes.reshape(len(vectors), codec.m)
                else:
                    agree = float((codes == reference).mean())
        faiss_s, eercf_s = (statistics.median(times[n]) for n in ("faiss", "eercf"))
        rows.append({"threads": threads, "vectors": len(vectors),
                     "faiss_seconds": faiss_s, "eercf_seconds": eercf_s,
                     "videos_per_second": {"faiss": args.videos / faiss_s,
                                           "eercf": args.videos / eercf_s},
                     "speedup": faiss_s / eercf_s, "codes_agree": agree})
        print(json.dumps(rows[-1]), flush=True)
    report = {"command": "python benchmarks/pq_encode.py " + " ".join(sys.argv[1:]),
              "machine": {"cpu": platform.machine(), "torch": torch.__version__,
                          "faiss": faiss.__version__},
              "m": codec.m, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
