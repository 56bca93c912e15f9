"""``eercf index SOURCE --model M --index DIR``: build or grow a searchable index of videos."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EercfError

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index", help="index videos for search (resumable), or remove / re-index",
        description="Decode and encode videos and add them to an index folder (created on "
                    "first use). SOURCE is a folder of videos (searched recursively), a text "
                    "file listing one video path per line, or with --dataset the root of a "
                    "benchmark split. Videos already in the index are skipped, so an "
                    "interrupted run resumes; each batch is committed whole; videos that "
                    "cannot be decoded are reported at the end and skipped. A video longer "
                    "than --long-after is stored as overlapping segments, committed together.")
    p.add_argument("source", metavar="SOURCE", nargs="?",
                   help="folder of videos, list file, or dataset root (with --dataset)")
    p.add_argument("--index", required=True, metavar="DIR",
                   help="index folder, or s3://bucket/prefix (storage options from AWS_* and "
                        "EERCF_STORAGE_OPTIONS; docs/search.md)")
    p.add_argument("--model", help="model: a checkpoint folder or file, a training run folder, "
                                   "or a downloaded model's name (required to create an index; "
                                   "default: the index's)")
    p.add_argument("--dataset", help="read SOURCE as a benchmark (msrvtt, msvd, didemo, "
                                     "activitynet, vatex, lsmdc, generic)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--index-factory", default=None,
                   help="FAISS factory for stage 1, when creating or with --reindex (default "
                        "Flat, exact; e.g. IVF1024,Flat or HNSW32 or IVF1024,PQ64 for large "
                        "collections)")
    p.add_argument("--search-params", default=None,
                   help="FAISS search parameters, when creating or with --reindex (e.g. nprobe=16)")
    p.add_argument("--codec", choices=("exact", "pq"), default=None,
                   help="how the fine levels are stored, when creating or with --reindex "
                        "(default pq: product-quantisation codes read for every candidate, "
                        "exact patches read only for the few the codes select; exact: fp16 "
                        "patches read whole; docs/search.md compares them)")
    p.add_argument("--segment", type=float, default=None, metavar="SECONDS",
                   help="store a long video as overlapping segments this long (default 12; "
                        "recorded when creating, used by later runs; docs/search.md)")
    p.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="seconds between segment starts (default 6)")
    p.add_argument("--long-after", type=float, default=None, metavar="SECONDS",
                   help="videos longer than this are segmented (default 40)")
    p.add_argument("--no-segments", action="store_true",
                   help="keep every video whole, however long")
    p.add_argument("--no-scenes", action="store_true",
                   help="no extra row for a run of alike shots (a scene) of a segmented video")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch and commit (default 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames sampled per video, when creating (default: the model's transform)")
    p.add_argument("--fps", type=float, default=None,
                   help="sample at this rate, capped to --frames, when creating (default: the "
                        "model's transform: the rate it was trained with, else uniform)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="encode in this precision, when creating (default: the model's transform)")
    p.add_argument("--device", default=None, help="torch device for encoding (default cpu)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="decode and encode on Ray Data: a local Ray, or the cluster at ADDRESS "
                        "(ray://host:10001, or auto); workers write fragments, committed every "
                        "--commit-every videos")
    p.add_argument("--commit-every", type=int, default=2000, metavar="N",
                   help="with --ray: videos per commit (default 2000)")
    p.add_argument("--remove", nargs="+", metavar="ID", help="remove these video ids instead")
    p.add_argument("--reindex", action="store_true",
                   help="compact the store and retrain stage 1 (with --index-factory if given); "
                        "with --codec, re-code the fine levels (pq: a codebook retrained on "
                        "the collection)")
    p.add_argument("--stats", action="store_true",
                   help="print the index's codec and bytes per video of each tier (hot: read "
                        "for every stage-2 candidate; cold: read only where codes point; stage1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.stats:
        return _stats(args)
    if args.remove or args.reindex:
        summary = _maintain(args)
    else:
        summary = _add(args)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_summary(summary)
    return 0  # videos that could not be read are reported (and in the JSON), not fatal


def _stats(args: argparse.Namespace) -> int:
    from ..index import VideoIndex

    if args.source or args.remove or args.reindex:
        raise EercfError("--stats only reads: it takes no SOURCE, --remove or --reindex")
    stats = VideoIndex.open(args.index).stats()
    if args.json:
        print(json.dumps({key: stats[key] for key in ("videos", "codec", "bytes_per_video")}))
        return 0
    sizes = stats["bytes_per_video"]
    chosen = "" if stats["chosen_codec"] == stats["codec"] else (
        f" (chosen: {stats['chosen_codec']}; eercf index --reindex --codec "
        f"{stats['chosen_codec']} once the collection is large enough)")
    rows = f" in {stats['rows']} rows (segments)" if stats["rows"] != stats["videos"] else ""
    print(f"{args.index}: {stats['videos']} video(s){rows}, codec {stats['codec']}{chosen}")
    print(f"  bytes per video: hot {sizes['hot']:,} (read for every stage-2 candidate), "
          f"cold {sizes['cold']:,} (read only where the codes point), stage 1 {sizes['stage1']:,}")
    print(f"  on disk: {stats['bytes_on_disk']:,} bytes (every kept version)")
    return 0


def _maintain(args: argparse.Namespace) -> dict[str, Any]:
    from ..index import VideoIndex

    if args.source:
        raise EercfError("SOURCE cannot be combined with --remove or --reindex")
    index = VideoIndex.open(args.index)
    summary: dict[str, Any] = {"index": str(index.folder)}
    if args.remove:
        removed = index.remove(args.remove)
        summary["removed"] = removed
        summary["not_found"] = sorted(set(args.remove) - set(removed))
    if args.reindex:
        started = time.perf_counter()
        index.reindex(args.index_factory, args.search_params, codec=args.codec)
        summary["reindexed"] = {"index_factory": index.index_factory,
                                "codec": index.stored_codec(),
                                "seconds": round(time.perf_counter() - started, 3)}
    summary["videos"] = len(index)
    return summary


def _add(args: argparse.Namespace) -> dict[str, Any]:
    from ..index import MANIFEST, ModelInfo, VideoIndex
    from ..index.ingest import ingest
    from ..index.location import Location
    from ..weights import load_model

    if not args.source:
        raise EercfError("SOURCE is required (a folder of videos, a list file, or a dataset root)")
    if args.batch_size < 1 or args.workers < 0:
        raise EercfError("--batch-size must be >= 1 and --workers >= 0")
    if args.frames is not None and args.frames < 1:
        raise EercfError(f"--frames must be at least 1, got {args.frames}")
    records = _records(args)
    folder = Location.of(args.index)
    changes = {"frames": args.frames, "fps": args.fps, "precision": args.precision}
    if folder.exists(MANIFEST):
        index = VideoIndex.open(folder)
        model = load_model(args.model) if args.model else index.model()
        recorded = index.model_info.video_transform(model)
        if recorded.with_options(**changes) != recorded:
            raise EercfError(f"index {folder} samples videos as {recorded.to_dict()}; "
                             "--frames/--fps/--precision only apply when creating an index")
        if args.codec is not None and args.codec != index.codec:
            raise EercfError(f"index {folder} stores its fine levels as {index.codec}; change it "
                             f"with eercf index --index {folder} --reindex --codec {args.codec}")
    else:
        if not args.model:
            raise EercfError(f"--model is needed to create the index {folder}")
        model = load_model(args.model)
        transform = model.transform.with_options(**changes)
        if transform.frames > model.max_frames:
            raise EercfError(f"--frames {transform.frames} exceeds the model's {model.max_frames}")
        index = VideoIndex.create(folder, ModelInfo.of(model, source=args.model, transform=transform),
                                  args.index_factory or "Flat", args.search_params or "",
                                  codec=args.codec or "pq", segmenting=_segmenting(args, None))
    if args.device:
        model = model.to(args.device)
    if args.ray is not None:
        from ..index.ray_ingest import ray_ingest

        summary = ray_ingest(index, records, address=args.ray, batch_size=args.batch_size,
                             commit_every=args.commit_every)
    else:
        summary = ingest(index, model, records, batch_size=args.batch_size, workers=args.workers,
                         segmenting=_segmenting(args, index))
    return {"index": str(index.folder), "source": args.source, **summary}


def _segmenting(args: argparse.Namespace, index: Any) -> Any:
    """How this run cuts long videos: the flags over the index's record (the defaults when
    creating); --no-segments keeps every video whole."""
    from dataclasses import replace

    from ..index.segments import Segmenting

    given = {name: getattr(args, name) for name in ("segment", "stride", "long_after")
             if getattr(args, name) is not None}
    if args.no_scenes:
        given["scenes"] = False
    if args.no_segments:
        if given:
            raise EercfError("--no-segments contradicts --segment/--stride/--long-after/"
                             "--no-scenes")
        return None
    if index is not None and not given:
        return index.segmenting
    base = (index.segmenting if index is not None else None) or Segmenting()
    if "segment" in given and "stride" not in given:
        given["stride"] = min(base.stride, given["segment"])
    return replace(base, **given)


def _records(args: argparse.Namespace) -> list["VideoRecord"]:
    """The videos of SOURCE: a dataset split, or videos found in a folder or list file."""
    from ..data.datasets import load_dataset
    from ..data.sources import find_videos

    source = Path(args.source)
    if args.dataset:
        records = load_dataset(args.dataset, source, args.split)
    else:
        records = find_videos(source)
    if not records:
        raise EercfError(f"no videos in {source}" + (f" (split {args.split})" if args.dataset else ""))
    return records


def _print_summary(summary: dict[str, Any]) -> None:
    if "removed" in summary:
        print(f"removed {len(summary['removed'])} video(s) from {summary['index']}")
        if summary["not_found"]:
            print(f"  not in the index: {', '.join(summary['not_found'])}")
    if "reindexed" in summary:
        r = summary["reindexed"]
        print(f"re-indexed {summary['index']} ({r['index_factory']}, codec {r['codec']}) in "
              f"{r['seconds']:.1f} s")
    if "added" in summary:
        cut = f" ({summary['segments']} segments)" if summary.get("segments") else ""
        if summary.get("scenes"):
            cut = f" ({summary['segments']} segments, {summary['scenes']} of them scenes)"
        print(f"added {summary['added']} video(s){cut} to {summary['index']} in "
              f"{summary['seconds']:.1f} s; {summary['skipped']} already there")
    for item in summary.get("failed", []):
        print(f"  skipped {item['path']}: {item['error']}", file=sys.stderr)
    if summary.get("failed"):
        print(f"{len(summary['failed'])} video(s) could not be read and were skipped", file=sys.stderr)
    if summary.get("codec"):
        print(f"fine levels stored as {summary['codec']}"
              + (f" ({summary['codec_note']})" if summary.get("codec_note") else ""))
    print(f"the index holds {summary['videos']} video(s)")
