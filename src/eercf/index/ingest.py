"""Ingest: decode, encode and add videos to an index, a batch per commit, so an interrupted run
loses at most one batch and a rerun skips what is in. Every video is sampled with the
transform the index records; a video that cannot be decoded is reported and skipped. A long
video is cut into segments (``segments``), each sampled over its own span, and lands in one
commit once all of them are encoded: a crash never leaves part of a video."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, Sequence

from ..data.sources import stored_uri
from .segments import Segmenting, WholeVideos, plan_rows

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..model import EERCF
    from .video_index import VideoIndex

SAVE_STAGE1_EVERY = 60.0  # seconds between stage-1 file writes during a long run


def ingest(index: "VideoIndex", model: "EERCF", records: Sequence["VideoRecord"], *,
           batch_size: int = 16, workers: int = 2, progress: bool = True,
           metadata: dict[str, dict[str, Any]] | None = None,
           segmenting: Segmenting | None | Literal["index"] = "index") -> dict[str, Any]:
    """Add the videos of ``records`` that the index does not hold yet, holding the writer lock
    for the whole run; long videos are cut as ``segmenting`` says (default: as the index
    records; None: every video whole). Returns ``{"added", "segments", "skipped", "failed":
    [{"video", "path", "error"}], "videos", "seconds"}``; each row keeps its absolute uri,
    duration, frame times and as metadata ``metadata[video_id]`` if given, else its captions."""
    from ..data.loader import VideoClips, make_loader
    from ..model.encode import encode_videos

    index.check_model(model)
    transform = index.model_info.video_transform(model)
    started = time.perf_counter()
    segmenting = index.segmenting if segmenting == "index" else segmenting
    summary: dict[str, Any] = {"added": 0, "segments": 0, "skipped": 0, "failed": []}
    with index.writing():  # one writer: nobody else adds what this run is about to add
        present = set(index.ids())
        todo = [r for r in records if r.video_id not in present]
        summary["skipped"] = len(records) - len(todo)
        rows, summary["failed"] = plan_rows(todo, segmenting, workers=max(1, 2 * workers))
        if rows:
            held = WholeVideos(rows)
            # the index holds a Lance dataset, whose threads make forking unsafe
            loader = make_loader(VideoClips(rows, transform), batch_size=batch_size,
                                 workers=workers, start_method="forkserver")
            last_save = time.monotonic()
            for batch, features in encode_videos(model, loader, precision=transform.precision,
                                                 progress=progress):
                summary["failed"].extend({"video": f["video_id"], "path": f["path"],
                                          "error": f["reason"]} for f in batch["failed"]
                                         if held.fail(f["video_id"]))
                if features is not None:
                    held.add(batch, features)
                done, parts, complete = held.complete()
                if complete is None:
                    continue
                save = time.monotonic() - last_save > SAVE_STAGE1_EVERY
                index.add([r.video_id for r in done], [stored_uri(r.path) for r in done],
                          [p["duration"] for p in parts], [p["timestamps"] for p in parts],
                          complete, [record_metadata(r, metadata) for r in done],
                          save_stage1=save, spans=[r.span for r in done])
                summary["added"] += len({r.video_id for r in done})
                summary["segments"] += sum(r.span is not None for r in done)
                last_save = time.monotonic() if save else last_save
            index.save_stage1()
        settle_codec(index, summary)
    summary["videos"] = len(index)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def settle_codec(index: "VideoIndex", summary: dict[str, Any]) -> None:
    """After an ingest (writer lock held): a pq codebook trains on the whole collection once it
    is in (an index of the same videos then scores exactly as ``eercf eval`` does); later runs
    encode with it. Notes the codec, and a fallback to exact, in ``summary``."""
    if index.codec != index.stored_codec() and not index.apply_codec():
        summary["codec_note"] = ("too few patches for a pq codebook yet: kept exact; "
                                 "eercf index --reindex --codec pq once it has more")
    summary["codec"] = index.stored_codec()


def record_metadata(record: "VideoRecord", given: dict[str, dict[str, Any]] | None = None
                    ) -> dict[str, Any] | None:
    """What a video's row keeps as metadata: ``given[video_id]``, else its captions."""
    if given is not None and record.video_id in given:
        return given[record.video_id]
    return {"captions": record.captions} if record.captions else None
