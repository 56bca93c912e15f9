"""Stage 1: a FAISS inner-product index over the video vectors, derived from the store.

The FAISS file is never trusted blindly: a stamp beside it records the Lance version it was
built from, the row count and the SHA-256 of the file. A missing, stale or corrupt file is
rebuilt from the store. FAISS labels are row offsets in that Lance version, so a search that
pins the version reads its candidates with ``dataset.take(labels)``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from ..errors import EercfError
from .location import Location

log = logging.getLogger(__name__)

STAMP = "stage1.json"
EXACT = "Flat"
MATMUL_QUERIES = 8  # an exact index answers this many queries at once by one matrix product
MATMUL_FLOATS = 1 << 26  # ... in chunks of queries whose products hold at most this many floats
MIN_TRAIN_PER_LIST = 39  # videos per IVF list before the lists are trained (FAISS's k-means minimum)
RETRAIN_GROWTH = 4  # a trained index is trained again once it holds this many times its sample


@dataclass
class Stage1:
    """A FAISS index and what it was built from."""

    index: faiss.Index
    version: int   # the Lance version whose rows it holds, in offset order
    factory: str   # the factory actually built (``Flat`` until a trained factory has data)
    trained_on: int = 0  # the videos its lists (or codes) were trained on; 0: no training

    def outgrown(self, rows: int) -> bool:
        """Whether holding ``rows`` videos, a trained index should be trained again: its lists
        were placed on a sample of the first videos and are only extended, so as a collection
        grows (and drifts) they fit it less well. Retraining at each ``RETRAIN_GROWTH``-fold
        growth keeps the sample at least a quarter of the collection, and the rebuilds a
        geometric series: together they re-add at most 4/3 as many vectors as it holds."""
        return self.trained_on > 0 and rows > RETRAIN_GROWTH * self.trained_on

    def search(self, queries: np.ndarray, depth: int, allowed: np.ndarray | None = None,
               vectors_of: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Inner products and row offsets ``[T, depth]``; offset -1 where fewer were found.
        With ``allowed`` (row offsets, ascending) only those rows are searched, exactly, so
        ``depth`` of them come back whenever that many are allowed: an exact index skips the
        others with an ID selector; an approximate one (whose probed lists or graph walk could
        hold too few of them) scores ``vectors_of(allowed)`` by brute force."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is None:
            if self.factory == EXACT and len(queries) >= MATMUL_QUERIES and self.index.ntotal:
                return _flat_matmul(self.index, queries, depth)
            return self.index.search(queries, depth)
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        if self.factory == EXACT or vectors_of is None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            return self.index.search(queries, depth, params=params)
        inner = queries @ np.ascontiguousarray(vectors_of(allowed), dtype=np.float32).T
        found = min(depth, len(allowed))
        top = np.argsort(-inner, axis=1, kind="stable")[:, :found]
        scores = np.full((len(queries), depth), -np.inf, dtype=np.float32)
        labels = np.full((len(queries), depth), -1, dtype=np.int64)
        scores[:, :found] = np.take_along_axis(inner, top, axis=1)
        labels[:, :found] = allowed[top]
        return scores, labels


def _flat_matmul(index: faiss.Index, queries: np.ndarray, depth: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """An exact index searched as one matrix product over its stored vectors (a view, no
    copy) and a top-k: for a batch of queries several times faster than FAISS's flat search
    on one thread (116 against 32 ms for 100 queries over 10k x 512, ``docs/benchmarks.md``)."""
    import torch

    n = index.ntotal
    vectors = torch.from_numpy(faiss.rev_swig_ptr(index.get_xb(), n * index.d).reshape(n, index.d))
    found = min(depth, n)
    # past the rows held: label -1 and FAISS's own filler score
    scores = np.full((len(queries), depth), np.finfo(np.float32).min, dtype=np.float32)
    labels = np.full((len(queries), depth), -1, dtype=np.int64)
    step = max(1, MATMUL_FLOATS // n)  # queries per product: its matrix stays ~256 MB
    for start in range(0, len(queries), step):
        inner = torch.from_numpy(queries[start:start + step]) @ vectors.T
        top = torch.topk(inner, found, dim=1)
        scores[start:start + step, :found] = top.values.numpy()
        labels[start:start + step, :found] = top.indices.numpy()
    return scores, labels


def check_factory(factory: str, dim: int, params: str = "") -> None:
    """Fail early, with the user's string in the message, on a factory FAISS cannot build."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise EercfError(f"invalid FAISS index factory {factory!r}: {_reason(err)}") from err
    _set_params(index, params)


def _reason(err: Exception) -> str:
    """FAISS's message without its ``Error in <function> at <file>:<line>:`` preamble."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return re.sub(r"^Error in .*? at \S+:\d+: (\S+::\S+:)?", "", lines[-1]).strip()


def _set_params(index: faiss.Index, params: str) -> None:
    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(index, params)
        except RuntimeError as err:
            raise EercfError(f"invalid FAISS search parameters {params!r}: {_reason(err)}") from err


def build(vectors: np.ndarray, factory: str, params: str, version: int) -> Stage1:
    """Build ``factory`` over ``vectors``; a factory that needs training falls back to exact
    search while the collection is too small to train it (it is retried on the next change)."""
    dim = vectors.shape[1]
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    built, trained_on = factory, 0
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        # an IVF's lists are trained once and then only extended, so they wait for a sample
        # that can place them (FAISS's k-means warns below 39 points a centroid)
        needed = MIN_TRAIN_PER_LIST * ivf.nlist if ivf is not None else 0
        reason = None
        if len(vectors) < needed:
            reason = f"{ivf.nlist} lists need {needed}"
        else:
            try:
                index.train(vectors)
                trained_on = len(vectors)
            except RuntimeError as err:
                reason = _reason(err)
        if reason is not None:
            log.info("%d videos are too few to train FAISS %r (%s): using exact search for now",
                     len(vectors), factory, reason)
            index, built = faiss.index_factory(dim, EXACT, faiss.METRIC_INNER_PRODUCT), EXACT
    index.add(vectors)
    if built == factory:
        _set_params(index, params)
    return Stage1(index, version, built, trained_on)


def extend(stage1: Stage1, vectors: np.ndarray, version: int) -> Stage1:
    """Append rows (new offsets continue the old ones, as Lance appends do)."""
    stage1.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return Stage1(stage1.index, version, stage1.factory, stage1.trained_on)


def after_append(previous: Stage1, vectors: np.ndarray, version: int, factory: str,
                 where: object) -> Stage1 | None:
    """``previous`` extended by the rows one append committed as ``version``, or None when it
    must be rebuilt from the store instead: someone else committed in between, the factory
    changed (or can now be trained), or the collection has outgrown its training sample."""
    rows = int(previous.index.ntotal) + len(vectors)
    if previous.outgrown(rows):
        log.info("stage 1 of %s: %d videos, over %dx the %d its %s was trained on: training "
                 "it again", where, rows, RETRAIN_GROWTH, previous.trained_on, previous.factory)
        return None
    if version != previous.version + 1 or previous.factory != factory:
        return None
    return extend(previous, vectors, version)


def bytes_per_vector(stage1: Stage1, dim: int) -> int:
    """What stage 1 holds per video in memory (its serialised size over its rows; an empty
    exact index: one fp32 vector)."""
    if stage1.index.ntotal == 0:
        return 4 * dim
    return round(len(faiss.serialize_index(stage1.index)) / stage1.index.ntotal)


def save(location: Location | Path, stage1: Stage1) -> None:
    """Write the index under a name of its version (never rewritten), then the stamp naming
    it (one atomic write); a reader that loses the race sees a stale stamp and rebuilds in
    memory. In a folder the older files are dropped; on object storage they stay (a replica
    may still be reading one) until ``eercf index --reindex`` cleans old versions."""
    location = Location.of(location)
    name = f"stage1-v{stage1.version}.faiss"
    data = faiss.serialize_index(stage1.index).tobytes()
    location.write_bytes(name, data)
    stamp = {"lance_version": stage1.version, "rows": int(stage1.index.ntotal),
             "dim": int(stage1.index.d), "factory": stage1.factory, "file": name,
             "sha256": hashlib.sha256(data).hexdigest(), "trained_on": stage1.trained_on}
    location.write_bytes(STAMP, json.dumps(stamp, indent=1).encode())
    if location.local is not None:
        for old in location.names("stage1-v*.faiss"):
            if old != name:
                location.delete(old)


def drop_older(location: Location, keep_from: int) -> None:
    """Delete the stage-1 files of versions before ``keep_from``."""
    for old in location.names("stage1-v*.faiss"):
        match = re.fullmatch(r"stage1-v(\d+)\.faiss", old)
        if match and int(match.group(1)) < keep_from:
            location.delete(old)


def load(location: Location | Path, version: int, rows: int, dim: int, params: str
         ) -> tuple[Stage1 | None, str]:
    """The saved index if it matches Lance ``version`` with ``rows`` rows of ``dim``; else
    ``None`` and why (missing, stale or corrupt)."""
    location = Location.of(location)
    try:
        stamp = json.loads(location.read_bytes(STAMP))
        name, expected_sha = stamp["file"], stamp["sha256"]
        built_from, factory = int(stamp["lance_version"]), stamp["factory"]
    except FileNotFoundError:
        return None, "missing"
    except (OSError, EercfError, ValueError, KeyError, TypeError) as err:
        return None, f"corrupt stamp ({err})"
    if built_from != version:
        return None, f"stale (built from Lance version {built_from}, the store is at {version})"
    try:
        data = location.read_bytes(name)
    except (OSError, EercfError):
        return None, f"missing ({name})"
    if hashlib.sha256(data).hexdigest() != expected_sha:
        return None, f"corrupt ({name} does not match its checksum)"
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as err:
        return None, f"corrupt ({_reason(err)})"
    if index.ntotal != rows or index.d != dim:
        return None, f"corrupt ({index.ntotal} vectors of {index.d}-d for {rows} rows of {dim}-d)"
    if factory != EXACT:
        _set_params(index, params)
    # a stamp from before training sizes were kept: count the rows it holds as the sample
    trained_on = stamp.get("trained_on")
    if not isinstance(trained_on, int):
        trained = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained
        trained_on = 0 if trained else int(index.ntotal)
    return Stage1(index, version, factory, trained_on), ""
