"""``VideoIndex``: a folder (or an object-store prefix, ``s3://bucket/prefix``: ``location``)
that stores a video collection's features and searches it by text.

Layout::

    eercf-index.json     what this is: format, the model that built it, the FAISS factory,
                         the codec chosen for the fine levels, how long videos are segmented
    videos.lance/        the Lance dataset, one row per video or segment (the source of truth)
    codebook-H.safetensors  the pq codec's codebook (content-addressed, checksummed in the
                         store's schema), when the store is coded
    stage1.json          stamp of the FAISS file: Lance version, rows, checksum
    stage1-vN.faiss      FAISS index over the video vectors of Lance version N (derived)
    writer.lock          held by the one process allowed to write at a time (a folder only:
                         on object storage Lance's conditional commits keep writers safe)

Every change is one Lance commit, so a crash leaves the previous version intact and a reader
always sees whole videos. A search pins one Lance version for both stages.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import lance
import numpy as np
import torch

from .. import __version__
from ..errors import EercfError
from . import ann, codecs, recode, segments, store
from .hot import HotTier
from .location import Location, writer_lock
from .manifest import FORMAT, KIND, MANIFEST, ModelInfo, check_model, read_manifest

if TYPE_CHECKING:
    from ..model import EERCF, VideoFeatures
    from .search import SearchResult

log = logging.getLogger(__name__)

DATASET = store.DATASET
LOCK = "writer.lock"

@dataclass
class Snapshot:
    """One Lance version of the store and the stage-1 index built from it."""

    dataset: lance.LanceDataset
    stage1: ann.Stage1

    @property
    def version(self) -> int:
        return self.stage1.version


class VideoIndex:
    """A searchable video collection in a folder (see the module docstring for the layout).

    Build with :meth:`create` (or open with :meth:`open`), fill with :meth:`add`, query with
    :meth:`search`. One process writes at a time; any number read, each search seeing one
    consistent version. Within a process, give a thread that writes its own ``VideoIndex``
    object (an object caches the opened store and stage-1 index, which its writes update)."""

    def __init__(self, location: Location, manifest: dict[str, Any]):
        self.location = location
        self.hot_in_memory = False  # set True to hold a pq store's hot tier in memory
        self._hot: HotTier | None = None
        self._manifest = manifest
        self._stage1: ann.Stage1 | None = None
        self._opened: lance.LanceDataset | None = None
        self._lock_depth = 0  # > 0 while this object holds the writer lock
        self._model: "EERCF | None" = None
        self._codebooks: dict[tuple[str, str], codecs.PQCodec] = {}
        self._groups: tuple[int, np.ndarray | None] | None = None  # (version, row -> video)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, folder: "str | os.PathLike | Location", model_info: "ModelInfo | EERCF",
               index_factory: str = ann.EXACT, search_params: str = "",
               codec: str = codecs.DEFAULT_CODEC,
               segmenting: segments.Segmenting | None = segments.Segmenting()) -> "VideoIndex":
        """A new, empty index in ``folder`` (which must be absent or empty). ``index_factory``
        is a FAISS factory string (default exact ``Flat``; e.g. ``IVF1024,Flat``, ``HNSW32``,
        ``IVF1024,PQ64``) and ``search_params`` FAISS search parameters (``nprobe=16``).
        ``codec`` is how the fine levels will be stored (``codecs``): rows are added exact,
        and :meth:`apply_codec` (which ``eercf index`` runs at the end) trains a ``pq``
        codebook on the collection and re-codes the store. ``segmenting`` is how ``ingest``
        cuts long videos (None: every video whole)."""
        location = Location.of(folder)
        codecs.check_codec(codec)
        info = model_info if isinstance(model_info, ModelInfo) else ModelInfo.of(model_info)
        ann.check_factory(index_factory, info.embed_dim, search_params)
        location.prepare_new(MANIFEST)
        dataset = store.create(location.join(DATASET), info.embed_dim, info.frames, info.patches,
                               location.options)
        manifest = {"kind": KIND, "format": FORMAT, "eercf_version": __version__,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "model": asdict(info), "index_factory": index_factory,
                    "search_params": search_params, "codec": codec,
                    "segments": None if segmenting is None else segmenting.to_dict()}
        index = cls(location, manifest)
        index._rebuild_and_save(dataset)
        index._write_manifest()  # written last: its presence means complete
        return index

    @classmethod
    def open(cls, folder: "str | os.PathLike | Location") -> "VideoIndex":
        """Open an existing index; a foreign folder or a newer format gets a clear error."""
        location = Location.of(folder)
        manifest = read_manifest(location)
        index = cls(location, manifest)
        info = index.model_info
        store.check_dims(index._dataset(), (info.embed_dim, info.frames, info.patches),
                         location.join(DATASET))
        return index

    @property
    def folder(self) -> "Path | str":
        """The index's folder, or its URI on object storage."""
        return self.location.local if self.location.local is not None else self.location.uri

    def _write_manifest(self) -> None:
        self.location.write_bytes(MANIFEST, json.dumps(self._manifest, indent=1).encode())

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(**self._manifest["model"])

    @property
    def index_factory(self) -> str:
        return self._manifest["index_factory"]

    @property
    def search_params(self) -> str:
        return self._manifest.get("search_params", "")

    @property
    def codec(self) -> str:
        """The codec chosen for the fine levels (format 1 indexes: ``exact``)."""
        return self._manifest.get("codec", "exact")

    @property
    def segmenting(self) -> segments.Segmenting | None:
        """How ``ingest`` cuts this index's long videos (None: kept whole; older indexes)."""
        return segments.Segmenting.from_manifest(self._manifest.get("segments"))

    def stored_codec(self, dataset: lance.LanceDataset | None = None) -> str:
        """How the store holds its patches now (``exact`` until a pq codebook is trained)."""
        return "pq" if store.is_coded((dataset or self._dataset()).schema) else "exact"

    def pq_codec(self, dataset: lance.LanceDataset) -> codecs.PQCodec | None:
        """The codebook ``dataset``'s version was written with (None for an exact store),
        loaded once and checked against its recorded checksum."""
        book = recode.codebook_of(dataset)
        if book is None:
            return None
        cached = self._codebooks.get(book)
        if cached is None:
            cached = self._codebooks[book] = codecs.PQCodec.load(self.location, book[0], book[1])
        return cached

    def stats(self) -> dict[str, Any]:
        """Videos, codec and bytes per video of each tier: ``hot`` (what stage 2 reads for
        every candidate), ``cold`` (read only for the patches the codes select), ``stage1``."""
        dataset = self._dataset()
        dim, frames, patches = store.dims(dataset.schema)
        sizes = store.bytes_per_video(dim, frames, patches, store.code_bytes(dataset.schema))
        stage1 = ann.bytes_per_vector(self._current_stage1(dataset, persist=True), dim)
        return {"videos": len(self), "rows": dataset.count_rows(),
                "codec": self.stored_codec(dataset), "chosen_codec": self.codec,
                "bytes_per_video": {"hot": sizes["hot"], "cold": sizes["cold"], "stage1": stage1},
                "bytes_on_disk": self.bytes_on_disk()}

    def _dataset(self) -> lance.LanceDataset:
        """The latest version of the store. The opened dataset is kept while no commit
        happens, so its file metadata stays cached between searches."""
        cached = self._opened
        if cached is None or cached.latest_version != cached.version:
            cached = self._opened = store.open_dataset(self.location.join(DATASET),
                                                       options=self.location.options)
        return cached

    def __len__(self) -> int:
        """The number of videos (a segmented video counts once)."""
        dataset = self._dataset()
        if self._row_groups(dataset) is None:
            return dataset.count_rows()
        return len(store.video_ids(dataset))

    def ids(self) -> list[str]:
        """Every video id once, in store order."""
        return store.video_ids(self._dataset())

    def _row_groups(self, dataset: lance.LanceDataset) -> np.ndarray | None:
        """The video of each row of ``dataset``'s version (``segments.row_groups``), cached."""
        if self._groups is None or self._groups[0] != dataset.version:
            self._groups = (dataset.version, segments.row_groups(dataset))
        return self._groups[1]

    @property
    def version(self) -> int:
        """The latest Lance version of the store (one more per committed change)."""
        return self._dataset().version

    def bytes_on_disk(self) -> int:
        """Bytes of the whole index (store with every version kept, FAISS file, manifest)."""
        return self.location.size()

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writing(self, wait: float = 10.0) -> Iterator[None]:
        """Hold the writer lock for a whole session of changes (``eercf index`` holds it for
        its run), so that no other process writes in between: re-entrant, released by the
        kernel even on SIGKILL, waiting up to ``wait`` seconds for another holder."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with writer_lock(self.location, LOCK, wait):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    def add(self, ids: Sequence[str], uris: Sequence[str | None], durations: Sequence[float | None],
            timestamps: Sequence[Sequence[float]], features: "VideoFeatures",
            metadata: Sequence[dict[str, Any] | None] | None = None, *,
            save_stage1: bool = True,
            spans: Sequence[tuple[float, float] | None] | None = None) -> int:
        """Add whole videos in one commit: ids (not yet in the index), uris, durations
        (seconds or None), each row's frame timestamps (one per real frame, in the video's
        timeline), the features from ``model.encode_video`` and optional JSON-able metadata.
        With ``spans``, rows sharing an id are the segments of one video (each its span in
        seconds; None for a row that is a whole video). Returns the rows added.

        The stage-1 index is extended in memory; writing its file costs O(collection), so a
        bulk load passes ``save_stage1=False`` and calls :meth:`save_stage1` now and then
        (readers meanwhile rebuild it from the store, never trusting a stale file)."""
        if len(ids) == 0:
            return 0
        keys = list(zip(ids, spans)) if spans is not None else list(ids)
        repeated = [i for i, n in Counter(keys).items() if n > 1]
        if repeated:
            raise EercfError(f"video id {repeated[0]!r} appears twice in one add")
        with self.writing():
            dataset = self._dataset()
            if spans is not None and any(spans) and not store.has_spans(dataset.schema):
                store.add_span_columns(dataset)  # an index older than segments gains them
                self._manifest = {**self._manifest, "format": FORMAT}
                self._write_manifest()
                dataset = self._dataset()
            table = store.to_table(store.write_schema(dataset.schema), ids, uris, durations,
                                   timestamps, features, metadata, self.pq_codec(dataset), spans)
            present = set(store.all_ids(dataset)).intersection(ids)
            if present:
                raise EercfError(f"{len(present)} video id(s) already in index {self.folder}, "
                                 f"e.g. {sorted(present)[0]!r}: remove them first")
            previous = self._current_stage1(dataset, persist=False)
            committed = lance.write_dataset(table, dataset, mode="append",
                                            storage_options=self.location.options or None)
            vectors = store.column_array(table, "video")
            stage1 = ann.after_append(previous, vectors, committed.version, self.index_factory,
                                      self.folder)
            self._stage1 = stage1 or self._build(committed)
            if save_stage1:
                ann.save(self.location, self._stage1)
        return len(ids)

    def save_stage1(self) -> None:
        """Write the stage-1 index of the latest version (after adds with ``save_stage1=False``)."""
        with self.writing():
            dataset = self._dataset()
            stage1 = self._current_stage1(dataset, persist=False)
            ann.save(self.location, stage1)

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Remove videos by id in one commit; returns the ids that were present (the others
        are reported in the log and skipped)."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self.writing():
            dataset = self._dataset()
            present = sorted(set(store.all_ids(dataset)).intersection(ids))
            missing = sorted(set(ids) - set(present))
            if missing:
                log.warning("not in index %s, skipped: %s", self.folder, ", ".join(missing))
            if not present:
                return []
            dataset.delete("id IN (" + ", ".join(map(store.sql_string, present)) + ")")
            self._rebuild_and_save()
        return present

    def reindex(self, index_factory: str | None = None, search_params: str | None = None,
                keep_versions: timedelta = timedelta(hours=1), codec: str | None = None) -> None:
        """Compact the store (dropping removed rows' data), forget versions older than
        ``keep_versions`` (searches in flight pin a recent one), and retrain the stage-1
        index from scratch, optionally with a new FAISS factory / search parameters. With
        ``codec``, the store is re-coded to it (``pq``: a codebook retrained on the collection)."""
        factory = self.index_factory if index_factory is None else index_factory
        params = self.search_params if search_params is None else search_params
        ann.check_factory(factory, self.model_info.embed_dim, params)
        if codec is not None:
            codecs.check_codec(codec)
        with self.writing():
            changes = {"index_factory": factory, "search_params": params,
                       "codec": self.codec if codec is None else codec}
            if any(self._manifest.get(k) != v for k, v in changes.items()):
                self._manifest = {**self._manifest, **changes}
                self._write_manifest()
            if codec is not None:
                self.apply_codec(retrain=True)
            dataset = self._dataset()
            if dataset.count_rows():
                dataset.optimize.compact_files()
            self._dataset().cleanup_old_versions(older_than=keep_versions)
            oldest = min(v["version"] for v in self._dataset().versions())
            ann.drop_older(self.location, oldest)
            self._rebuild_and_save()

    def apply_codec(self, retrain: bool = False) -> bool:
        """Bring the store to the chosen codec (``recode.apply``): ``pq`` trains a codebook on
        a sample of the collection (a new one with ``retrain``) and re-codes every row;
        ``exact`` decodes a coded store. False (logged) when pq falls back to exact."""
        with self.writing():
            if recode.apply(self._dataset(), self.location, self.codec, retrain):
                self._rebuild_and_save()
            return self.stored_codec() == self.codec

    def _rebuild_and_save(self, dataset: lance.LanceDataset | None = None) -> None:
        self._stage1 = self._build(dataset or self._dataset())
        ann.save(self.location, self._stage1)

    def _build(self, dataset: lance.LanceDataset) -> ann.Stage1:
        return ann.build(store.video_vectors(dataset), self.index_factory, self.search_params,
                         dataset.version)

    # ------------------------------------------------------------------ reading
    def _current_stage1(self, dataset: lance.LanceDataset, persist: bool) -> ann.Stage1:
        """The stage-1 index of ``dataset``'s version: from memory, from the verified file, or
        rebuilt from the store (and saved when ``persist`` and no writer holds the lock)."""
        if self._stage1 is not None and self._stage1.version == dataset.version:
            return self._stage1
        rows = dataset.count_rows()
        stage1, problem = ann.load(self.location, dataset.version, rows, self.model_info.embed_dim,
                                   self.search_params)
        if stage1 is None:
            level = logging.INFO if problem.startswith("stale") else logging.WARNING
            log.log(level, "stage-1 index of %s %s: rebuilding it from the store",
                    self.folder, problem)
            stage1 = self._build(dataset)
            if persist:
                with contextlib.suppress(EercfError, OSError), self.writing(wait=0):
                    ann.save(self.location, stage1)
        self._stage1 = stage1
        return stage1

    def snapshot(self) -> Snapshot:
        """Pin the latest version: its store and its stage-1 index."""
        dataset = self._dataset()
        return Snapshot(dataset, self._current_stage1(dataset, persist=True))

    def check_model(self, model: "EERCF") -> None:
        """Refuse a query model whose features do not live in this index's space."""
        check_model(self.model_info, model, self.folder)

    def model(self) -> "EERCF":
        """The model that built this index, loaded from its recorded source (cached)."""
        if self._model is None:
            from ..weights import load_model

            source = self.model_info.source
            if source is None:
                raise EercfError(f"index {self.folder} does not record where its model "
                                 f"{self.model_info.name!r} is: pass the model explicitly")
            self._model = load_model(source)
        return self._model

    def search(self, texts: str | Sequence[str], k: int = 10, topk: int | None = None,
               model: "EERCF | None" = None, weights: dict[str, float] | None = None,
               filter: str | None = None, per: str = "video", video: str | None = None,
               exact_candidates: int | None = None) -> list["SearchResult"]:
        """Search by text: one :class:`~eercf.search.SearchResult` per query, ``k`` hits each,
        the top ``topk`` of stage 1 (default: the model's: fitted, else 50) re-scored by stage 2
        with the fusion ``weights`` (default: the model's: fitted, else the paper's), among
        the rows matching ``filter`` (a Lance filter expression, e.g. ``duration > 10``) when
        given, and only within video ``video`` when given. ``per="video"`` gives one hit per
        video (a long video's best segment, with its moments), ``per="segment"`` one per row.
        A pq store reads ``exact_candidates`` of the ``topk`` whole and scores them exactly
        (default: the larger of 15 and ``k``, so every re-scored hit has the exact codec's
        score, *when* and *where*; 0: the codes' scores alone, no cold-tier read).
        ``model`` defaults to the one recorded."""
        from ..model.encode import encode_texts

        texts = [texts] if isinstance(texts, str) else list(texts)
        model = self.model() if model is None else model
        self.check_model(model)
        started = time.perf_counter()
        text = encode_texts(model, texts, progress=False)
        encode_seconds = time.perf_counter() - started
        return self.search_encoded(text, k, topk, model, weights, queries=texts,
                                   timings={"encode_text": encode_seconds}, filter=filter,
                                   per=per, video=video, exact_candidates=exact_candidates)

    def search_encoded(self, text: torch.Tensor, k: int = 10, topk: int | None = None,
                       model: "EERCF | None" = None, weights: dict[str, float] | None = None,
                       queries: Sequence[str | None] | None = None,
                       timings: dict[str, float] | None = None, filter: str | None = None,
                       per: str = "video", video: str | None = None,
                       exact_candidates: int | None = None) -> list["SearchResult"]:
        """:meth:`search` for already encoded texts ``[T, D]`` (``model.encode_text``)."""
        from .search import two_stage

        model = self.model() if model is None else model
        self.check_model(model)
        if text.ndim != 2 or text.shape[1] != self.model_info.embed_dim:
            raise EercfError(f"query features must be [queries, {self.model_info.embed_dim}], "
                             f"got {tuple(text.shape)}")
        topk = model.default_topk() if topk is None else int(topk)
        snap = self.snapshot()
        codec = self.pq_codec(snap.dataset)
        hot = None
        if self.hot_in_memory and codec is not None:
            hot = self._hot = HotTier.follow(self._hot, snap.dataset)
        expression = segments.search_filter(filter, video)
        allowed = None if expression is None else store.matching_offsets(snap.dataset, expression)
        return two_stage(snap.dataset, snap.stage1, text, model, k=k, topk=topk,
                         weights=weights, queries=queries, timings=timings, codec=codec, hot=hot,
                         allowed=allowed, groups=self._grouping(snap.dataset, per),
                         exact_candidates=exact_candidates)

    def _grouping(self, dataset: lance.LanceDataset, per: str) -> np.ndarray | None:
        """``two_stage``'s ``groups`` for ``per`` (checked): None per segment or without segments."""
        segments.check_per(per)
        return self._row_groups(dataset) if per == "video" else None
