"""What every benchmark reader shares: the record a reader returns, reporting bad rows, and
finding each video's file."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EercfError
from .video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

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
    moments: list[tuple[float, float]] | None = None  # each caption's span (seconds), if known


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
