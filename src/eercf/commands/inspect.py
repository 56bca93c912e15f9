"""``eercf inspect``: what a video is (duration, frame rate, codec, size) and which frames the
model would see, optionally as a contact sheet."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect", help="show a video's properties and the frames sampled from it",
        description="Print VIDEO's duration, frame rate, codec and size (after its rotation), and "
                    "the times of the frames the model would be given: N frames uniformly over "
                    "the duration, or R per second capped to N. VIDEO may also be a folder of "
                    "extracted frames.")
    p.add_argument("video", metavar="VIDEO", help="video file or frame folder")
    p.add_argument("--frames", type=int, default=12, metavar="N", help="frames to sample (default 12)")
    p.add_argument("--fps", type=float, metavar="R",
                   help="sample R frames per second, capped to N (default: N uniformly)")
    p.add_argument("--sheet", metavar="PNG",
                   help="write a contact sheet of the sampled frames as the model sees them "
                        "(resized as --resize says), each with its time")
    p.add_argument("--resize", choices=("crop", "squash"), default="crop",
                   help="contact sheet: centre-crop as CLIP does (default) or squash the whole "
                        "frame into the square, as the tiny config does")
    p.add_argument("--tile", type=int, default=224, metavar="PX",
                   help="contact sheet: frame size in pixels (default 224, the model's)")
    p.add_argument("--folder-fps", type=float, default=1.0, metavar="R",
                   help="frame folders: the rate the frames were extracted at (default 1)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="give up on a video that takes longer than S seconds (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def contact_sheet(frames, timestamps: list[float], path: str | Path, columns: int = 4) -> Path:
    """Write the frames (uint8 ``[n, H, W, 3]``) in a grid, each captioned with its time."""
    from PIL import Image, ImageDraw, ImageFont

    count, height, width = len(frames), frames.shape[1], frames.shape[2]
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    label, gap = 18, 4
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + label + gap) + gap),
                      "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (frame, seconds) in enumerate(zip(frames, timestamps)):
        x = gap + (i % columns) * (width + gap)
        y = gap + (i // columns) * (height + label + gap)
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text((x + 2, y + height + 2), f"#{i + 1}  {seconds:.2f} s", fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def run(args: argparse.Namespace) -> int:
    from ..data.video import decode_clip, probe
    from ..errors import EercfError

    if args.frames < 1:
        raise EercfError(f"--frames must be >= 1, got {args.frames}")
    if args.tile < 8:
        raise EercfError(f"--tile must be >= 8, got {args.tile}")
    info = probe(args.video, timeout=args.timeout, folder_fps=args.folder_fps)
    clip = decode_clip(args.video, num_frames=args.frames, fps=args.fps, image_size=args.tile,
                       timeout=args.timeout, folder_fps=args.folder_fps, resize=args.resize)
    result = {"path": str(args.video), **info, "timestamps": clip.timestamps}
    if args.sheet:
        result["sheet"] = str(contact_sheet(clip.frames, clip.timestamps, args.sheet))
    if args.json:
        print(json.dumps(result))
        return 0
    fps = f"{info['fps']:.3f}".rstrip("0").rstrip(".") if info["fps"] else "unknown"
    rotation = f", rotated {info['rotation']} deg" if info["rotation"] else ""
    print(f"{result['path']}\n"
          f"  duration  {info['duration']:.2f} s\n"
          f"  fps       {fps}\n"
          f"  codec     {info['codec']}\n"
          f"  size      {info['width']}x{info['height']}{rotation}\n"
          f"  sampled   {len(clip.timestamps)} frames at "
          + ", ".join(f"{t:.2f}" for t in clip.timestamps) + " s")
    if args.sheet:
        print(f"  sheet     {result['sheet']}")
    return 0
