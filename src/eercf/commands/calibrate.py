"""``eercf calibrate``: fit stage 2's fusion weights and K to a user's own data, for a model
trained elsewhere (a converted authors' checkpoint, a downloaded CLIP)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EercfError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit the stage-2 fusion weights and K of a checkpoint on your data",
        description="Encode a validation set with the checkpoint's transform, score every "
                    "level of each caption's stage-1 candidates once, and choose the fusion "
                    "weights and K that rank its videos best (stage 1 alone among the choices, "
                    "so two-stage is never below stage 1 there). The result is stored in the "
                    "checkpoint (config eercf.fitted), where search and eercf eval use it by "
                    "default; the paper's weights stay beside it (eval's two_stage_paper).")
    p.add_argument("--checkpoint", required=True, metavar="C",
                   help="checkpoint folder, training run folder, or a downloaded model's name")
    p.add_argument("--data", required=True, metavar="D", help="the dataset's root folder")
    p.add_argument("--dataset", default="msrvtt", help="dataset layout (default msrvtt)")
    p.add_argument("--split", default="train",
                   help="split to calibrate on (default train: its held-out --fraction, the "
                        "videos eercf train validates on)")
    p.add_argument("--fraction", type=float, default=0.1,
                   help="share of the split's videos to use, held out by id as eercf train "
                        "does (default 0.1; 1 = every video of the split)")
    p.add_argument("--out", metavar="DIR",
                   help="write the calibrated checkpoint here (default: into C itself)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoding batch")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print the fitted weights as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.datasets import load_dataset
    from ..data.splits import split_off
    from ..evaluation import encode_records
    from ..evaluation.calibrate import apply_fitted, fit_fusion
    from ..paths import frames_dir
    from ..weights import load_model, resolve, save_model

    if not 0 < args.fraction <= 1:
        raise EercfError(f"--fraction must be in (0, 1], got {args.fraction}")
    checkpoint = resolve(args.checkpoint)
    in_place = Path(args.checkpoint).exists() and Path(checkpoint).is_dir()  # not a name, not a file
    if args.out is None and not in_place:
        raise EercfError(f"{args.checkpoint} is not a checkpoint folder of yours to update: "
                         "pass --out DIR")
    records = load_dataset(args.dataset, args.data, split=args.split)
    if args.fraction < 1:
        records = split_off(records, args.fraction)[1]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(checkpoint, device=device)
    encoded = encode_records(model, records, batch_size=args.batch_size, workers=args.workers,
                             cache_dir=str(frames_dir()))
    fitted = fit_fusion(model, encoded)
    apply_fitted(model, fitted)
    out = save_model(model, args.out or checkpoint)
    v = fitted["validation"]
    if args.json:
        print(json.dumps({"checkpoint": str(out), **fitted}, indent=1))
    else:
        paper = f"{v['paper']['R1']:.1f}" if v["paper"] else "-"
        weights = ", ".join(f"{level} {w:g}" for level, w in fitted["weights"].items() if w)
        print(f"{out}: fitted on {v['videos']} videos ({v['captions']} captions): K "
              f"{fitted['topk']}, weights {weights}; t2v R@1 stage 1 {v['stage1']['R1']:.1f}, "
              f"paper {paper}, fitted {v['fitted']['R1']:.1f}")
    return 0
