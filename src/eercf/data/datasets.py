"""Readers for the text-to-video benchmarks, in the file layouts the CLIP4Clip family uses,
and for a generic CSV / JSONL; every reader returns the same ``VideoRecord`` list.

Bad rows (missing fields, video ids the captions file does not know, videos with no file on
disk) are collected and reported in one ``DatasetWarning`` per file, then skipped; a missing
annotation file is an ``EercfError`` naming it. ``docs/data.md`` describes each layout.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EercfError
from .video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

DATASETS = ("msrvtt", "msvd", "didemo", "activitynet", "vatex", "lsmdc", "generic")
SHOWN_PROBLEMS = 10  # a warning lists this many bad rows by name, then counts the rest


class DatasetWarning(UserWarning):
    """Annotation rows or videos that were skipped (listed in the message)."""


@dataclass
class VideoRecord:
    """One video of a split: where it is, its captions, and the part of it they describe."""

    video_id: str
    path: Path
    captions: list[str]
    split: str
    span: tuple[float, float] | None = None


# ----------------------------------------------------------------------------- helpers

def _require(path: Path) -> Path:
    if not path.is_file():
        raise EercfError(f"{path}: annotation file not found")
    return path


def _report(source: Path | str, what: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    warnings.warn(f"{source}: skipped {len(problems)} {what}: {shown}{more}", DatasetWarning,
                  stacklevel=4)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_require(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EercfError(f"{path}: not valid JSON ({err})") from None


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _require(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _check_split(name: str, split: str, splits: Iterable[str]) -> None:
    if split not in splits:
        raise EercfError(f"{name}: unknown split {split!r}; choose one of {', '.join(splits)}")


class _MediaIndex:
    """Every video file and frame folder under some folders, found by file name, by name
    without extension, and (ActivityNet) without the ``v_`` prefix: one walk, then lookups."""

    def __init__(self, roots: list[Path]):
        self.roots = [r for r in roots if r.is_dir()]
        self.files: dict[str, Path] = {}
        self.stems: dict[str, Path] = {}
        self.folders: dict[str, Path] = {}
        seen: set[str] = set()  # real paths walked: a symlink loop is entered once
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:
                    dirnames.clear()
                    continue
                seen.add(real)
                folder = Path(dirpath)
                if folder != root and any(Path(f).suffix.lower() in IMAGE_EXTENSIONS
                                          for f in filenames):
                    self.folders.setdefault(folder.name, folder)
                for name in filenames:
                    if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                        self.files.setdefault(name, folder / name)
                        self.stems.setdefault(Path(name).stem, folder / name)

    def find(self, video_id: str) -> Path | None:
        names = [video_id]
        if Path(video_id).suffix.lower() in VIDEO_EXTENSIONS:
            names.append(Path(video_id).stem)
        if video_id.startswith("v_"):
            names.append(video_id[2:])
        for name in names:
            for table in (self.files, self.stems, self.folders):
                if name in table:
                    return table[name]
        return None


def _media_roots(root: Path, defaults: tuple[str, ...], options: dict) -> list[Path]:
    videos = options.pop("videos", None)
    if videos is not None:
        roots = [Path(videos)]
        if not roots[0].is_dir():
            raise EercfError(f"{roots[0]}: video folder not found")
        return roots
    roots = [root / d for d in defaults]
    if not any(r.is_dir() for r in roots):
        raise EercfError(f"{root}: no video folder found (looked for "
                         f"{', '.join(defaults)}); pass videos=FOLDER")
    return roots


def _records(name: str, root: Path, split: str, captions: dict[str, list[str]],
             spans: dict[str, tuple[float, float]] | None, media_roots: list[Path]) -> list[VideoRecord]:
    """Attach each captioned video id to its file; ids with no file are reported and skipped."""
    index = _MediaIndex(media_roots)
    records, missing = [], []
    for video_id, texts in captions.items():
        path = index.find(video_id)
        if path is None:
            missing.append(video_id)
            continue
        records.append(VideoRecord(video_id=video_id, path=path, captions=texts, split=split,
                                   span=(spans or {}).get(video_id)))
    _report(", ".join(str(r) for r in index.roots), f"{name} {split} videos with no video file "
            "or frame folder", missing)
    if not records:
        raise EercfError(f"{root}: none of the {len(captions)} {name} {split} videos were found "
                         f"under {', '.join(str(r) for r in index.roots)}")
    return records


def _reject_options(name: str, options: dict) -> None:
    if options:
        raise EercfError(f"{name}: unknown option(s) {', '.join(sorted(options))}")


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
    _report(data_file, "annotations", problems)
    captions = {v: [" ".join(s)] if paragraph else s for v, s in sentences.items()}
    spans = {v: (0.0, DIDEMO_ANNOTATED_SECONDS) for v in captions}
    return _records("didemo", root, split, captions, spans, media)


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
    captions, problems = {}, []
    for video_id in ids:
        entry = data.get(video_id)
        texts = [_text(s) for s in entry.get("sentences", [])] if isinstance(entry, dict) else []
        texts = [t for t in texts if t]
        if not texts:
            problems.append(f"{video_id}: {'no sentences' if entry else 'unknown video id'}")
            continue
        captions[video_id] = [" ".join(texts)] if paragraph else texts
    _report(data_file, f"activitynet {split} videos", problems)
    return _records("activitynet", root, split, captions, None, media)


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
