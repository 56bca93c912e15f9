"""Whether a model's text gate finds the moment a caption describes, and what it has learnt.

For every test video of the synthetic benchmark whose caption names its flash: which of its 12
frames the weak frame score picks (the arg-max of ``t . fn_i``) and whether that frame shows
the flash (found from the pixels: most of the frame in the flash's background colour). Then
whether the text tower tells flash captions apart: the mean cosine between the features of
flash captions ("the screen flashes yellow as a red circle moves left") that differ in one
attribute only, for each attribute, against captions that differ in all four; and the learnt
logit scale.

    python benchmarks/gate_probe.py SYNTH_FOLDER CHECKPOINT [CHECKPOINT ...]

Prints one JSON line per checkpoint and writes benchmarks/results/gate_probe.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

import eercf
from eercf.synthetic import scenes as synth
from eercf.data.datasets import load_dataset
from eercf.data.video import decode_clip
from eercf.evaluation.evaluator import encode_records

RESULTS = Path(__file__).resolve().parent / "results"
ATTRIBUTES = ("background", "colour", "shape", "direction")


def flash_frames(path: str, video: synth.SynthVideo, num_frames: int) -> list[bool]:
    """Per sampled frame: whether it shows the flash."""
    clip = decode_clip(path, num_frames=num_frames, image_size=64)
    background = np.array(synth.COLOURS[video.flash_background])
    return [bool((np.abs(f.astype(int) - background).max(-1) < 40).mean() > 0.5)
            for f in clip.frames]


def _flash_caption(flash: tuple[str, str, str, str]) -> str:
    """The benchmark's first flash wording, with each attribute's first word."""
    background, colour, shape, direction = flash
    return synth.FLASH_TEMPLATES[0].format(
        bg=background, a_colour=("an " if colour[0] in "aeiou" else "a ") + colour,
        shape=synth.SHAPE_WORDS[shape][0], moves=synth.DIRECTION_WORDS[direction][0])


def text_cosines(model) -> dict[str, float]:
    """Mean cosine between flash captions differing in one attribute (named), or in all."""
    flashes = list(itertools.product(synth.FLASH_COLOURS, synth.SHAPE_COLOURS, synth.SHAPES,
                                     synth.DIRECTIONS))
    with torch.inference_mode():
        text = model.encode_text(model.tokenize([_flash_caption(f) for f in flashes])).float()
    cos = (text @ text.T).numpy()
    groups: dict[str, list[float]] = {f"{a} differs": [] for a in ATTRIBUTES}
    groups["all differ"] = []
    for i, j in itertools.combinations(range(len(flashes)), 2):
        differ = [a for a, x, y in zip(ATTRIBUTES, flashes[i], flashes[j]) if x != y]
        if len(differ) == 1:
            groups[f"{differ[0]} differs"].append(float(cos[i, j]))
        elif len(differ) == len(ATTRIBUTES):
            groups["all differ"].append(float(cos[i, j]))
    return {k: round(float(np.mean(v)), 3) for k, v in groups.items()}


def probe(checkpoint: str, data: Path) -> dict:
    model = eercf.load_model(checkpoint)
    records = load_dataset("msrvtt", data, "test")
    encoded = encode_records(model, records, progress=False)
    truth = synth.read_truth(data)
    kinds = {m["video_id"]: m["captions"][0]["kind"] for m in synth.read_meta(data)}
    by_id = {r.video_id: r for r in records}
    videos = picked = shown = 0
    for caption, row in zip(encoded.captions, encoded.caption_video.tolist()):
        video_id = encoded.video_ids[row]
        if "flash" not in kinds[video_id]:
            continue
        frames = flash_frames(by_id[video_id].path, truth[video_id], model.max_frames)
        with torch.inference_mode():
            t = model.encode_text(model.tokenize([caption]))[0]
            scores = (encoded.videos.frames[row] @ t).masked_fill(
                ~encoded.videos.mask[row], float("-inf"))
        videos += 1
        shown += sum(frames)
        picked += frames[int(scores.argmax())]
    return {"checkpoint": checkpoint, "videos": videos,
            "flash frames share": round(100 * shown / (videos * model.max_frames), 1),
            "test caption picks a flash frame": round(100 * picked / videos, 1),
            "flash caption text cosine": text_cosines(model),
            "logit_scale": round(float(model.logit_scale.detach()), 2)}


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
