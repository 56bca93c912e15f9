"""Long videos (issue 16): a trained model finds the video *and* the moment.

For each seed: the long-video benchmark (`eercf synth --design long`: synthetic clips joined
into videos of 1-10 minutes, each caption naming one clip), its clips indexed as short videos
and the long videos indexed as `eercf index` does (segments). The figure: of the captions whose
clip the model retrieves at rank 1 among the short clips, the share whose search over the long
videos answers the right video first with a moment of IoU >= 0.5 with the clip's span. Also the
moment measures of `eercf eval --moments` on the long videos.

    python benchmarks/long_videos.py --checkpoint RUN/best --work /tmp/long [--seeds 0 1 2]
        [--clip-seconds 4 8] [--videos 4]

Writes benchmarks/results/long_videos[-TAG].json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
EERCF = [sys.executable, "-m", "eercf.cli"]


def short_rank1(model, clips_dir: Path, index_dir: Path, truth: list[dict]) -> set[str]:
    """Captions whose clip is the first hit among the short clips."""
    from eercf.data.sources import find_videos
    from eercf.index import ModelInfo, VideoIndex
    from eercf.index.ingest import ingest

    index = VideoIndex.create(index_dir, ModelInfo.of(model), segmenting=None)
    ingest(index, model, find_videos(clips_dir), progress=False)
    captioned = [t for t in truth if t["caption"]]
    found = set()
    for start in range(0, len(captioned), 64):
        part = captioned[start:start + 64]
        for t, result in zip(part, index.search([t["caption"] for t in part], k=1, model=model)):
            if result.hits and result.hits[0].video_id == t["video_id"]:
                found.add(t["caption"])
    return found


def long_answers(model, data: Path, index_dir: Path, truth: list[dict], segmenting) -> dict:
    from eercf.data.datasets import load_dataset
    from eercf.evaluation.moments import evaluate_moments, iou
    from eercf.index import ModelInfo, VideoIndex
    from eercf.index.ingest import ingest

    records = load_dataset("activitynet", data, "test", paragraph=False)
    index = VideoIndex.create(index_dir, ModelInfo.of(model), segmenting=segmenting)
    started = time.perf_counter()
    added = ingest(index, model, records, progress=False)
    seconds = time.perf_counter() - started
    captioned = [t for t in truth if t["caption"]]
    answers = {}
    for start in range(0, len(captioned), 64):
        part = captioned[start:start + 64]
        for t, result in zip(part, index.search([t["caption"] for t in part], k=5, model=model)):
            top = result.hits[0] if result.hits else None
            right = top is not None and top.video_id == t["video"]
            score = iou((top.moment.start, top.moment.end), tuple(t["span"])) if right else 0.0
            answers[t["caption"]] = {"video_right": right, "iou": score}
    return {"answers": answers, "segments": added["segments"], "scenes": added["scenes"],
            "scene_rows_on_a_clip": scenes_on_clips(index, truth),
            "index_seconds": round(seconds, 1), "eval": evaluate_moments(index, model, records)}


def scenes_on_clips(index, truth: list[dict]) -> float | None:
    """Of the scene rows (rows that hold two or more other rows whole: shots joined), the share
    that is one whole clip (IoU >= 0.9 with it): how often shots were joined into the right
    scene. None when there is no scene row."""
    from eercf.evaluation.moments import iou

    table = index._dataset().to_table(columns=["id", "segment_start", "segment_end"])
    rows = [r for r in zip(*(table[c].to_pylist() for c in table.column_names)) if r[1] is not None]
    clips: dict[str, list] = {}
    for t in truth:
        clips.setdefault(t["video"], []).append(tuple(t["span"]))
    scenes = [(v, a, b) for v, a, b in rows
              if sum(w == v and a <= c and d <= b and (c, d) != (a, b) for w, c, d in rows) >= 2]
    if not scenes:
        return None
    whole = sum(max(iou((a, b), c) for c in clips[v]) >= 0.9 for v, a, b in scenes)
    return round(100 * whole / len(scenes), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, nargs=2, default=[4.0, 8.0])
    parser.add_argument("--shots-per-clip", type=int, default=1)
    parser.add_argument("--segment", type=float, default=None,
                        help="segment seconds (default: the model's)")
    parser.add_argument("--stride", type=float, default=None)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    import shutil

    from eercf.weights import load_model

    from eercf.index.segments import Segmenting

    model = load_model(args.checkpoint)
    segmenting = Segmenting()
    if args.segment is not None:
        segmenting = Segmenting(args.segment, args.stride or args.segment / 2,
                                segmenting.long_after)
    out = {"checkpoint": args.checkpoint, "videos": args.videos,
           "clip_seconds": args.clip_seconds, "shots_per_clip": args.shots_per_clip,
           "seeds": {}}
    for seed in args.seeds:
        data = args.work / (f"long-{seed}-{args.clip_seconds[0]:g}-{args.clip_seconds[1]:g}"
                            + (f"-shots{args.shots_per_clip}" if args.shots_per_clip > 1 else ""))
        if not data.exists():
            subprocess.run(EERCF + ["synth", str(data), "--design", "long", "--videos",
                                    str(args.videos), "--seed", str(seed), "--clip-seconds",
                                    *map(str, args.clip_seconds), "--shots-per-clip",
                                    str(args.shots_per_clip)], check=True,
                           stdout=subprocess.DEVNULL)
        truth = json.loads((data / "synth.json").read_text())
        for name in ("short-index", "long-index"):
            shutil.rmtree(data / name, ignore_errors=True)
        rank1 = short_rank1(model, data / "clips" / "videos" / "all", data / "short-index", truth)
        long = long_answers(model, data, data / "long-index", truth, segmenting)
        answers = long.pop("answers")
        hit = [c for c in rank1 if answers[c]["video_right"] and answers[c]["iou"] >= 0.5]
        entry = {"captions": len(answers), "short_rank1": len(rank1),
                 "long_right_video_and_iou50_of_short_rank1": round(100 * len(hit) / max(1, len(rank1)), 1),
                 "long_right_video_of_short_rank1": round(100 * sum(
                     answers[c]["video_right"] for c in rank1) / max(1, len(rank1)), 1),
                 "hours": round(sum(a["span"][1] - a["span"][0] for a in truth) / 3600, 3),
                 **long}
        out["seeds"][str(seed)] = entry
        print(seed, json.dumps({k: v for k, v in entry.items() if k != "eval"}),
              json.dumps(entry["eval"]["corpus"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"long_videos{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
