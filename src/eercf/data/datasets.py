"""Readers for the text-to-video benchmarks, in the file layouts the CLIP4Clip family uses,
and for a generic CSV / JSONL; every reader returns the same ``VideoRecord`` list.

Bad rows (missing fields, video ids the captions file does not know, videos with no file on
disk) are collected and reported in one ``DatasetWarning`` per file, then skipped; a missing
annotation file is an ``EercfError`` naming it. ``docs/data.md`` describes each layout.
"""
from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EercfError
from ._common import (DatasetWarning, VideoRecord, _check_split, _media_roots, _read_json,
                      _read_lines, _records, _reject_options, _report, _require, _text)
from .generic import _generic

__all__ = ["DATASETS", "DatasetWarning", "VideoRecord", "load_dataset"]

DATASETS = ("msrvtt", "msvd", "didemo", "activitynet", "vatex", "lsmdc", "generic")


# ----------------------------------------------------------------------------- MSR-VTT

def _msrvtt(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """Test/val: the 1k-A csv (key,vid_key,video_id,sentence). Train: the 9k (or 7k) csv's
    video ids with every caption MSRVTT_data.json gives them."""
    _check_split("msrvtt", split, ("train", "val", "test"))
    media = _media_roots(root, ("videos/all", "videos", "frames"), options)
    train_csv = str(options.pop("train_csv", "9k"))
    test_csv = Path(options.pop("test_csv", root / "MSRVTT_JSFUSION_test.csv"))
    data_json = Path(options.pop("data_json", root / "MSRVTT_data.json"))
    _reject_options("msrvtt", options)
    captions: dict[str, list[str]] = {}
    problems: list[str] = []
    if split in ("val", "test"):
        with open(_require(test_csv), newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                video_id, sentence = _text(row.get("video_id")), _text(row.get("sentence"))
                if not video_id or not sentence:
                    problems.append(f"line {line}: missing {'video_id' if not video_id else 'sentence'}")
                    continue
                captions.setdefault(video_id, []).append(sentence)
        _report(test_csv, "rows", problems)
        return _records("msrvtt", root, split, captions, None, media)

    csv_path = Path(train_csv) if train_csv not in ("9k", "7k") else root / f"MSRVTT_train.{train_csv}.csv"
    with open(_require(csv_path), newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "video_id" not in (reader.fieldnames or []):
            raise EercfError(f"{csv_path}: no video_id column")
        train_ids = [_text(row.get("video_id")) for row in reader]
    data = _read_json(data_json)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise EercfError(f"{data_json}: expected an object with a 'sentences' list")
    by_video: dict[str, list[str]] = {}
    for n, item in enumerate(data["sentences"]):
        video_id = _text(item.get("video_id")) if isinstance(item, dict) else ""
        caption = _text(item.get("caption")) if isinstance(item, dict) else ""
        if not video_id or not caption:
            problems.append(f"sentence {n}: missing {'video_id' if not video_id else 'caption'}")
            continue
        by_video.setdefault(video_id, []).append(caption)
    _report(data_json, "sentences", problems)
    unknown = []
    for video_id in train_ids:
        if video_id in by_video:
            captions[video_id] = by_video[video_id]
        else:
            unknown.append(video_id or "(empty id)")
    _report(csv_path, f"video ids with no caption in {data_json.name}", unknown)
    return _records("msrvtt", root, split, captions, None, media)


# ----------------------------------------------------------------------------- MSVD

class _PlainUnpickler(pickle.Unpickler):
    """Caption pickles hold only dicts, lists and strings: refuse anything that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _msvd(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """{split}_list.txt ids; raw-captions.pkl maps an id to its tokenised captions."""
    _check_split("msvd", split, ("train", "val", "test"))
    media = _media_roots(root, ("YouTubeClips", "videos", "frames"), options)
    captions_file = Path(options.pop("captions", root / "raw-captions.pkl"))
    _reject_options("msvd", options)
    ids = _read_lines(root / f"{split}_list.txt")
    try:
        raw = _PlainUnpickler(io.BytesIO(_require(captions_file).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise EercfError(f"{captions_file}: not a caption pickle ({err})") from None
    if not isinstance(raw, dict):
        raise EercfError(f"{captions_file}: expected a dict of video id -> captions")
    captions, unknown = {}, []
    for video_id in ids:
        texts = [" ".join(c) if isinstance(c, (list, tuple)) else _text(c)
                 for c in raw.get(video_id) or []]
        texts = [t for t in texts if t]
        if texts:
            captions[video_id] = texts
        else:
            unknown.append(video_id)
    _report(captions_file, f"msvd {split} video ids with no caption", unknown)
    return _records("msvd", root, split, captions, None, media)


# ----------------------------------------------------------------------------- DiDeMo

DIDEMO_ANNOTATED_SECONDS = 30.0  # annotators saw the first 30 s (six 5-second chunks)


def _didemo(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """{split}_list.txt ids; {split}_data.json items {video, description, times}. Paragraph
    retrieval (default): a video's descriptions joined into one caption."""
    _check_split("didemo", split, ("train", "val", "test"))
    media = _media_roots(root, ("videos", "frames"), options)
    paragraph = bool(options.pop("paragraph", True))
    _reject_options("didemo", options)
    ids = set(_read_lines(root / f"{split}_list.txt"))
    data_file = root / f"{split}_data.json"
    items = _read_json(data_file)
    if not isinstance(items, list):
        raise EercfError(f"{data_file}: expected a list of annotations")
    sentences: dict[str, list[str]] = {}
    times: dict[str, list[tuple[float, float]]] = {}
    problems = []
    for n, item in enumerate(items):
        video_id = _text(item.get("video")) if isinstance(item, dict) else ""
        description = _text(item.get("description")) if isinstance(item, dict) else ""
        if not video_id or not description:
            problems.append(f"item {n}: missing {'video' if not video_id else 'description'}")
        elif video_id not in ids:
            problems.append(f"item {n}: video {video_id} not in {split}_list.txt")
        else:
            sentences.setdefault(video_id, []).append(description)
            times.setdefault(video_id, []).append(_didemo_moment(item.get("times")))
    _report(data_file, "annotations", problems)
    captions = {v: [" ".join(s)] if paragraph else s for v, s in sentences.items()}
    spans = {v: (0.0, DIDEMO_ANNOTATED_SECONDS) for v in captions}
    records = _records("didemo", root, split, captions, spans, media)
    if not paragraph:
        for record in records:
            record.moments = times[record.video_id]
    return records


def _didemo_moment(times: Any) -> tuple[float, float]:
    """A DiDeMo description's moment: the annotators' most common pair of 5-second chunks
    ``[first, last]`` (the usual protocol), as seconds; the whole 30 s when none is given."""
    pairs = [tuple(t) for t in times or () if isinstance(t, (list, tuple)) and len(t) == 2]
    if not pairs:
        return 0.0, DIDEMO_ANNOTATED_SECONDS
    first, last = max(set(pairs), key=pairs.count)
    return 5.0 * float(first), 5.0 * (float(last) + 1)


# ----------------------------------------------------------------------------- ActivityNet

def _activitynet(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """{train,val}_ids.json; train.json / val_1.json map ``v_<id>`` to its sentences. "test"
    is val_1 (the usual protocol). Paragraph retrieval (default) joins a video's sentences."""
    _check_split("activitynet", split, ("train", "val", "test"))
    media = _media_roots(root, ("videos", "frames"), options)
    paragraph = bool(options.pop("paragraph", True))
    _reject_options("activitynet", options)
    part = "train" if split == "train" else "val"
    ids_file, data_file = root / f"{part}_ids.json", root / ("train.json" if part == "train" else "val_1.json")
    ids = _read_json(ids_file)
    data = _read_json(data_file)
    if not isinstance(ids, list) or not isinstance(data, dict):
        raise EercfError(f"{ids_file} / {data_file}: expected a list of ids and an object of videos")
    captions, moments, problems = {}, {}, []
    for video_id in ids:
        entry = data.get(video_id)
        pairs = list(zip(entry.get("sentences", []), entry.get("timestamps") or [None] * len(
            entry.get("sentences", [])))) if isinstance(entry, dict) else []
        pairs = [(_text(s), t) for s, t in pairs if _text(s)]
        if not pairs:
            problems.append(f"{video_id}: {'no sentences' if entry else 'unknown video id'}")
            continue
        texts = [text for text, _ in pairs]
        captions[video_id] = [" ".join(texts)] if paragraph else texts
        if all(isinstance(t, (list, tuple)) and len(t) == 2 for _, t in pairs):
            moments[video_id] = [(float(t[0]), float(t[1])) for _, t in pairs]
    _report(data_file, f"activitynet {split} videos", problems)
    records = _records("activitynet", root, split, captions, None, media)
    if not paragraph:
        for record in records:
            record.moments = moments.get(record.video_id)
    return records


# ----------------------------------------------------------------------------- VATEX

def _vatex(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """{split}_list.txt ids; vatex_data.json maps an id to {"enCap": [...], "chCap": [...]}."""
    _check_split("vatex", split, ("train", "val", "test"))
    media = _media_roots(root, ("videos", "frames"), options)
    field = {"en": "enCap", "zh": "chCap"}.get(str(options.pop("language", "en")))
    if field is None:
        raise EercfError("vatex: language must be 'en' or 'zh'")
    list_file = Path(options.pop("list_file", root / f"{split}_list.txt"))
    _reject_options("vatex", options)
    ids = _read_lines(list_file)
    data_file = root / "vatex_data.json"
    data = _read_json(data_file)
    if not isinstance(data, dict):
        raise EercfError(f"{data_file}: expected an object of video id -> captions")
    captions, problems = {}, []
    for video_id in ids:
        entry = data.get(video_id)
        texts = [_text(t) for t in entry.get(field, [])] if isinstance(entry, dict) else []
        texts = [t for t in texts if t]
        if texts:
            captions[video_id] = texts
        else:
            problems.append(f"{video_id}: {'no ' + field if entry else 'unknown video id'}")
    _report(data_file, f"vatex {split} videos", problems)
    return _records("vatex", root, split, captions, None, media)


# ----------------------------------------------------------------------------- LSMDC

LSMDC_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def _lsmdc(root: Path, split: str, options: dict) -> list[VideoRecord]:
    """Tab-separated rows: clip id, 4 times, sentence. Clips live in per-movie folders."""
    _check_split("lsmdc", split, tuple(LSMDC_FILES))
    media = _media_roots(root, ("videos", "frames"), options)
    _reject_options("lsmdc", options)
    path = _require(root / LSMDC_FILES[split])
    captions: dict[str, list[str]] = {}
    problems = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        fields = text.rstrip("\n").split("\t")
        if len(fields) != 6 or not fields[0].strip() or not fields[5].strip():
            problems.append(f"line {line}: expected 6 tab-separated fields with clip id and sentence")
            continue
        captions.setdefault(fields[0].strip(), []).append(fields[5].strip())
    _report(path, "rows", problems)
    return _records("lsmdc", root, split, captions, None, media)


# ----------------------------------------------------------------------------- generic

_READERS: dict[str, Callable[[Path, str, dict], list[VideoRecord]]] = {
    "msrvtt": _msrvtt, "msvd": _msvd, "didemo": _didemo, "activitynet": _activitynet,
    "vatex": _vatex, "lsmdc": _lsmdc, "generic": _generic}


def load_dataset(name: str, root: str | Path, split: str = "test", **options) -> list[VideoRecord]:
    """The videos of ``split`` of benchmark ``name`` laid out under ``root`` (see
    ``docs/data.md``). Options: ``videos=FOLDER`` (where the videos are, if not in the default
    place), msrvtt ``train_csv="9k"|"7k"|path``, didemo/activitynet ``paragraph=False``,
    vatex ``language="zh"``, ``list_file=path``; msvd ``captions=path``."""
    reader = _READERS.get(name.lower())
    if reader is None:
        raise EercfError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.exists():
        raise EercfError(f"{root}: dataset folder not found")
    return reader(root, split, dict(options))
