"""``eercf train``: train EERCF from a preset or config file, every setting overridable."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# explicit flags for the common settings: flag name -> config key
FLAGS = {"data": "data", "dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size",
         "lr": "lr", "grad_accum": "grad_accum", "workers": "workers", "seed": "seed"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune an EERCF model",
        description="Train EERCF (contrastive + Pearson loss, docs/method.md). Settings come "
                    "from a preset (configs/train/: 'tiny' from scratch, 'clip' the authors' "
                    "fine-tuning recipe; default: the preset named after --model, else 'clip') "
                    "or a JSON file, then the flags below, then each --set KEY=VALUE. "
                    "Multi-process: torchrun --nproc_per_node N $(which eercf) train ...",
        epilog="example: eercf train --data synth --dataset msrvtt --model tiny --out runs/tiny")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, best/)")
    p.add_argument("--config", help="preset name or JSON file of training settings")
    p.add_argument("--model", help="architecture name (from scratch) or checkpoint to fine-tune: "
                                   "a name such as ViT-B-32, or a path")
    p.add_argument("--data", help="dataset folder")
    p.add_argument("--dataset", help="dataset layout: msrvtt, msvd, didemo, activitynet, "
                                     "vatex, lsmdc, generic")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (pairs per optimiser step)")
    p.add_argument("--lr", type=float, help="learning rate of new parameters")
    p.add_argument("--grad-accum", type=int, help="micro-batches per step (same global batch)")
    p.add_argument("--workers", type=int, help="data loading processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting (dotted keys inside model_config, e.g. "
                        "loss.strong_weight=0); repeatable")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint (its settings, "
                        "plus any given here)")
    p.add_argument("--device", help="torch device (default: this process's GPU, else CPU)")
    p.add_argument("--show-config", action="store_true",
                   help="print the resolved settings as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import EercfError
    from ..train import load_train_config

    overrides = [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in FLAGS.items()
                 if getattr(args, flag) is not None] + list(args.overrides)
    config, model = args.config, args.model
    saved = Path(args.out) / "config.json"
    if args.resume:
        if not saved.is_file():
            raise EercfError(f"--resume: {saved} not found (is {args.out} a training run?)")
        config = config or str(saved)
    cfg = load_train_config(config, model, overrides)
    if args.show_config:
        print(json.dumps(cfg, indent=2))
        return 0
    from ..train import train

    summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                    device=args.device)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, process 0 reports
        return 0
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        best = summary["best"]
        line = f"trained {summary['steps']} steps in {summary['seconds']:.0f} s " \
               f"({summary['pairs_per_s']:.1f} pairs/s) into {summary['out']}"
        if best:
            line += f"; best {best['metric']} {best['value']:.2f} at epoch {best['epoch']}"
        print(line)
    return 0
