"""What each level of a model trained on the synthetic benchmark has learnt: for every test
caption, whether each level's top video is the right one (R@1, overall and per test caption
kind) and whether it shows the motion, flash and corner square the caption names (checked
against the ground truth in ``synth.json`` with ``eercf.synthetic.scenes.fits``); and, for the
captions naming a flash, which attribute of the flash the top video gets wrong. Tells apart "the
fine levels cannot see the detail" from "no level has learnt it yet".

    python benchmarks/synthetic_levels.py CHECKPOINT SYNTH_FOLDER

Prints a table and writes benchmarks/results/synthetic_levels.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import eercf
from eercf.synthetic import scenes as synth
from eercf.synthetic.benchmark import read_meta, read_truth
from eercf.data.datasets import load_dataset
from eercf.evaluation.evaluator import encode_records
from eercf.model.similarity import fuse

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    model = eercf.load_model(args.checkpoint)
    encoded = encode_records(model, load_dataset("msrvtt", args.data, "test"), progress=False)
    meta = {m["video_id"]: m for m in read_meta(args.data)}
    truth = read_truth(args.data)
    videos = [truth[i] for i in encoded.video_ids]
    with torch.inference_mode():
        sims = model.similarity(encoded.text, encoded.videos)
        sims["fused"] = fuse(sims, model.fusion_weights())
    target = encoded.caption_video.tolist()
    kinds = [meta[encoded.video_ids[t]]["captions"][0]["kind"] for t in target]
    present = sorted(set(kinds), key=lambda k: -kinds.count(k))
    columns = ("R1", *[f"R1 {k}" for k in present], "motion", "flash", "corner")
    print("test captions per kind:", {k: kinds.count(k) for k in present})
    out = {}
    print(f"{'level':12s} " + " ".join(f"{c[:16]:>16s}" for c in columns))
    for level, scores in sims.items():
        top = scores.float().argmax(1).tolist()
        rows = list(zip(top, target, kinds))
        row = {"R1": np.mean([t == c for t, c, _ in rows])}
        for kind in present:
            row[f"R1 {kind}"] = np.mean([t == c for t, c, k in rows if k == kind])
        for part in ("motion", "flash", "corner"):
            row[part] = np.mean([synth.fits(videos[t], videos[c], part)
                                 for t, c, k in rows if part in k.split("+")])
        out[level] = {k: round(100 * float(v), 1) for k, v in row.items()}
        print(f"{level:12s} " + " ".join(f"{out[level][k]:16.1f}" for k in columns))
    misses = {level: flash_misses(sims[level], target, kinds, videos)
              for level in ("video", "fused")}
    print("flash captions by what the top video gets wrong:", json.dumps(misses))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthetic_levels.json").write_text(json.dumps(
        {"checkpoint": str(args.checkpoint), "data": str(args.data), "levels": out,
         "flash_misses": misses}, indent=2) + "\n")


def flash_misses(scores: torch.Tensor, target: list[int], kinds: list[str],
                 videos: list[synth.SynthVideo]) -> dict[str, int]:
    """For the captions naming a flash: how many top videos are right, and of the wrong ones
    which flash attribute differs from the caption's (one, named, or several)."""
    names = ("background", "colour", "shape", "direction")
    counts: dict[str, int] = {}
    for top, right, kind in zip(scores.float().argmax(1).tolist(), target, kinds):
        if "flash" not in kind.split("+"):
            continue
        differ = [n for n, a, b in zip(names, videos[top].flash, videos[right].flash) if a != b]
        key = ("right" if top == right else "same flash" if not differ
               else f"{differ[0]} only" if len(differ) == 1 else "several")
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


if __name__ == "__main__":
    main()
