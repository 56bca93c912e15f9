"""``eercf search DIR "query" ...``: two-stage text search of an index."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import parse_weights

if TYPE_CHECKING:
    from ..index.search import Hit, SearchResult

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search", help="search an index by text (two-stage: recall, then re-rank)",
        description="Search an index built by `eercf index`. Stage 1 recalls the top --topk "
                    "videos by the video-level score through FAISS; stage 2 re-scores only "
                    "those with the frame- and patch-level scores. Each hit reports the moment "
                    "(seconds, in the video's own timeline) and the patch-grid cell that "
                    "matched; a long video stored as segments comes back once, with its "
                    "other strong moments.")
    p.add_argument("index", metavar="DIR", help="index folder, or s3://bucket/prefix")
    p.add_argument("queries", metavar="QUERY", nargs="+", help="text queries (searched as one batch)")
    p.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--topk", type=int, default=None,
                   help="candidates re-ranked by stage 2 (default: the model's: fitted, else 50)")
    p.add_argument("--weight", action="append", default=[], metavar="LEVEL=W",
                   help="fusion weight of a level, repeatable; levels: video, frame_weak, "
                        "frame_strong, patch_weak, patch_strong "
                        "(default: the model's: fitted to held-out videos, else the paper's "
                        "0.8 frame_weak, 0.2 frame_strong, 0.2 patch_weak, 0.5 video)")
    p.add_argument("--exact-candidates", type=int, default=None, metavar="N",
                   help="pq index: how many of the --topk candidates are read whole and "
                        "scored exactly (default: the larger of 15 and -k, so every re-scored "
                        "hit has the exact score, moment and place; 0: scores from the codes "
                        "alone, reading no exact patches)")
    p.add_argument("--filter", default=None, metavar="EXPR",
                   help="search only the videos matching a Lance filter expression over id, "
                        "uri, duration and metadata (JSON text), e.g. \"duration > 10\" or "
                        "\"metadata LIKE '%%cat%%'\"")
    p.add_argument("--per", choices=("video", "segment"), default="video",
                   help="one hit per video (default: a long video's best segment, with its "
                        "other strong moments) or per stored segment")
    p.add_argument("--video", default=None, metavar="ID",
                   help="search inside this one video: its moments, best first")
    p.add_argument("--model", default=None,
                   help="query model (default: the one recorded in the index; must match it)")
    p.add_argument("--device", default=None, help="torch device for the model (default cpu)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per query (a list for several queries)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import VideoIndex

    weights = parse_weights(args.weight, "--weight")
    index = VideoIndex.open(args.index)
    if args.model is not None:
        from ..weights import load_model
        model = load_model(args.model, device=args.device)
    else:
        model = index.model()
        if args.device is not None:
            model = model.to(args.device)
    results = index.search(args.queries, k=args.k, topk=args.topk, model=model, weights=weights,
                           filter=args.filter, per=args.per, video=args.video,
                           exact_candidates=args.exact_candidates)
    if args.json:
        objects = [r.to_dict() for r in results]
        json.dump(objects[0] if len(objects) == 1 else objects, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for result in results:
            print_table(result)
    return 0


def _time(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


def _row(rank: int, hit: "Hit") -> list[str]:
    score = "-" if hit.score is None else f"{hit.score:.3f}"
    moment = where = ""
    if hit.moment is not None:
        moment = f"{_time(hit.moment.time)} [{_time(hit.moment.start)}-{_time(hit.moment.end)}]"
    if hit.where is not None:
        where = f"frame {hit.where.frame} @{_time(hit.where.time)} row {hit.where.row} col {hit.where.col}"
    others = ", ".join(f"{_time(m.start)}-{_time(m.end)}" for m in hit.moments[1:4])
    return [str(rank), hit.video_id, score, f"{hit.stage1_score:.3f} (#{hit.stage1_rank})",
            moment, where, others, hit.uri or ""]


def print_table(result: "SearchResult") -> None:
    t = result.timings
    ms = {key: 1000 * t.get(key, 0.0) for key in ("encode_text", "stage1", "stage2")}
    print(f'"{result.query}"  (text {ms["encode_text"]:.1f} ms, stage 1 {ms["stage1"]:.1f} ms, '
          f'stage 2 {ms["stage2"]:.1f} ms)')
    if not result.hits:
        print("  no videos in the index")
        return
    header = ["#", "video", "score", "stage 1 (rank)", "moment [window]", "where",
              "other moments", "uri"]
    rows = [header] + [_row(i + 1, hit) for i, hit in enumerate(result.hits)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    for r in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print()
