"""``eercf eval``: text-to-video and video-to-text metrics of a checkpoint on a dataset split,
in the three retrieval modes side by side (stage 1 alone, two-stage, all pairs)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import EercfError
from ._common import parse_weights


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: R@k, MdR, MnR in the three retrieval modes",
        description="Text-to-video and video-to-text R@1/5/10/50, median and mean rank with the "
                    "multi-caption protocol, for stage 1 alone (video), two-stage retrieval "
                    "(recall top K, re-rank) and the fused score of every pair (all_pairs).")
    p.add_argument("--checkpoint", required=True, metavar="C",
                   help="a checkpoint folder or file, a training run folder (its best/ "
                        "checkpoint, else its last checkpoints/epoch-N/), or a downloaded "
                        "model's name")
    p.add_argument("--data", required=True, metavar="D", help="the dataset's root folder")
    p.add_argument("--dataset", default="msrvtt",
                   help="dataset layout: msrvtt (default), msvd, didemo, activitynet, vatex, "
                        "lsmdc or generic")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--topk", type=int, default=None, metavar="K",
                   help="stage-1 candidates re-ranked in two_stage mode (default: the model's: "
                        "fitted by calibration, else 50)")
    p.add_argument("--modes", default=None,
                   help="comma-separated modes of video, two_stage, two_stage_paper, all_pairs "
                        "(default: all; two_stage_paper, the paper's fusion weights and K, only "
                        "for a checkpoint whose weights were fitted by calibration)")
    p.add_argument("--codec", choices=("pq", "exact"), default="pq",
                   help="score two_stage's text-to-video re-ranking through this fine-store "
                        "codec, as search over an index of these videos does (default pq, the "
                        "index's default: a codebook trained on these videos; exact: fp16)")
    p.add_argument("--exact-candidates", type=int, default=None, metavar="N",
                   help="with --codec pq: candidates read whole and scored exactly (default 15, "
                        "as `eercf search` reads at -k 15 and below)")
    p.add_argument("--dual-softmax", action="store_true",
                   help="also report video+dsl and all_pairs+dsl: dual softmax over the query set "
                        "(transductive: uses every test query at once)")
    p.add_argument("--weights", action="append", default=[], metavar="LEVEL=W",
                   help="change a stage-2 fusion weight for this evaluation (levels: video, "
                        "frame_weak, frame_strong, patch_weak, patch_strong), e.g. "
                        "patch_weak=0; repeatable")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per video (default: the model's transform)")
    p.add_argument("--fps", type=float, default=None,
                   help="sample at this rate, capped to --frames; 0 = uniformly over the video "
                        "(default: the model's transform, i.e. as it was trained)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoding batch")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    p.add_argument("--cache-dir", default=None,
                   help="decoded frame cache folder (default: the one eercf train uses, "
                        "$EERCF_HOME/frames or ~/.cache/eercf/frames)")
    p.add_argument("--no-cache", action="store_true", help="decode every video, write no cache")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="encode videos in this precision (default: the model's transform, as "
                        "`eercf index` does; bf16 is for GPUs)")
    p.add_argument("--moments", action="store_true",
                   help="moment retrieval instead (datasets with time spans: activitynet, didemo, "
                        "eercf synth --design long): index the videos as eercf index does (long "
                        "ones as segments), search every caption, report R@1/R@5 at IoU 0.5 and "
                        "0.7 and mean IoU over the corpus and within each caption's video")
    p.add_argument("--index", default=None, metavar="DIR",
                   help="with --moments: build (or reuse) the index here (default: a temporary "
                        "folder)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def format_table(results: dict, summary: str) -> str:
    """Modes as rows (t2v and v2t each), metrics as columns."""
    header = f"{'mode':<26}{'':4}" + "".join(f"{k:>8}" for k in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")) + f"{'seconds':>10}"
    lines = [summary, header, "-" * len(header)]
    for mode, result in results.items():
        label = mode + (f" (K={result['topk']})" if "topk" in result else "")
        label += " *" if result.get("transductive") else ""
        for i, direction in enumerate(("t2v", "v2t")):
            m = result[direction]
            cells = "".join(f"{m[k]:8.1f}" for k in ("R1", "R5", "R10", "R50", "MdR", "MnR"))
            seconds = f"{result['seconds']:10.4f}" if i == 0 else ""
            lines.append(f"{label if i == 0 else '':<26}{direction:4}{cells}{seconds}")
    if any(r.get("transductive") for r in results.values()):
        lines.append("* transductive: dual softmax over the whole query set")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.datasets import load_dataset
    from ..evaluation import MODES, encode_records, score_modes
    from ..evaluation.evaluator import eval_codec
    from ..index import codecs
    from ..paths import frames_dir
    from ..weights import load_model, resolve

    modes = None if args.modes is None else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes or () if m not in MODES]
    if unknown or modes == []:
        raise EercfError(f"--modes: unknown mode {unknown[0] if unknown else ''!r}; "
                         f"choose from {', '.join(MODES)}")
    if args.fps is not None and args.fps < 0:
        raise EercfError(f"--fps must be positive (or 0 for uniform sampling), got {args.fps}")
    for name in ("topk", "frames", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EercfError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.exact_candidates is not None and args.exact_candidates < 0:
        raise EercfError(f"--exact-candidates must be at least 0, got {args.exact_candidates}")
    weights = parse_weights(args.weights, "--weights")
    if args.no_cache and args.cache_dir:
        raise EercfError("--cache-dir and --no-cache contradict each other: give one")
    data = Path(args.data)
    if not data.is_dir():
        raise EercfError(f"data folder {data} not found")
    checkpoint = resolve(args.checkpoint)
    if args.moments:
        return _moments(args, checkpoint, data)
    if args.index:
        raise EercfError("--index is an option of --moments")
    records = load_dataset(args.dataset, data, split=args.split)
    if not records:
        raise EercfError(f"split {args.split!r} of {data} ({args.dataset}) has no videos")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(checkpoint, device=device)
    transform = model.transform.with_options(frames=args.frames, precision=args.precision)
    if args.fps is not None:  # 0: uniform
        transform = replace(transform, fps=args.fps or None)
    if transform.frames > model.max_frames:
        raise EercfError(f"--frames {transform.frames} exceeds the model's {model.max_frames}")
    cache_dir = None if args.no_cache else (args.cache_dir or str(frames_dir()))
    encoded = encode_records(model, records, transform=transform, batch_size=args.batch_size,
                             workers=args.workers, cache_dir=cache_dir)
    codec = eval_codec(encoded.videos, args.codec)
    results = score_modes(model, encoded.text, encoded.caption_video, encoded.videos,
                          modes=modes, topk=args.topk, dual_softmax=args.dual_softmax,
                          weights=weights or None, codec=codec,
                          exact_candidates=args.exact_candidates)
    used = "pq" if codec is not None else "exact"
    for mode in results:
        if mode.startswith("two_stage"):
            results[mode]["codec"] = used
            if codec is not None:
                results[mode]["exact_candidates"] = codecs.exact_width(args.exact_candidates)
    sampling = f"at {transform.fps:g} fps" if transform.fps else "uniformly"
    summary = (f"{checkpoint}: {args.dataset} {args.split}, {len(encoded.video_ids)} videos, "
               f"{len(encoded.captions)} captions, {len(encoded.failed)} failed; "
               f"{transform.frames} frames {sampling}, {transform.precision}; "
               f"encoding {encoded.seconds:.1f} s; two-stage through codec {used}"
               + (" (too few patches for a pq codebook)" if used != args.codec else ""))
    if args.json:
        print(summary, file=sys.stderr)
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results, summary))
    return 0


def _moments(args: argparse.Namespace, checkpoint: Path, data: Path) -> int:
    """``--moments``: index the split's videos and score moment retrieval on them."""
    import tempfile

    from ..data.datasets import load_dataset
    from ..evaluation.moments import IOUS, RANKS, evaluate_moments
    from ..index import MANIFEST, ModelInfo, VideoIndex
    from ..index.ingest import ingest
    from ..index.location import Location
    from ..weights import load_model

    if args.dataset not in ("activitynet", "didemo"):
        raise EercfError(f"--moments needs a dataset with time spans (activitynet, didemo), "
                         f"not {args.dataset}")
    records = load_dataset(args.dataset, data, split=args.split, paragraph=False)
    model = load_model(checkpoint, device=args.device or "cpu")
    transform = model.transform.with_options(frames=args.frames, precision=args.precision)
    with tempfile.TemporaryDirectory(prefix="eercf-moments-") as scratch:
        folder = Location.of(args.index or Path(scratch) / "index")
        if folder.exists(MANIFEST):
            index = VideoIndex.open(folder)
        else:
            index = VideoIndex.create(folder, ModelInfo.of(model, source=str(checkpoint),
                                                           transform=transform))
        added = ingest(index, model, records, batch_size=args.batch_size, workers=args.workers,
                       progress=not args.json)
        result = evaluate_moments(index, model, records, topk=args.topk)
    result["indexed"] = {k: added[k] for k in ("added", "segments", "skipped", "seconds")}
    result["failed"] = added["failed"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{checkpoint}: {args.dataset} {args.split}, {result['videos']} videos, "
          f"{result['captions']} captions with spans; {added['segments']} segments indexed")
    names = [f"R{n}@{m}" for n in RANKS for m in IOUS] + ["mIoU"]
    print(f"{'':10}" + "".join(f"{n:>9}" for n in names + [f"video_R{n}" for n in RANKS]))
    for part in ("corpus", "in_video"):
        cells = [result[part].get(n) for n in names + [f"video_R{n}" for n in RANKS]]
        print(f"{part:10}" + "".join("        -" if c is None else f"{c:9.1f}" for c in cells))
    return 0
