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
    p.add_argument("--videos", type=int, default=None,
                   help="number of videos (default 1000; the long design: 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--design", default="flash",
                   help="benchmark design: flash (default: test captions name a brief flash), "
                        "motion (the whole-clip motion and the corner), corner (the flash and "
                        "the small corner square), mixed (96 px, 3-5 s clips, a longer flash, "
                        "every kind); long (clips joined into videos of 1-10 minutes, each "
                        "caption naming one clip: moment retrieval, ActivityNet layout); see "
                        "eercf.synthetic.designs and eercf.synthetic.long")
    p.add_argument("--minutes", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the long design: each video's length, drawn in [LOW, HIGH] "
                        "(default 1 10)")
    p.add_argument("--clip-seconds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the long design: each clip's length (default 4 8)")
    p.add_argument("--shots-per-clip", type=int, default=None, metavar="N",
                   help="the long design: cut each clip into N shots (its background changes, "
                        "the scene goes on; default 1)")
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
    from ..errors import EercfError
    from ..synthetic import contact_sheet, make_synthetic
    from ..synthetic.long import MINUTES, make_long

    if args.design == "long":
        if args.sheet:
            raise EercfError("--sheet draws short benchmarks only")
        summary = make_long(args.out, 4 if args.videos is None else args.videos, args.seed,
                            size=args.size or 64, minutes=tuple(args.minutes or MINUTES),
                            clip_seconds=tuple(args.clip_seconds or (4.0, 8.0)),
                            shots_per_clip=args.shots_per_clip or 1, overwrite=args.overwrite)
        return _report(args, summary)
    if args.minutes or args.clip_seconds or args.shots_per_clip:
        raise EercfError("--minutes, --clip-seconds and --shots-per-clip are options of "
                         "--design long")
    summary = make_synthetic(args.out, 1000 if args.videos is None else args.videos, args.seed,
                             design=args.design, size=args.size,
                             test_fraction=args.test_fraction, captions_per_video=args.captions,
                             overwrite=args.overwrite)
    if args.sheet:
        summary["sheet"] = str(contact_sheet(args.out, args.sheet))
    return _report(args, summary)


def _report(args: argparse.Namespace, summary: dict) -> int:
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        if summary["design"] == "long":
            print(f"wrote {summary['videos']} long videos ({summary['hours']} h, "
                  f"{summary['clips']} clips) to {summary['out']}")
        else:
            print(f"wrote {summary['videos']} videos ({summary['train']} train, "
                  f"{summary['test']} test, {summary['groups']} groups) to {summary['out']}")
        for kind, count in summary["captions"].items():
            print(f"  {kind:28s} {count} captions")
        if summary.get("sheet"):
            print(f"contact sheet: {summary['sheet']}")
    return 0
