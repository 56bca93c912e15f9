"""``eercf download``: OpenAI CLIP ViT-B/32 or ViT-B/16, or a Hugging Face CLIP repository,
fetched with resume and hash checks, then converted to an eercf checkpoint folder."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download", help="download CLIP weights (OpenAI or Hugging Face) as an eercf checkpoint",
        description="Fetch NAME: ViT-B-32 or ViT-B-16 (OpenAI's release, sha256-checked) or "
                    "hf:owner/repo (a Hugging Face CLIP repository, checked against its file "
                    "listing). An interrupted download resumes. The files are cached in "
                    "$EERCF_HOME (default ~/.cache/eercf) and converted into its models/NAME/, "
                    "which is what NAME then means to every command (--model NAME); with DST "
                    "a copy of the checkpoint goes there too.")
    p.add_argument("name", metavar="NAME", help="ViT-B-32, ViT-B-16 or hf:owner/repo")
    p.add_argument("destination", metavar="DST", nargs="?",
                   help="also write the checkpoint here (with --raw: the files as published)")
    p.add_argument("--raw", action="store_true",
                   help="put the files as published into DST instead of converting them")
    p.add_argument("--base-url", metavar="URL",
                   help="a mirror replacing the original hosts (also $EERCF_DOWNLOAD_BASE_URL)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.pretrained import download

    info = download(args.name, args.destination, raw=args.raw, base_url=args.base_url)
    if args.json:
        print(json.dumps(info))
    elif args.raw:
        print(f"{args.name} -> {info['destination']}: {', '.join(info['files'])}")
    else:
        print(f"{args.name} -> {info['destination']}: {info['model']}, "
              f"{info['parameters']:,} parameters, tokenizer {'yes' if info['tokenizer'] else 'no'}")
    return 0
