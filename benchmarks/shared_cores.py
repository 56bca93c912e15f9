"""Training steps of the tiny model alone and on shared cores, with libgomp's default wait
policy and with eercf's (``GOMP_SPINCOUNT=3000``, set by the ``eercf`` command), in one run
(issue 11: 1.05 s a step alone became 13-15 s beside another busy process).

A step is the tiny model encoding 32 videos of 12 frames and 8 caption views each, the loss,
backward and an AdamW step, on random inputs, with torch's default threads (one per core).
Each measurement runs in fresh processes (OpenMP reads its settings when torch loads):
alone; beside a process spinning on one core; beside a second identical training process.
Writes results/shared_cores.json.

    python benchmarks/shared_cores.py            # about 3 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WAIT_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
POLICIES = {"libgomp default": {}, "eercf default": {"GOMP_SPINCOUNT": "3000"},
            "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"}}


def child(n: int) -> None:
    """``n`` timed steps after one warm-up; prints the seconds of each as JSON."""
    import torch

    from eercf.model import EERCF
    from eercf.model.config import get_model_config

    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    frames = torch.randn(32, 12, 3, 64, 64)
    ids = torch.randint(1, 2000, (32 * 8, 20))
    ids[:, -1] = 2047  # the EOT (the arg-max id)
    times = []
    for step in range(n + 1):
        start = time.perf_counter()
        video = model.encode_video(frames)
        text = model.encode_text(ids).unflatten(0, (32, 8))
        loss = sum(model.loss(text[:, k], video)["total"] for k in range(8)) / 8
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            times.append(time.perf_counter() - start)
    print(json.dumps(times))


def _spin() -> None:
    while True:
        pass


def measure(policy: dict[str, str], beside: str | None, n: int) -> float:
    """Median seconds a step with ``policy`` alone, beside a spinning process (``"spin"``), or
    beside a second training process with the same policy (``"train"``)."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_SETTINGS} | policy
    command = [sys.executable, __file__, "--child", str(n)]
    spinner = multiprocessing.Process(target=_spin, daemon=True) if beside == "spin" else None
    if spinner:
        spinner.start()
    other = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) if beside == "train" else None
    try:
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        if spinner:
            spinner.terminate()
            spinner.join()
        if other:
            other.wait()
    return statistics.median(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    rows = []
    for name, policy in POLICIES.items():
        for beside in (None, "spin", "train"):
            seconds = measure(policy, beside, args.steps)
            rows.append({"policy": name, "env": policy, "beside": beside or "nothing",
                         "step_seconds": seconds})
            print(f"{name:>15} beside {beside or 'nothing':>7}: {seconds:.2f} s/step", flush=True)
    for name in POLICIES:
        alone, *shared = [r["step_seconds"] for r in rows if r["policy"] == name]
        print(f"{name:>15}: beside a spinning process {shared[0] / alone:.2f}x, beside a second "
              f"training run {shared[1] / alone:.2f}x the step time alone")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shared_cores.json").write_text(json.dumps(
        {"cpus": os.cpu_count(), "steps": args.steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
