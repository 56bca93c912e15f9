"""A synthetic benchmark on disk: the videos, the MSR-VTT annotation files, ``synth.json`` (the
ground truth of every video and caption), and a contact sheet to look at it."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import EercfError
from .render import write_video
from .designs import TEST_KINDS, get_design
from .scenes import SynthVideo, annotate, plan


def write_annotations(out: Path, videos: list[SynthVideo],
                      captions: dict[str, list[tuple[str, str]]]) -> None:
    """The three MSR-VTT annotation files, plus ``synth.json`` (every video's ground truth and
    each caption's kind, for analyses per kind)."""
    train = [v for v in videos if v.split == "train"]
    test = [v for v in videos if v.split == "test"]
    with open(out / "MSRVTT_train.9k.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_id"])
        writer.writerows([v.video_id] for v in train)
    with open(out / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, v in enumerate(test):
            writer.writerow([f"ret{i}", f"msr{v.video_id[len('video'):]}", v.video_id,
                             captions[v.video_id][0][1]])
    sentences = []
    for v in videos:
        for _, text in captions[v.video_id]:
            sentences.append({"caption": text, "video_id": v.video_id, "sen_id": len(sentences)})
    data = {"info": {"description": "eercf synthetic benchmark"},
            "videos": [{"video_id": v.video_id, "split": v.split, "id": i,
                        "start time": 0.0, "end time": v.seconds}
                       for i, v in enumerate(videos)],
            "sentences": sentences}
    (out / "MSRVTT_data.json").write_text(json.dumps(data, indent=1) + "\n")
    meta = [dict(asdict(v), captions=[{"kind": k, "caption": c} for k, c in captions[v.video_id]])
            for v in videos]
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n")


def make_synthetic(out: str | Path, videos: int = 1000, seed: int = 0, *, design: str = "flash",
                   size: int | None = None, test_fraction: float = 0.2,
                   captions_per_video: int = 8, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Write a synthetic benchmark of ``design`` (``eercf.synthetic.designs``) in MSR-VTT
    layout under ``out`` and return a summary (counts per split and per caption kind). ``size``
    defaults to the design's frame size."""
    from tqdm import tqdm

    out = Path(out)
    chosen = get_design(design)
    size = chosen.size if size is None else size
    if size < 32 or size % 2:
        raise EercfError(f"--size must be an even number of pixels >= 32, got {size}")
    if captions_per_video < 1:
        raise EercfError(f"--captions must be at least 1, got {captions_per_video}")
    if (out / "MSRVTT_data.json").exists() and not overwrite:
        raise EercfError(f"{out} already holds a benchmark (MSRVTT_data.json); "
                         "pass --overwrite to replace it")
    specs = plan(videos, seed, test_fraction, chosen)
    captions = annotate(specs, seed, captions_per_video, chosen)
    folder = out / "videos" / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for v in tqdm(specs, desc="synth videos", unit="video", disable=not progress):
        write_video(v, folder / f"{v.video_id}.mp4", size)
    write_annotations(out, specs, captions)
    kinds: dict[str, int] = {}
    for v in specs:
        for kind, _ in captions[v.video_id]:
            key = f"{v.split}:{kind}"
            kinds[key] = kinds.get(key, 0) + 1
    return {"out": str(out), "design": design, "size": size, "videos": len(specs),
            "train": sum(v.split == "train" for v in specs),
            "test": sum(v.split == "test" for v in specs),
            "groups": len({v.group for v in specs}), "captions": dict(sorted(kinds.items()))}


def read_meta(root: str | Path) -> list[dict]:
    """``synth.json`` of the benchmark in ``root``: per video its attributes and captions."""
    path = Path(root) / "synth.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EercfError(f"{path}: not a synthetic benchmark ({err})") from None


def read_truth(root: str | Path) -> dict[str, SynthVideo]:
    """Every video of the benchmark in ``root`` as the :class:`SynthVideo` it was drawn from."""
    fields = SynthVideo.__dataclass_fields__
    return {m["video_id"]: SynthVideo(**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in m.items() if k in fields})
            for m in read_meta(root)}


def contact_sheet(root: str | Path, png: str | Path, rows: int = 4, num_frames: int = 12,
                  scale: int = 2) -> Path:
    """Draw ``rows`` test videos of the benchmark in ``root`` (its ``num_frames`` uniformly
    sampled frames, whole as the tiny model sees them, with times) and their captions into
    ``png``."""
    from PIL import Image, ImageDraw, ImageFont

    from ..data.video import decode_clip

    root, png = Path(root), Path(png)
    test = [m for m in read_meta(root) if m["split"] == "test"]
    # one row per test caption kind first, so the sheet shows each kind
    picked: list[dict] = []
    for kind in TEST_KINDS:
        picked += [m for m in test if m["captions"][0]["kind"] == kind][:1]
    picked += [m for m in test if m not in picked][: max(0, rows - len(picked))]
    picked = picked[:rows]
    clips = [decode_clip(root / "videos" / "all" / f"{m['video_id']}.mp4", num_frames=num_frames,
                         image_size=64 * scale, resize="squash") for m in picked]
    tile = max(c.frames.shape[2] for c in clips)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=10)
    row_h, pad = tile + 34, 4
    sheet = Image.new("RGB", (num_frames * (tile + pad) + pad, len(clips) * row_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (m, clip) in enumerate(zip(picked, clips)):
        top = r * row_h + pad
        text = f"{m['video_id']} [{m['captions'][0]['kind']}]: {m['captions'][0]['caption']}"
        draw.text((pad, top), text, fill="black", font=font)
        for i, (pixels, t) in enumerate(zip(clip.frames, clip.timestamps)):
            x = pad + i * (tile + pad)
            sheet.paste(Image.fromarray(pixels), (x, top + 18))
            draw.text((x + 2, top + 20), f"{t:.1f}s", fill="white", font=small)
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(png)
    return png
