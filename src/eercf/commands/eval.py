"""``eercf eval``: text-to-video and video-to-text metrics of a checkpoint on a dataset split,
in the three retrieval modes side by side (stage 1 alone, two-stage, all pairs)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..errors import EercfError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: R@k, MdR, MnR in the three retrieval modes",
        description="Text-to-video and video-to-text R@1/5/10/50, median and mean rank with the "
                    "multi-caption protocol, for stage 1 alone (video), two-stage retrieval "
                    "(recall top K, re-rank) and the fused score of every pair (all_pairs).")
    p.add_argument("--checkpoint", required=True, metavar="C",
                   help="a checkpoint folder or file, or a training run folder (its best/ "
                        "checkpoint, else its last checkpoints/epoch-N/)")
    p.add_argument("--data", required=True, metavar="D", help="the dataset's root folder")
    p.add_argument("--dataset", default="msrvtt",
                   help="dataset layout: msrvtt (default), msvd, didemo, activitynet, vatex, "
                        "lsmdc or generic")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--topk", type=int, default=None, metavar="K",
                   help="stage-1 candidates re-ranked in two_stage mode (default: the model's, 50)")
    p.add_argument("--modes", default="video,two_stage,all_pairs",
                   help="comma-separated modes (default video,two_stage,all_pairs)")
    p.add_argument("--dual-softmax", action="store_true",
                   help="also report video+dsl and all_pairs+dsl: dual softmax over the query set "
                        "(transductive: uses every test query at once)")
    p.add_argument("--weights", action="append", default=[], metavar="LEVEL=W",
                   help="change a stage-2 fusion weight for this evaluation (levels: video, "
                        "frame_weak, frame_strong, patch_weak, patch_strong), e.g. "
                        "patch_weak=0; repeatable")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: the model's)")
    p.add_argument("--fps", type=float, default=None,
                   help="sample at this rate, capped to --frames; 0 = uniformly over the video "
                        "(default: the frame rate the run was trained with, else uniform)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoding batch")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    p.add_argument("--cache-dir", default=None,
                   help="decoded frame cache folder (default: the one eercf train uses, "
                        "$EERCF_CACHE/frames or ~/.cache/eercf/frames)")
    p.add_argument("--no-cache", action="store_true", help="decode every video, write no cache")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--bf16", action="store_true",
                   help="encode under bf16 autocast (GPU); an index must be built the same way "
                        "for its search to rank exactly as this evaluation")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def resolve_checkpoint(path: str | Path) -> Path:
    """A training run folder means its ``best/`` checkpoint, else its last ``checkpoints/epoch-N/``;
    anything else is taken as a checkpoint itself."""
    path = Path(path)
    if not path.exists():
        raise EercfError(f"checkpoint {path} not found")
    if path.is_dir() and (path / "best").is_dir():
        return path / "best"
    if path.is_dir() and (path / "checkpoints").is_dir():
        epochs = [p for p in (path / "checkpoints").iterdir()
                  if p.is_dir() and re.fullmatch(r"epoch-\d+", p.name)]
        if not epochs:
            raise EercfError(f"training run {path} has no best/ and no checkpoints/epoch-N/ yet")
        return max(epochs, key=lambda p: int(p.name.split("-")[1]))
    return path


def training_frame_rate(checkpoint: Path) -> tuple[float | None, Path | None]:
    """The ``frame_rate`` of the training run a checkpoint belongs to (``RUN/config.json``
    beside ``RUN/best/`` or above ``RUN/checkpoints/epoch-N/``), so evaluation samples frames
    the way the model was trained; ``(None, None)`` outside a run folder."""
    for run in (checkpoint.parent, checkpoint.parent.parent):
        config = run / "config.json"
        if config.is_file():
            try:
                settings = json.loads(config.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(settings, dict) and "frame_rate" in settings:
                return settings["frame_rate"], config
    return None, None


def format_table(results: dict, summary: str) -> str:
    """Modes as rows (t2v and v2t each), metrics as columns."""
    header = f"{'mode':<22}{'':4}" + "".join(f"{k:>8}" for k in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")) + f"{'seconds':>10}"
    lines = [summary, header, "-" * len(header)]
    for mode, result in results.items():
        label = mode + (f" (K={result['topk']})" if "topk" in result else "")
        label += " *" if result.get("transductive") else ""
        for i, direction in enumerate(("t2v", "v2t")):
            m = result[direction]
            cells = "".join(f"{m[k]:8.1f}" for k in ("R1", "R5", "R10", "R50", "MdR", "MnR"))
            seconds = f"{result['seconds']:10.4f}" if i == 0 else ""
            lines.append(f"{label if i == 0 else '':<22}{direction:4}{cells}{seconds}")
    if any(r.get("transductive") for r in results.values()):
        lines.append("* transductive: dual softmax over the whole query set")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import load_model
    from ..data.datasets import load_dataset
    from ..data.frames import default_cache_dir
    from ..evaluate import MODES, encode_records, score_modes

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise EercfError(f"--modes: unknown mode {unknown[0] if unknown else ''!r}; "
                         f"choose from {', '.join(MODES)}")
    if args.fps is not None and args.fps < 0:
        raise EercfError(f"--fps must be positive (or 0 for uniform sampling), got {args.fps}")
    for name in ("topk", "frames", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EercfError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    weights = {}
    for item in args.weights:
        level, sep, value = item.partition("=")
        try:
            weights[level.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise EercfError(f"--weights {item!r}: expected LEVEL=NUMBER, e.g. patch_weak=0")
    if args.no_cache and args.cache_dir:
        raise EercfError("--cache-dir and --no-cache contradict each other: give one")
    data = Path(args.data)
    if not data.is_dir():
        raise EercfError(f"data folder {data} not found")
    checkpoint = resolve_checkpoint(args.checkpoint)
    records = load_dataset(args.dataset, data, split=args.split)
    if not records:
        raise EercfError(f"split {args.split!r} of {data} ({args.dataset}) has no videos")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(checkpoint, device=device)
    fps, fps_source = (args.fps, None) if args.fps is not None else training_frame_rate(checkpoint)
    fps = fps or None  # 0 means uniform sampling
    cache_dir = None if args.no_cache else (args.cache_dir or str(default_cache_dir()))
    encoded = encode_records(model, records, batch_size=args.batch_size, workers=args.workers,
                             num_frames=args.frames, fps=fps, cache_dir=cache_dir,
                             dtype=torch.bfloat16 if args.bf16 else None)
    results = score_modes(model, encoded.text, encoded.caption_video, encoded.videos,
                          modes=modes, topk=args.topk, dual_softmax=args.dual_softmax,
                          weights=weights or None)
    sampling = f"at {fps:g} fps" if fps else "uniformly"
    if fps and fps_source:
        sampling += f" (frame_rate of {fps_source})"
    summary = (f"{checkpoint}: {args.dataset} {args.split}, {len(encoded.video_ids)} videos, "
               f"{len(encoded.captions)} captions, {len(encoded.failed)} failed; "
               f"{args.frames or model.max_frames} frames {sampling}; "
               f"encoding {encoded.seconds:.1f} s")
    if args.json:
        print(summary, file=sys.stderr)
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results, summary))
    return 0
