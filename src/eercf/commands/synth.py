"""``eercf synth``: write the synthetic benchmark (MSR-VTT layout) of ``eercf.synthetic``."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth", help="write a synthetic text-video benchmark in MSR-VTT layout",
        description="Write a synthetic benchmark: H.264 mp4 files under OUT/videos/all/ and the "
                    "MSR-VTT annotation files (MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, "
                    "MSRVTT_data.json), plus synth.json with each video's ground truth. A video "
                    "shows a shape moving on a dark background, a brief flash (a cut to a bright "
                    "background where another shape moves) and a small corner square; each test "
                    "caption names what one moment shows, which the frame-averaged video vector "
                    "mixes up and the frame level finds.")
    p.add_argument("out", help="output folder")
    p.add_argument("--videos", type=int, default=1000, help="number of videos (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--design", default="flash",
                   help="benchmark design: flash (default: test captions name a brief flash), "
                        "motion (the whole-clip motion and the corner), corner (the flash and "
                        "the small corner square), mixed (96 px, 3-5 s clips, a longer flash, "
                        "every kind); see eercf.synthetic.designs")
    p.add_argument("--size", type=int, default=None, help="frame width and height in pixels "
                   "(default: the design's, 64 = the tiny model's input size, or 96)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of videos in the test split (default 0.2)")
    p.add_argument("--captions", type=int, default=8,
                   help="captions per training video (default 8)")
    p.add_argument("--sheet", metavar="PNG", help="also draw a contact sheet of a few test "
                   "videos (sampled frames and captions) to this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace a benchmark already in OUT")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..synthetic import contact_sheet, make_synthetic

    summary = make_synthetic(args.out, args.videos, args.seed, design=args.design, size=args.size,
                             test_fraction=args.test_fraction, captions_per_video=args.captions,
                             overwrite=args.overwrite)
    if args.sheet:
        summary["sheet"] = str(contact_sheet(args.out, args.sheet))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['videos']} videos ({summary['train']} train, {summary['test']} "
              f"test, {summary['groups']} groups) to {summary['out']}")
        for kind, count in summary["captions"].items():
            print(f"  {kind:28s} {count} captions")
        if args.sheet:
            print(f"contact sheet: {summary['sheet']}")
    return 0
