"""Moment retrieval measures, the long-video benchmark's layout, and ``eercf eval --moments``."""
from __future__ import annotations

import json

import pytest
import torch

import eercf
from eercf.cli import main
from eercf.data.datasets import load_dataset
from eercf.evaluation.moments import corpus_scores, in_video_scores, iou, truths
from eercf.index.search import Hit, Moment
from eercf.index.segments import ScoredMoment
from eercf.model import EERCF
from eercf.model.config import get_model_config
from eercf.model.tokenizer import CLIPTokenizer
from eercf.synthetic.long import make_long

torch.set_num_threads(1)


def test_iou():
    assert iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert iou((0, 10), (0, 10)) == 1.0 and iou((0, 1), (2, 3)) == 0.0
    assert iou((4, 4), (4, 4)) == 1.0


def hit(video: str, start: float, end: float, moments=()) -> Hit:
    return Hit(video, None, 1.0, 0.0, 1, Moment(start, start, end), None,
               moments=[ScoredMoment(a, b, 1.0) for a, b in moments])


def test_corpus_and_in_video_scores():
    truth = [("q1", "a", (10.0, 20.0)), ("q2", "b", (0.0, 10.0)), ("q3", "c", (50.0, 60.0))]
    ranked = [[hit("a", 11, 20)],                          # right video, IoU 0.9
              [hit("x", 0, 10), hit("b", 0, 16)],          # second, IoU 0.625
              [hit("c", 80, 90)]]                          # right video, IoU 0
    scores = corpus_scores(ranked, truth)
    assert scores["video_R1"] == pytest.approx(200 / 3) and scores["video_R5"] == 100
    assert scores["R1@0.5"] == pytest.approx(100 / 3) and scores["R1@0.7"] == pytest.approx(100 / 3)
    assert scores["R5@0.5"] == pytest.approx(200 / 3) and scores["R5@0.7"] == pytest.approx(100 / 3)
    assert scores["mIoU"] == pytest.approx(100 * 0.9 / 3)
    own = [hit("a", 0, 1, [(0, 1), (10, 19)]), None, hit("c", 50, 59, [(50, 59)])]
    inside = in_video_scores(own, truth)
    assert inside["R1@0.5"] == pytest.approx(100 / 3) and inside["R5@0.7"] == pytest.approx(200 / 3)
    assert inside["mIoU"] == pytest.approx(100 * 0.9 / 3)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("moments")
    summary = make_long(root / "long", videos=2, seed=1, minutes=(1.0, 2.0), progress=False)
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train(["a red circle moves left with a grey square"] * 3, 600)
    eercf.save_model(model, root / "model")
    return root, summary


def test_long_benchmark_reads_as_activitynet_with_spans(bench):
    root, summary = bench
    records = load_dataset("activitynet", root / "long", "test", paragraph=False)
    assert [r.video_id for r in records] == ["v_long0", "v_long1"]
    meta = json.loads((root / "long" / "synth.json").read_text())
    captioned = [m for m in meta if m["caption"]]
    assert sum(len(r.captions) for r in records) == len(captioned) == summary["captions"][
        "test:motion+corner"]
    for record in records:
        mine = [m for m in meta if m["video"] == record.video_id]
        spans = [tuple(m["span"]) for m in mine]
        assert spans[0][0] == 0.0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert 60.0 <= spans[-1][1] <= 130.0  # 1 to 2 minutes, the last clip may run over
        assert record.moments == [tuple(m["span"]) for m in mine if m["caption"]]
    assert len(truths(records)) == len(captioned)
    pairs = [(m["colour"], m["shape"], m["direction"], m["corner_colour"], m["corner"])
             for m in captioned]
    assert len(pairs) == len(set(pairs))  # every caption fits one clip only
    assert (root / "long" / "clips" / "videos" / "all" / "clip0.mp4").is_file()


def test_eval_moments_cli(bench, capsys):
    root, _ = bench
    code = main(["eval", "--checkpoint", str(root / "model"), "--data", str(root / "long"),
                 "--dataset", "activitynet", "--moments", "--workers", "0", "--json",
                 "--index", str(root / "index")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["videos"] == 2 and result["indexed"]["added"] == 2
    assert result["indexed"]["segments"] > 2 and not result["failed"]
    assert result["corpus"]["video_R5"] == 100.0  # two videos: both among the first five
    for part in ("corpus", "in_video"):
        assert set(result[part]) >= {"R1@0.5", "R1@0.7", "R5@0.5", "R5@0.7", "mIoU"}
        assert all(0.0 <= v <= 100.0 for v in result[part].values())
        assert result[part]["R1@0.7"] <= result[part]["R1@0.5"] <= result[part]["R5@0.5"]
    again = main(["eval", "--checkpoint", str(root / "model"), "--data", str(root / "long"),
                  "--dataset", "activitynet", "--moments", "--workers", "0", "--json",
                  "--index", str(root / "index")])
    assert again == 0
    second = json.loads(capsys.readouterr().out)
    assert second["indexed"]["skipped"] == 2 and second["corpus"] == result["corpus"]
    assert main(["eval", "--checkpoint", str(root / "model"), "--data", str(root / "long"),
                 "--dataset", "msrvtt", "--moments"]) == 2
    assert "time spans" in capsys.readouterr().err
