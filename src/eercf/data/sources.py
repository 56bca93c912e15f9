"""Videos named by a user rather than a benchmark: a folder searched recursively, or a text
file listing one video per line. Ids are file stems, or paths relative to the folder where
stems collide. Paths are kept absolute, so what is stored finds the file from anywhere."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import EercfError
from .datasets import VideoRecord
from .video import VIDEO_EXTENSIONS

URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://", "file://")


def find_videos(source: str | Path) -> list[VideoRecord]:
    """The videos of a folder (every file with a video extension, recursively, sorted) or a
    list file (relative lines are relative to the file's folder; ``#`` starts a comment)."""
    source = Path(source)
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
    paths = list(dict.fromkeys(p.absolute() for p in paths))
    stems = Counter(p.stem for p in paths)
    return [VideoRecord(video_id=p.stem if stems[p.stem] == 1 else _relative_id(p, base),
                        path=p, captions=[], split="") for p in paths]


def _relative_id(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.with_suffix("").as_posix()


def stored_uri(location: str | Path) -> str:
    """What an index stores to find a video again from any directory: URLs and object-store
    URIs as given, local paths made absolute (not resolved: a symlinked library stays so)."""
    text = str(location)
    if text.startswith(URL_SCHEMES):
        return text
    return str(Path(text).absolute())
