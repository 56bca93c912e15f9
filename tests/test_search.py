"""`eercf search` and `VideoIndex.search` by text, with the model the index records."""
from __future__ import annotations

import json

import pytest
import torch

import eercf
import torch.nn.functional as F

from eercf.cli import main
from eercf.model.config import get_model_config
from eercf.model.encode import encode_texts
from eercf.index import ModelInfo, VideoIndex
from eercf.model import EERCF, VideoFeatures
from eercf.model.tokenizer import CLIPTokenizer

torch.set_num_threads(1)
CAPTIONS = ["a red circle moves left", "a yellow star flashes", "a small green square",
            "a blue triangle moves up", "a person is connecting something to system"]
HIT_KEYS = {"video_id", "uri", "score", "stage1_score", "stage1_rank", "moment", "where"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A saved tiny model with a tokenizer, and an index of 12 videos built with it."""
    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).eval()
    model.tokenizer = CLIPTokenizer.train(CAPTIONS * 4, vocab_size=600)
    eercf.save_model(model, root / "model")
    index = VideoIndex.create(root / "idx", ModelInfo.of(model, source=root / "model"))
    g = torch.Generator().manual_seed(1)
    n, frames, patches, dim = 12, 12, 16, 128
    mask = torch.ones(n, frames, dtype=torch.bool)
    mask[0, 4:] = False
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    temporal = unit(n, frames, dim) * mask[..., None]
    features = VideoFeatures(F.normalize(temporal.sum(1), dim=-1), unit(n, frames, dim) * mask[..., None],
                             temporal, unit(n, frames, patches, dim) * mask[..., None, None], mask)
    ids = [f"video{i}" for i in range(n)]
    index.add(ids, [f"/data/{i}.mp4" for i in ids], [6.0] * n,
              [[0.25 + 0.5 * f for f in range(int(m.sum()))] for m in mask], features,
              [{"caption": CAPTIONS[i % 5]} for i in range(n)])
    return root, model


def test_search_by_text_loads_the_recorded_model(built):
    root, model = built
    index = VideoIndex.open(root / "idx")
    results = index.search(["a yellow star flashes", "a small green square"], k=3, topk=5)
    expected = index.search_encoded(encode_texts(model, ["a yellow star flashes",
                                                         "a small green square"]), k=3, topk=5,
                                    model=model)
    assert [[h.video_id for h in r.hits] for r in results] == \
        [[h.video_id for h in r.hits] for r in expected]
    assert [r.query for r in results] == ["a yellow star flashes", "a small green square"]
    assert results[0].timings["encode_text"] > 0
    assert results[0].hits[0].metadata["caption"] in CAPTIONS


def test_cli_json_one_query(built, capsys):
    root, _ = built
    assert main(["search", str(root / "idx"), "a red circle moves left", "-k", "4", "--topk", "6",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == "a red circle moves left" and len(out["hits"]) == 4
    assert {"encode_text", "stage1", "stage2"} <= set(out["timings"])
    for hit in out["hits"]:
        assert HIT_KEYS <= set(hit)
        assert set(hit["moment"]) == {"time", "start", "end"}
        assert set(hit["where"]) == {"frame", "time", "row", "col"}
        assert hit["uri"] == f"/data/{hit['video_id']}.mp4"
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_several_queries_and_weights(built, capsys):
    root, _ = built
    assert main(["search", str(root / "idx"), "a red circle", "a blue triangle", "-k", "2",
                 "--weight", "video=1", "--weight", "frame_weak=0", "--weight", "frame_strong=0",
                 "--weight", "patch_weak=0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["query"] for o in out] == ["a red circle", "a blue triangle"]
    for o in out:  # video level alone: the fused score is the stage-1 score
        for hit in o["hits"]:
            assert hit["score"] == pytest.approx(hit["stage1_score"], rel=1e-5)
            assert hit["stage1_rank"] == o["hits"].index(hit) + 1


def test_cli_table(built, capsys):
    root, _ = built
    assert main(["search", str(root / "idx"), "a small green square", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert '"a small green square"' in out and "stage 1 (rank)" in out
    assert len([line for line in out.splitlines() if "video" in line and "/data/" in line]) == 3


def test_cli_errors_are_one_line(built, tmp_path, capsys):
    root, _ = built
    assert main(["search", str(tmp_path), "x"]) == 2
    assert "not an eercf index" in capsys.readouterr().err
    assert main(["search", str(root / "idx"), "x", "--weight", "bogus=1"]) == 2
    assert "unknown fusion weight 'bogus'" in capsys.readouterr().err
    assert main(["search", str(root / "idx"), "x", "--exact-candidates", "-1"]) == 2
    assert "exact_candidates must be at least 0" in capsys.readouterr().err
    torch.manual_seed(5)
    other = EERCF(get_model_config("tiny"))
    other.tokenizer = CLIPTokenizer.train(CAPTIONS, vocab_size=600)
    eercf.save_model(other, tmp_path / "other")
    assert main(["search", str(root / "idx"), "x", "--model", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "was built with model 'tiny'" in err and len(err.strip().splitlines()) == 1
