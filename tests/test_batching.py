"""Batches of similar videos: caption vectors, neighbours, groups, and the sampler using them."""
import csv

import numpy as np
import pytest

from conftest import SHARED_DATA
from eercf.data.batching import caption_neighbours, caption_vectors, similar_groups
from eercf.data.loader import EpochSampler
from eercf.errors import EercfError

DATA = SHARED_DATA / "msrvtt_sample"

# Four themes, three videos each: a video's nearest neighbours are the other two of its theme.
THEMES = ("a red circle moves left {}", "a man is cooking pasta in a kitchen {}",
          "two dogs run on the beach {}", "a car drives through the city at night {}")
VIDEOS = [[THEMES[t].format(w), f"{THEMES[t].format(w)} slowly"]
          for t in range(4) for w in ("today", "again", "quickly")]


def test_caption_vectors_are_unit_and_stable():
    a, b = caption_vectors(VIDEOS), caption_vectors(VIDEOS)
    assert a.shape == (12, 1024) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(caption_vectors([[""]]), 0.0)  # no words: a zero vector, not NaN


def test_neighbours_find_the_same_theme():
    nb = caption_neighbours(VIDEOS, k=2)
    assert nb.shape == (12, 2)
    for video in range(12):
        assert video not in nb[video]
        assert set(nb[video]) == {video // 3 * 3 + j for j in range(3)} - {video}
    assert caption_neighbours([["only one"]], k=4).shape == (1, 0)


def test_groups_partition_and_follow_neighbours():
    nb = caption_neighbours(VIDEOS, k=4)
    groups = similar_groups(nb, 3, np.random.default_rng(0))
    assert sorted(i for g in groups for i in g) == list(range(12))
    assert all(len({i // 3 for i in g}) == 1 for g in groups if len(g) == 3)
    assert max(len(g) for g in groups) == 3
    assert similar_groups(nb, 3, np.random.default_rng(0)) == groups


def test_grouped_sampler_keeps_groups_in_batches_and_resumes():
    nb = caption_neighbours(VIDEOS, k=4)
    sampler = EpochSampler(12, seed=2, neighbours=nb, group_size=3)
    order = list(sampler)
    assert sorted(order) == list(range(12))
    # each theme sits in a run of 3, so batches of 6 hold two whole themes
    runs = [order[i:i + 3] for i in range(0, 12, 3)]
    assert sum(len({i // 3 for i in run}) == 1 for run in runs) >= 3
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != order
    resumed = EpochSampler(12, seed=0, neighbours=nb, group_size=3)
    resumed.load_state_dict(sampler.state_dict(consumed=5))
    assert list(resumed) == epoch1[5:]
    # two processes: the union of their first b/2 items is the first b items of the order
    shares = [list(EpochSampler(12, seed=2, num_replicas=2, rank=r, neighbours=nb,
                                group_size=3)) for r in range(2)]
    assert sorted(shares[0][:3] + shares[1][:3]) == sorted(order[:6])
    with pytest.raises(EercfError, match="neighbours cover 12 items"):
        EpochSampler(13, neighbours=nb, group_size=3)


@pytest.mark.needs_shared
def test_neighbours_on_real_msrvtt_captions():
    with open(DATA / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        captions = [[row["sentence"]] for row in csv.DictReader(f)]  # 1,000 real captions
    nb = caption_neighbours(captions, k=8)
    vectors = caption_vectors(captions)
    n = len(captions)
    mean_nn = np.mean([vectors[i] @ vectors[nb[i, 0]] for i in range(n)])
    random_pair = np.mean([vectors[i] @ vectors[(i + 1) % n] for i in range(n)])
    assert n == 1000 and mean_nn > random_pair + 0.2
    stop = {"a", "an", "the", "is", "are", "of", "and", "in", "on", "to", "with"}
    words = [set(c[0].lower().split()) - stop for c in captions]
    share = lambda j: np.mean([bool(words[i] & words[int(j[i])]) for i in range(n)])
    assert share(nb[:, 0]) > share(np.roll(np.arange(n), 1)) + 0.3  # vs unrelated pairs
