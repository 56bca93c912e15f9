"""The three evaluation modes on a small random model, and `eercf eval` end to end."""
import json
import shutil

import pytest
import torch

import eercf
import torch.nn.functional as F

import eercf.evaluation.evaluator as ev
from eercf.evaluation.metrics import METRIC_KEYS, match_ranks
from eercf.weights import load_model
from eercf.weights.factory import run_checkpoint
from eercf.model.config import get_model_config
from eercf.model import EERCF, VideoFeatures

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EERCF(get_model_config("tiny")).eval()
    with torch.no_grad():  # a non-identity W_g and W_f, so every term of the formulas is exercised
        m.global_weight.add_(0.05 * torch.randn_like(m.global_weight))
        m.frame_weight.add_(0.05 * torch.randn_like(m.frame_weight))
    return m


def random_features(n_videos: int, dim: int = 128, frames: int = 12, patches: int = 16,
                    seed: int = 0) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n_videos, frames, dtype=torch.bool)
    mask[::3, 9:] = False  # some short videos
    valid = mask[..., None].float()
    unit = lambda *shape: F.normalize(torch.randn(*shape, dim, generator=g), dim=-1)  # noqa: E731
    temporal = unit(n_videos, frames) * valid
    return VideoFeatures(video=F.normalize(temporal.sum(1), dim=-1),
                         frames=unit(n_videos, frames) * valid, temporal=temporal,
                         patches=unit(n_videos, frames, patches) * valid[..., None], mask=mask)


@pytest.fixture(scope="module")
def data():
    n_videos, n_captions = 20, 45
    videos = random_features(n_videos)
    g = torch.Generator().manual_seed(1)
    caption_video = torch.cat([torch.arange(n_videos), torch.randint(0, n_videos, (n_captions - n_videos,), generator=g)])
    # captions near their video's frames, so that the levels disagree and ranks are not trivial
    picked = videos.frames[caption_video, torch.randint(0, 9, (n_captions,), generator=g)]
    text = F.normalize(picked + 1.5 * torch.randn(n_captions, 128, generator=g) / 128 ** 0.5, dim=-1)
    return text, caption_video, videos


def test_two_stage_with_k_equal_to_the_gallery_is_all_pairs(model, data):
    text, caption_video, videos = data
    stored = videos.as_stored()
    with torch.inference_mode():
        scores, promoted = ev.two_stage_scores(model, text, stored, topk=len(videos))
        dense = ev.all_pairs_scores(model, text, stored)
    assert promoted.all()
    torch.testing.assert_close(scores, dense, rtol=1e-5, atol=1e-5)
    out = ev.score_modes(model, text, caption_video, videos, topk=len(text))  # v2t: every caption
    assert out["two_stage"]["t2v"] == out["all_pairs"]["t2v"]
    assert out["two_stage"]["v2t"] == out["all_pairs"]["v2t"]
    assert out["two_stage"]["t2v"] != out["video"]["t2v"]  # the fused score does rank differently


def test_two_stage_with_k_one_is_stage_one(model, data):
    text, caption_video, videos = data
    out = ev.score_modes(model, text, caption_video, videos, topk=1)
    assert out["two_stage"]["t2v"] == out["video"]["t2v"]
    assert out["two_stage"]["v2t"] == out["video"]["v2t"]


def test_two_stage_ranking_is_candidates_by_fused_score_then_the_rest_by_stage1(model, data):
    text, caption_video, videos = data
    stored, k = videos.as_stored(), 5
    with torch.inference_mode():
        stage1 = ev.stage1_scores(model, text, stored)
        dense = ev.all_pairs_scores(model, text, stored)
        scores, promoted = ev.two_stage_scores(model, text, stored, topk=k)
    expected_ranks = []
    for q in range(len(text)):
        top = stage1[q].argsort(descending=True)
        candidates, rest = top[:k], top[k:]
        order = torch.cat([candidates[dense[q, candidates].argsort(descending=True)], rest])
        expected_ranks.append(int((order == caption_video[q]).nonzero()) + 1)
    positive = F.one_hot(caption_video, len(videos)).bool()
    assert match_ranks(scores, positive, promoted).tolist() == expected_ranks
    assert promoted.sum(1).eq(k).all()


def test_two_stage_scores_only_the_k_candidates(model, data, monkeypatch):
    text, caption_video, videos = data
    k = 4
    reranked, paired = [], []
    real_rerank, real_similarity = model.rerank, model.similarity

    def counting_rerank(query, candidates, per_query, weights=None):
        reranked.append((len(query), len(candidates), per_query))
        return real_rerank(query, candidates, per_query, weights)

    def counting_similarity(query, video):
        paired.append((len(query), len(video)))
        return real_similarity(query, video)

    monkeypatch.setattr(model, "rerank", counting_rerank)
    monkeypatch.setattr(model, "similarity", counting_similarity)
    monkeypatch.setattr(ev, "_GATHER_BUDGET", 1)  # one query per chunk: shapes show the work
    out = ev.score_modes(model, text, caption_video, videos, modes=["two_stage"], topk=k)
    assert set(out) == {"two_stage"}
    # t2v: each caption re-scores its k gathered candidate videos through model.rerank
    assert reranked == [(1, k, k)] * len(text)
    # v2t: each video re-scores its k candidate captions, never the whole caption set
    assert paired == [(k, 1)] * len(videos)


def test_score_modes_output_shape_and_dual_softmax(model, data):
    text, caption_video, videos = data
    out = ev.score_modes(model, text, caption_video, videos, topk=10, dual_softmax=True)
    assert list(out) == ["video", "two_stage", "all_pairs", "video+dsl", "all_pairs+dsl"]
    for mode, result in out.items():
        for direction in ("t2v", "v2t"):
            assert set(result[direction]) == set(METRIC_KEYS)
            assert 0.0 <= result[direction]["R1"] <= result[direction]["R5"] <= 100.0
        assert result["seconds"] >= 0.0
        assert result.get("transductive", False) == mode.endswith("+dsl")
    assert out["two_stage"]["topk"] == 10


def test_fusion_weight_overrides_merge_with_the_model_weights(model, data):
    text, caption_video, videos = data
    stored = videos.as_stored()
    with torch.inference_mode():
        levels = model.similarity(text, stored)
        no_patch = ev.all_pairs_scores(model, text, stored, {"patch_weak": 0.0})
    expected = 0.8 * levels["frame_weak"] + 0.2 * levels["frame_strong"] + 0.5 * levels["video"]
    torch.testing.assert_close(no_patch, expected)
    with pytest.raises(ev.EercfError, match="fusion weight 'patch'"):
        ev.score_modes(model, text, caption_video, videos, weights={"patch": 0.0})


def test_score_modes_rejects_bad_settings(model, data):
    text, caption_video, videos = data
    with pytest.raises(ev.EercfError, match="mode"):
        ev.score_modes(model, text, caption_video, videos, modes=["fast"])
    with pytest.raises(ev.EercfError, match="topk"):
        ev.score_modes(model, text, caption_video, videos, topk=0)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """A handful of tiny synthetic MSR-VTT-layout videos and a random tiny checkpoint."""
    from eercf.data.datasets import load_dataset
    from eercf.synthetic import make_synthetic
    from eercf.model.tokenizer import CLIPTokenizer

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    make_synthetic(data, videos=10, seed=0, progress=False)
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    captions = [c for r in load_dataset("msrvtt", data, "train") for c in r.captions]
    model.tokenizer = CLIPTokenizer.train(captions, 2048)
    eercf.save_model(model, root / "checkpoint")
    return data, root / "checkpoint"


def run_cli(capsys, *argv):
    from eercf.cli import main
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_command_json(benchmark, capsys):
    data, checkpoint = benchmark
    code, out, err = run_cli(capsys, "--checkpoint", checkpoint, "--data", data, "--dataset",
                             "msrvtt", "--split", "test", "--workers", 0, "--topk", 3,
                             "--dual-softmax", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert list(result) == ["video", "two_stage", "all_pairs", "video+dsl", "all_pairs+dsl"]
    for mode in result.values():
        assert set(mode["t2v"]) == set(mode["v2t"]) == {"R1", "R5", "R10", "R50", "MdR", "MnR"}
        assert isinstance(mode["seconds"], float)
        assert all(isinstance(v, float) for d in ("t2v", "v2t") for v in mode[d].values())
    assert result["two_stage"]["topk"] == 3
    assert result["all_pairs+dsl"]["transductive"] is True
    from eercf.data.datasets import load_dataset
    records = load_dataset("msrvtt", data, "test")
    n_captions = sum(len(r.captions) for r in records)
    assert f"{len(records)} videos, {n_captions} captions, 0 failed" in err


def test_eval_command_shares_the_frame_cache(benchmark, capsys, tmp_path, monkeypatch):
    """By default eval reads and writes the frame cache train uses; --no-cache writes none."""
    from eercf.paths import frames_dir as default_cache_dir

    data, checkpoint = benchmark
    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "default"))
    base = ["--checkpoint", checkpoint, "--data", data, "--workers", 0, "--modes", "video", "--json"]
    assert run_cli(capsys, *base, "--no-cache")[0] == 0
    assert not default_cache_dir().exists()
    code, out, _ = run_cli(capsys, *base)
    written = {p: p.stat().st_mtime_ns for p in default_cache_dir().rglob("*.safetensors")}
    assert code == 0 and written
    again = run_cli(capsys, *base)
    assert again[0] == 0 and json.loads(again[1])["video"]["t2v"] == json.loads(out)["video"]["t2v"]
    assert {p: p.stat().st_mtime_ns for p in default_cache_dir().rglob("*.safetensors")} == written
    code, _, err = run_cli(capsys, *base, "--no-cache", "--cache-dir", tmp_path)
    assert code != 0 and "contradict" in err


def test_eval_command_fusion_weights(benchmark, capsys):
    data, checkpoint = benchmark
    base = ["--checkpoint", checkpoint, "--data", data, "--workers", 0, "--modes", "all_pairs",
            "--json"]
    # only the video level left: all_pairs ranks as stage 1 alone
    only_video = ["--weights", "frame_weak=0", "--weights", "frame_strong=0", "--weights",
                  "patch_weak=0", "--modes", "video,all_pairs"]
    code, out, err = run_cli(capsys, *base[:-3], *only_video, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["all_pairs"]["t2v"] == result["video"]["t2v"]
    code, out, err = run_cli(capsys, *base, "--weights", "colour=1")
    assert code == 2 and "unknown fusion weight 'colour'" in err
    code, out, err = run_cli(capsys, *base, "--weights", "video")
    assert code == 2 and "LEVEL=NUMBER" in err


def test_eval_command_table_from_a_run_folder(benchmark, capsys, tmp_path):
    data, checkpoint = benchmark
    run = tmp_path / "run"
    for epoch in (2, 10):
        shutil.copytree(checkpoint, run / "checkpoints" / f"epoch-{epoch}")
    config = run / "checkpoints" / "epoch-10" / "config.json"  # a run at 2 fps keeps it here
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "preprocess": {**settings["preprocess"], "fps": 2.0}}))
    code, out, err = run_cli(capsys, "--checkpoint", run, "--data", data, "--workers", 0,
                             "--modes", "video,two_stage")
    assert code == 0, err
    assert str(run / "checkpoints" / "epoch-10") in out
    assert "12 frames at 2 fps, fp32" in out  # sampled as the checkpoint says it was trained
    assert "two_stage (K=50)" in out and "all_pairs" not in out
    shutil.copytree(checkpoint, run / "best")
    assert run_checkpoint(run) == run / "best"


def test_a_video_that_fails_to_decode_is_reported_and_skipped(benchmark, tmp_path):
    from eercf.data.datasets import load_dataset
    from eercf.evaluation.evaluator import encode_records

    data, checkpoint = benchmark
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    records = load_dataset("msrvtt", copy, "test")
    records[1].path.write_bytes(b"not a video at all")
    model = load_model(checkpoint)
    encoded = encode_records(model, records, progress=False)
    assert [f["video_id"] for f in encoded.failed] == [records[1].video_id]
    assert encoded.video_ids == [r.video_id for i, r in enumerate(records) if i != 1]
    kept = [r for i, r in enumerate(records) if i != 1]
    assert encoded.captions == [c for r in kept for c in r.captions]
    assert encoded.caption_video.tolist() == [row for row, r in enumerate(kept) for _ in r.captions]
    out = ev.score_modes(model, encoded.text, encoded.caption_video, encoded.videos, modes=["video"])
    assert set(out["video"]) == {"t2v", "v2t", "seconds"}


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "checkpoint"),
    ("unknown dataset", "unknown dataset"),
    ("empty split", "none of the 0"),
    ("empty run folder", "no best/"),
])
def test_eval_bad_input_is_one_error_line(benchmark, capsys, tmp_path, case, message):
    data, checkpoint = benchmark
    args = {"--checkpoint": checkpoint, "--data": data, "--dataset": "msrvtt"}
    if case == "missing checkpoint":
        args["--checkpoint"] = tmp_path / "nope"
    elif case == "unknown dataset":
        args["--dataset"] = "youtube8m"
    elif case == "empty split":
        shutil.copytree(data, tmp_path / "data")
        (tmp_path / "data" / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n")
        args["--data"] = tmp_path / "data"
    else:
        (tmp_path / "run" / "checkpoints").mkdir(parents=True)
        args["--checkpoint"] = tmp_path / "run"
    code, out, err = run_cli(capsys, *[x for pair in args.items() for x in pair], "--json")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eercf eval: error:") and message in lines[0]


def test_encode_videos_batches_failures_and_training_mode(benchmark):
    from eercf.model.encode import encode_texts, encode_videos

    _, checkpoint = benchmark
    model = load_model(checkpoint).train()
    frames = torch.randn(3, 12, 3, 64, 64)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[2, 7:] = False
    batches = [{"frames": frames[:2], "mask": mask[:2], "index": torch.tensor([0, 1]), "failed": []},
               {"frames": frames[:0], "mask": mask[:0], "index": torch.tensor([], dtype=torch.long),
                "failed": [{"video_id": "bad", "path": "bad.mp4", "reason": "corrupt"}]},
               {"frames": frames[2:], "mask": mask[2:], "index": torch.tensor([2]), "failed": []}]
    out = list(encode_videos(model, batches, progress=False))
    assert model.training  # a training loop can validate mid-epoch
    assert [b["failed"] for b, _ in out][1][0]["video_id"] == "bad" and out[1][1] is None
    encoded = VideoFeatures.cat([f for _, f in out if f is not None])
    with torch.no_grad():
        expected = model.eval().encode_video(frames, mask)
    torch.testing.assert_close(encoded.patches, expected.patches)
    assert encoded.mask.tolist() == mask.tolist()

    texts = ["a red circle moves left", "a small green square", "a yellow star flashes"]
    with torch.no_grad():
        whole = model.encode_text(model.tokenize(texts))
    torch.testing.assert_close(encode_texts(model, texts, batch_size=2, progress=False), whole)
    assert encode_texts(model, [], progress=False).shape == (0, 128)


def test_eval_command_refuses_a_negative_exact_pass(benchmark, capsys):
    data, checkpoint = benchmark
    code, _, err = run_cli(capsys, "--checkpoint", checkpoint, "--data", data, "--workers", 0,
                           "--modes", "two_stage", "--exact-candidates", -1)
    assert code == 2  # before any video is encoded
    assert err.strip() == "eercf eval: error: --exact-candidates must be at least 0, got -1"
