"""Forward time and peak memory of ``EERCF.encode_video`` (batches of 12-frame videos) and of
all-pairs ``EERCF.similarity`` at 1,000 x 1,000 ViT-B/32-shaped features, random weights.

Each measurement runs in a fresh process so its peak resident memory is its own.

    python benchmarks/model.py [--batch 8] [--repeats 3] [--device cpu|cuda] [--dtype float32|bfloat16]

Writes benchmarks/results/model-<device>.json and a PNG bar chart beside it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _encode_video(name: str, batch: int, repeats: int, device: str, dtype: str, queue) -> None:
    import torch
    from eercf.model.config import get_model_config
    from eercf.model import EERCF

    torch.manual_seed(0)
    config = get_model_config(name)
    model = EERCF(config).to(device).eval()
    size = config["vision"]["image_size"]
    frames = torch.randn(batch, 12, 3, size, size, device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype),
                              enabled=dtype != "float32")
    with torch.inference_mode(), autocast:
        model.encode_video(frames)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        _reset_peak_rss()
        before = _peak_rss_mib()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode_video(frames)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda")
            else _peak_rss_mib() - before)
    queue.put({"what": "encode_video", "model": name, "batch": batch, "frames": 12,
               "image_size": size, "dtype": dtype, "seconds_per_batch": min(times),
               "videos_per_second": batch / min(times), "peak_mib": peak})


def _similarity(n: int, device: str, queue) -> None:
    import torch
    import torch.nn.functional as F
    from eercf.model.config import get_model_config
    from eercf.model import EERCF, VideoFeatures

    torch.manual_seed(0)
    model = EERCF(get_model_config("ViT-B-32")).to(device).eval()
    unit = lambda *s: F.normalize(torch.randn(*s, device=device), dim=-1)  # noqa: E731
    feats = VideoFeatures(unit(n, 512), unit(n, 12, 512), unit(n, 12, 512), unit(n, 12, 49, 512),
                          torch.ones(n, 12, dtype=torch.bool, device=device))
    text = unit(n, 512)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _reset_peak_rss()
    before = _peak_rss_mib()
    start = time.perf_counter()
    with torch.inference_mode():
        model.similarity(text, feats)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda")
            else _peak_rss_mib() - before)
    queue.put({"what": "similarity", "model": "ViT-B-32", "texts": n, "videos": n,
               "seconds": seconds, "peak_mib_above_features": peak})


def _run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--similarity-size", type=int, default=1000)
    args = parser.parse_args()
    rows = [_run(_encode_video, name, args.batch, args.repeats, args.device, args.dtype)
            for name in ("tiny", "ViT-B-32")]
    rows.append(_run(_similarity, args.similarity_size, args.device))
    for row in rows:
        print(json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"model-{args.device.split(':')[0]}.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "args": vars(args), "rows": rows}, indent=2) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    enc = [r for r in rows if r["what"] == "encode_video"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.bar([r["model"] for r in enc], [r["videos_per_second"] for r in enc])
    left.set_ylabel("videos / s (12 frames)")
    right.bar([r["model"] for r in enc], [r["peak_mib"] for r in enc])
    right.set_ylabel("peak memory of the forward (MiB)")
    fig.suptitle(f"encode_video, batch {args.batch}, {args.device}, {args.dtype}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
