"""``eercf convert``: any supported checkpoint (OpenAI .pt, Hugging Face CLIP folder, the
authors' EERCF pytorch_model.bin, our own folder) to our folder format."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a CLIP/EERCF checkpoint to an eercf checkpoint folder",
        description="Read SRC (an OpenAI CLIP .pt, TorchScript or state dict; a Hugging Face "
                    "CLIP folder; the authors' EERCF pytorch_model.bin; an eercf folder) and "
                    "write DST as model.safetensors + config.json + tokenizer.json. The "
                    "architecture is read from the tensor shapes where SRC has no config.")
    p.add_argument("source", metavar="SRC", help="checkpoint file or folder")
    p.add_argument("destination", metavar="DST", help="output folder (new, or an eercf checkpoint to replace)")
    p.add_argument("--tokenizer", metavar="T",
                   help="tokenizer.json or bpe_simple_vocab_16e6.txt.gz (default: the one in or "
                        "beside SRC, else the one `eercf download` stored)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import convert

    info = convert(args.source, args.destination, tokenizer=args.tokenizer, progress=True)
    if args.json:
        print(json.dumps(info))
    else:
        tokenizer = "with tokenizer" if info["tokenizer"] else "no tokenizer found (pass --tokenizer)"
        print(f"{info['source']} ({info['format']}) -> {info['destination']}: {info['model']}, "
              f"{info['parameters']:,} parameters, {tokenizer}")
    return 0
