"""Load test of ``eercf serve`` on loopback: 1, 8 and 32 concurrent clients searching a
10,000-video index, then the same while a writer adds videos through the API. Reports
throughput, p50 and p99 latency, errors, and checks that every response is one consistent
snapshot (every hit is a video of the version the response names, and k hits came back).

The service runs in its own process (so the clients' Python does not share its GIL), with a
random ViT-B/32-shaped model (seeded, with CLIP's BPE) over an index of random features of the
same shapes (``benchmarks/retrieval.py``'s, built here when ``--index`` does not exist). Bounded:
each level runs ``--requests`` searches or ``--seconds``, whichever ends first.

    python benchmarks/serve_load.py --index /tmp/load-index --clients 1 8 32
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ["a", "man", "woman", "dog", "cat", "car", "red", "blue", "runs", "jumps", "plays",
         "guitar", "on", "the", "beach", "street", "kitchen", "cooks", "talks", "ball", "two",
         "people", "dance", "under", "rain", "a", "video", "of", "green", "field"]


def model():
    import torch

    from eercf.model import EERCF
    from eercf.model.config import get_model_config
    from eercf.model.tokenizer import CLIPTokenizer

    torch.manual_seed(0)  # the same weights retrieval.py indexes with
    m = EERCF(get_model_config("ViT-B-32")).eval()
    m.tokenizer = CLIPTokenizer.openai()
    return m


def serve(args: argparse.Namespace) -> int:
    """The service process."""
    import uvicorn

    from eercf.serve import create_app

    torch_threads = int(os.environ.get("EERCF_SERVE_THREADS", "2"))
    import torch
    torch.set_num_threads(torch_threads)
    token = Path(args.token_file).read_text().strip()
    app = create_app(args.index, token=token, media_root=args.media_root, model=model())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


def build(index: Path, videos: int) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from retrieval import grow

    from eercf.index import VideoIndex

    generator = torch.Generator().manual_seed(0)
    grow(VideoIndex.create(index, model(), codec="pq"), videos, generator)


def write_clips(folder: Path, count: int) -> list[Path]:
    """Small H.264 clips for the writer to add."""
    from fractions import Fraction

    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"added{n:03d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available
                                          else "mpeg4", rate=Fraction(10))
            stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
            for i in range(30):
                pixels = np.full((120, 160, 3), 20 + 7 * n % 200, np.uint8)
                pixels[40:80, 5 * i:5 * i + 30] = (200, 40 + n % 200, 40)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def level(base: str, clients: int, requests: int, seconds: float, k: int,
          seed: int) -> dict:
    """``clients`` threads searching as fast as answers come back."""
    import httpx

    rng = random.Random(seed)
    queries = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
               for _ in range(requests)]
    latencies, answers, errors = [], [], []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                started = time.perf_counter()
                try:
                    r = http.get("/api/search", params={"q": queries[n], "k": k})
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(repr(err))
                    continue
                took = time.perf_counter() - started
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        body = r.json()
                        latencies.append(took)
                        answers.append((body["version"], [h["video_id"] for h in body["hits"]]))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": len(latencies), "errors": errors[:10],
            "error_count": len(errors), "seconds": wall,
            "throughput": len(latencies) / wall,
            "p50_ms": 1e3 * statistics.median(latencies),
            "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "answers": answers}


def consistent(index: Path, answers: list[tuple[int, list[str]]], k: int) -> dict:
    """Every hit of a response is a video of the version it names, k hits each."""
    import lance

    ids: dict[int, set[str]] = {}
    bad = 0
    for version, hits in answers:
        if version not in ids:
            ds = lance.dataset(str(index / "videos.lance"), version=version)
            ids[version] = set(ds.to_table(columns=["id"]).column("id").to_pylist())
        if len(hits) != min(k, len(ids[version])) or not set(hits) <= ids[version] \
                or len(set(hits)) != len(hits):
            bad += 1
    return {"versions_seen": sorted(ids), "inconsistent": bad}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=10000, help="when building --index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="searches per level at most")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per level at most")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=300, help="searches before measuring")
    parser.add_argument("--writer-videos", type=int, default=12,
                        help="clips the writer adds in turn (jobs of 2, new ids each round) "
                             "for as long as the writing phase lasts")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_load.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--media-root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    if not args.index.exists():
        print(f"building a {args.videos}-video index in {args.index}", file=sys.stderr)
        build(args.index, args.videos)

    import httpx

    work = Path(tempfile.mkdtemp(prefix="eercf-load-"))
    token = "load-test-token-" + os.urandom(8).hex()
    (work / "token").write_text(token)
    clips = write_clips(work / "media", args.writer_videos)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--index", str(args.index),
                               "--port", str(port), "--token-file", str(work / "token"),
                               "--media-root", str(work / "media")])
    base = f"http://127.0.0.1:{port}"
    report: dict = {"command": " ".join(["python", "benchmarks/serve_load.py"] + sys.argv[1:]),
                    "levels": [], "writing": []}
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not start")
            time.sleep(0.5)
        info = httpx.get(base + "/api/index").json()
        report["index"] = {key: info[key] for key in ("videos", "codec", "bytes_per_video",
                                                      "hot_in_memory", "model")}
        # warm-up: the first searches read the cold tier from disk, not the page cache
        level(base, 8, args.warmup, args.seconds, args.k, seed=99)
        for n in args.clients:
            row = level(base, n, args.requests, args.seconds, args.k, seed=n)
            row["consistency"] = consistent(args.index, row.pop("answers"), args.k)
            report["levels"].append(row)
            print(json.dumps(row), file=sys.stderr)

        auth = {"Authorization": f"Bearer {token}"}
        stop = threading.Event()
        jobs: list[dict] = []

        def writer() -> None:
            """Add two videos a job, one job after another, until the levels are through."""
            with httpx.Client(base_url=base, timeout=60, headers=auth) as http:
                round_ = 0
                while not stop.is_set():
                    start = 2 * round_ % len(clips)
                    videos = [{"uri": str(p), "id": f"{p.stem}-r{round_}"}
                              for p in clips[start:start + 2]]
                    job = http.post("/api/videos", json={"videos": videos}).json()["job"]
                    while (state := http.get(f"/api/jobs/{job}").json())["state"] not in (
                            "done", "failed"):
                        time.sleep(0.2)
                    jobs.append(state)
                    round_ += 1

        thread = threading.Thread(target=writer)
        thread.start()
        for n in args.clients:
            row = level(base, n, args.requests, args.seconds, args.k, seed=100 + n)
            row["consistency"] = consistent(args.index, row.pop("answers"), args.k)
            row["jobs_finished_so_far"] = len(jobs)
            report["writing"].append(row)
            print(json.dumps(row), file=sys.stderr)
        stop.set()
        thread.join()
        report["writer"] = {"jobs": len(jobs), "added": sum(len(j["added"]) for j in jobs),
                            "failed": [f for j in jobs for f in j["failed"]]}
        removed = 0
        for job in jobs:  # leave the index as it was
            for video_id in job["added"]:
                removed += httpx.delete(f"{base}/api/videos/{video_id}", headers=auth,
                                        timeout=60).status_code == 200
        report["writer"]["removed_after"] = removed
    finally:
        server.terminate()
        server.wait(timeout=30)
    one = report["levels"][0]["throughput"] if report["levels"] else None
    for row in report["levels"] + report["writing"]:
        row["throughput_over_one_client"] = row["throughput"] / one if one else None
        row["p99_over_p50"] = row["p99_ms"] / row["p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = ["| phase | clients | searches | throughput (q/s) | vs 1 client | p50 ms | p99 ms "
             "| p99/p50 | errors | inconsistent |", "| --- " * 10 + "|"]
    for phase, rows in (("read only", report["levels"]), ("writer adding", report["writing"])):
        for r in rows:
            lines.append(f"| {phase} | {r['clients']} | {r['requests']} | {r['throughput']:.1f} | "
                         f"{r['throughput_over_one_client']:.2f}x | {r['p50_ms']:.0f} | "
                         f"{r['p99_ms']:.0f} | {r['p99_over_p50']:.2f} | {r['error_count']} | "
                         f"{r['consistency']['inconsistent']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
