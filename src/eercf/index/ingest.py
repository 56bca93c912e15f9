"""Ingest: decode, encode and add videos to an index, a batch per commit, so an interrupted run
loses at most one batch and a rerun skips what is in. Every video is sampled with the
transform the index records; a video that cannot be decoded is reported and skipped. A long
video is cut into segments (``segments``), each sampled over its own span, and lands in one
commit once all of them are encoded, with a row for each of its scenes (adjacent shots alike
enough, found from its encoded shots and then encoded over their joint span): a crash never
leaves part of a video."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import torch

from ..data.sources import stored_uri
from .segments import Segmenting, WholeVideos, plan_rows

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..model import EERCF
    from .video_index import VideoIndex

SAVE_STAGE1_EVERY = 60.0  # seconds between stage-1 file writes during a long run
CHUNK_ROWS = 2000         # rows encoded per pass (long videos are held until their scenes)


def ingest(index: "VideoIndex", model: "EERCF", records: Sequence["VideoRecord"], *,
           batch_size: int = 16, workers: int = 2, progress: bool = True,
           metadata: dict[str, dict[str, Any]] | None = None,
           segmenting: Segmenting | None | Literal["index"] = "index") -> dict[str, Any]:
    """Add the videos of ``records`` that the index does not hold yet, holding the writer lock
    for the whole run; long videos are cut as ``segmenting`` says (default: as the index
    records; None: every video whole). Returns ``{"added", "segments", "scenes", "skipped",
    "failed": [{"video", "path", "error"}], "videos", "seconds"}`` (``segments`` counts every
    row of a segmented video, its ``scenes`` rows included); each row keeps its absolute uri,
    duration, frame times and as metadata ``metadata[video_id]`` if given, else its captions."""
    index.check_model(model)
    transform = index.model_info.video_transform(model)
    started = time.perf_counter()
    segmenting = index.segmenting if segmenting == "index" else segmenting
    summary: dict[str, Any] = {"added": 0, "segments": 0, "scenes": 0, "skipped": 0,
                               "failed": []}
    with index.writing():  # one writer: nobody else adds what this run is about to add
        present = set(index.ids())
        todo = [r for r in records if r.video_id not in present]
        summary["skipped"] = len(records) - len(todo)
        rows, summary["failed"] = plan_rows(todo, segmenting, workers=max(1, 2 * workers))
        run = _Run(index, model, transform, summary, metadata, batch_size, workers, progress)
        for chunk in _chunks(rows, CHUNK_ROWS):
            run.encode_chunk(chunk, segmenting)
        if rows:
            index.save_stage1()
        settle_codec(index, summary)
    summary["videos"] = len(index)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _chunks(rows: Sequence["VideoRecord"], size: int) -> Iterator[list["VideoRecord"]]:
    """``rows`` in runs of about ``size`` (a video's rows are never split): a long video is
    held until its scenes are encoded, so a run bounds what is held."""
    chunk: list["VideoRecord"] = []
    for i, row in enumerate(rows):
        chunk.append(row)
        if len(chunk) >= size and (i + 1 == len(rows) or rows[i + 1].video_id != row.video_id):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Run:
    """One ingest's encoding and commits."""

    def __init__(self, index: "VideoIndex", model: "EERCF", transform: Any,
                 summary: dict[str, Any], metadata: dict[str, dict[str, Any]] | None,
                 batch_size: int, workers: int, progress: bool):
        self.index, self.model, self.transform = index, model, transform
        self.summary, self.metadata = summary, metadata
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.last_save = time.monotonic()
        self.scenes: dict[str, int] = {}  # scene rows of each video held for its second pass

    def encode_chunk(self, rows: list["VideoRecord"], segmenting: Segmenting | None) -> None:
        """Encode ``rows`` and commit each video once all its rows are in; a segmented video's
        scene rows (``Segmenting.scene_rows`` of its encoded shots) are encoded in a second
        pass before it lands."""
        held = WholeVideos(rows)
        first_pass = len(rows)
        for ready in self._encode(held, rows, 0):
            landing = []
            for video_id in ready:
                parts = held.held(video_id)
                found = [] if segmenting is None else segmenting.scene_rows(
                    [r for r, _ in parts], torch.stack([part["video"] for _, part in parts]))
                if found:
                    self.scenes[video_id] = len(found)
                    held.extend(found)
                else:
                    landing.append(video_id)
            self._commit(held, landing)
        if len(held.rows) > first_pass:
            for ready in self._encode(held, held.rows[first_pass:], first_pass):
                self._commit(held, ready)

    def _encode(self, held: WholeVideos, rows: list["VideoRecord"], offset: int
                ) -> Iterator[list[str]]:
        """Encode ``rows`` into ``held``, yielding after each batch the videos now complete."""
        from ..data.loader import VideoClips, make_loader
        from ..model.encode import encode_videos

        # the index holds a Lance dataset, whose threads make forking unsafe
        loader = make_loader(VideoClips(rows, self.transform), batch_size=self.batch_size,
                             workers=self.workers, start_method="forkserver")
        for batch, features in encode_videos(self.model, loader,
                                             precision=self.transform.precision,
                                             progress=self.progress):
            self.summary["failed"].extend(
                {"video": f["video_id"], "path": f["path"], "error": f["reason"]}
                for f in batch["failed"] if held.fail(f["video_id"]))
            if features is not None:
                held.add(batch, features, offset)
            yield held.ready()

    def _commit(self, held: WholeVideos, videos: list[str]) -> None:
        """Add ``videos`` (complete in ``held``) in one commit."""
        done, parts, features = held.take(videos)
        if features is None:
            return
        save = time.monotonic() - self.last_save > SAVE_STAGE1_EVERY
        self.index.add([r.video_id for r in done], [stored_uri(r.path) for r in done],
                       [p["duration"] for p in parts], [p["timestamps"] for p in parts],
                       features, [record_metadata(r, self.metadata) for r in done],
                       save_stage1=save, spans=[r.span for r in done])
        self.summary["added"] += len(set(videos))
        self.summary["segments"] += sum(r.span is not None for r in done)
        self.summary["scenes"] += sum(self.scenes.pop(v, 0) for v in videos)
        self.last_save = time.monotonic() if save else self.last_save


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
