"""Writes through the service: adding videos as background jobs, removing one at a time.

One writer thread runs the jobs in order, with its own ``VideoIndex`` object (the searcher's
never writes). Each job decodes, encodes and adds its videos through ``ingest``, a few per
commit: a video that cannot be read (or fetched) is reported in the job and skipped, and the
videos already committed stay whatever happens after them."""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data.datasets import VideoRecord
from ..errors import EercfError
from ..index import VideoIndex
from ..index.ingest import ingest

if TYPE_CHECKING:
    from ..model import EERCF

log = logging.getLogger(__name__)

JOBS_KEPT = 1000                   # finished jobs remembered for GET /api/jobs/{id}
DOWNLOAD_LIMIT = 4 << 30           # bytes a video fetched from a URL may have
DOWNLOAD_TIMEOUT = 60.0
BATCH = 4                          # videos per commit


@dataclass
class Item:
    """One video to add: a local file (already checked against the media roots) or a URL."""

    uri: str
    video_id: str
    metadata: dict[str, Any] | None = None


@dataclass
class Job:
    id: str
    items: list[Item]
    state: str = "queued"
    added: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    done: int = 0
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"job": self.id, "state": self.state, "added": list(self.added),
               "failed": list(self.failed),
               "progress": {"done": self.done, "total": len(self.items),
                            "fraction": round(self.done / max(1, len(self.items)), 3)},
               "created": _iso(self.created),
               "finished": _iso(self.finished) if self.finished else None}
        if self.error:
            out["error"] = self.error
        return out


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Writer:
    """Runs add jobs one after another and removals between them; ``on_commit`` hears of
    every change (the searcher then loads the new version at once)."""

    def __init__(self, folder: str | Path, model: "EERCF", on_commit: Callable[[], None],
                 downloads: Path):
        self.index = VideoIndex.open(folder)
        self.model = model
        self.on_commit = on_commit
        self.downloads = downloads
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()     # one change at a time: a job's batch or a removal
        self._queue: "queue.Queue[Job | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="eercf-writer", daemon=True)
        self._thread.start()

    def submit(self, items: list[Item]) -> Job:
        job = Job(uuid.uuid4().hex, items)
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.finished]
        for old in sorted(finished, key=lambda j: j.finished)[:max(0, len(finished) - JOBS_KEPT)]:
            del self.jobs[old.id]
        self._queue.put(job)
        return job

    def remove(self, video_id: str, wait: float = 30.0) -> bool:
        """Remove one video; False if the index did not hold it. Waits for a running batch."""
        if not self._lock.acquire(timeout=wait):
            raise EercfError("the index is busy with another change; try again shortly")
        try:
            removed = self.index.remove([video_id])
        finally:
            self._lock.release()
        if removed:
            self.on_commit()
        return bool(removed)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job.state = "running"
            try:
                self._run_job(job)
                job.state = "done"
            except Exception as err:  # noqa: BLE001 - the job reports it; the service goes on
                log.exception("job %s failed", job.id)
                job.state, job.error = "failed", str(err).splitlines()[0][:500] or type(err).__name__
            finally:
                job.finished = time.time()
                self.on_commit()

    def _run_job(self, job: Job) -> None:
        present = set(self.index.ids())
        for start in range(0, len(job.items), BATCH):
            records, metadata, sources = [], {}, {}
            for item in job.items[start:start + BATCH]:
                if item.video_id in present:
                    job.failed.append({"uri": item.uri, "id": item.video_id,
                                       "error": f"id {item.video_id!r} is already in the index"})
                    job.done += 1
                    continue
                try:
                    path = self._fetch(item.uri) if _is_url(item.uri) else Path(item.uri)
                except EercfError as err:
                    job.failed.append({"uri": item.uri, "id": item.video_id, "error": str(err)})
                    job.done += 1
                    continue
                metadata[item.video_id] = {**(item.metadata or {}),
                                           **({"source_url": item.uri} if _is_url(item.uri) else {})}
                sources[item.video_id] = item.uri
                records.append(VideoRecord(item.video_id, path, [], "api"))
            if not records:
                continue
            with self._lock:
                summary = ingest(self.index, self.model, records, batch_size=BATCH, workers=0,
                                 progress=False, metadata=metadata)
            for failure in summary["failed"]:
                job.failed.append({"uri": sources.get(failure["video"], failure["path"]),
                                   "id": failure["video"], "error": failure["error"]})
            added = [r.video_id for r in records
                     if r.video_id not in {f["video"] for f in summary["failed"]}]
            job.added.extend(added)
            present.update(added)
            job.done += len(records)
            if added:
                self.on_commit()

    def _fetch(self, url: str) -> Path:
        """Download ``url`` once into the service's download folder (by the URL's hash)."""
        name = hashlib.sha256(url.encode()).hexdigest()[:24] + Path(url.split("?")[0]).suffix[:8]
        target = self.downloads / name
        if target.exists():
            return target
        self.downloads.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{name}.{uuid.uuid4().hex[:8]}.part")
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "eercf"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response, \
                    open(part, "wb") as out:
                copied = 0
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > DOWNLOAD_LIMIT:
                        raise EercfError(f"{url}: larger than {DOWNLOAD_LIMIT >> 30} GiB")
                    out.write(chunk)
            part.replace(target)
        except (OSError, ValueError) as err:
            raise EercfError(f"{url}: cannot download ({getattr(err, 'reason', None) or err})") \
                from None
        finally:
            part.unlink(missing_ok=True)
        return target


def _is_url(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def clear_partial(downloads: Path) -> None:
    """Remove downloads a previous run left half-written."""
    for part in downloads.glob(".*.part") if downloads.is_dir() else ():
        part.unlink(missing_ok=True)

