"""Fusion weights fitted on a validation set (issue 12): the fast ranks agree with the
evaluator's, the fit finds the informative level, never goes below stage 1, and the fitted
weights become what search and eval use by default, without touching the index's fingerprint."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import eercf
from eercf.evaluation.calibrate import apply_fitted, fit_fusion, level_scores, ranks_of
from eercf.evaluation.evaluator import EncodedSet, default_modes, score_modes, two_stage_scores
from eercf.evaluation.metrics import match_ranks
from eercf.index import model_fingerprint
from eercf.model import EERCF, LEVELS, VideoFeatures
from eercf.model.config import get_model_config

N, FRAMES, PATCHES, DIM = 40, 12, 16, 128


def unit(*shape, generator):
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1)


def encoded_set(text, video, frames, patches) -> EncodedSet:
    mask = torch.ones(len(video), FRAMES, dtype=torch.bool)
    features = VideoFeatures(video, frames, frames.clone(), patches, mask)
    return EncodedSet(text=text, caption_video=torch.arange(len(text)), videos=features,
                      video_ids=[f"v{i}" for i in range(len(video))],
                      captions=[f"c{i}" for i in range(len(text))])


@pytest.fixture()
def model() -> EERCF:
    torch.manual_seed(0)
    return EERCF(get_model_config("tiny")).eval()


def test_fast_ranks_equal_the_evaluators_two_stage_ranks(model):
    g = torch.Generator().manual_seed(1)
    text = unit(N, DIM, generator=g)
    data = encoded_set(text, F.normalize(text + 1.5 * unit(N, DIM, generator=g), dim=-1),
                       unit(N, FRAMES, DIM, generator=g), unit(N, FRAMES, PATCHES, DIM, generator=g))
    candidates, scores = level_scores(model, data.text, data.videos, 20)
    weights = {"video": 0.5, "frame_weak": 0.8, "frame_strong": 0.2, "patch_weak": 0.2,
               "patch_strong": 0.0}
    for k in (5, 20):
        with torch.inference_mode():
            sim, promoted = two_stage_scores(model, data.text, data.videos.as_stored(), k, weights)
        expected = match_ranks(sim, F.one_hot(data.caption_video, N).bool(), promoted)
        fast = ranks_of(candidates, scores, data.caption_video.numpy(), weights, k)
        inside = fast > 0  # past the depth of 20 the fast ranks only say "not found"
        assert fast[inside].tolist() == expected[torch.from_numpy(inside)].tolist()
        assert (expected[torch.from_numpy(~inside)] > 20).all()


def test_the_fit_finds_the_level_that_tells_videos_apart(model):
    """Every video vector alike (stage 1 is blind), each caption shown whole in one frame:
    the fitted weights lean on the frame level and retrieve what stage 1 cannot."""
    g = torch.Generator().manual_seed(2)
    text = unit(N, DIM, generator=g)
    frames = unit(N, FRAMES, DIM, generator=g)
    frames[:, 3] = text
    video = F.normalize(torch.ones(N, DIM), dim=-1)
    fitted = fit_fusion(model, encoded_set(text, video, frames, unit(N, FRAMES, PATCHES, DIM, generator=g)))
    v = fitted["validation"]
    assert v["stage1"]["R1"] <= 100 / N  # ties count against the query
    assert v["fitted"]["R1"] == 100.0
    assert fitted["weights"]["frame_weak"] > 0 and set(fitted["weights"]) == set(LEVELS)
    # the paper's weights already do it: nothing beats them by more than noise, so they stay
    assert v["paper_kept"] and fitted["weights"] == model.fusion_weights(paper=True)


def test_the_fit_never_goes_below_stage_1(model):
    """Video vectors that say it all, frames that mislead (each caption shown whole in a frame
    of the next video): the paper's weights follow the frames, the fit keeps stage 1's R@1."""
    g = torch.Generator().manual_seed(3)
    text = unit(N, DIM, generator=g)
    video = F.normalize(text + 0.6 * unit(N, DIM, generator=g), dim=-1)
    frames = unit(N, FRAMES, DIM, generator=g)
    frames[:, 5] = text.roll(1, dims=0)  # video i+1 shows caption i
    fitted = fit_fusion(model, encoded_set(text, video, frames,
                                           unit(N, FRAMES, PATCHES, DIM, generator=g)))
    v = fitted["validation"]
    assert v["stage1"]["R1"] == 100.0 and v["paper"]["R1"] < 50.0
    assert v["fitted"]["R1"] == 100.0 and not v["paper_kept"]


def test_fitted_weights_are_the_default_everywhere_and_keep_the_fingerprint(model):
    g = torch.Generator().manual_seed(4)
    text = unit(N, DIM, generator=g)
    data = encoded_set(text, F.normalize(text + unit(N, DIM, generator=g), dim=-1),
                       unit(N, FRAMES, DIM, generator=g), unit(N, FRAMES, PATCHES, DIM, generator=g))
    before = model_fingerprint(model)
    paper = model.fusion_weights()
    assert default_modes(model) == ["video", "two_stage", "all_pairs"]
    fitted = {"weights": {"video": 1.0, "frame_weak": 0.0, "frame_strong": 0.0, "patch_weak": 0.4,
                          "patch_strong": 0.0}, "topk": 10, "validation": {}}
    apply_fitted(model, fitted)
    assert model.fusion_weights() == fitted["weights"] and model.default_topk() == 10
    assert model.fusion_weights(paper=True) == paper and model.default_topk(paper=True) == 50
    assert model.fusion_weights({"video": 0.0})["video"] == 0.0
    assert model_fingerprint(model) == before  # an index built before calibration still fits
    results = score_modes(model, data.text, data.caption_video, data.videos)
    assert list(results) == ["video", "two_stage", "two_stage_paper", "all_pairs"]
    assert results["two_stage"]["topk"] == 10 and results["two_stage_paper"]["topk"] == 50
    assert results["two_stage"]["weights"] == fitted["weights"]


def test_calibrate_command_writes_the_weights_into_a_copy(tmp_path, capsys):
    from eercf.cli import main
    from eercf.data.datasets import load_dataset
    from eercf.model.tokenizer import CLIPTokenizer
    from eercf.synthetic import make_synthetic

    make_synthetic(tmp_path / "data", videos=12, seed=1, progress=False)
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    captions = [c for r in load_dataset("msrvtt", tmp_path / "data", "train") for c in r.captions]
    model.tokenizer = CLIPTokenizer.train(captions, 2048)
    eercf.save_model(model, tmp_path / "ckpt")
    args = ["calibrate", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "data"),
            "--fraction", "1", "--workers", "0", "--out", str(tmp_path / "fitted"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["validation"]["videos"] == 10 and out["topk"] in (10, 20, 50, 100)
    calibrated = eercf.load_model(tmp_path / "fitted")
    assert calibrated.config["eercf"]["fitted"]["weights"] == out["weights"]
    assert "fitted" not in eercf.load_model(tmp_path / "ckpt").config["eercf"]
    assert main(["calibrate", "--checkpoint", "ViT-B-32", "--data", str(tmp_path / "data")]) == 2
