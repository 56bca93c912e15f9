"""Whether a model's text gate finds brief content: for every test caption of the synthetic
benchmark that names a flash, which of its own video's 12 frames the weak frame score picks
(the arg-max of ``t . fn_i``), and whether that frame shows a flash, and the flash it names.
Flash frames are found from the pixels (both halves of the screen in flash colours).

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
    kinds = {m["video_id"]: m["captions"][0]["kind"]
             for m in json.loads((data / "synth.json").read_text())}
    picked_flash = picked_named = queries = flash_frames = 0
    by_id = {r.video_id: r for r in records}
    for caption, row in zip(encoded.captions, encoded.caption_video.tolist()):
        video_id = encoded.video_ids[row]
        if "flash" not in kinds[video_id]:
            continue
        named = frozenset(w.strip(",;") for w in caption.split() if w.strip(",;") in synth.FLASH_COLOURS)
        frames = flash_pairs(by_id[video_id].path, model.max_frames)
        flash_frames += sum(f is not None for f in frames)
        with torch.inference_mode():
            text = model.encode_text(model.tokenize([caption]))[0]
            scores = encoded.videos.frames[row] @ text
        scores = scores.masked_fill(~encoded.videos.mask[row], float("-inf"))
        best = int(scores.argmax())
        queries += 1
        picked_flash += frames[best] is not None
        picked_named += frames[best] == named
    return {"checkpoint": checkpoint, "flash_queries": queries,
            "picked_a_flash_frame": round(100 * picked_flash / queries, 1),
            "picked_the_named_flash": round(100 * picked_named / queries, 1),
            "flash_frames_share": round(100 * flash_frames / (queries * model.max_frames), 1)}


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
