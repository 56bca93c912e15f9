"""Re-coding a feature store: train a codebook from a sample of the collection, and rewrite every
row with its patches stored as a codec says (``eercf index --reindex --codec``). The rewrite is
one Lance commit (an overwrite streamed in batches of rows), so a crash leaves the previous
version whole, and searches pinned to it go on reading it."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator, Sequence

import lance
import numpy as np
import pyarrow as pa

from . import codecs, store

if TYPE_CHECKING:
    from ..model import VideoFeatures
    from .location import Location

log = logging.getLogger(__name__)

CODEBOOK_KEY = b"eercf.codebook"         # schema metadata of a pq store: codebook file name
CODEBOOK_SHA_KEY = b"eercf.codebook_sha256"
BATCH_ROWS = 256


def read_full(dataset: lance.LanceDataset, offsets: Sequence[int]
              ) -> tuple["VideoFeatures", store.Rows]:
    """Every feature of the rows at ``offsets`` with their exact patches (from the blob of a
    pq store), and their information."""
    if not store.is_coded(dataset.schema):
        features, rows = store.take_features(dataset, offsets)
        return features, rows
    features, _, rows = store.take_hot(dataset, offsets)
    dim, frames, patches = store.dims(dataset.schema)
    exact = store.read_whole(dataset, offsets, frames * patches)
    features.patches = exact.reshape(len(offsets), frames, patches, dim).clone()
    return features, rows


def codebook_of(dataset: lance.LanceDataset) -> tuple[str, str] | None:
    """(file name, sha256) of the codebook a pq store was written with; None for exact."""
    meta = dataset.schema.metadata or {}
    if CODEBOOK_KEY not in meta:
        return None
    return meta[CODEBOOK_KEY].decode(), meta[CODEBOOK_SHA_KEY].decode()


def train(dataset: lance.LanceDataset) -> codecs.PQCodec | None:
    """A pq codebook trained on a sample of the store's patches; None (logged) when the
    collection holds fewer patch vectors than a codebook needs."""
    n = dataset.count_rows()
    _, frames, patches = store.dims(dataset.schema)
    rows = codecs.sample_rows(n, frames * patches)
    parts, masks = [], []
    for start in range(0, len(rows), BATCH_ROWS):
        features, _ = read_full(dataset, rows[start:start + BATCH_ROWS])
        parts.append(features.patches.float().numpy())
        masks.append(features.mask.numpy())
    if not parts:
        return None
    sample = codecs.training_sample(np.concatenate(parts), np.concatenate(masks))
    if len(sample) < codecs.MIN_TRAIN_VECTORS:
        log.warning("%d videos hold %d patch vectors; a pq codebook needs %d: the store stays "
                    "exact (eercf index --reindex --codec pq once it has more)", n,
                    len(sample), codecs.MIN_TRAIN_VECTORS)
        return None
    return codecs.PQCodec.train(sample)


def rewrite(dataset: lance.LanceDataset, location: "Location", codec: codecs.PQCodec | None
            ) -> lance.LanceDataset:
    """A new version of the index's store (at ``location``) holding every row of ``dataset``
    (in order) with its patches exact (``codec`` None) or as ``codec``'s codes plus the exact
    blob; the codebook is saved beside the store first and named in the new version's schema."""
    dim, frames, patches = store.dims(dataset.schema)
    target = store.schema(dim, frames, patches, codec.m if codec else 0)
    if codec is not None:
        codebook = codec.save(location)
        target = target.with_metadata({**(target.metadata or {}), CODEBOOK_KEY: codebook[0].encode(),
                                       CODEBOOK_SHA_KEY: codebook[1].encode()})
    n = dataset.count_rows()

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, n, BATCH_ROWS):
            offsets = list(range(start, min(n, start + BATCH_ROWS)))
            features, rows = read_full(dataset, offsets)
            table = store.to_table(target, rows.ids, rows.uris, rows.durations,
                                   list(rows.timestamps), features, rows.metadata, codec,
                                   spans=rows.spans)
            yield from table.to_batches()

    reader = pa.RecordBatchReader.from_batches(target, batches())
    return lance.write_dataset(reader, location.join(store.DATASET), schema=target,
                               mode="overwrite", storage_options=location.options or None)


def apply(dataset: lance.LanceDataset, location: "Location", chosen: str, retrain: bool) -> bool:
    """Re-code the store (at ``location``) to the ``chosen`` codec when it is not held so yet
    (or, with ``retrain``, a pq store with a freshly trained codebook). True when a new version
    was written; a pq codebook that cannot be trained yet (too few patches) writes nothing."""
    coded = store.is_coded(dataset.schema)
    if chosen == "exact":
        if not coded:
            return False
        rewrite(dataset, location, None)
        return True
    if coded and not retrain:
        return False
    codec = train(dataset)
    if codec is None:
        return False
    rewrite(dataset, location, codec)
    return True
