"""The EERCF maths against slow loop-by-loop references written straight from docs/method.md."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eercf.model.config import get_model_config, merge
from eercf.errors import EercfError
from eercf.model import EERCF, LEVELS, LossWeights, VideoFeatures

torch.set_num_threads(1)

SMALL = {
    "name": "test-small", "embed_dim": 32,
    "vision": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 2, "heads": 2},
    "text": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 4},
    "eercf": {"max_frames": 5, "max_words": 8},
}


EVERY_LEVEL = {level: 1.0 for level in LEVELS}


def small_config(**method) -> dict:
    base = get_model_config("tiny")
    return merge(base, merge(SMALL, {"eercf": method}))


@pytest.fixture(scope="module")
def model() -> EERCF:
    torch.manual_seed(0)
    m = EERCF(small_config()).double().eval()
    with torch.no_grad():  # non-trivial learnable weights, so W_g and W_f are really exercised
        m.global_weight.add_(0.1 * torch.randn_like(m.global_weight))
        m.frame_weight.add_(0.1 * torch.randn_like(m.frame_weight))
        m.clip.logit_scale.fill_(math.log(20.0))
    return m


def random_features(n_videos: int, n_frames: int = 5, n_patches: int = 4, dim: int = 32,
                    seed: int = 1, lengths: list[int] | None = None) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.ones(n_videos, n_frames, dtype=torch.bool)
    for v, length in enumerate(lengths or []):
        mask[v, length:] = False
    valid = mask[..., None].double()
    return VideoFeatures(video=unit(n_videos, dim), frames=unit(n_videos, n_frames, dim) * valid,
                         temporal=unit(n_videos, n_frames, dim) * valid,
                         patches=unit(n_videos, n_frames, n_patches, dim) * valid[..., None], mask=mask)


def softmax_list(values: list[float], temperature: float) -> list[float]:
    top = max(values)
    exps = [math.exp((x - top) / temperature) for x in values]
    return [e / sum(exps) for e in exps]


def normalise(vec: torch.Tensor) -> torch.Tensor:
    return vec / math.sqrt(sum(float(x) ** 2 for x in vec))


def reference_scores(model: EERCF, t: torch.Tensor, feats: VideoFeatures, v: int) -> dict[str, float]:
    """docs/method.md, one text and one video, valid frames only, in plain loops."""
    s = math.exp(float(model.clip.logit_scale.detach()))
    w_g, w_f = model.global_weight.detach(), model.frame_weight.detach()
    valid = [i for i in range(feats.mask.shape[1]) if feats.mask[v, i]]
    n_patch = feats.patches.shape[2]
    out = {"video": s * float(t @ w_g @ feats.video[v])}
    a = [float(t @ feats.frames[v, i]) for i in valid]
    gate = softmax_list(a, 0.01)
    full_gate = [0.0] * feats.mask.shape[1]
    for g_i, i in zip(gate, valid):
        full_gate[i] = g_i
    mixed = [sum(full_gate[k] * float(w_f[k, i]) for k in range(len(full_gate))) for i in range(len(full_gate))]
    out["frame_weak"] = s * sum(a_i * mixed[i] for a_i, i in zip(a, valid))
    patches = [feats.patches[v, i, j] for i in valid for j in range(n_patch)]
    b = [float(t @ p) for p in patches]
    pgate = softmax_list(b, 0.01)
    out["patch_weak"] = s * sum(b_j * g_j for b_j, g_j in zip(b, pgate))
    sgate = softmax_list(a, 0.1)
    pooled = sum(g_i * feats.temporal[v, i] for g_i, i in zip(sgate, valid))
    out["frame_strong"] = s * float(t @ normalise(pooled))
    pooled = sum(g_j * p for g_j, p in zip(pgate, patches))
    out["patch_strong"] = s * float(t @ normalise(pooled))
    return out


def assert_close(actual: float, expected: float, rel: float = 1e-5) -> None:
    assert abs(actual - expected) <= rel * max(1.0, abs(expected)), (actual, expected)


@pytest.mark.parametrize("lengths", [None, [5, 3, 1, 4]])
def test_similarity_matches_reference(model: EERCF, lengths) -> None:
    feats = random_features(4, lengths=lengths)
    text = F.normalize(torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), dim=-1)
    with torch.no_grad():
        scores = model.similarity(text, feats)
    for ti in range(3):
        for v in range(4):
            ref = reference_scores(model, text[ti], feats, v)
            for level, value in ref.items():
                assert_close(float(scores[level][ti, v]), value)


def test_similarity_chunking_is_exact(model: EERCF) -> None:
    feats = random_features(7, lengths=[5, 2, 5, 3, 1, 5, 4])
    text = F.normalize(torch.randn(6, 32, dtype=torch.float64), dim=-1)
    whole = model.similarity(text, feats)
    chunked = model.similarity(text, feats, chunk_budget=50)
    for level in whole:
        torch.testing.assert_close(chunked[level], whole[level], rtol=1e-5, atol=1e-5)


def test_candidate_scores_equal_dense_scores(model: EERCF) -> None:
    feats = random_features(6, lengths=[5, 2, 5, 3, 1, 5])
    text = F.normalize(torch.randn(2, 32, dtype=torch.float64), dim=-1)
    dense = model.similarity(text, feats)
    picks = torch.tensor([[4, 0, 2], [1, 5, 3]])
    scores = model.rerank(text, feats.index(picks.flatten()), 3, EVERY_LEVEL)[1]
    for level in dense:
        torch.testing.assert_close(scores[level], dense[level].gather(1, picks), rtol=1e-5, atol=1e-5)
    assert scores["frame_weights"].shape == (2, 3, 5)
    assert scores["patch_weights"].shape == (2, 3, 20)
    # gate weights sum to one over real frames and are zero on padded ones
    torch.testing.assert_close(scores["frame_weights"].sum(-1), torch.ones(2, 3))
    assert float(scores["frame_weights"][0, 0, 1:].abs().sum()) == 0.0  # video 4 has one frame


def reference_loss(model: EERCF, text: torch.Tensor, feats: VideoFeatures,
                   weights: LossWeights = LossWeights()) -> dict[str, float]:
    w = weights.to_dict()
    s = math.exp(float(model.clip.logit_scale.detach()))
    n = text.shape[0]
    dense = [[reference_scores(model, text[i], feats, j) for j in range(n)] for i in range(n)]

    def own_pooled(j: int, level: str) -> torch.Tensor:
        valid = [i for i in range(feats.mask.shape[1]) if feats.mask[j, i]]
        if level == "frame":
            gate = softmax_list([float(text[j] @ feats.frames[j, i]) for i in valid], 0.1)
            return normalise(sum(g * feats.temporal[j, i] for g, i in zip(gate, valid)))
        patches = [feats.patches[j, i, p] for i in valid for p in range(feats.patches.shape[2])]
        gate = softmax_list([float(text[j] @ p) for p in patches], 0.01)
        return normalise(sum(g * p for g, p in zip(gate, patches)))

    vt = [own_pooled(j, "frame") for j in range(n)]
    vp = [own_pooled(j, "patch") for j in range(n)]

    def sym_ce(m: list[list[float]]) -> float:
        rows = sum(-m[i][i] + math.log(sum(math.exp(x) for x in m[i])) for i in range(n)) / n
        cols = sum(-m[i][i] + math.log(sum(math.exp(m[k][i]) for k in range(n))) for i in range(n)) / n
        return (rows + cols) / 2

    weak = [[w["weak_video"] * dense[i][j]["video"] + w["weak_frame"] * dense[i][j]["frame_weak"]
             + w["weak_patch"] * dense[i][j]["patch_weak"] for j in range(n)] for i in range(n)]
    strong = [[w["strong_frame"] * s * float(text[i] @ vt[j]) + w["strong_patch"] * s * float(text[i] @ vp[j])
               for j in range(n)] for i in range(n)]

    def pearson(xs: list[torch.Tensor]) -> float:
        dim = text.shape[1]

        def standardise(rows: list[torch.Tensor]) -> list[list[float]]:
            cols = []
            for d in range(dim):
                vals = [float(r[d]) for r in rows]
                mean = sum(vals) / n
                std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (n - 1))
                cols.append([(x - mean) / std for x in vals])
            return cols
        zt, zx = standardise(list(text)), standardise(xs)
        total = 0.0
        for d in range(dim):
            for e in range(dim):
                c = sum(zt[d][b] * zx[e][b] for b in range(n)) / n
                total += w["pearson_diag"] * (c - 1) ** 2 if d == e else w["pearson_offdiag"] * c ** 2
        return total

    out = {"contrastive_weak": sym_ce(weak), "contrastive_strong": sym_ce(strong),
           "pearson_video": pearson(list(feats.video)), "pearson_frame": pearson(vt),
           "pearson_patch": pearson(vp)}
    out["total"] = (w["weak_weight"] * out["contrastive_weak"] + w["strong_weight"] * out["contrastive_strong"]
                    + w["pearson_weight"] * (w["pearson_video"] * out["pearson_video"]
                                             + w["pearson_frame"] * out["pearson_frame"]
                                             + w["pearson_patch"] * out["pearson_patch"]))
    return out


@pytest.mark.parametrize("lengths", [None, [5, 2, 4, 1, 5, 3]])
def test_loss_matches_reference(model: EERCF, lengths) -> None:
    feats = random_features(6, lengths=lengths, seed=3)
    text = F.normalize(torch.randn(6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), dim=-1)
    loss = model.loss(text, feats)
    ref = reference_loss(model, text, feats)
    assert set(loss) == set(ref)
    for key, value in ref.items():
        assert_close(float(loss[key].detach()), value)


def test_loss_weights_are_configurable() -> None:
    torch.manual_seed(0)
    m = EERCF(small_config()).double()
    weights = LossWeights.from_dict({"strong_patch": 0.5, "pearson_offdiag": 0.02, "pearson_patch": 1.0})
    feats = random_features(5, seed=5)
    text = F.normalize(torch.randn(5, 32, dtype=torch.float64), dim=-1)
    assert_close(float(m.loss(text, feats, weights)["total"].detach()),
                 reference_loss(m, text, feats, weights)["total"])
    with pytest.raises(EercfError, match="unknown loss weight 'strong'"):
        LossWeights.from_dict({"strong": 1.0})


def test_strong_gates_are_detached(model: EERCF) -> None:
    """Raw frame features reach the strong score only through the detached gate: no gradient."""
    feats = random_features(4, seed=6)
    frames = feats.frames.clone().requires_grad_(True)
    temporal = feats.temporal.clone().requires_grad_(True)
    text = F.normalize(torch.randn(4, 32, dtype=torch.float64), dim=-1).requires_grad_(True)
    loss = model.loss(text, VideoFeatures(feats.video, frames, temporal, feats.patches, feats.mask))
    grad_frames, grad_temporal, grad_text = torch.autograd.grad(loss["contrastive_strong"], [frames, temporal, text],
                                                                allow_unused=True)
    assert grad_frames is None or float(grad_frames.abs().max()) == 0.0
    assert float(grad_temporal.abs().max()) > 0
    # the text gradient equals that of the same score with the gate held constant
    with torch.no_grad():
        gate = (torch.einsum("vd,vfd->vf", text, frames) / 0.1).softmax(-1)
    pooled = F.normalize(torch.einsum("vf,vfd->vd", gate, temporal), dim=-1)
    expected = torch.autograd.grad(
        F.cross_entropy(model.logit_scale * text @ pooled.T, torch.arange(4)) / 2
        + F.cross_entropy(model.logit_scale * pooled @ text.T, torch.arange(4)) / 2, text)[0]
    torch.testing.assert_close(grad_text.double(), expected, rtol=1e-4, atol=1e-5)


def test_masked_frames_change_nothing() -> None:
    torch.manual_seed(0)
    m = EERCF(small_config()).eval()
    frames = torch.randn(2, 5, 3, 32, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    other = frames.clone()
    other[0, 3:] = torch.randn(2, 3, 32, 32) * 10
    with torch.no_grad():
        a, b = m.encode_video(frames, mask), m.encode_video(other, mask)
        short = m.encode_video(frames[:1, :3])  # fewer frames than max_frames: padded + masked
    for name in ("video", "frames", "temporal", "patches"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
        torch.testing.assert_close(getattr(short, name)[0], getattr(a, name)[0], rtol=1e-5, atol=1e-6)
    assert short.mask[0].tolist() == [True, True, True, False, False]
    assert float(a.frames[0, 3:].abs().sum()) == 0.0
    text = F.normalize(torch.randn(3, 32), dim=-1)
    sa, sb = m.similarity(text, a), m.similarity(text, b)
    for level in sa:
        torch.testing.assert_close(sa[level], sb[level], rtol=0, atol=0)


def test_encode_shapes_and_norms() -> None:
    torch.manual_seed(0)
    m = EERCF(small_config()).eval()
    with torch.no_grad():
        feats = m.encode_video(torch.randn(3, 5, 3, 32, 32))
        text = m.encode_text(torch.tensor([[1, 5, 7, 99, 0, 0, 0, 0], [1, 99, 0, 0, 0, 0, 0, 0]]))
    assert feats.video.shape == (3, 32) and feats.frames.shape == (3, 5, 32)
    assert feats.temporal.shape == (3, 5, 32) and feats.patches.shape == (3, 5, 4, 32)
    for t in (feats.video, feats.frames, feats.temporal, feats.patches, text):
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(t.shape[:-1]))
    stored = feats.as_stored()
    assert stored.patches.dtype == torch.float32
    assert torch.equal(stored.patches, feats.patches.half().float())


def test_text_features_ignore_tokens_after_eot() -> None:
    """A caption's feature is the same alone, padded to any length, in a batch with longer
    captions, and with other tokens after its EOT (the causal mask hides them)."""
    torch.manual_seed(0)
    m = EERCF(small_config()).eval()
    batch = torch.tensor([[98, 5, 99, 0, 0, 0, 0, 0], [98, 5, 7, 8, 9, 10, 99, 0]])
    noisy = batch.clone()
    noisy[0, 3:6] = torch.tensor([42, 17, 3])
    with torch.no_grad():
        alone = m.encode_text(batch[:1, :3])
        together = m.encode_text(batch)
        with_noise = m.encode_text(noisy)
        second = m.encode_text(batch[1:])
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_noise, together, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together[1], second[0], rtol=1e-5, atol=1e-6)


def test_temporal_block_initialised_from_text() -> None:
    m = EERCF(small_config())
    for mine, text in zip(m.temporal.resblocks, m.clip.transformer.resblocks):
        for (name, p), q in zip(mine.state_dict().items(), text.state_dict().values()):
            assert torch.equal(p, q), name
    assert torch.equal(m.frame_position_embeddings.weight, m.clip.positional_embedding)
    assert torch.equal(m.global_weight, torch.eye(32)) and torch.equal(m.frame_weight, torch.eye(5))


def test_bad_inputs_get_clear_errors() -> None:
    m = EERCF(small_config())
    with pytest.raises(EercfError, match="max_frames"):
        m.encode_video(torch.zeros(1, 6, 3, 32, 32))
    with pytest.raises(EercfError, match="at least one real frame"):
        m.encode_video(torch.zeros(1, 5, 3, 32, 32), torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(EercfError, match="tokenizer"):
        m.tokenize(["a cat"])
    with pytest.raises(EercfError, match="text width"):
        EERCF(merge(small_config(), {"embed_dim": 16}))
