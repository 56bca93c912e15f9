"""Retrieval metrics against the standard definitions, on hand-made and random matrices."""
import numpy as np
import pytest
import torch

from eercf.errors import EercfError
from eercf.evaluation.metrics import (apply_dual_softmax, match_ranks, metrics_from_ranks,
                                      multi_caption_metrics, retrieval_metrics)


def pessimistic_sort_rank(scores, positive):
    """Reference: sort items by descending score, a match placed after every item it ties
    with; the rank is the 1-based position of the first match."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], bool(positive[j])))
    return 1 + next(pos for pos, j in enumerate(order) if positive[j])


def field_metrics(ranks):
    ranks = np.asarray(ranks, dtype=float)
    return {"R1": 100 * np.mean(ranks <= 1), "R5": 100 * np.mean(ranks <= 5),
            "R10": 100 * np.mean(ranks <= 10), "R50": 100 * np.mean(ranks <= 50),
            "MdR": np.median(ranks), "MnR": np.mean(ranks)}


def test_hand_made_matrix():
    sim = [[0.9, 0.1, 0.2],
           [0.5, 0.4, 0.6],
           [0.1, 0.2, 0.3]]
    m = retrieval_metrics(np.array(sim))
    assert m["R1"] == pytest.approx(200 / 3)
    assert m["R5"] == m["R10"] == m["R50"] == 100.0
    assert m["MdR"] == 1.0
    assert m["MnR"] == pytest.approx(5 / 3)
    assert set(m) == {"R1", "R5", "R10", "R50", "MdR", "MnR"}


def test_matches_clip4clip_style_argsort_without_ties():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(60, 60))
    sx = np.sort(-sim, axis=1)
    ind = np.where(sx - (-np.diag(sim))[:, None] == 0)[1]  # the field's compute_metrics
    expected = field_metrics(ind + 1)
    got = retrieval_metrics(torch.from_numpy(sim))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_ties_count_against_the_query():
    sim = torch.tensor([[0.5, 0.5, 0.1],
                        [0.2, 0.7, 0.7],
                        [0.3, 0.3, 0.3]])
    assert match_ranks(sim, torch.eye(3, dtype=torch.bool)).tolist() == [2, 2, 3]


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_constant_matrix_gives_the_worst_rank(n):
    m = retrieval_metrics(torch.zeros(n, n))
    assert m["MdR"] == m["MnR"] == float(n)
    assert m["R1"] == (100.0 if n == 1 else 0.0)


def test_query_items_and_random_ties_against_reference():
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 4, size=(40, 25)).astype(np.float32)  # many ties
    items = rng.integers(0, 25, size=40)
    positive = np.zeros_like(sim, dtype=bool)
    positive[np.arange(40), items] = True
    expected = field_metrics([pessimistic_sort_rank(s, p) for s, p in zip(sim, positive)])
    got = retrieval_metrics(sim, items)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)


def test_several_captions_per_video_hand_made():
    # 5 captions, 3 videos; captions 0,1 -> video 0, caption 2 -> video 1, captions 3,4 -> video 2
    sim = torch.tensor([[0.9, 0.2, 0.1],
                        [0.1, 0.8, 0.3],
                        [0.4, 0.6, 0.5],
                        [0.2, 0.3, 0.3],
                        [0.0, 0.1, 0.7]])
    caption_video = [0, 0, 1, 2, 2]
    out = multi_caption_metrics(sim, caption_video)
    # t2v ranks: c0 1, c1 3, c2 1, c3 2 (its tie with video 1 counts against), c4 1
    assert out["t2v"] == pytest.approx(field_metrics([1, 3, 1, 2, 1]))
    # v2t: video 0 column [.9 .1 .4 .2 0] -> own best c0 rank 1;
    # video 1 column [.2 .8 .6 .3 .1] -> own c2 (0.6) behind c1 -> rank 2;
    # video 2 column [.1 .3 .5 .3 .7] -> own best c4 (0.7) rank 1
    assert out["v2t"] == pytest.approx(field_metrics([1, 2, 1]))


def test_several_captions_per_video_random_against_reference():
    rng = np.random.default_rng(2)
    n_videos, n_captions = 12, 50
    caption_video = np.concatenate([np.arange(n_videos), rng.integers(0, n_videos, n_captions - n_videos)])
    sim = rng.integers(0, 5, size=(n_captions, n_videos)).astype(np.float64)
    positive = caption_video[:, None] == np.arange(n_videos)[None]
    t2v = [pessimistic_sort_rank(sim[c], positive[c]) for c in range(n_captions)]
    v2t = [pessimistic_sort_rank(sim[:, v], positive[:, v]) for v in range(n_videos)]
    out = multi_caption_metrics(sim, caption_video)
    assert out["t2v"] == pytest.approx(field_metrics(t2v))
    assert out["v2t"] == pytest.approx(field_metrics(v2t))


def test_video_without_captions_is_a_gallery_item_not_a_query():
    sim = torch.tensor([[0.9, 0.95], [0.8, 0.1]])  # video 1 has no caption
    out = multi_caption_metrics(sim, [0, 0])
    assert out["t2v"]["MnR"] == pytest.approx(1.5)
    assert out["v2t"]["MnR"] == 1.0  # only video 0 is a query


def test_promoted_items_rank_above_the_rest():
    scores = torch.tensor([[5.0, 1.0, 9.0, 2.0],
                           [5.0, 1.0, 9.0, 2.0]])
    promoted = torch.tensor([[False, True, False, True]] * 2)
    positive = torch.tensor([[True, False, False, False],    # not promoted: behind both candidates
                             [False, True, False, False]])   # promoted: behind candidate 3 only
    # query 0: order 3, 1 (promoted, by score), then 2, 0 -> rank 4
    assert match_ranks(scores, positive, promoted).tolist() == [4, 2]


def test_metrics_from_ranks_even_count_median_is_the_mean_of_the_middle_two():
    assert metrics_from_ranks([1, 2, 3, 10])["MdR"] == 2.5


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(EercfError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))
    with pytest.raises(EercfError, match="caption_video"):
        multi_caption_metrics(torch.zeros(2, 2), [0, 5])
    with pytest.raises(EercfError, match="query_items"):
        retrieval_metrics(torch.zeros(3, 2))


def test_dual_softmax_is_normalised_over_queries():
    sim = torch.tensor([[4.0, 0.0], [3.0, 2.5]])  # item 0 is a hub every query likes
    out = apply_dual_softmax(sim)
    assert torch.allclose(out, sim * torch.softmax(sim, dim=0))
    assert retrieval_metrics(sim)["R1"] == 50.0
    assert retrieval_metrics(out)["R1"] == 100.0
