"""Long videos as overlapping segments (``docs/search.md`` § Long videos).

A model sees a video as ``F`` frames (12 for the shipped configurations) sampled over it: spread
over an hour, they describe nothing. So a video longer than ``long_after`` seconds (default 40:
well past MSR-VTT's longest clips, 30 s, and the 4-8 s of the synthetic benchmark) is stored as
segments ``segment`` seconds long (default 12, about one frame a second, the rate MSR-VTT-trained
models see) starting every ``stride`` seconds (default 6, so every moment lies well inside some
segment), the last one ending where the video ends. Each segment is a row of the store with the
video's id and its span, sampled with the model's transform over that span; a shorter video
stays one row, exactly as before.

Search groups rows by video: one hit per video, its best segment, with the matched moment in
the video's own timeline and the video's other strong moments (re-scored segments whose moments
overlap are merged: a stretch longer than a segment is found by several).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow.compute as pc
import torch

from ..errors import EercfError
from . import store

if TYPE_CHECKING:
    import lance

    from ..data.datasets import VideoRecord
    from ..model import VideoFeatures
    from .search import Hit

LONG_AFTER = 40.0    # seconds: longer videos are segmented
SEGMENT = 12.0       # seconds a segment lasts
STRIDE = 6.0         # seconds between segment starts
MERGE_MARGIN = 0.25  # an overlapping segment within this fraction of the query's score spread
#                      (best minus worst re-scored candidate) of the best joins its moment
MAX_MOMENTS = 10     # moments listed per video hit
TOUCH = 1e-3         # seconds: rows this close meet (two shots either side of a cut)
SCENE_APART = 3      # rows at least this many apart in a video are (mostly) other scenes...
SCENE_QUANTILE = 0.9  # ...and adjacent shots more alike than this share of such pairs join
SCENE_MIN_PAIRS = 6   # fewer far-apart pairs than this: too few to judge, no scenes


@dataclass(frozen=True)
class Segmenting:
    """How an index cuts long videos (recorded in its manifest)."""

    segment: float = SEGMENT
    stride: float = STRIDE
    long_after: float = LONG_AFTER
    shots: bool = True   # segments stay inside the video's shots (``eercf.data.shots``)
    scenes: bool = True  # adjacent alike shots also get a row together (``scene_spans``)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.segment) and self.segment > 0):
            raise EercfError(f"--segment must be a positive number of seconds, got {self.segment}")
        if not (math.isfinite(self.stride) and 0 < self.stride <= self.segment):
            raise EercfError(f"--stride must be > 0 and at most --segment ({self.segment:g} s), "
                             f"got {self.stride}")
        if not (math.isfinite(self.long_after) and self.long_after >= 0):
            raise EercfError(f"--long-after must be >= 0 seconds, got {self.long_after}")

    def is_long(self, duration: float | None) -> bool:
        """Whether a ``duration``-second video is cut into segments."""
        return (duration is not None and math.isfinite(duration)
                and duration > max(self.long_after, self.segment))

    def spans(self, duration: float | None,
              shots: Sequence[tuple[float, float]] | None = None) -> list[tuple[float, float]] | None:
        """The segments of a ``duration``-second video, or None to keep it whole (not longer
        than ``long_after``, or than one segment): each of its ``shots`` (the whole video when
        not given) that is no longer than ``long_after`` (or a segment) is one segment, as a
        video that long would be one row; a longer one is cut into windows of ``segment``
        seconds every ``stride``, the last ending with the shot."""
        if not self.is_long(duration):
            return None
        spans = []
        whole = self.whole if shots else self.segment
        for start, end in shots or [(0.0, float(duration))]:
            if end - start <= whole + 1e-6:
                spans.append((round(start, 3), round(end, 3)))
                continue
            starts = np.arange(start, end - self.segment + 1e-6, self.stride)
            spans += [(round(float(s), 3), round(float(s) + self.segment, 3)) for s in starts]
            if spans[-1][1] < end - 1e-3:  # the last window ends with the shot
                spans.append((round(end - self.segment, 3), round(end, 3)))
        return spans

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, value: Any) -> "Segmenting | None":
        """The manifest's ``segments`` (None: whole videos; absent in older indexes: whole;
        an index from before scene rows keeps none)."""
        return None if not value else cls(**{"scenes": False, **value})

    @property
    def whole(self) -> float:
        """The longest stretch kept as one row (as long a video stays whole)."""
        return max(self.segment, self.long_after)

    def scene_rows(self, rows: Sequence["VideoRecord"], vectors: torch.Tensor
                   ) -> list["VideoRecord"]:
        """The scene rows to encode for a segmented video, from its encoded ``rows`` and their
        video-level ``vectors`` (``scene_spans``): none when scenes are off or the video is
        one row."""
        if not self.scenes or len(rows) < 2:
            return []
        return [replace(rows[0], span=span)
                for span in scene_spans([r.span for r in rows], vectors, self.whole)]


def scene_spans(spans: Sequence[tuple[float, float]], vectors: torch.Tensor, longest: float
                ) -> list[tuple[float, float]]:
    """The scenes of a segmented video: runs of adjacent shots (rows that meet at a cut) whose
    video-level ``vectors`` are alike, as spans of at most ``longest`` seconds; only runs of
    two or more shots (a single shot already is a row). A caption naming a scene that several
    cameras show matches each shot less well than the scene seen whole.

    "Alike" is judged against the video itself, so that it holds for any model: adjacent shots
    join when their cosine is above ``SCENE_QUANTILE`` of the cosines between rows at least
    ``SCENE_APART`` apart (other scenes, mostly). A video too short to judge gets none."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    spans = [spans[i] for i in order]
    unit = torch.nn.functional.normalize(vectors[order].float(), dim=-1)
    cosine = unit @ unit.T
    far = torch.triu(torch.ones_like(cosine, dtype=torch.bool), diagonal=SCENE_APART)
    if int(far.sum()) < SCENE_MIN_PAIRS:
        return []
    bar = float(torch.quantile(cosine[far], SCENE_QUANTILE))
    scenes, run = [], [0]
    for i in range(1, len(spans) + 1):
        joined = (i < len(spans) and abs(spans[i][0] - spans[i - 1][1]) <= TOUCH
                  and float(cosine[i - 1, i]) > bar
                  and spans[i][1] - spans[run[0]][0] <= longest + 1e-6)
        if joined:
            run.append(i)
            continue
        if len(run) > 1:
            scenes.append((spans[run[0]][0], spans[run[-1]][1]))
        run = [i]
    return scenes


def plan_rows(records: Sequence["VideoRecord"], segmenting: Segmenting | None, *,
              timeout: float = 30.0, folder_fps: float = 1.0, workers: int = 4
              ) -> tuple[list["VideoRecord"], list[dict[str, str]]]:
    """The rows to encode for ``records``: a long video becomes one record per segment (its
    ``span`` set), any other stays as it is (a record that already has a span, e.g. an
    annotated part of a video, is never cut). Durations come from the headers, read in
    ``workers`` threads, and a long video's shots from one pass over it at a few frames a
    second (``eercf.data.shots``); a video whose header cannot be read is returned in the failures
    (``{"video", "path", "error"}``) and left out."""
    from ..data.shots import video_shots
    from ..data.video import duration_of

    if segmenting is None:
        return list(records), []
    todo = [r for r in records if r.span is None]

    def duration(record: "VideoRecord") -> tuple[float, list | None] | str:
        """The video's duration and, for a long one, its shots (or why it cannot be read)."""
        try:
            seconds = duration_of(record.path, timeout=timeout, folder_fps=folder_fps)
            if segmenting.shots and segmenting.is_long(seconds):
                return seconds, video_shots(record.path, seconds)
            return seconds, None
        except EercfError as err:
            return str(err)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = dict(zip((id(r) for r in todo), pool.map(duration, todo)))
    rows, failed = [], []
    for record in records:
        value = found.get(id(record))
        if isinstance(value, str):
            failed.append({"video": record.video_id, "path": str(record.path), "error": value})
            continue
        spans = None if value is None else segmenting.spans(*value)
        rows += [record] if spans is None else [replace(record, span=s) for s in spans]
    return rows, failed


class WholeVideos:
    """Holds the encoded rows of each video until all of them are in, so that a video lands in
    one commit (a crash never leaves half a video) and a video with one undecodable segment is
    skipped whole. Fine levels are held in fp16, as the store keeps them: a one-hour video at
    ViT-B/32 shapes holds about 360 MB until its last segment is encoded."""

    def __init__(self, rows: Sequence["VideoRecord"]):
        self.rows = list(rows)
        self._expected: dict[str, int] = {}
        for row in self.rows:
            self._expected[row.video_id] = self._expected.get(row.video_id, 0) + 1
        self._held: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._failed: set[str] = set()

    def fail(self, video_id: str) -> bool:
        """Drop a video (one of its rows failed); True the first time."""
        self._held.pop(video_id, None)
        first = video_id not in self._failed
        self._failed.add(video_id)
        return first

    def extend(self, records: Sequence["VideoRecord"]) -> int:
        """Expect ``records`` too (more rows of videos held here); returns the position of the
        first, the ``offset`` their batches are added with."""
        offset = len(self.rows)
        self.rows += records
        for row in records:
            self._expected[row.video_id] = self._expected.get(row.video_id, 0) + 1
        return offset

    def held(self, video_id: str) -> list[tuple["VideoRecord", dict[str, Any]]]:
        """The rows held of ``video_id`` and their parts."""
        return [(self.rows[p], part) for p, part in self._held.get(video_id, [])]

    def add(self, batch: dict[str, Any], features: "VideoFeatures", offset: int = 0) -> None:
        """Hold the rows of ``batch`` (positions ``batch["index"]`` from ``offset`` on)."""
        for j, position in enumerate(batch["index"].tolist()):
            position += offset
            video_id = self.rows[position].video_id
            if video_id in self._failed:
                continue
            self._held.setdefault(video_id, []).append((position, {
                "timestamps": batch["timestamps"][j], "duration": batch["duration"][j],
                "video": features.video[j].float(), "mask": features.mask[j],
                **{name: getattr(features, name)[j].half()
                   for name in ("frames", "temporal", "patches")}}))

    def ready(self) -> list[str]:
        """The videos whose every expected row is held."""
        return [v for v, held in self._held.items() if len(held) == self._expected[v]]

    def take(self, videos: Sequence[str]) -> tuple[list["VideoRecord"], list[dict[str, Any]],
                                                   "VideoFeatures | None"]:
        """The rows of ``videos`` (in row order) and their features; they are forgotten here."""
        from ..model import VideoFeatures

        parts = sorted((p for v in videos for p in self._held.pop(v)), key=lambda p: p[0])
        if not parts:
            return [], [], None
        names = ("video", "frames", "temporal", "patches", "mask")
        features = VideoFeatures(**{n: torch.stack([part[n] for _, part in parts]) for n in names})
        return [self.rows[p] for p, _ in parts], [part for _, part in parts], features


def row_groups(dataset: "lance.LanceDataset") -> np.ndarray | None:
    """The video of each row offset, as ordinals (None when no row is a segment: every row is
    then its own video)."""
    if not store.has_spans(dataset.schema):
        return None
    table = dataset.to_table(columns=["id", "segment_start"], scan_in_order=True)
    if table.column("segment_start").null_count == table.num_rows:
        return None
    return pc.dictionary_encode(table.column("id")).combine_chunks().indices.to_numpy().astype(
        np.int64)


def distinct_videos(groups: np.ndarray, labels: np.ndarray) -> int:
    """The fewest distinct videos among the stage-1 rows of any query (``labels [T, n]``)."""
    return min(len(np.unique(groups[row[row >= 0]])) for row in labels) if len(labels) else 0


@dataclass
class Span:
    """A segment's span in its video's timeline (seconds)."""

    start: float
    end: float


@dataclass
class ScoredMoment:
    """A moment of a video and the fused score of the segment(s) it came from."""

    start: float
    end: float
    score: float


def merge_moments(moments: Sequence[ScoredMoment], spread: float,
                  rows: Sequence[tuple[float, float] | None] | None = None) -> list[ScoredMoment]:
    """Moments, best first, merged. One that overlaps a better one joins it when its score is
    within ``MERGE_MARGIN * spread`` of it (the same stretch, seen by overlapping windows of a
    shot) and is dropped otherwise (a weaker view of it), as it is when its row (``rows[i]``,
    the span of the segment it came from) holds the better one's row: a scene that scores
    below one of its shots says the caption is that shot's, not the scene's. Moments that only
    meet (shots either side of a cut) stay apart: the scene rows join shots that belong
    together, judged on their features when the video was indexed."""
    rows = list(rows) if rows is not None else [None] * len(moments)
    kept: list[tuple[ScoredMoment, tuple[float, float] | None]] = []
    for i in sorted(range(len(moments)), key=lambda i: -moments[i].score):
        moment, row = moments[i], rows[i]
        for cluster, seed in kept:
            if not (moment.start < cluster.end and moment.end > cluster.start):
                continue
            coarser = (row is not None and seed is not None and row != seed
                       and row[0] <= seed[0] and seed[1] <= row[1])
            if not coarser and moment.score >= cluster.score - MERGE_MARGIN * spread:
                cluster.start = min(cluster.start, moment.start)
                cluster.end = max(cluster.end, moment.end)
            break
        else:
            kept.append((replace(moment), row))
    return [cluster for cluster, _ in kept[:MAX_MOMENTS]]


def group_by_video(hits: Sequence["Hit"], k: int) -> list["Hit"]:
    """One hit per video, best first (re-scored videos by their best segment's fused score,
    then the others in stage-1 order), ``k`` of them: the best segment's hit with the video's
    merged moments; its ``moment`` is the first of them (the best frame's time kept)."""
    by_video: dict[str, list["Hit"]] = {}
    for hit in hits:
        by_video.setdefault(hit.video_id, []).append(hit)
    scores = [h.score for h in hits if h.score is not None]
    spread = max(scores) - min(scores) if scores else 0.0
    grouped = []
    for group in list(by_video.values())[:k]:
        best = group[0]
        merged = merge_moments([m for h in group for m in h.moments], spread,
                               [None if h.segment is None else (h.segment.start, h.segment.end)
                                for h in group for _ in h.moments])
        moment = best.moment
        if merged and moment is not None:
            moment = replace(moment, start=merged[0].start, end=merged[0].end)
        grouped.append(replace(best, moment=moment, moments=merged))
    return grouped


PER = ("video", "segment")


def check_per(per: str) -> None:
    if per not in PER:
        raise EercfError(f"per must be one of {', '.join(PER)}, got {per!r}")


def search_filter(expression: str | None, video: str | None) -> str | None:
    """The Lance filter of a search: the user's ``expression``, within ``video`` when given."""
    if video is None:
        return expression
    if not isinstance(video, str) or not video:
        raise EercfError(f"video must be a non-empty video id, got {video!r}")
    inside = f"id = {store.sql_string(video)}"
    return inside if expression is None else f"({expression}) AND {inside}"
