"""`eercf index` on real (tiny, PyAV-made) videos: sources, resume, bad files, remove and
re-index, and SIGKILL at several moments."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import lance
import numpy as np
import pytest
import torch

import eercf

from eercf.cli import main
from eercf.model.config import get_model_config
from eercf.data.datasets import load_dataset
from eercf.evaluation.evaluator import encode_records, two_stage_scores
from eercf.index import DATASET, VideoIndex
from eercf.model import EERCF
from eercf.model.tokenizer import CLIPTokenizer

torch.set_num_threads(1)
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (230, 220, 30), "white": (240, 240, 240), "purple": (150, 30, 160)}


def write_video(path: Path, colour: tuple[int, int, int], frames: int = 16, fps: int = 8,
                size: tuple[int, int] = (64, 64)) -> Path:
    """A ``size`` (width, height) clip of a square of ``colour`` moving left to right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    side, top = height // 4, (height - height // 4) // 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            x = 2 + 3 * i * width // 64  # leaves the frame after about 20 frames at 64 px
            pixels[top:top + side, x:x + side] = colour
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A saved tiny model, a folder of six videos (two in a subfolder) and one broken file."""
    root = tmp_path_factory.mktemp("library")
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train([f"a {c} square moves right" for c in COLOURS] * 3, 600)
    eercf.save_model(model, root / "model")
    for i, (name, colour) in enumerate(COLOURS.items()):
        write_video(root / "videos" / ("more" if i >= 4 else "") / f"{name}.mp4", colour)
    (root / "videos" / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return root


def test_index_workers_do_not_fork_beside_lance(library, tmp_path, capsys):
    """Decoding workers start without forking a process that holds a Lance dataset (lance
    warns on every fork: its threads make a forked child unsafe); same features as no workers."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, summary = run_cli("index", str(library / "videos"), "--model",
                                str(library / "model"), "--index", str(tmp_path / "two"),
                                "--workers", "2", capsys=capsys)
    assert code == 0 and summary["added"] == 6
    assert not [w for w in caught if "fork" in str(w.message)]
    run_cli("index", str(library / "videos"), "--model", str(library / "model"), "--index",
            str(tmp_path / "none"), "--workers", "0", capsys=capsys)
    two, none = VideoIndex.open(tmp_path / "two"), VideoIndex.open(tmp_path / "none")
    query = "a red square moves right"
    assert ([(h.video_id, h.score) for h in two.search(query, k=6)[0].hits]
            == [(h.video_id, h.score) for h in none.search(query, k=6)[0].hits])


def run_cli(*args: str, capsys) -> tuple[int, dict]:
    code = main(list(args) + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def test_index_folder_resumes_and_reports_bad_files(library, tmp_path, capsys):
    args = ["index", str(library / "videos"), "--model", str(library / "model"), "--index",
            str(tmp_path / "idx"), "--batch-size", "2", "--workers", "0"]
    code, summary = run_cli(*args, capsys=capsys)
    assert code == 0 and summary["added"] == 6 and summary["videos"] == 6
    assert [f["video"] for f in summary["failed"]] == ["broken"]
    assert "broken.mp4" in summary["failed"][0]["path"] and summary["failed"][0]["error"]
    code, summary = run_cli(*args, capsys=capsys)  # a second run resumes: nothing to redo
    assert code == 0 and summary["added"] == 0 and summary["skipped"] == 6
    index = VideoIndex.open(tmp_path / "idx")
    assert sorted(index.ids()) == sorted(COLOURS)
    assert index.model_info.source == str((library / "model").resolve())

    assert main(["search", str(tmp_path / "idx"), "a red square moves right", "-k", "6",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert sorted(h["video_id"] for h in hits) == sorted(COLOURS)
    for hit in hits:
        assert Path(hit["uri"]).stem == hit["video_id"]
        assert 0.0 <= hit["moment"]["start"] <= hit["moment"]["time"] <= hit["moment"]["end"] <= 2.1
        assert 0 <= hit["where"]["row"] < 4 and 0 <= hit["where"]["col"] < 4


def test_list_file_source(library, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two videos\n{library / 'videos' / 'red.mp4'}\n\n"
                       f"{library / 'videos' / 'more' / 'white.mp4'}\n")
    code, summary = run_cli("index", str(listing), "--model", str(library / "model"), "--index",
                            str(tmp_path / "from_list"), "--workers", "0", capsys=capsys)
    assert code == 0 and summary["added"] == 2
    assert sorted(VideoIndex.open(tmp_path / "from_list").ids()) == ["red", "white"]


def test_dataset_source_ranks_exactly_as_eval(library, tmp_path, capsys):
    data = tmp_path / "msrvtt"
    rows = ["key,vid_key,video_id,sentence"]
    for n, colour in enumerate(("green", "blue", "red", "white")):
        write_video(data / "videos" / "all" / f"video{n}.mp4", COLOURS[colour])
        rows.append(f"ret{n},msr{n},video{n},a {colour} square moves right")
    (data / "MSRVTT_JSFUSION_test.csv").write_text("\n".join(rows) + "\n")
    code, summary = run_cli("index", str(data), "--dataset", "msrvtt", "--split", "test",
                            "--model", str(library / "model"), "--index", str(tmp_path / "ds"),
                            "--workers", "0", "--frames", "6", capsys=capsys)
    assert code == 0 and summary["added"] == 4
    index = VideoIndex.open(tmp_path / "ds")
    model = index.model()
    records = load_dataset("msrvtt", data, "test")
    encoded = encode_records(model, records, transform=index.model_info.video_transform(model),
                             workers=0, progress=False)
    with torch.inference_mode():
        scores, promoted = two_stage_scores(model, encoded.text, encoded.videos, topk=2)
    results = index.search(encoded.captions, k=4, topk=2)
    for q, result in enumerate(results):
        order = sorted(range(4), key=lambda v: (not promoted[q, v], -float(scores[q, v])))
        assert [h.video_id for h in result.hits] == [encoded.video_ids[v] for v in order]
        # same candidates, same re-ranking; the two runs encode the videos separately (other
        # batch shapes, so other last bits before fp16 storage), hence approximate scores
        assert [h.score for h in result.hits[:2]] == pytest.approx(scores[q, order[:2]].tolist(),
                                                                   abs=1e-3)
        assert result.hits[0].metadata["captions"] == [records[order[0]].captions[0]]


def test_remove_and_reindex_from_the_cli(library, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted((library / "videos").glob("*.mp4"))
                                 if p.stem != "broken"))
    run_cli("index", str(listing), "--model", str(library / "model"), "--index",
            str(tmp_path / "idx"), "--workers", "0", capsys=capsys)
    code, summary = run_cli("index", "--index", str(tmp_path / "idx"), "--remove", "red", "nope",
                            capsys=capsys)
    assert code == 0 and summary["removed"] == ["red"] and summary["not_found"] == ["nope"]
    code, summary = run_cli("index", "--index", str(tmp_path / "idx"), "--reindex",
                            "--index-factory", "HNSW8", capsys=capsys)
    assert code == 0 and summary["reindexed"]["index_factory"] == "HNSW8" and summary["videos"] == 3
    hits = VideoIndex.open(tmp_path / "idx").search("a blue square", k=5)[0].hits
    assert sorted(h.video_id for h in hits) == ["blue", "green", "yellow"]


def test_index_errors_are_one_line(library, tmp_path, capsys):
    assert main(["index", "--index", str(tmp_path / "idx")]) == 2
    assert "SOURCE is required" in capsys.readouterr().err
    assert main(["index", str(library / "videos"), "--index", str(tmp_path / "idx")]) == 2
    assert "--model is needed" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "absent"), "--model", "tiny", "--index",
                 str(tmp_path / "idx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    listing = tmp_path / "one.txt"
    listing.write_text(str(library / "videos" / "red.mp4"))
    main(["index", str(listing), "--model", str(library / "model"), "--index",
          str(tmp_path / "idx"), "--workers", "0", "--json"])
    capsys.readouterr()
    assert main(["index", str(listing), "--model", "tiny", "--index", str(tmp_path / "idx")]) == 2
    assert "no released weights" in capsys.readouterr().err  # never random weights by a name
    other = eercf.EERCF(get_model_config("tiny"))
    other.tokenizer = eercf.load_model(library / "model").tokenizer
    eercf.save_model(other, tmp_path / "other")
    assert main(["index", str(listing), "--model", str(tmp_path / "other"), "--index",
                 str(tmp_path / "idx")]) == 2
    assert "was built with model 'tiny'" in capsys.readouterr().err  # other weights, other space


def _version(path) -> int:
    """The dataset's version, 0 while it does not exist yet or is being created (its folder
    appears before its first manifest, and opening it then fails)."""
    try:
        return lance.dataset(str(path)).version
    except (ValueError, OSError):
        return 0


def test_sigkill_during_index_leaves_whole_videos_and_resumes(library, tmp_path):
    videos = tmp_path / "videos"
    for i in range(10):
        write_video(videos / f"clip{i}.mp4", list(COLOURS.values())[i % 6], frames=8)
    folder = tmp_path / "idx"
    command = [sys.executable, "-m", "eercf.cli", "index", str(videos), "--model",
               str(library / "model"), "--index", str(folder), "--batch-size", "1",
               "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen: list[str] = []
    for commits in (1, 3):  # kill after the first commit, then a few commits into a resumed run
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        start_version = lance.dataset(str(folder / DATASET)).version if seen else 1
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _version(folder / DATASET) >= start_version + commits:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        index = VideoIndex.open(folder)
        ids = index.ids()
        assert len(ids) == len(set(ids)) and ids[:len(seen)] == seen and len(seen) < len(ids) < 10
        assert len(index.search_encoded(torch.ones(1, 128) / 128 ** 0.5, k=20, topk=20,
                                        model=index.model())[0].hits) == len(ids)
        seen = ids
    done = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped"] == len(seen) and summary["added"] == 10 - len(seen)
    assert sorted(VideoIndex.open(folder).ids()) == sorted(f"clip{i}" for i in range(10))
