"""The default `tiny` recipe on every synthetic benchmark design, as a user runs it: `eercf
synth --design D`, `eercf train --model tiny` (validation held out of the training videos,
fusion weights fitted on it at the end), then `eercf eval --checkpoint RUN`: stage 1 alone,
two-stage with the fitted weights and K (what search does), two-stage with the paper's
weights and K = 50, and all pairs (fitted weights), t2v and v2t R@1 on the test split;
two-stage through the default `pq` fine-store codec and again with `--codec exact`.

    python benchmarks/designs.py --work /tmp/designs [--designs flash,motion,corner,mixed] [--seeds 0,1,2]

About 6 minutes a (design, seed) on 2 cores; run it on a quiet machine (the training time is a
figure). Results accumulate in benchmarks/results/designs.json (a rerun replaces the pairs it
makes) and benchmarks/results/designs.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EERCF = [sys.executable, "-m", "eercf.cli"]
MODES = ("video", "two_stage", "two_stage_paper", "all_pairs")


def run(cmd: list[str]) -> tuple[str, float]:
    print("$ eercf " + " ".join(cmd[3:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout, time.perf_counter() - start


def one(work: Path, design: str, seed: int, videos: int, sets: list[str], name: str) -> dict:
    data = work / f"{design}-{seed}"
    if not (data / "MSRVTT_data.json").exists():
        run(EERCF + ["synth", str(data), "--videos", str(videos), "--seed", str(seed),
                     "--design", design])
    folder = work / f"run-{design}-{seed}" if not sets else work / f"run-{design}-{seed}-{name}"
    if folder.exists():
        shutil.rmtree(folder)
    summary, seconds = run(EERCF + ["train", "--data", str(data), "--dataset", "msrvtt",
                                    "--model", "tiny", "--out", str(folder), "--no-progress",
                                    "--json", *[a for s in sets for a in ("--set", s)]])
    summary = json.loads(summary)
    seconds = round(seconds, 1)
    results = {}
    for codec in ("pq", "exact"):  # pq: the default, what search does; exact: fp16 patches
        result, _ = run(EERCF + ["eval", "--checkpoint", str(folder), "--data", str(data),
                                 "--workers", "0", "--json", "--codec", codec])
        results[codec] = json.loads(result)
    result = results["pq"]
    return {"design": design, "seed": seed, "sets": sets,
            "command_seconds": seconds, "train_seconds": round(summary["seconds"], 1),
            "best": summary["best"], "fitted": summary["fitted"],
            "t2v_R1": {m: round(result[m]["t2v"]["R1"], 1) for m in MODES if m in result},
            "v2t_R1": {m: round(result[m]["v2t"]["R1"], 1) for m in MODES if m in result},
            "topk": {m: result[m].get("topk") for m in MODES if m in result},
            "codec": result["two_stage"].get("codec"),
            "exact_t2v_R1": {m: round(results["exact"][m]["t2v"]["R1"], 1)
                             for m in ("two_stage", "two_stage_paper") if m in results["exact"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/designs"),
                        help="folder for data and runs (default /tmp/designs)")
    parser.add_argument("--designs", default="flash,motion,corner,mixed,overlay")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for every run (an ablation), repeatable")
    parser.add_argument("--name", default="designs", help="result file name (default designs)")
    parser.add_argument("--table", action="store_true",
                        help="print the results file as a Markdown table and stop")
    args = parser.parse_args()
    path = RESULTS / f"{args.name}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    if args.table:
        print(markdown(rows))
        return
    for seed in map(int, args.seeds.split(",")):
        for design in args.designs.split(","):
            row = one(args.work, design, seed, args.videos, args.sets, args.name)
            rows = [r for r in rows if (r["design"], r["seed"]) != (design, seed)] + [row]
            rows.sort(key=lambda r: (r["design"], r["seed"]))
            print(json.dumps(row), flush=True)
            RESULTS.mkdir(exist_ok=True)
            path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    plot(rows, path.with_suffix(".png"))


def markdown(rows: list[dict]) -> str:
    """t2v (v2t) R@1 per design and seed: stage 1, two-stage with the fitted and the paper's
    weights (fp16 patches), all pairs, the gain over stage 1, and two-stage through the default
    pq codec as search runs it (``benchmarks/codec_accuracy.py`` rows named DESIGN-SEED)."""
    accuracy_file = RESULTS / "codec_accuracy.json"
    accuracy = {(r["name"], r["subvector"], r.get("frames_read")): r for r in
                json.loads(accuracy_file.read_text())["rows"]} if accuracy_file.exists() else {}
    lines = ["| design, seed | stage 1 | two-stage (fitted) | two-stage (paper's) | all-pairs "
             "| gain | search, pq codec | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["design"], r["seed"])):
        if "exact_t2v_R1" not in r:  # a row from before the codecs
            continue
        t, v, e = r["t2v_R1"], r["v2t_R1"], r["exact_t2v_R1"]
        pq = accuracy.get((f"{r['design']}-{r['seed']}", 16, 4))
        pq_cell = f"{pq['t2v_R1']['pq']:.1f} (exact {pq['t2v_R1']['exact']:.1f})" if pq else "-"
        lines.append(
            f"| {r['design']} {r['seed']} | {t['video']:.1f} ({v['video']:.1f}) | "
            f"{e['two_stage']:.1f} ({v['two_stage']:.1f}) | "
            f"{e.get('two_stage_paper', e['two_stage']):.1f} "
            f"({v.get('two_stage_paper', v['two_stage']):.1f}) | "
            f"{t['all_pairs']:.1f} ({v['all_pairs']:.1f}) | {e['two_stage'] - t['video']:+.1f} | "
            f"{pq_cell} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['design']}\nseed {r['seed']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(rows), 3.4))
    for i, mode in enumerate(MODES):
        values = [r["t2v_R1"].get(mode, 0.0) for r in rows]
        ax.bar([x + (i - 1.5) * 0.2 for x in range(len(rows))], values, width=0.2, label=mode)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("t2v R@1 (test split)")
    ax.set_title("tiny from scratch, default recipe, per benchmark design")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main()
