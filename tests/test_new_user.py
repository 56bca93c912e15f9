"""The paths a new user walks first, each once broken at a seam between packages (issue 11):
durations in the index, a training run folder as a model, names meaning pretrained weights,
the transform a checkpoint carries, uris that find their file from anywhere, and a clone with
no research data beside it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eercf
from conftest import SHARED_DATA
from eercf.cli import main
from eercf.index import VideoIndex
from eercf.model.config import get_model_config
from eercf.model.tokenizer import CLIPTokenizer

from test_index_cli import COLOURS, write_video

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A training run as `eercf train` leaves it: settings in config.json (not a model config),
    best/ and checkpoints/epoch-N/ (model folders), a log."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = eercf.EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train([f"a {c} square moves right" for c in COLOURS] * 3, 600)
    eercf.save_model(model, run / "best")
    eercf.save_model(model, run / "checkpoints" / "epoch-1")
    (run / "config.json").write_text(json.dumps({"model": "tiny", "frame_rate": None, "epochs": 1}))
    (run / "log.jsonl").write_text("")
    return run


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three 2-second clips (16 frames at 8 fps)."""
    root = tmp_path_factory.mktemp("clips")
    for name in ("red", "green", "blue"):
        write_video(root / f"{name}.mp4", COLOURS[name])
    return root


def test_index_stores_durations_and_moments_end_with_the_video(run_folder, videos, tmp_path, capsys):
    code, _, err = run_cli(capsys, "index", videos, "--model", run_folder, "--index",
                           tmp_path / "idx", "--workers", 0, "--json")
    assert code == 0, err
    code, out, err = run_cli(capsys, "search", tmp_path / "idx", "a red square moves right",
                             "-k", 3, "--json")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 3
    for hit in hits:
        assert hit["duration"] == pytest.approx(2.0)
        assert hit["moment"]["start"] >= 0.0 and hit["moment"]["end"] <= hit["duration"]


@pytest.mark.needs_shared
def test_real_msrvtt_clips_keep_their_durations(run_folder, tmp_path, capsys):
    clips = SHARED_DATA / "msrvtt_sample" / "videos"
    code, _, err = run_cli(capsys, "index", clips, "--model", run_folder, "--index",
                           tmp_path / "idx", "--workers", 0, "--json")
    assert code == 0, err
    index = VideoIndex.open(tmp_path / "idx")
    durations = {h.video_id: h.duration for h in index.search("a little girl does gymnastics", k=2)[0].hits}
    assert durations == {"video9770": pytest.approx(11.0, abs=0.1),
                         "video9771": pytest.approx(14.0, abs=0.1)}


def test_a_training_run_folder_is_a_model_for_every_command(run_folder, videos, tmp_path, capsys):
    loaded = eercf.load_model(run_folder)  # best/, whatever RUN/config.json holds
    assert loaded.tokenizer is not None
    code, out, err = run_cli(capsys, "index", videos, "--model", run_folder, "--index",
                             tmp_path / "idx", "--workers", 0, "--json")
    assert code == 0 and json.loads(out)["added"] == 3, err
    index = VideoIndex.open(tmp_path / "idx")
    assert index.model_info.source == str((run_folder / "best").resolve())
    code, out, err = run_cli(capsys, "search", tmp_path / "idx", "a blue square", "--json")
    assert code == 0 and json.loads(out)["hits"], err
    shutil.rmtree(run_folder / "best")  # a run with no best/ yet: its last epoch
    try:
        assert eercf.weights.resolve(run_folder) == run_folder / "checkpoints" / "epoch-1"
    finally:
        eercf.save_model(loaded, run_folder / "best")


def test_a_model_name_never_means_random_weights(videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "home"))
    code, out, err = run_cli(capsys, "index", videos, "--model", "ViT-B-32", "--index",
                             tmp_path / "idx")
    assert code == 2 and out == ""
    assert "eercf download ViT-B-32" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "idx").exists()  # nothing built from weights no search could use
    code, _, err = run_cli(capsys, "index", videos, "--model", "tiny", "--index", tmp_path / "idx")
    assert code == 2 and "no released weights" in err and not (tmp_path / "idx").exists()


def test_the_checkpoint_carries_its_transform_to_index_and_eval(run_folder, videos, tmp_path, capsys):
    model = eercf.load_model(run_folder)
    model.transform = model.transform.with_options(fps=2.0)  # as a run at frame_rate 2 saves it
    eercf.save_model(model, tmp_path / "at2fps")
    assert eercf.load_model(tmp_path / "at2fps").transform == model.transform
    code, _, err = run_cli(capsys, "index", videos, "--model", tmp_path / "at2fps", "--index",
                           tmp_path / "idx", "--workers", 0, "--json")
    assert code == 0, err
    index = VideoIndex.open(tmp_path / "idx")
    assert index.model_info.transform["fps"] == 2.0
    hit = index.search("a red square", k=1)[0].hits[0]
    assert hit.moment is not None and hit.where.time in (0.0, 0.5, 1.0, 1.5)
    times = index.snapshot().dataset.to_table(columns=["timestamps"]).to_pylist()[0]["timestamps"]
    assert times[:4] == [0.0, 0.5, 1.0, 1.5]  # 2 fps over 2 s, not 12 uniform frames
    assert all(t != t for t in times[4:])  # the padded slots (NaN)
    code, _, err = run_cli(capsys, "index", videos, "--index", tmp_path / "idx", "--fps", "4")
    assert code == 2 and "only apply when creating" in err


def test_stored_uris_find_the_file_from_anywhere(run_folder, videos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(videos.parent)
    code, _, err = run_cli(capsys, "index", videos.name, "--model", run_folder, "--index",
                           tmp_path / "idx", "--workers", 0, "--json")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    hits = VideoIndex.open(tmp_path / "idx").search("a green square", k=3)[0].hits
    assert all(Path(h.uri).is_absolute() and Path(h.uri).is_file() for h in hits)


def test_a_clone_with_no_research_data_beside_it_collects_and_skips(tmp_path):
    """What a user's clone sees: no ../shared. Every test collects; those needing the research
    data skip with the reason; the tokenizer works from the vocabulary in the package."""
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                              "-p", "no:cacheprovider"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=120)
    assert collect.returncode == 0, collect.stdout[-2000:] + collect.stderr[-2000:]
    assert "ERROR" not in collect.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_tokenizer.py"], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "skipped" in run.stdout and "needs the research data" in run.stdout


@pytest.mark.parametrize("env, expected", [({}, "3000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None),
                                           ({"GOMP_SPINCOUNT": "50"}, "50")])
def test_the_command_waits_briefly_at_openmp_barriers(env, expected):
    """Beside another busy process, OpenMP threads spinning at barriers made a 1 s training step
    take 3-8 s (benchmarks/shared_cores.py); the eercf command sets a short spin before torch
    loads, unless the user chose a wait policy."""
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    probe = ("import os, eercf.cli, torch; "
             "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in __import__('sys').modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=base | env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(expected)
