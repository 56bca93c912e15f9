"""Whether a model's text gate finds brief content: for every test video of the synthetic
benchmark whose caption names a flash, which of its 12 frames the weak frame score picks (the
arg-max of ``t . fn_i``), whether that frame shows a flash, and whether it shows the flash
named; for two queries per video: its test caption (motion and flash, maybe the corner), and
a flash-only caption like the training kind ``flash`` ("A and B flash together", for the pair
of its first flash). Flash frames are found from the pixels (both halves of the screen in
flash colours).

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


def probe(checkpoint: str, data: Path) -> dict:
    model = eercf.load_model(checkpoint)
    records = load_dataset("msrvtt", data, "test")
    encoded = encode_records(model, records, progress=False)
    meta = {m["video_id"]: m for m in json.loads((data / "synth.json").read_text())}
    by_id = {r.video_id: r for r in records}
    counts = {query: {"flash": 0, "named": 0} for query in ("test_caption", "flash_only")}
    videos = flash_frames = 0
    for caption, row in zip(encoded.captions, encoded.caption_video.tolist()):
        truth = meta[encoded.video_ids[row]]
        if "flash" not in truth["captions"][0]["kind"]:
            continue
        frames = flash_pairs(by_id[truth["video_id"]].path, model.max_frames)
        videos += 1
        flash_frames += sum(f is not None for f in frames)
        first = synth.SynthVideo(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in truth.items()
                                    if k in synth.SynthVideo.__dataclass_fields__}).flashes[0]
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
           "flash_frames_share": round(100 * flash_frames / (videos * model.max_frames), 1)}
    for query, c in counts.items():
        out[f"{query}: picked a flash frame"] = round(100 * c["flash"] / videos, 1)
        out[f"{query}: picked the named flash"] = round(100 * c["named"] / videos, 1)
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
