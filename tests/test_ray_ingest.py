"""``eercf index --ray``: Ray Data ingest on a local Ray gives exactly the rows ``eercf index``
gives, reports bad videos, resumes; killed mid-run (slow test) it loses and doubles nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray")

import eercf  # noqa: E402
from eercf.cli import main  # noqa: E402
from eercf.index import VideoIndex, store  # noqa: E402
from eercf.model import EERCF  # noqa: E402
from eercf.model.config import get_model_config  # noqa: E402
from eercf.model.tokenizer import CLIPTokenizer  # noqa: E402
from test_index_cli import COLOURS, write_video  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train([f"a {c} square moves right" for c in COLOURS] * 3, 600)
    eercf.save_model(model, root / "model")
    for i, (name, colour) in enumerate(list(COLOURS.items()) * 2):
        write_video(root / "videos" / f"{name}{i}.mp4", colour, frames=8 + i)
    (root / "videos" / "broken.mp4").write_bytes(b"not a video" * 80)
    return root


def run(*args: str, capsys) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def rows(folder: Path) -> dict[str, tuple]:
    table = store.open_dataset(str(folder / "videos.lance")).to_table()
    videos = store.column_array(table, "video")
    return {vid: (uri, duration, json.dumps(times), videos[i])
            for i, (vid, uri, duration, times) in enumerate(zip(
                table.column("id").to_pylist(), table.column("uri").to_pylist(),
                table.column("duration").to_pylist(), table.column("timestamps").to_pylist()))}


def test_ray_ingest_gives_the_rows_eercf_index_gives(library, tmp_path, capsys):
    common = [str(library / "videos"), "--model", str(library / "model"), "--batch-size", "4"]
    summary = run("index", *common, "--index", str(tmp_path / "ray"), "--ray",
                  "--commit-every", "5", capsys=capsys)
    assert summary["added"] == 12 and summary["commits"] == 2 and summary["ray"]["encoders"] == 1
    assert [f["video"] for f in summary["failed"]] == ["broken"]
    run("index", *common, "--index", str(tmp_path / "plain"), "--workers", "0", capsys=capsys)
    got, expected = rows(tmp_path / "ray"), rows(tmp_path / "plain")
    assert sorted(got) == sorted(expected)
    for vid, (uri, duration, times, vector) in expected.items():
        assert got[vid][:3] == (uri, duration, times)
        np.testing.assert_allclose(got[vid][3], vector, atol=2e-3)  # stored in fp16
    again = run("index", *common, "--index", str(tmp_path / "ray"), "--ray", capsys=capsys)
    assert again["added"] == 0 and again["skipped"] == 12 and again["commits"] == 0
    index = VideoIndex.open(tmp_path / "ray")
    hits = index.search("a red square moves right", k=12)[0].hits
    assert sorted(h.video_id for h in hits) == sorted(expected)  # stage 1 holds every row


def test_ray_ingest_segments_a_long_video_as_eercf_index_does(library, tmp_path, capsys,
                                                             monkeypatch):
    """A long video's segments and scene rows: the same rows as ``eercf index`` (spans,
    times), committed together with it."""
    import eercf.index.segments
    from eercf.synthetic.long import make_long

    def first_two(spans, vectors, longest):  # a scene of the first two shots, for both paths
        first = sorted(spans)[:2]
        return [(first[0][0], first[1][1])]

    monkeypatch.setattr(eercf.index.segments, "scene_spans", first_two)

    make_long(tmp_path / "bench", videos=1, seed=2, minutes=(1.5, 1.5), progress=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "long.mp4").symlink_to(tmp_path / "bench" / "videos" / "v_long0.mp4")
    (videos / "short.mp4").symlink_to(library / "videos" / "red0.mp4")
    common = [str(videos), "--model", str(library / "model"), "--batch-size", "4",
              "--codec", "exact"]
    summary = run("index", *common, "--index", str(tmp_path / "ray"), "--ray",
                  "--commit-every", "1", capsys=capsys)
    plain = run("index", *common, "--index", str(tmp_path / "plain"), "--workers", "0",
                capsys=capsys)
    assert summary["added"] == plain["added"] == 2 and summary["segments"] == plain["segments"] > 10
    assert summary["scenes"] == plain["scenes"] == 1

    def segment_rows(folder: Path) -> dict:
        table = store.open_dataset(str(folder / "videos.lance")).to_table(
            columns=["id", "segment_start", "segment_end", "timestamps"])
        return {(r["id"], r["segment_start"], r["segment_end"]): json.dumps(r["timestamps"])
                for r in table.to_pylist()}

    assert segment_rows(tmp_path / "ray") == segment_rows(tmp_path / "plain")
    assert sorted(VideoIndex.open(tmp_path / "ray").ids()) == ["long", "short"]


def test_ray_needs_a_saved_model(tmp_path):
    from eercf.errors import EercfError
    from eercf.index.ray_ingest import ray_ingest

    torch.manual_seed(0)
    index = VideoIndex.create(tmp_path / "idx", EERCF(get_model_config("tiny")))
    with pytest.raises(EercfError, match="saved model"):
        ray_ingest(index, [], address=None)


@pytest.mark.slow
def test_ray_ingest_killed_mid_run_resumes_with_nothing_lost_or_doubled(library, tmp_path):
    videos = tmp_path / "many"
    for i in range(200):
        write_video(videos / f"clip{i:03d}.mp4", list(COLOURS.values())[i % 6], frames=8)
    folder = tmp_path / "idx"
    argv = [sys.executable, "-m", "eercf.cli", "index", str(videos), "--model",
            str(library / "model"), "--index", str(folder), "--ray", "--batch-size", "8",
            "--commit-every", "16"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(argv, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while True:  # kill once a few commits have landed
        if (folder / "videos.lance").exists():
            index = VideoIndex.open(folder)
            if len(index) >= 48:
                break
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = VideoIndex.open(folder).ids()
    assert 48 <= len(partial) < 200 and len(set(partial)) == len(partial)
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    ids = VideoIndex.open(folder).ids()
    assert sorted(ids) == [f"clip{i:03d}" for i in range(200)]  # none lost, none twice
