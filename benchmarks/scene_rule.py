"""How well the scene rule separates (issue 16): on the long-video indexes that
``benchmarks/long_videos.py`` leaves in ``--work``, the cosine of every pair of adjacent shot
rows, placed among the video's pairs of rows ``SCENE_APART`` or more apart (the distribution
``scene_spans`` judges against), for cuts inside a clip and cuts between clips. Reports the
share of each that a bar at several quantiles would join (the shipped rule: 0.9).

    python benchmarks/scene_rule.py --work /tmp/long DIR_NAME ...   (e.g. long-0-4-8)

Writes benchmarks/results/scene_rule.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from eercf.index import VideoIndex
from eercf.index.segments import SCENE_APART, TOUCH

HERE = Path(__file__).resolve().parent
QUANTILES = (0.9, 0.95, 0.98, 0.99)


def percentiles(data: Path) -> tuple[list[float], list[float]]:
    """Where each adjacent shot pair's cosine falls among its video's far pairs (0-1), for
    cuts inside a clip and cuts between clips."""
    truth = json.loads((data / "synth.json").read_text())
    table = VideoIndex.open(data / "long-index")._dataset().to_table(
        columns=["id", "segment_start", "segment_end", "video"]).to_pylist()
    within, between = [], []
    for video in sorted({r["id"] for r in table}):
        rows = sorted((r for r in table if r["id"] == video),
                      key=lambda r: (r["segment_start"], r["segment_end"]))
        spans = [(r["segment_start"], r["segment_end"]) for r in rows]
        # shot rows only: a scene row holds two or more other rows whole (as long_videos.py)
        rows = [r for r, (a, b) in zip(rows, spans)
                if sum(a <= c and d <= b and (c, d) != (a, b) for c, d in spans) < 2]
        unit = torch.nn.functional.normalize(torch.tensor([r["video"] for r in rows]), dim=-1)
        cosine = unit @ unit.T
        far = np.sort(cosine[torch.triu(torch.ones_like(cosine, dtype=torch.bool),
                                        SCENE_APART)].numpy())
        clips = [tuple(t["span"]) for t in truth if t["video"] == video]

        def clip_of(at: float) -> int:
            return next(k for k, (a, b) in enumerate(clips) if a - TOUCH <= at < b - TOUCH)

        for i in range(len(rows) - 1):
            if abs(rows[i + 1]["segment_start"] - rows[i]["segment_end"]) > TOUCH:
                continue
            place = float(np.searchsorted(far, float(cosine[i, i + 1])) / max(1, len(far)))
            same = clip_of(rows[i]["segment_start"]) == clip_of(rows[i + 1]["segment_start"])
            (within if same else between).append(place)
    return within, between


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    out = {}
    for name in args.names:
        within, between = percentiles(args.work / name)
        out[name] = {"cuts_inside_clips": len(within), "cuts_between_clips": len(between),
                     "joined": {str(q): {
                         "inside": round(float(np.mean(np.array(within) > q)), 3) if within else None,
                         "between": round(float(np.mean(np.array(between) > q)), 3)}
                         for q in QUANTILES}}
        print(name, json.dumps(out[name]))
    path = HERE / "results" / "scene_rule.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
