"""Whether a model's text gate finds brief content, and what it has learnt about it.

For every test video of the synthetic benchmark whose caption names a flash: which of its 12
frames the weak frame score picks (the arg-max of ``t . fn_i``), whether that frame shows a
flash, and whether it shows the flash named; for two queries per video: its test caption
(motion and flash, maybe the corner), and a flash-only caption like the training kind
``flash`` ("A and B flash together", for the pair of its first flash). Flash frames are found
from the pixels (both halves of the screen in flash colours). Then whether each tower tells
the flashes apart: the mean cosine between the features of flash frames showing the same pair,
pairs sharing one colour, and disjoint pairs; the same for the text features of the ten
flash-only captions (against "a red circle moves left" vs "a blue circle moves left", words
the model has learnt); and the learnt logit scale.

    python benchmarks/gate_probe.py SYNTH_FOLDER CHECKPOINT [CHECKPOINT ...]

Prints one JSON line per checkpoint and writes benchmarks/results/gate_probe.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import eercf
from eercf.data import synth
from eercf.data.datasets import load_dataset
from eercf.data.video import decode_clip
from eercf.evaluate import encode_records

RESULTS = Path(__file__).resolve().parent / "results"
PALETTE = {name: np.array(rgb) for name, rgb in synth.COLOURS.items()}


def _colour(pixel: np.ndarray) -> str:
    return min(PALETTE, key=lambda name: np.abs(PALETTE[name] - pixel).sum())


def flash_pairs(path: str, num_frames: int) -> list[frozenset | None]:
    """Per sampled frame: the two flash colours it shows, or None."""
    clip = decode_clip(path, num_frames=num_frames, image_size=64)
    out = []
    for frame in clip.frames.astype(int):
        left, right = _colour(frame[6, 22]), _colour(frame[6, 42])  # above the moving shape
        flash = left in synth.FLASH_COLOURS and right in synth.FLASH_COLOURS and left != right
        out.append(frozenset((left, right)) if flash else None)
    return out


def _cosines_by_overlap(features: torch.Tensor, pairs: list[frozenset]) -> dict[str, float]:
    """Mean cosine between rows whose colour pairs share 2, 1 or 0 colours."""
    cos = (features @ features.T).numpy()
    shared: dict[int, list[float]] = {2: [], 1: [], 0: []}
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            shared[len(pairs[i] & pairs[j])].append(float(cos[i, j]))
    names = {2: "same pair", 1: "one colour shared", 0: "no colour shared"}
    return {names[k]: round(float(np.mean(v)), 3) for k, v in shared.items() if v}


def probe(checkpoint: str, data: Path) -> dict:
    model = eercf.load_model(checkpoint)
    records = load_dataset("msrvtt", data, "test")
    encoded = encode_records(model, records, progress=False)
    truth = synth.read_truth(data)
    kinds = {m["video_id"]: m["captions"][0]["kind"] for m in synth.read_meta(data)}
    by_id = {r.video_id: r for r in records}
    counts = {query: {"flash": 0, "named": 0} for query in ("test_caption", "flash_only")}
    videos = 0
    frame_features, frame_pairs = [], []
    for caption, row in zip(encoded.captions, encoded.caption_video.tolist()):
        video_id = encoded.video_ids[row]
        if "flash" not in kinds[video_id]:
            continue
        frames = flash_pairs(by_id[video_id].path, model.max_frames)
        videos += 1
        for i, pair in enumerate(frames):
            if pair is not None:
                frame_features.append(encoded.videos.frames[row, i])
                frame_pairs.append(pair)
        first = truth[video_id].flashes[0]
        words = [w.strip(",;") for w in caption.split()]
        queries = {"test_caption": (caption, frozenset(w for w in words if w in synth.FLASH_COLOURS)),
                   "flash_only": (f"{first[0]} and {first[1]} flash together", frozenset(first))}
        for query, (text, named) in queries.items():
            with torch.inference_mode():
                t = model.encode_text(model.tokenize([text]))[0]
                scores = (encoded.videos.frames[row] @ t).masked_fill(
                    ~encoded.videos.mask[row], float("-inf"))
            best = frames[int(scores.argmax())]
            counts[query]["flash"] += best is not None
            counts[query]["named"] += best == named
    out = {"checkpoint": checkpoint, "videos": videos,
           "flash_frames_share": round(100 * len(frame_pairs) / (videos * model.max_frames), 1)}
    for query, c in counts.items():
        out[f"{query}: picked a flash frame"] = round(100 * c["flash"] / videos, 1)
        out[f"{query}: picked the named flash"] = round(100 * c["named"] / videos, 1)
    colours = synth.FLASH_COLOURS
    pairs = [frozenset((a, b)) for i, a in enumerate(colours) for b in colours[i + 1:]]
    with torch.inference_mode():
        text = model.encode_text(model.tokenize([" and ".join(sorted(p)) + " flash together"
                                                 for p in pairs]))
        circles = model.encode_text(model.tokenize(["a red circle moves left",
                                                    "a blue circle moves left"]))
    out["flash frame features cosine"] = _cosines_by_overlap(torch.stack(frame_features).float(),
                                                             frame_pairs)
    out["flash caption text cosine"] = _cosines_by_overlap(text.float(), pairs)
    out["red vs blue circle text cosine"] = round(float(circles[0] @ circles[1]), 3)
    out["logit_scale"] = round(float(model.logit_scale.detach()), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    rows = []
    for checkpoint in args.checkpoints:
        rows.append(probe(checkpoint, args.data))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gate_probe.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
