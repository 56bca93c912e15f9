"""``eercf index SOURCE --model M --index DIR``: build or grow a searchable index of videos."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EercfError

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..index import VideoIndex
    from ..model import EERCF

SAVE_STAGE1_EVERY = 60.0  # seconds between stage-1 file writes during a long run


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index", help="index videos for search (resumable), or remove / re-index",
        description="Decode and encode videos and add them to an index folder (created on "
                    "first use). SOURCE is a folder of videos (searched recursively), a text "
                    "file listing one video path per line, or with --dataset the root of a "
                    "benchmark split. Videos already in the index are skipped, so an "
                    "interrupted run resumes; each batch is committed whole; videos that "
                    "cannot be decoded are reported at the end and skipped.")
    p.add_argument("source", metavar="SOURCE", nargs="?",
                   help="folder of videos, list file, or dataset root (with --dataset)")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder")
    p.add_argument("--model", help="model: checkpoint folder, .pt/.bin file or config name "
                                   "(required to create an index; default: the index's)")
    p.add_argument("--dataset", help="read SOURCE as a benchmark (msrvtt, msvd, didemo, "
                                     "activitynet, vatex, lsmdc, generic)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--index-factory", default=None,
                   help="FAISS factory for stage 1, when creating or with --reindex (default "
                        "Flat, exact; e.g. IVF1024,Flat or HNSW32 or IVF1024,PQ64 for large "
                        "collections)")
    p.add_argument("--search-params", default=None,
                   help="FAISS search parameters, when creating or with --reindex (e.g. nprobe=16)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch and commit (default 16)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames sampled per video (default: the model's max_frames)")
    p.add_argument("--fps", type=float, default=None,
                   help="sample at this rate, capped to --frames (default: uniform over the video)")
    p.add_argument("--device", default=None, help="torch device for encoding (default cpu)")
    p.add_argument("--remove", nargs="+", metavar="ID", help="remove these video ids instead")
    p.add_argument("--reindex", action="store_true",
                   help="compact the store and retrain stage 1 (with --index-factory if given)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        index.reindex(args.index_factory, args.search_params)
        summary["reindexed"] = {"index_factory": index.index_factory,
                                "seconds": round(time.perf_counter() - started, 3)}
    summary["videos"] = len(index)
    return summary


def _add(args: argparse.Namespace) -> dict[str, Any]:
    from ..checkpoint import load_model
    from ..index import MANIFEST, ModelInfo, VideoIndex

    if not args.source:
        raise EercfError("SOURCE is required (a folder of videos, a list file, or a dataset root)")
    if args.batch_size < 1 or args.workers < 0:
        raise EercfError("--batch-size must be >= 1 and --workers >= 0")
    records = _records(args)
    folder = Path(args.index)
    if (folder / MANIFEST).exists():
        index = VideoIndex.open(folder)
        model = load_model(args.model) if args.model else index.model()
        index.check_model(model)
    else:
        if not args.model:
            raise EercfError(f"--model is needed to create the index {folder}")
        model = load_model(args.model)
        index = VideoIndex.create(folder, ModelInfo.of(model, source=args.model),
                                  args.index_factory or "Flat", args.search_params or "")
    if args.device:
        model = model.to(args.device)
    with index.writing():  # one writer: nobody else adds what this run is about to add
        return _encode_and_add(args, index, model, records)


def _encode_and_add(args: argparse.Namespace, index: "VideoIndex", model: "EERCF",
                    records: list["VideoRecord"]) -> dict[str, Any]:
    from ..data.loader import VideoClips, make_loader
    from ..encode import encode_videos

    present = set(index.ids())
    todo = [r for r in records if r.video_id not in present]
    summary: dict[str, Any] = {"index": str(index.folder), "source": args.source, "added": 0,
                               "skipped": len(records) - len(todo), "failed": []}
    started = time.perf_counter()
    if todo:
        config = model.config
        clips = VideoClips(todo, num_frames=args.frames or config["eercf"]["max_frames"],
                           fps=args.fps, image_size=config["vision"]["image_size"],
                           mean=config["preprocess"]["mean"], std=config["preprocess"]["std"])
        # the index holds a Lance dataset, whose threads make forking unsafe
        loader = make_loader(clips, batch_size=args.batch_size, workers=args.workers,
                             start_method="forkserver")
        last_save = time.monotonic()
        for batch, features in encode_videos(model, loader):
            summary["failed"].extend({"video": f["video_id"], "path": f["path"],
                                      "error": f["reason"]} for f in batch["failed"])
            if features is None:
                continue
            rows = [todo[int(i)] for i in batch["index"]]
            save = time.monotonic() - last_save > SAVE_STAGE1_EVERY
            summary["added"] += index.add(
                [r.video_id for r in rows], [str(r.path) for r in rows],
                batch.get("duration") or [None] * len(rows), batch["timestamps"], features,
                [{"captions": r.captions} if r.captions else None for r in rows],
                save_stage1=save)
            last_save = time.monotonic() if save else last_save
        index.save_stage1()
    summary["videos"] = len(index)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _records(args: argparse.Namespace) -> list["VideoRecord"]:
    """The videos of SOURCE: a dataset split, a list file, or a folder searched recursively.
    Ids are file stems, or paths relative to the folder where stems collide."""
    from ..data.datasets import VideoRecord, load_dataset
    from ..data.video import VIDEO_EXTENSIONS

    source = Path(args.source)
    if args.dataset:
        records = load_dataset(args.dataset, source, args.split)
    else:
        if source.is_dir():
            base = source
            paths = sorted(p for p in source.rglob("*")
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            what = f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {source}"
        elif source.is_file():
            base = source.parent
            lines = [line.strip() for line in source.read_text(errors="replace").splitlines()]
            paths = [base / line for line in lines if line and not line.startswith("#")]
            what = f"list file {source} names no video"
        else:
            raise EercfError(f"SOURCE {source} does not exist")
        if not paths:
            raise EercfError(what)
        paths = list(dict.fromkeys(paths))
        stems = Counter(p.stem for p in paths)
        records = [VideoRecord(video_id=p.stem if stems[p.stem] == 1 else _relative_id(p, base),
                               path=p, captions=[], split="") for p in paths]
    if not records:
        raise EercfError(f"no videos in {source}" + (f" (split {args.split})" if args.dataset else ""))
    return records


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.with_suffix("").as_posix()


def _print_summary(summary: dict[str, Any]) -> None:
    if "removed" in summary:
        print(f"removed {len(summary['removed'])} video(s) from {summary['index']}")
        if summary["not_found"]:
            print(f"  not in the index: {', '.join(summary['not_found'])}")
    if "reindexed" in summary:
        r = summary["reindexed"]
        print(f"re-indexed {summary['index']} ({r['index_factory']}) in {r['seconds']:.1f} s")
    if "added" in summary:
        print(f"added {summary['added']} video(s) to {summary['index']} in "
              f"{summary['seconds']:.1f} s; {summary['skipped']} already there")
    for item in summary.get("failed", []):
        print(f"  skipped {item['path']}: {item['error']}", file=sys.stderr)
    if summary.get("failed"):
        print(f"{len(summary['failed'])} video(s) could not be read and were skipped", file=sys.stderr)
    print(f"the index holds {summary['videos']} video(s)")
