"""What each level of a model trained on the synthetic benchmark has learnt: for every test
caption, whether each level's top video is the right one (R@1) and whether it shows the
caption's motion, its flash pair and its corner square (checked against the ground truth in
``synth.json`` with ``eercf.data.synth.fits``). Tells apart "the fine levels cannot see the
detail" from "no level has learnt it yet".

    python benchmarks/synthetic_levels.py CHECKPOINT SYNTH_FOLDER

Prints a table and writes benchmarks/results/synthetic_levels.json.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

import eercf
from eercf.data import synth
from eercf.data.datasets import load_dataset
from eercf.evaluate import encode_records
from eercf.similarity import fuse

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    model = eercf.load_model(args.checkpoint)
    encoded = encode_records(model, load_dataset("msrvtt", args.data, "test"), progress=False)
    meta = {m["video_id"]: m for m in synth.read_meta(args.data)}
    truth = synth.read_truth(args.data)
    videos = [truth[i] for i in encoded.video_ids]
    with torch.inference_mode():
        sims = model.similarity(encoded.text, encoded.videos)
        sims["fused"] = fuse(sims, model.fusion_weights())
    target = encoded.caption_video.tolist()
    kinds = [meta[encoded.video_ids[t]]["captions"][0]["kind"] for t in target]
    pairs = [tuple(w for w in re.findall(r"[a-z]+", c) if w in synth.FLASH_COLOURS)
             for c in encoded.captions]
    out = {}
    print(f"{'level':12s} {'R@1':>6s} {'motion':>7s} {'flash':>6s} {'corner':>7s}")
    for level, scores in sims.items():
        top = scores.float().argmax(1).tolist()
        row = {"R1": np.mean([t == c for t, c in zip(top, target)]),
               "motion": np.mean([synth.fits(videos[t], videos[c], "motion")
                                  for t, c in zip(top, target)]),
               "flash": np.mean([synth.fits(videos[t], videos[c], "flash", p)
                                 for t, c, k, p in zip(top, target, kinds, pairs) if "flash" in k]),
               "corner": np.mean([synth.fits(videos[t], videos[c], "corner")
                                  for t, c, k in zip(top, target, kinds) if "corner" in k])}
        out[level] = {k: round(100 * float(v), 1) for k, v in row.items()}
        print(f"{level:12s} " + " ".join(f"{out[level][k]:6.1f} " for k in row))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthetic_levels.json").write_text(json.dumps(
        {"checkpoint": str(args.checkpoint), "data": str(args.data), "levels": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
