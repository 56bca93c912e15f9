"""``eercf demo``: the whole pipeline offline, as the commands a user would type.

Synthetic benchmark -> train ``tiny`` from scratch -> evaluate the three retrieval modes ->
index the test videos -> search them, printing each command before running it in-process."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("video", "two_stage", "two_stage_paper", "all_pairs")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="offline end-to-end demo: synth -> train -> eval -> index -> search",
        description="Make a synthetic benchmark, train the tiny model on it from scratch, "
                    "evaluate stage 1 alone, two-stage and all-pairs retrieval, index the test "
                    "videos and search them, showing when and where each hit matched. Needs no "
                    "network and no GPU; about 10 minutes on a 2-core CPU with the defaults.")
    p.add_argument("--out", default="demo_out", help="folder for everything the demo writes "
                                                    "(default demo_out)")
    p.add_argument("--videos", type=int, default=1000, help="synthetic videos (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: the tiny preset's)")
    p.add_argument("--queries", type=int, default=3, help="test captions to search with")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (metrics, searches, paths) at the end")
    p.set_defaults(func=run)


def _invoke(argv: list[str], capture: bool = False) -> str:
    """Run one ``eercf`` command (one of the steps) in this process, echoing it first; a
    failing step raises its error, which ends the demo with that one line."""
    from . import eval as eval_command
    from . import index, synth, train

    parser = argparse.ArgumentParser(prog="eercf")
    steps = parser.add_subparsers(dest="command")
    for command in (synth, train, eval_command, index):
        command.register(steps)
    args = parser.parse_args(argv)
    print(f"\n$ eercf {shlex.join(argv)}", file=sys.stderr, flush=True)
    out = io.StringIO()
    # a step's own report goes to stderr with its progress: stdout is the demo's summary
    with contextlib.redirect_stdout(out if capture else sys.stderr):
        args.func(args)
    return out.getvalue()


def _metrics_table(results: dict[str, Any]) -> str:
    lines = [f"{'mode':<16} {'t2v R@1':>8} {'R@5':>6} {'R@10':>6} {'MdR':>5} "
             f"{'v2t R@1':>8} {'seconds':>8}"]
    for mode in (m for m in MODES if m in results):  # two_stage_paper: beside fitted weights
        r = results[mode]
        t, v = r["t2v"], r["v2t"]
        lines.append(f"{mode:<16} {t['R1']:>8.1f} {t['R5']:>6.1f} {t['R10']:>6.1f} "
                     f"{t['MdR']:>5.0f} {v['R1']:>8.1f} {r['seconds']:>8.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import load_dataset

    out = Path(args.out)
    data, run_dir, index = out / "data", out / "run", out / "index"
    started = time.perf_counter()
    steps: dict[str, float] = {}

    def timed(name: str, argv: list[str], capture: bool = False) -> str:
        begin = time.perf_counter()
        text = _invoke(argv, capture)
        steps[name] = round(time.perf_counter() - begin, 1)
        return text

    if (data / "MSRVTT_data.json").exists():
        print(f"\nreusing the synthetic benchmark in {data}", file=sys.stderr)
    else:
        timed("synth", ["synth", str(data), "--videos", str(args.videos), "--seed", str(args.seed)])
    train = ["train", "--data", str(data), "--dataset", "msrvtt", "--model", "tiny",
             "--out", str(run_dir)]
    if args.epochs is not None:
        train += ["--epochs", str(args.epochs)]
    if (run_dir / "best" / "config.json").exists():
        print(f"\nreusing the trained model in {run_dir / 'best'}", file=sys.stderr)
    else:
        timed("train", train)
    results = json.loads(timed("eval", ["eval", "--checkpoint", str(run_dir), "--data", str(data),
                                        "--dataset", "msrvtt", "--split", "test", "--json"],
                               capture=True))
    timed("index", ["index", str(data), "--dataset", "msrvtt", "--split", "test",
                    "--model", str(run_dir / "best"), "--index", str(index)])

    from ..index import VideoIndex
    from .search import print_table

    expected = {r.captions[0]: r.video_id for r in load_dataset("msrvtt", data, "test")[: args.queries]}
    queries = list(expected)
    print(f"\n$ eercf search {index} " + " ".join(shlex.quote(q) for q in queries) + " -k 5",
          file=sys.stderr)
    begin = time.perf_counter()
    opened = VideoIndex.open(index)
    searches = opened.search(queries, k=5)
    steps["search"] = round(time.perf_counter() - begin, 1)
    from ..synthetic import read_meta

    truth = {m["video_id"]: m for m in read_meta(data)}
    checks = [_check(result, truth[expected[result.query]])
              for result in opened.search(queries, k=len(opened))]

    paths = {"benchmark": str(data), "run": str(run_dir), "best_model": str(run_dir / "best"),
             "training_log": str(run_dir / "log.jsonl"), "index": str(index)}
    # with --json the human summary goes to stderr so stdout is one JSON document
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        print("\n== Retrieval on the synthetic test split (text-to-video and video-to-text) ==")
        print(_metrics_table(results))
        print("\n== Searches (moment = when the query matched; where = frame and patch cell) ==")
        for result, check in zip(searches, checks):
            print_table(result)
            print(f"  the caption belongs to {check['video']}: rank {check['stage1_rank']} after "
                  f"stage 1, {check['rank']} after re-ranking; {check['moment']}\n")
        found = sum(c["rank"] <= 5 for c in checks)
        print(f"{found} of {len(checks)} searches find their video in the top 5")
        print("== Written ==")
        for name, path in paths.items():
            print(f"  {name:<13} {path}")
        total = time.perf_counter() - started
        print(f"\ndemo finished in {total:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + ")")
        print(f"search it in a browser: eercf serve {shlex.quote(str(index))}   "
              "(then open http://127.0.0.1:8000/)")
    if args.json:
        print(json.dumps({"metrics": results,
                          "searches": [{**r.to_dict(), "expected": expected[r.query], "check": c}
                                       for r, c in zip(searches, checks)],
                          "paths": paths, "seconds": steps}, indent=1))
    return 0


def _check(result, meta: dict[str, Any]) -> dict[str, Any]:
    """Where the caption's own video (its ground truth ``meta`` from synth.json) ranks after
    stage 1 and after re-ranking (``result`` holds every video), and whether the reported
    moment covers the stretch the caption describes (the flash, when it names the flash)."""
    ranks = {h.video_id: (i + 1, h) for i, h in enumerate(result.hits)}
    rank, hit = ranks[meta["video_id"]]
    out: dict[str, Any] = {"video": meta["video_id"], "rank": rank, "stage1_rank": hit.stage1_rank,
                           "kind": meta["captions"][0]["kind"]}
    if "flash" not in out["kind"]:
        out["moment"] = "the caption names the whole clip, so any moment fits"
        return out
    start = meta["flash_start"] * meta["seconds"]
    end = start + meta.get("flash_fraction", 1.5 / 12) * meta["seconds"]
    out["truth"] = [round(start, 2), round(end, 2)]
    if hit.moment is None or hit.moment.start is None:
        out["moment"] = f"not re-scored, no moment (the flash is at {start:.1f}-{end:.1f} s)"
        return out
    covers = hit.moment.start <= end and hit.moment.end >= start
    out["covers"] = covers
    out["moment"] = (f"the moment {hit.moment.start:.1f}-{hit.moment.end:.1f} s "
                     f"{'covers' if covers else 'misses'} the flash at {start:.1f}-{end:.1f} s")
    return out
