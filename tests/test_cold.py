"""The cold tier read through memory maps of Lance's blob files: the same bytes as Lance's blob
API, or no map at all."""
from __future__ import annotations

import logging

import numpy as np
import torch

from eercf.index import cold, store
from eercf.index.cold import MappedCold
from eercf.index.hot import HotTier
from test_codecs import add, clustered_features, coded, queries  # noqa: F401  (fixtures)
from test_index import model  # noqa: F401


def whole(dataset, offsets: np.ndarray) -> torch.Tensor:
    """Every patch of the rows at ``offsets``, read through Lance: ``[rows, F*P, D]``."""
    _, frames, per_frame = store.dims(dataset.schema)
    return store.read_whole(dataset, offsets, frames * per_frame)


def test_mapped_reads_equal_lance_reads(coded):
    index, _ = coded
    dataset = index.snapshot().dataset
    mapped = MappedCold.open(dataset)
    assert mapped is not None and len(mapped) == dataset.count_rows()
    _, frames, per_frame = store.dims(dataset.schema)
    offsets = np.array([0, 3, 34, 35, 59])  # both commits' fragments, first and last rows
    rows = mapped.whole_rows(offsets, frames * per_frame)
    assert [(row.shape, row.dtype) for row in rows] == [
        ((frames * per_frame, mapped.dim), torch.float16)] * len(offsets)
    torch.testing.assert_close(torch.stack(rows), whole(dataset, offsets), rtol=0, atol=0)
    assert mapped.whole_rows(offsets[:0], frames * per_frame) == []


def test_the_held_map_follows_appends(coded, model):
    index, _ = coded
    held = HotTier.load(index.snapshot().dataset)
    assert held.cold is not None
    add(index, [f"c{i}" for i in range(7)], clustered_features(7, 4))
    dataset = index.snapshot().dataset
    refreshed = held.refreshed(dataset)
    assert refreshed.cold is not None and len(refreshed.cold) == dataset.count_rows() == 67
    _, frames, per_frame = store.dims(dataset.schema)
    offsets = np.array([1, 40, 60, 66])
    rows = refreshed.read_whole(dataset, offsets, frames * per_frame)
    torch.testing.assert_close(torch.stack(rows), whole(dataset, offsets), rtol=0, atol=0)


def test_an_unknown_layout_reads_through_lance(coded, model, monkeypatch, caplog, tmp_path):
    """Blob files under names this code does not know, or a file whose bytes are not the blob
    Lance reads: no map, and searches read through Lance with the same results."""
    index, _ = coded
    dataset = index.snapshot().dataset
    index.hot_in_memory = True
    mapped_results = index.search_encoded(queries(), k=10, topk=20, model=model)
    assert index._hot is not None and index._hot.cold is not None
    monkeypatch.setattr(cold, "SIDECARS", (lambda stem, blob: stem / "elsewhere.bin",))
    with caplog.at_level(logging.INFO, logger="eercf.index.cold"):
        assert MappedCold.open(dataset) is None
    assert "no file of fragment" in caplog.text
    # a file long enough for every blob, but holding other bytes
    decoy = tmp_path / "decoy.bin"
    decoy.write_bytes(np.random.default_rng(0).bytes(8 << 20))
    monkeypatch.setattr(cold, "SIDECARS", (lambda stem, blob: decoy,))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eercf.index.cold"):
        assert MappedCold.open(dataset) is None
    assert "does not read as Lance reads it" in caplog.text
    index._hot = None
    through_lance = index.search_encoded(queries(), k=10, topk=20, model=model)
    assert index._hot is not None and index._hot.cold is None
    assert [[(h.video_id, h.score, h.where) for h in r.hits] for r in through_lance] == \
        [[(h.video_id, h.score, h.where) for h in r.hits] for r in mapped_results]


def test_too_many_files_for_the_open_file_limit_reads_through_lance(coded, monkeypatch, caplog):
    """Each map holds a descriptor: blob files past what the hard limit allows are not mapped;
    under it, the soft limit is raised as far as needed."""
    import resource

    index, _ = coded
    dataset = index.snapshot().dataset
    raised = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: raised.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (64, 64))
    with caplog.at_level(logging.INFO, logger="eercf.index.cold"):
        assert MappedCold.open(dataset) is None
    assert "limit on open files" in caplog.text and not raised
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (64, resource.RLIM_INFINITY))
    assert MappedCold.open(dataset) is not None
    assert raised and raised[0][0] > cold.FD_HEADROOM  # room for the maps and the headroom
