"""Moment retrieval measures, as TVR (video corpus moment retrieval), Charades-STA and
QVHighlights report them, computed on what ``eercf search`` answers: every caption with a known
span is searched over an index of the benchmark's videos (long ones stored as segments).

- ``corpus``: the hits over the whole collection, one per video. ``R{n}@{m}``: a hit among the
  first ``n`` is the caption's video and its moment overlaps the truth with IoU >= ``m``;
  ``video_R{n}``: the video alone is among the first ``n``; ``mIoU``: the first hit's IoU (0
  when it is another video).
- ``in_video``: the search within the caption's own video (``--video``): its moments, best
  first; ``R{n}@{m}`` and ``mIoU`` as above over them.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import EercfError

if TYPE_CHECKING:
    from ..data.datasets import VideoRecord
    from ..index import VideoIndex
    from ..index.search import Hit
    from ..model import EERCF

IOUS = (0.5, 0.7)
RANKS = (1, 5)
BATCH = 64  # captions searched together


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two spans (seconds)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def truths(records: Sequence["VideoRecord"]) -> list[tuple[str, str, tuple[float, float]]]:
    """(caption, video id, span) of every caption whose span the dataset gives."""
    out = []
    for record in records:
        for text, span in zip(record.captions, record.moments or ()):
            out.append((text, record.video_id, (float(span[0]), float(span[1]))))
    return out


def _hit_iou(hit: "Hit", span: tuple[float, float]) -> float:
    m = hit.moment
    if m is None or m.start is None or m.end is None:
        return 0.0
    return iou((m.start, m.end), span)


def corpus_scores(hits: Sequence[Sequence["Hit"]],
                  truth: Sequence[tuple[str, str, tuple[float, float]]]) -> dict[str, float]:
    """The ``corpus`` measures (percent) of ranked video hits against the truth."""
    n = len(truth)
    out: dict[str, float] = {}
    for rank in RANKS:
        out[f"video_R{rank}"] = 100 * sum(
            any(h.video_id == video for h in ranked[:rank])
            for ranked, (_, video, _) in zip(hits, truth)) / n
        for threshold in IOUS:
            out[f"R{rank}@{threshold}"] = 100 * sum(
                any(h.video_id == video and _hit_iou(h, span) >= threshold for h in ranked[:rank])
                for ranked, (_, video, span) in zip(hits, truth)) / n
    out["mIoU"] = 100 * sum(_hit_iou(ranked[0], span) if ranked and ranked[0].video_id == video
                            else 0.0 for ranked, (_, video, span) in zip(hits, truth)) / n
    return out


def in_video_scores(hits: Sequence["Hit | None"],
                    truth: Sequence[tuple[str, str, tuple[float, float]]]) -> dict[str, float]:
    """The ``in_video`` measures (percent): each caption's own video's hit, its moments."""
    n = len(truth)
    out: dict[str, float] = {}
    spans = [[(m.start, m.end) for m in hit.moments] if hit is not None else [] for hit in hits]
    for rank in RANKS:
        for threshold in IOUS:
            out[f"R{rank}@{threshold}"] = 100 * sum(
                any(iou(s, span) >= threshold for s in found[:rank])
                for found, (_, _, span) in zip(spans, truth)) / n
    out["mIoU"] = 100 * sum(iou(found[0], span) if found else 0.0
                            for found, (_, _, span) in zip(spans, truth)) / n
    return out


def evaluate_moments(index: "VideoIndex", model: "EERCF", records: Sequence["VideoRecord"], *,
                     topk: int | None = None, in_video: bool = True) -> dict[str, Any]:
    """Search every caption of ``records`` that has a span over ``index`` (which holds their
    videos) and score the answers: ``{"captions", "videos", "corpus": {...}, "in_video": {...},
    "seconds"}``."""
    truth = truths(records)
    if not truth:
        raise EercfError("no caption has a time span: moment evaluation needs a dataset that "
                         "gives them (activitynet, didemo, or eercf synth --design long)")
    missing = sorted({video for _, video, _ in truth} - set(index.ids()))
    if missing:
        raise EercfError(f"{len(missing)} video(s) with captions are not in index "
                         f"{index.folder}, e.g. {missing[0]!r}")
    started = time.perf_counter()
    texts = [text for text, _, _ in truth]
    ranked = []
    for start in range(0, len(texts), BATCH):
        results = index.search(texts[start:start + BATCH], k=max(RANKS), topk=topk, model=model)
        ranked += [r.hits for r in results]
    out: dict[str, Any] = {"captions": len(truth), "videos": len({v for _, v, _ in truth}),
                           "corpus": corpus_scores(ranked, truth)}
    if in_video:
        own = [(index.search(text, k=1, topk=topk, model=model, video=video)[0].hits or [None])[0]
               for text, video, _ in truth]
        out["in_video"] = in_video_scores(own, truth)
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out
