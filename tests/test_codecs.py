"""The fine store's codecs: a pq codebook trained from the collection selects each candidate's
best patches for exact re-scoring, search through it equals ``eercf eval`` through it, and the
coded store keeps every promise of the exact one (adds, removal, compaction, reopening, a
damaged codebook refused, small collections left exact, format 1 indexes read as before)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eercf.errors import EercfError
from eercf.evaluation.evaluator import eval_codec, two_stage_scores
from eercf.index import MANIFEST, VideoIndex, codecs, store
from eercf.model import VideoFeatures
from test_index import DIM, FRAMES, PATCHES, model  # noqa: F401  (the tiny model fixture)


def clustered_features(n: int, seed: int, short: int = 0) -> VideoFeatures:
    """Unit features whose patches gather around 64 shared directions, as real patch features
    do (random unit vectors have no structure for a codebook to learn)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(64, DIM, generator=torch.Generator().manual_seed(5)), dim=-1)
    mask = torch.ones(n, FRAMES, dtype=torch.bool)
    mask[:short, 4:] = False
    valid = mask[..., None].float()
    pick = torch.randint(0, 64, (n, FRAMES, PATCHES), generator=g)
    patches = F.normalize(centres[pick] + 0.08 * torch.randn(n, FRAMES, PATCHES, DIM, generator=g), dim=-1)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    temporal = unit(n, FRAMES, DIM) * valid
    return VideoFeatures(video=F.normalize(temporal.sum(1), dim=-1), frames=unit(n, FRAMES, DIM) * valid,
                         temporal=temporal, patches=patches * valid[..., None], mask=mask)


def add(index: VideoIndex, ids: list[str], features: VideoFeatures) -> None:
    stamps = [[0.5 + i for i in range(int(m.sum()))] for m in features.mask]
    index.add(ids, [f"/videos/{i}.mp4" for i in ids], [float(FRAMES)] * len(ids), stamps, features)


def queries(n: int = 6, seed: int = 9) -> torch.Tensor:
    """Texts that match some patches more than others (near one of the shared directions)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(64, DIM, generator=torch.Generator().manual_seed(5)), dim=-1)
    return F.normalize(centres[torch.randint(0, 64, (n,), generator=g)]
                       + 0.5 * torch.randn(n, DIM, generator=g), dim=-1)


@pytest.fixture
def coded(tmp_path, model):
    """A pq index of 60 videos added in two commits, then re-coded, and their features."""
    index = VideoIndex.create(tmp_path / "idx", model)
    parts = [clustered_features(35, 1, short=4), clustered_features(25, 2)]
    add(index, [f"a{i}" for i in range(35)], parts[0])
    add(index, [f"b{i}" for i in range(25)], parts[1])
    assert index.stored_codec() == "exact" and index.codec == "pq"
    assert index.apply_codec()
    assert index.stored_codec() == "pq"
    return index, VideoFeatures.cat(parts)


def test_search_through_pq_equals_eval_through_pq(coded, model):
    index, features = coded
    codec = eval_codec(features, "pq")
    stored = index.pq_codec(index.snapshot().dataset)
    np.testing.assert_array_equal(codec.centroids, stored.centroids)  # the same codebook
    text = queries()
    results = index.search_encoded(text, k=10, topk=10, model=model)
    with torch.inference_mode():
        scores, promoted = two_stage_scores(model, text, features.as_stored(), 10, codec=codec)
    ids = index.ids()
    for q, result in enumerate(results):
        rescored = promoted[q].nonzero().flatten()
        expected = rescored[torch.argsort(scores[q, rescored], descending=True)].tolist()
        assert [h.video_id for h in result.hits] == [ids[i] for i in expected]
        got = torch.tensor([h.score for h in result.hits])
        torch.testing.assert_close(got, scores[q, expected], rtol=0, atol=0)  # bit-identical
    assert set(results[0].timings) >= {"stage2_read", "stage2_read_cold"}
    alone = index.search_encoded(text[2:3], k=10, topk=10, model=model)[0]  # no shared reads
    assert [(h.video_id, h.score, h.where) for h in alone.hits] == [
        (h.video_id, h.score, h.where) for h in results[2].hits]
    index.hot_in_memory = True  # the hot tier from memory: the same results
    held = index.search_encoded(text, k=10, topk=10, model=model)
    assert [[(h.video_id, h.score, h.where, h.uri) for h in r.hits] for r in held] == [
        [(h.video_id, h.score, h.where, h.uri) for h in r.hits] for r in results]


def test_pq_keeps_the_exact_ranking_and_where(coded, model, tmp_path):
    """The candidates the codes rank best are scored as the exact codec scores them, bit for
    bit (score, *when*, *where*), and rank above every candidate scored from codes alone."""
    index, features = coded
    exact = VideoIndex.create(tmp_path / "exact", model, codec="exact")
    add(exact, index.ids(), features)
    text = queries(20, seed=3)
    read = codecs.EXACT_CANDIDATES
    got = index.search_encoded(text, k=20, topk=20, model=model, exact_candidates=read)
    want = exact.search_encoded(text, k=20, topk=20, model=model)
    assert np.mean([g.hits[0].video_id == w.hits[0].video_id for g, w in zip(got, want)]) >= 0.9
    for g, w in zip(got, want):
        assert len(g.hits) > read  # some hits are scored from codes
        truth = {h.video_id: h for h in w.hits}  # every candidate, scored exactly
        sharp = g.hits[:read]
        for hit in sharp:
            assert (hit.score, hit.where, hit.moment) == (truth[hit.video_id].score,
                                                          truth[hit.video_id].where,
                                                          truth[hit.video_id].moment)
        assert all(h.score < sharp[-1].score for h in g.hits[read:])
    top = [[h.video_id for h in r.hits[:5]] for r in got]
    assert np.mean([t == [h.video_id for h in w.hits[:5]] for t, w in zip(top, want)]) >= 0.8


def test_every_hit_shown_is_scored_exactly_and_the_width_is_a_choice(coded, model, tmp_path):
    """By default a search reads whole at least its k hits: asked for more hits than
    ``EXACT_CANDIDATES``, every one has the exact codec's score, *when* and *where*. Reading
    all K gives the exact codec's results; reading none, the codes' alone, from the hot tier."""
    index, features = coded
    exact = VideoIndex.create(tmp_path / "exact", model, codec="exact")
    add(exact, index.ids(), features)
    text = queries(8, seed=4)
    k = codecs.EXACT_CANDIDATES + 5
    want = exact.search_encoded(text, k=30, topk=30, model=model)  # every candidate

    def shown(results):
        return [[(h.video_id, h.score, h.where, h.moment) for h in r.hits] for r in results]

    truth = [{h[0]: h for h in r} for r in shown(want)]
    for got in (index.search_encoded(text, k=k, topk=30, model=model),
                [index.search_encoded(t[None], k=k, topk=30, model=model)[0] for t in text]):
        assert all(len(r) == k and all(h == t[h[0]] for h in r)
                   for r, t in zip(shown(got), truth))
    assert shown(index.search_encoded(text, k=30, topk=30, model=model,
                                      exact_candidates=30)) == shown(want)
    codes_only = index.search_encoded(text, k=10, topk=30, model=model, exact_candidates=0)
    assert codes_only[0].timings["stage2_read_cold"] == 0.0
    assert all(h.score is not None and h.where is not None for r in codes_only for h in r.hits)
    assert np.mean([r.hits[0].video_id == w.hits[0].video_id
                    for r, w in zip(codes_only, want)]) >= 0.5
    with pytest.raises(EercfError, match="exact_candidates must be at least 0"):
        index.search_encoded(text, k=10, model=model, exact_candidates=-1)


def test_codes_are_the_nearest_centroids_as_faiss_finds_them():
    """The batched encoder gives FAISS's codes: each sub-vector's nearest centroid, on
    collection-like and on random vectors, across chunk boundaries."""
    import faiss

    features = clustered_features(40, 4)
    codec = codecs.PQCodec.train(codecs.training_sample(features.patches.numpy(),
                                                        features.mask.numpy()))
    pq = faiss.ProductQuantizer(codec.dim, codec.m, codecs.BITS)
    faiss.copy_array_to_vector(codec.centroids.reshape(-1), pq.centroids)
    rng = np.random.default_rng(3)
    for vectors in (features.patches.reshape(-1, DIM).numpy()[:1000],
                    rng.standard_normal((codecs.ENCODE_CHUNK * 3 + 7, DIM)).astype(np.float32)):
        got = codec.encode(vectors)
        assert got.dtype == np.uint8 and got.shape == (len(vectors), codec.m)
        assert (got == pq.compute_codes(np.ascontiguousarray(vectors))).mean() > 0.9999
    assert codec.encode(np.zeros((0, DIM), dtype=np.float32)).shape == (0, codec.m)


def test_codes_point_to_the_frame_of_a_standout_patch():
    """Each video shows the query's subject in one patch of one frame (the video's best patch
    by a margin beyond a code's error): the frames the codes select hold it."""
    features = clustered_features(40, 4)
    codec = codecs.PQCodec.train(codecs.training_sample(features.patches.numpy(),
                                                        features.mask.numpy()))
    assert codec.m == DIM // codecs.SUBVECTOR
    g = torch.Generator().manual_seed(2)
    real = torch.ones(40, FRAMES, dtype=torch.bool)
    for text in queries(8, seed=11):
        patches = features.patches.clone()
        frame = torch.randint(0, FRAMES, (40,), generator=g)
        cell = torch.randint(0, PATCHES, (40,), generator=g)
        patches[torch.arange(40), frame, cell] = F.normalize(text + 0.03 * torch.randn(40, DIM, generator=g), dim=-1)
        flat = patches.reshape(40, -1, DIM)
        exact = flat @ text
        truth = frame * PATCHES + cell
        top2 = exact.topk(2, dim=1).values
        assert (exact.argmax(1) == truth).all() and (top2[:, 0] - top2[:, 1]).min() > 0.1
        codes = torch.from_numpy(codec.encode(flat.reshape(-1, DIM).numpy())).view(40, -1, codec.m)
        approx, picked = codecs.select(codec, text, codes, real)
        assert picked.shape == (40, codec.frames_read * PATCHES) and (picked.diff(dim=1) > 0).all()
        assert (approx - exact).abs().mean() < 0.05  # a code's error: too coarse to rank by
        assert all(int(truth[c]) in picked[c].tolist() for c in range(40))


def test_adds_removal_compaction_and_reopening_keep_the_coded_store(coded, model):
    index, _ = coded
    add(index, [f"c{i}" for i in range(5)], clustered_features(5, 3))  # encoded with the codebook
    assert len(index) == 65 and index.stored_codec() == "pq"
    index.remove(["a0", "b3"])
    text = queries(3)
    before = [[(h.video_id, h.score) for h in r.hits] for r in index.search_encoded(text, k=8, model=model)]
    index.reindex()  # compaction: rows move, the codes and blobs move with them
    again = VideoIndex.open(index.folder)
    after = [[(h.video_id, h.score) for h in r.hits] for r in again.search_encoded(text, k=8, model=model)]
    assert before == after and "a0" not in again.ids()
    stats = again.stats()
    assert stats["codec"] == "pq" and stats["videos"] == 63
    sizes = store.bytes_per_video(DIM, FRAMES, PATCHES, codes=DIM // codecs.SUBVECTOR)
    assert stats["bytes_per_video"]["hot"] == sizes["hot"] < sizes["cold"] == 2 * FRAMES * PATCHES * DIM


def test_reindex_changes_the_codec_both_ways(coded, model):
    index, _ = coded
    text = queries(3)
    index.reindex(codec="exact")
    assert index.stored_codec() == "exact" and index.codec == "exact"
    exact = [[h.video_id for h in r.hits] for r in index.search_encoded(text, k=5, model=model)]
    index.reindex(codec="pq")
    assert index.stored_codec() == "pq"
    coded_hits = [[h.video_id for h in r.hits] for r in index.search_encoded(text, k=5, model=model)]
    assert np.mean([a[0] == b[0] for a, b in zip(exact, coded_hits)]) >= 2 / 3


def test_a_small_collection_stays_exact_saying_so(tmp_path, model, caplog):
    index = VideoIndex.create(tmp_path / "small", model)
    add(index, ["x", "y"], clustered_features(2, 1))
    assert not index.apply_codec()
    assert "a pq codebook needs" in caplog.text and index.stored_codec() == "exact"
    assert index.search_encoded(queries(1), k=2, model=model)[0].hits


def test_a_damaged_codebook_is_refused(coded, model):
    index, _ = coded
    book = next(index.folder.glob("codebook-*.safetensors"))
    book.write_bytes(book.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(EercfError, match="does not match its checksum"):
        VideoIndex.open(index.folder).search_encoded(queries(1), k=3, model=model)


def test_format_1_indexes_open_and_search_as_exact(tmp_path, model):
    index = VideoIndex.create(tmp_path / "old", model, codec="exact")
    add(index, [f"v{i}" for i in range(6)], clustered_features(6, 1))
    manifest = json.loads((index.folder / MANIFEST).read_text())
    del manifest["codec"]
    (index.folder / MANIFEST).write_text(json.dumps({**manifest, "format": 1}))
    old = VideoIndex.open(index.folder)
    assert old.codec == "exact" and old.stored_codec() == "exact"
    assert len(old.search_encoded(queries(1), k=3, model=model)[0].hits) == 3


def test_stats_from_the_command_line(coded, capsys):
    from eercf.cli import main

    index, _ = coded
    assert main(["index", "--index", str(index.folder), "--stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"videos", "codec", "bytes_per_video"}
    assert stats["codec"] == "pq" and set(stats["bytes_per_video"]) == {"hot", "cold", "stage1"}
    assert main(["index", "--index", str(index.folder), "--stats"]) == 0
    assert "hot" in capsys.readouterr().out
    with pytest.raises(EercfError, match="unknown codec"):
        VideoIndex.create(index.folder.parent / "bad", index.model_info, codec="zip")


def test_hot_tier_in_memory_follows_appends_and_removals(coded, model, monkeypatch):
    """After an append the held hot tier gains the new rows only; after a removal it is read
    again; either way it equals a fresh load, and searches equal the store's."""
    from eercf.index.hot import HotTier

    index, _ = coded
    held = HotTier.load(index.snapshot().dataset)
    add(index, [f"c{i}" for i in range(7)], clustered_features(7, 4))
    loads = []
    real_load = HotTier.load.__func__
    monkeypatch.setattr(HotTier, "load",
                        classmethod(lambda cls, d: loads.append(d.version) or real_load(cls, d)))
    for change in ("append", "remove"):
        dataset = index.snapshot().dataset
        loads.clear()
        refreshed = held.refreshed(dataset)
        assert len(loads) == (0 if change == "append" else 1)  # appends read the new rows only
        fresh = HotTier.load(dataset)
        assert refreshed.version == fresh.version and refreshed.rows.ids == fresh.rows.ids
        torch.testing.assert_close(refreshed.codes, fresh.codes, rtol=0, atol=0)
        torch.testing.assert_close(refreshed.features.temporal, fresh.features.temporal,
                                   rtol=0, atol=0)
        held = refreshed
        index.remove(["a3", "c1"])
    index.hot_in_memory = True
    from_memory = index.search_encoded(queries(), k=10, topk=20, model=model)
    index.hot_in_memory = False
    from_store = index.search_encoded(queries(), k=10, topk=20, model=model)
    assert [[h.video_id for h in r.hits] for r in from_memory] == \
        [[h.video_id for h in r.hits] for r in from_store]
