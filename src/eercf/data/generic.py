"""The generic reader: a CSV or JSONL file of videos and captions."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import EercfError
from ._common import VideoRecord, _reject_options, _report, _require, _text


def _generic_rows(path: Path) -> Iterable[tuple[str, dict]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                yield f"line {line}", row
        return
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            row = None
        yield f"line {line}", row if isinstance(row, dict) else {}


def _generic(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """A CSV or JSONL file with ``video`` (path, relative to the file) and ``caption``, and
    optionally ``split``, ``video_id``, ``start``/``end`` (seconds). Rows without a split
    belong to every split."""
    _reject_options("generic", options)
    if root.is_dir():
        found = [root / n for n in ("annotations.csv", "annotations.jsonl") if (root / n).is_file()]
        if not found:
            raise EercfError(f"{root}: no annotations.csv or annotations.jsonl")
        root = found[0]
    if root.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise EercfError(f"{root}: generic annotations must be a .csv or .jsonl file")
    _require(root)
    records: dict[Path, VideoRecord] = {}
    problems = []
    for where, row in _generic_rows(root):
        video, caption = _text(row.get("video")), _text(row.get("caption"))
        if not video or not caption:
            problems.append(f"{where}: missing {'video' if not video else 'caption'}")
            continue
        row_split = _text(row.get("split"))
        if row_split and row_split != split:
            continue
        path = Path(video) if Path(video).is_absolute() else root.parent / video
        if not path.exists():
            problems.append(f"{where}: {path} not found")
            continue
        try:
            span = None if row.get("start") in (None, "") else (float(row["start"]), float(row["end"]))
        except (TypeError, ValueError, KeyError):
            problems.append(f"{where}: start/end must be numbers of seconds")
            continue
        record = records.get(path)
        if record is None:
            video_id = _text(row.get("video_id")) or path.stem
            records[path] = VideoRecord(video_id=video_id, path=path, captions=[caption],
                                        split=split, span=span)
        else:
            record.captions.append(caption)
    _report(root, "rows", problems)
    if not records:
        raise EercfError(f"{root}: no usable {split} rows")
    return list(records.values())
