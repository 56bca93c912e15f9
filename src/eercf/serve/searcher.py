"""The service's searcher: the model and one index snapshot held in memory, searches batched.

One worker thread runs every search (torch and FAISS are fastest with the whole CPU to one
batch, and a batch shares its text encoding, its stage-1 search and its reads). Requests that
arrive while a batch runs wait in a queue and run together in the next one. A lone request
never waits for company; under load (the last batch held several requests) the worker waits
up to ``GATHER_SECONDS`` for the clients its last batch answered, whose next requests are on
their way, so batches stay whole instead of splitting in two halves that each pay for a text
encoding (the text tower reads all its weights per pass). Encoded queries are kept (the last
``TEXT_CACHE``), so a repeated query skips the text tower. A refresher thread watches the store's version; when a
writer commits, it loads the new snapshot (and a pq store's hot tier) beside the old one and
swaps them in one assignment, so a batch sees one consistent snapshot and never waits for a
reload.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import statistics
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import EercfError
from ..index import VideoIndex, codecs, segments, store
from ..index.hot import HotTier
from ..index.search import SearchResult, two_stage
from ..model.encode import encode_texts

if TYPE_CHECKING:
    from ..index.codecs import PQCodec
    from ..index.location import Location
    from ..index.video_index import Snapshot
    from ..model import EERCF

log = logging.getLogger(__name__)

MAX_BATCH = 64          # queries one batch takes from the queue
GATHER_SECONDS = 0.004  # how long a batch under load waits for more requests
TEXT_CACHE = 4096       # encoded queries kept
REFRESH_SECONDS = 0.5   # how often the refresher looks for a new store version


class Unavailable(Exception):
    """The index cannot be read right now (the service answers 503)."""


@dataclass
class State:
    """One version of the index as searches see it."""

    snapshot: "Snapshot"
    codec: "PQCodec | None"
    hot: HotTier | None
    offsets: dict[str, int]        # video id -> its first row's offset in this version
    groups: np.ndarray | None      # the video of each row (None: no segments)
    loaded: float = field(default_factory=time.time)

    @property
    def version(self) -> int:
        return self.snapshot.version


@dataclass
class Request:
    """One search request (one or more queries with the same options)."""

    queries: list[str]
    k: int
    topk: int
    weights: dict[str, float] | None
    filter: str | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    per: str = "video"
    exact_candidates: int | None = None
    received: float = field(default_factory=time.perf_counter)

    @property
    def exact(self) -> int:
        """Candidates read whole under pq, as ``two_stage`` defaults it for this request's
        ``k``: fixed per group, so a request's hits do not depend on the others' ``k``."""
        return codecs.exact_width(self.exact_candidates, self.k)

    def group(self) -> str:
        """Requests of one group run as one ``two_stage`` call."""
        return json.dumps([self.topk, self.weights, self.filter, self.per, self.exact],
                          sort_keys=True)

    def answer(self, result: Any) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, result)


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Searcher:
    """Searches one index folder with its model (loaded once), batching concurrent requests."""

    def __init__(self, folder: "str | Path | Location", model: "EERCF | None" = None, *,
                 hot_in_memory: bool = True, refresh_seconds: float = REFRESH_SECONDS):
        self.index = VideoIndex.open(folder)
        self.model = self.index.model() if model is None else model
        self.model.eval()
        self.index.check_model(self.model)
        self.hot_in_memory = hot_in_memory
        self.refresh_seconds = refresh_seconds
        self.topk_default = self.model.default_topk()
        self._state: State | None = None
        self._error: str | None = None
        self._queue: "queue.Queue[Request | None]" = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._latency: deque[float] = deque(maxlen=2000)
        self._batch_sizes: deque[int] = deque(maxlen=2000)
        self.searches = 0
        self._stats: tuple[int, dict[str, Any]] | None = None  # (version, index.stats())
        self._texts: "OrderedDict[str, Any]" = OrderedDict()  # query -> features (worker only)
        self._state = self._load()  # fails loudly at start-up: nothing to serve without it
        self._threads = [threading.Thread(target=self._work, name="eercf-search", daemon=True),
                         threading.Thread(target=self._refresh, name="eercf-refresh", daemon=True)]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ snapshot
    def _load(self) -> State:
        snapshot = self.index.snapshot()
        codec = self.index.pq_codec(snapshot.dataset)
        hot = None
        if codec is not None and self.hot_in_memory:
            hot = HotTier.follow(self._state.hot if self._state is not None else None,
                                       snapshot.dataset)
        ids = hot.rows.ids if hot is not None else store.all_ids(snapshot.dataset)
        offsets: dict[str, int] = {}
        for i, video_id in enumerate(ids):
            offsets.setdefault(video_id, i)
        return State(snapshot, codec, hot, offsets, segments.row_groups(snapshot.dataset))

    def _refresh(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.refresh_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._state is None or self.index.version != self._state.version:
                    self._state = self._load()
                    log.info("serving index version %d", self._state.version)
                self._error = None
            except Exception as err:  # the store vanished or is damaged: searches answer 503
                self._error = f"the index cannot be read: {str(err).splitlines()[0][:300]}"
                log.warning("%s", self._error)

    def refresh_now(self) -> None:
        """Look for a new version at once (after this service's own write)."""
        self._wake.set()

    def state(self) -> State:
        if self._error is not None or self._state is None:
            raise Unavailable(self._error or "the index is not loaded yet")
        return self._state

    # ------------------------------------------------------------------ searching
    async def search(self, queries: list[str], k: int, topk: int | None,
                     weights: dict[str, float] | None, filter: str | None,
                     per: str = "video", video: str | None = None,
                     exact_candidates: int | None = None) -> list[SearchResult]:
        """The results of ``queries`` (one per query), run in the next batch: one hit per
        video (``per="video"``) or per stored segment, within video ``video`` when given;
        ``exact_candidates`` as :meth:`VideoIndex.search` takes it."""
        if self._stop.is_set():
            raise Unavailable("the service is shutting down")
        self.model.fusion_weights(weights)  # a bad weight fails now, alone, not in a batch
        segments.check_per(per)
        loop = asyncio.get_running_loop()
        request = Request(list(queries), k, self.topk_default if topk is None else topk,
                          weights, segments.search_filter(filter, video), loop.create_future(),
                          loop, per, exact_candidates)
        self._queue.put(request)
        return await request.future

    def _take_batch(self, gather: float) -> list[Request]:
        first = self._queue.get()
        if first is None:
            return []
        batch, count = [first], len(first.queries)
        deadline = time.perf_counter() + gather
        while count < MAX_BATCH:
            try:
                wait = deadline - time.perf_counter()
                nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)
                break
            batch.append(nxt)
            count += len(nxt.queries)
        return batch

    def _work(self) -> None:
        last_requests = 0
        while not self._stop.is_set():
            batch = self._take_batch(GATHER_SECONDS if last_requests > 1 else 0.0)
            if not batch:
                return
            last_requests = len(batch)
            try:
                state = self.state()
                texts = [q for request in batch for q in request.queries]
                started = time.perf_counter()
                encoded = self._encode(texts)
                encode_seconds = time.perf_counter() - started
            except BaseException as err:  # noqa: BLE001 - every request hears why
                for request in batch:
                    request.answer(_as_error(err))
                continue
            self._batch_sizes.append(len(texts))
            start, groups = 0, {}
            for request in batch:
                groups.setdefault(request.group(), []).append((request, start))
                start += len(request.queries)
            for members in groups.values():
                self._run_group(state, encoded, members, encode_seconds)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """Query features ``[T, D]``, from the cache where a text was encoded before."""
        todo = sorted({t for t in texts if t not in self._texts})
        if todo:
            with torch.inference_mode():
                fresh = encode_texts(self.model, todo, progress=False)
            for text, vector in zip(todo, fresh):
                self._texts[text] = vector
        for text in texts:
            self._texts.move_to_end(text)
        while len(self._texts) > TEXT_CACHE:
            self._texts.popitem(last=False)
        return torch.stack([self._texts[t] for t in texts])

    def _run_group(self, state: State, encoded, members: list[tuple[Request, int]],
                   encode_seconds: float) -> None:
        first = members[0][0]
        rows = torch.cat([torch.arange(start, start + len(r.queries)) for r, start in members])
        try:
            allowed = None if first.filter is None else store.matching_offsets(
                state.snapshot.dataset, first.filter)
            results = two_stage(state.snapshot.dataset, state.snapshot.stage1, encoded[rows],
                                self.model, k=max(r.k for r, _ in members), topk=first.topk,
                                weights=first.weights,
                                queries=[q for r, _ in members for q in r.queries],
                                timings={"encode_text": encode_seconds}, codec=state.codec,
                                hot=state.hot, allowed=allowed,
                                groups=state.groups if first.per == "video" else None,
                                exact_candidates=first.exact)
        except BaseException as err:  # noqa: BLE001
            for request, _ in members:
                request.answer(_as_error(err))
            return
        at = 0
        now = time.perf_counter()
        for request, _ in members:
            mine = results[at:at + len(request.queries)]
            at += len(request.queries)
            for result in mine:
                result.hits = result.hits[:request.k]
            self.searches += len(request.queries)
            self._latency.append(now - request.received)
            request.answer(mine)

    # ------------------------------------------------------------------ reporting
    def report(self) -> dict[str, Any]:
        """What ``GET /api/index`` shows: the collection, the model, sizes and timings."""
        state = self.state()
        if self._stats is None or self._stats[0] != state.version:
            # sizes list every file of the index (slow on object storage): once per version
            self._stats = (state.version, self.index.stats())
        stats = self._stats[1]
        latency = sorted(self._latency)
        timings: dict[str, Any] = {"searches": self.searches,
                                   "batches": len(self._batch_sizes)}
        if latency:
            timings.update(p50_ms=round(1e3 * statistics.median(latency), 2),
                           p99_ms=round(1e3 * latency[min(len(latency) - 1,
                                                          int(0.99 * len(latency)))], 2),
                           mean_batch=round(statistics.mean(self._batch_sizes), 2))
        info = self.index.model_info
        return {"videos": len(state.offsets), "rows": int(state.snapshot.stage1.index.ntotal),
                "version": state.version,
                "model": {"name": info.name, "embed_dim": info.embed_dim, "frames": info.frames,
                          "patches": info.patches, "source": info.source,
                          "resize": (info.transform or {}).get("resize", "crop")},
                "index_factory": state.snapshot.stage1.factory, "codec": stats["codec"],
                "bytes_per_video": stats["bytes_per_video"],
                "hot_in_memory": state.hot is not None,
                # how stage 2 reads the exact patches: memory maps of the store's files, or Lance
                "cold_reads": None if state.hot is None else (
                    "mapped" if state.hot.cold is not None else "lance"),
                "loaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.loaded)),
                "timings": timings}

    def row(self, video_id: str) -> tuple[State, store.Rows]:
        """The stored information of one video in the current version (KeyError if absent)."""
        state = self.state()
        offset = state.offsets[video_id]
        if state.hot is not None:
            return state, state.hot.rows.select(np.array([offset]))
        return state, store.take_rows(state.snapshot.dataset, [offset])

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)


def _as_error(err: BaseException) -> BaseException:
    """A user error stays itself; anything else (a store that cannot be read) is Unavailable."""
    if isinstance(err, (EercfError, Unavailable)):
        return err
    log.exception("search failed", exc_info=err)
    return Unavailable(f"the index cannot be read: {str(err).splitlines()[0][:300]}"
                       if str(err) else f"search failed ({type(err).__name__})")
