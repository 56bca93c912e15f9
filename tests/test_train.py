"""Training: settings, optimiser set-up, and the guarantees of the loop: a 2-process Gloo run
and gradient accumulation take the same steps as one process over the same global batch, and
``--resume`` after a kill reproduces the uninterrupted run. A micro model keeps it fast."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eercf.errors import EercfError
from eercf.train import apply_override, load_train_config, train
from eercf.train.optim import param_groups, warmup_cosine

MICRO = {"embed_dim": 32,
         "vision": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2},
         "text": {"context_length": 16, "vocab_size": 600, "width": 32, "heads": 2, "layers": 1},
         "eercf": {"max_frames": 4, "max_words": 16, "temporal_layers": 1}}
LOSS_TERMS = ("total", "contrastive_weak", "contrastive_strong", "pearson_video", "pearson_frame",
              "grad_norm")  # Adam hides a gradient off by a constant factor: the norm does not


@pytest.fixture(autouse=True)
def _keep_threads():
    """Runs here set ``threads=1``; give the rest of the session its thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from eercf.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("train") / "synth"
    make_synthetic(out, videos=16, seed=0, size=32, progress=False)  # 13 train, 3 test
    return out


def micro_config(data: Path, cache: Path, **settings) -> dict:
    """Batches of 4 videos with 2 caption views each: 3 steps an epoch; warm gates, so every
    equivalence below also covers their schedule."""
    cfg = load_train_config("tiny", overrides=[f"data={data}", f"cache_dir={cache}", "threads=1",
                                               "batch_size=4", "caption_views=2", "epochs=2",
                                               "validate=false", "calibrate=false",
                                               "gate_temperature_start=1.0"])
    cfg["model_config"] = MICRO
    cfg.update(settings)
    return cfg


def steps(run: Path) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "total" in r]


def assert_same_curve(a: list[dict], b: list[dict], count: int, rtol: float) -> None:
    assert len(a) >= count and len(b) >= count
    for x, y in zip(a[:count], b[:count]):
        for term in LOSS_TERMS:
            assert x[term] == pytest.approx(y[term], rel=rtol, abs=1e-6), (x["step"], term)


# ----------------------------------------------------------------------------- settings
def test_presets_and_overrides():
    tiny = load_train_config(model="tiny")
    assert tiny["init"] == "auto" and tiny["model"] == "tiny"  # auto: tiny has no release
    clip = load_train_config(model="ViT-B-32")
    assert (clip["init"], clip["batch_size"], clip["lr"], clip["coef_lr"]) == ("auto", 240, 1e-4, 1e-3)
    cfg = load_train_config("tiny", overrides=["lr=3e-3", "loss.strong_weight=0",
                                               "dataset=msvd", "betas=[0.9, 0.99]"])
    assert cfg["lr"] == 3e-3 and cfg["dataset"] == "msvd" and cfg["betas"] == [0.9, 0.99]
    assert cfg["loss"]["strong_weight"] == 0 and cfg["loss"]["weak_weight"] == 0.8
    assert cfg["model_config"] == {}
    with pytest.raises(EercfError, match="unknown setting in loss"):
        apply_override(cfg, "loss.strongest=1")
    with pytest.raises(EercfError, match="set them as loss.NAME=VALUE"):
        load_train_config("tiny", overrides=["model_config.eercf.loss.strong_weight=0"])
    with pytest.raises(EercfError, match="loss weight weak_weight must be a number"):
        load_train_config("tiny", overrides=["loss.weak_weight=\"high\""])
    with pytest.raises(EercfError, match="unknown training setting"):
        apply_override(cfg, "learning_rate=1")
    with pytest.raises(EercfError, match="KEY=VALUE"):
        apply_override(cfg, "lr")
    with pytest.raises(EercfError, match="batch_size"):
        load_train_config("tiny", overrides=["batch_size=0"])
    with pytest.raises(EercfError, match="grad_accum"):
        load_train_config("tiny", overrides=["batch_size=10", "grad_accum=3"])
    with pytest.raises(EercfError, match="gate_anneal"):
        load_train_config("tiny", overrides=["gate_anneal=1.5"])
    with pytest.raises(EercfError, match="gate_temperature_start"):
        load_train_config("tiny", overrides=["gate_temperature_start=0"])


def test_a_run_saved_with_loss_weights_in_the_model_config_keeps_them(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "tiny", "model_config": {"eercf": {"loss": {"strong_weight": 0}}}}))
    cfg = load_train_config(str(path))
    assert cfg["loss"]["strong_weight"] == 0 and cfg["model_config"] == {"eercf": {}}


def test_config_file_over_preset(tmp_path: Path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": "tiny", "epochs": 9}))
    cfg = load_train_config(str(path))
    assert cfg["epochs"] == 9 and cfg["init"] == "auto"
    path.write_text(json.dumps({"epoch": 9}))
    with pytest.raises(EercfError, match="unknown training setting"):
        load_train_config(str(path))


def test_param_groups_and_schedule():
    from eercf.model.config import get_model_config, merge
    from eercf.model import EERCF

    model = EERCF(merge(get_model_config("tiny"), MICRO))
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, coef_lr=0.1, weight_decay=0.2)}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups.values() if g["weight_decay"] for p in g["params"]}
    assert "clip.visual.transformer.resblocks.0.attn.in_proj_weight" in decayed
    assert not any(n.endswith("bias") or "ln_" in n or "embedding" in n for n in decayed)
    assert not {"global_weight", "frame_weight", "clip.logit_scale"} & decayed
    assert groups["clip"]["lr"] == pytest.approx(1e-4) and groups["new"]["lr"] == 1e-3
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    factor = warmup_cosine(10, 100)
    assert factor(0) == pytest.approx(0.1) and factor(9) == 1.0
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- equivalences
@pytest.fixture(scope="module")
def single_run(data: Path, tmp_path_factory) -> Path:
    """One process, global batch 4 videos x 2 caption views, validation on (on the test split,
    named, so that every run here trains on the same 13 videos): the reference."""
    root = tmp_path_factory.mktemp("single")
    train(micro_config(data, root / "cache", validate=True, val_split="test"), root / "run",
          progress=False)
    return root / "run"


def test_run_folder(single_run: Path):
    assert (single_run / "best" / "model.safetensors").is_file()
    assert (single_run / "checkpoints" / "epoch-1" / "trainer.pt").is_file()
    summary = json.loads((single_run / "summary.json").read_text())
    assert summary["steps"] == len(steps(single_run)) == 2 * (summary["train_videos"] // 4) == 6
    assert [json.loads(line).get("validation") is not None
            for line in (single_run / "log.jsonl").read_text().splitlines()].count(True) == 2
    assert set(summary["validation"]) == {"video", "two_stage", "all_pairs"}
    record = steps(single_run)[0]
    for key in LOSS_TERMS + ("lr_new", "grad_norm", "pairs_per_s", "logit_scale"):
        assert key in record
    import eercf

    model = eercf.load_model(single_run / "best")
    assert model.config["embed_dim"] == 32 and model.tokenizer is not None


def test_gate_temperatures_start_warm_and_end_configured(single_run: Path):
    """Gates started at temperature 1 decay geometrically to the configured 0.01 over the first
    half of the 6 steps; what the run saves keeps the configured temperatures."""
    logged = [r["frame_weak_temperature"] for r in steps(single_run)]
    assert logged == pytest.approx([1.0, 0.01 ** (1 / 3), 0.01 ** (2 / 3), 0.01, 0.01, 0.01])
    import eercf

    model = eercf.load_model(single_run / "best")
    assert model.temperatures.frame_weak == 0.01 and model.temperatures.patch == 0.01
    assert model.temperatures.frame_strong == 0.1


def test_gradient_accumulation_matches_one_batch(single_run: Path, data: Path, tmp_path: Path):
    train(micro_config(data, single_run.parent / "cache", grad_accum=2), tmp_path / "run",
          progress=False)
    assert_same_curve(steps(single_run), steps(tmp_path / "run"), 6, rtol=1e-4)


def test_caption_pairs_mode_and_accumulation(single_run: Path, data: Path, tmp_path: Path):
    """caption_views=0: every (video, caption) pair once an epoch, one caption per video."""
    cache = single_run.parent / "cache"
    for name, accum in (("one", 1), ("two", 2)):
        train(micro_config(data, cache, caption_views=0, batch_size=8, epochs=1, grad_accum=accum),
              tmp_path / name, progress=False)
    one = steps(tmp_path / "one")
    assert len(one) == 13 * 8 // 8  # 13 training videos with 8 captions each
    assert_same_curve(one, steps(tmp_path / "two"), 4, rtol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    train(cfg, out, progress=False, device="cpu")


def test_two_gloo_processes_match_one(single_run: Path, data: Path, tmp_path: Path):
    cfg = micro_config(data, single_run.parent / "cache")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path / "run")),
                                nprocs=2, join=True)
    assert_same_curve(steps(single_run), steps(tmp_path / "run"), 6, rtol=1e-4)


def test_batches_of_similar_videos_are_the_same_on_two_processes(single_run: Path, data: Path,
                                                                  tmp_path: Path):
    """similar_group: each global batch is a run of groups of caption neighbours, whatever the
    number of processes; the order (so the curve) differs from plain random batches."""
    cfg = micro_config(data, single_run.parent / "cache", similar_group=2)
    train(cfg, tmp_path / "one", progress=False)
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path / "two")),
                                nprocs=2, join=True)
    assert_same_curve(steps(tmp_path / "one"), steps(tmp_path / "two"), 6, rtol=1e-4)
    assert steps(tmp_path / "one")[0]["total"] != steps(single_run)[0]["total"]
    with pytest.raises(EercfError, match="similar_group > 1 needs caption_views"):
        load_train_config("tiny", overrides=["similar_group=4", "caption_views=0"])
    with pytest.raises(EercfError, match="similar_group must be a positive"):
        load_train_config("tiny", overrides=["similar_group=0"])


# ----------------------------------------------------------------------------- resume
def _cli(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    micro = [f"model_config={json.dumps(MICRO)}", f"cache_dir={cache}", "threads=1",
             "validate=false", "calibrate=false", "checkpoint_every=2", "caption_views=2",
             "gate_temperature_start=1.0"]
    return [sys.executable, "-m", "eercf.cli", "train", "--data", str(data), "--model", "tiny",
            "--out", str(out), "--epochs", "3", "--batch-size", "4", "--no-progress",
            *[a for s in micro for a in ("--set", s)], *extra]


def test_resume_after_kill_reproduces_run(data: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(micro_config(data, cache, epochs=3, checkpoint_every=2), full, progress=False)  # 9 steps
    proc = subprocess.Popen(_cli(data, cache, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "log.jsonl").exists() and len(steps(killed)) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    total = len(steps(full))
    assert len(steps(killed)) < total
    subprocess.run(_cli(data, cache, killed, "--resume"), check=True, capture_output=True)
    a, b = steps(full), steps(killed)
    assert [r["step"] for r in b] == list(range(1, total + 1))
    assert_same_curve(a, b, total, rtol=1e-6)
    for x, y in zip(a, b):
        assert x["lr_new"] == y["lr_new"]


def test_refuses_to_overwrite_a_run(single_run: Path, data: Path):
    with pytest.raises(EercfError, match="already holds a training run"):
        train(micro_config(data, single_run.parent / "cache"), single_run, progress=False)


def test_validation_is_held_out_of_the_training_videos(data: Path, tmp_path: Path):
    """By default a run validates on a tenth of its training videos, chosen by id (the same
    whatever the file order), never on the test split; too few of them to fit fusion weights
    on is reported and leaves the paper's."""
    from eercf.data.datasets import load_dataset
    from eercf.data.splits import held_out, split_off

    records = load_dataset("msrvtt", data, "train")
    kept, val = split_off(records, 0.1)
    assert val and {r.video_id for r in kept}.isdisjoint(r.video_id for r in val)
    assert split_off(records[::-1], 0.1)[1] == val[::-1]
    assert [r.video_id for r in val] == [r.video_id for r in records if held_out(r.video_id, 0.1)]
    summary = train(micro_config(data, tmp_path / "cache", validate=True, calibrate=True),
                    tmp_path / "run", progress=False)
    assert summary["train_videos"] == len(kept) and summary["fitted"] is None
    test_ids = {r.video_id for r in load_dataset("msrvtt", data, "test")}
    assert test_ids.isdisjoint(r.video_id for r in val)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "validation" in r] == [1, 2]
    assert log[-1] == {"step": 6, "epoch": 2, "fitted": None}
