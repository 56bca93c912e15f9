"""The service (``eercf serve``) through FastAPI's client: search like ``VideoIndex.search``,
video information, media with Range, thumbnails, add/remove jobs with the token, filters, and
every bad input answered with a JSON error and a fitting status."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import eercf
from eercf.cli import main
from eercf.index import VideoIndex
from eercf.model import EERCF
from eercf.model.config import get_model_config
from eercf.model.tokenizer import CLIPTokenizer
from eercf.serve import create_app
from test_index_cli import COLOURS, write_video

TOKEN = "s3cret-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A saved tiny model, four indexed videos (with metadata), spare videos for the add
    jobs inside the media root, a broken file, and a file outside the media root."""
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train([f"a {c} square moves right" for c in COLOURS] * 3, 600)
    eercf.save_model(model, root / "model")
    media = root / "media"
    for name in ("red", "green", "blue", "yellow"):
        write_video(media / "library" / f"{name}.mp4", COLOURS[name], frames=24)
    for name in ("white", "purple"):
        write_video(media / "spare" / f"{name}.mp4", COLOURS[name])
    (media / "spare" / "broken.mp4").write_bytes(b"not a video at all" * 40)
    write_video(root / "outside" / "secret.mp4", COLOURS["red"])
    assert main(["index", str(media / "library"), "--model", str(root / "model"), "--index",
                 str(root / "index"), "--workers", "0"]) == 0
    (root / "token").write_text(TOKEN + "\n")
    return root


@pytest.fixture
def client(library, tmp_path):
    """A client of a service over a fresh copy of the index (each test may write to it)."""
    import shutil

    folder = tmp_path / "index"
    shutil.copytree(library / "index", folder)
    app = create_app(folder, token=TOKEN, media_root=library / "media")
    with TestClient(app) as c:
        yield c


def wait_job(client: TestClient, job: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}").json()
        if state["state"] in ("done", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish: {state}")


def test_search_equals_the_library(client, library):
    query = "a red square moves right"
    got = client.get("/api/search", params={"q": query, "k": 4}).json()
    expected = VideoIndex.open(library / "index").search(query, k=4)[0]
    assert [h["video_id"] for h in got["hits"]] == [h.video_id for h in expected.hits]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in expected.hits])
    hit = got["hits"][0]
    assert hit["links"]["media"] == f"/api/videos/{hit['video_id']}/media"
    assert hit["where"]["grid"] == 4 and hit["moment"]["start"] <= hit["moment"]["time"]
    assert got["version"] == expected.version and got["query"] == query

    several = client.post("/api/search", json={"queries": [query, "a blue square"], "k": 2,
                                               "weights": {"video": 1.0}}).json()["results"]
    assert [len(r["hits"]) for r in several] == [2, 2]
    assert [r["query"] for r in several] == [query, "a blue square"]


def test_concurrent_searches_are_batched_and_answered_alike(client):
    import concurrent.futures

    queries = [f"a {c} square moves right" for c in COLOURS] * 4
    alone = {q: client.get("/api/search", params={"q": q, "k": 3}).json()["hits"] for q in queries}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: (q, client.get("/api/search", params={"q": q, "k": 3})),
                                 queries))
    for q, response in together:
        assert response.status_code == 200
        assert [h["video_id"] for h in response.json()["hits"]] == [h["video_id"] for h in alone[q]]
    timings = client.get("/api/index").json()["timings"]
    # 24 requests at once from 8 threads: some must have shared a batch
    assert timings["searches"] >= 2 * len(queries) and timings["batches"] < timings["searches"]


def test_filter_keeps_k_hits_among_the_matching(client):
    hits = client.get("/api/search", params={"q": "a square", "k": 3,
                                             "filter": "id IN ('red', 'blue')"}).json()["hits"]
    assert sorted(h["video_id"] for h in hits) == ["blue", "red"]
    body = {"queries": ["a square"], "k": 4, "filter": "duration > 0"}
    assert len(client.post("/api/search", json=body).json()["results"][0]["hits"]) == 4
    bad = client.get("/api/search", params={"q": "a square", "filter": "durat1on >>> 3"})
    assert bad.status_code == 400 and "invalid filter" in bad.json()["error"]


def test_video_media_with_range_and_thumbnail(client, library):
    info = client.get("/api/videos/red").json()
    assert info["uri"] == str(library / "media" / "library" / "red.mp4")
    assert info["duration"] == pytest.approx(3.0) and len(info["timestamps"]) == 12
    whole = (library / "media" / "library" / "red.mp4").read_bytes()
    full = client.get("/api/videos/red/media")
    assert full.status_code == 200 and full.content == whole
    assert full.headers["content-type"] == "video/mp4" and full.headers["accept-ranges"] == "bytes"
    part = client.get("/api/videos/red/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    thumb = client.get("/api/videos/red/thumbnail", params={"t": 1.5, "w": 48})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from PIL import Image
    import io
    image = Image.open(io.BytesIO(thumb.content))
    assert image.size == (48, 48)
    # the red square moves right: at 1.5 s it is right of where it starts
    row = [image.getpixel((x, 24)) for x in range(48)]
    reds = [x for x, (r, g, b) in enumerate(row) if r > 150 and g < 100]
    assert reds and min(reds) > 10
    assert client.get("/api/videos/red/thumbnail", params={"t": 1.5, "w": 48}).content == thumb.content


@pytest.mark.parametrize("path", ["/api/videos/../../etc/passwd", "/api/videos/..%2F..%2Fetc%2Fpasswd",
                                  "/api/videos/%2Fetc%2Fpasswd/media", "/api/videos/nope",
                                  "/api/videos/nope/thumbnail", "/api/jobs/nope"])
def test_unknown_and_hostile_ids_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json" and "error" in response.json()


@pytest.mark.parametrize("params,status", [({"q": ""}, 400), ({"q": "   "}, 400),
                                           ({"q": "x" * 10_000}, 400), ({}, 422),
                                           ({"q": "a", "k": 0}, 422), ({"q": "a", "k": -3}, 422),
                                           ({"q": "a", "k": 1_000_000}, 422),
                                           ({"q": "a", "k": "ten"}, 422),
                                           ({"q": "a", "topk": 0}, 422),
                                           ({"q": "a", "exact_candidates": -1}, 422),
                                           ({"q": "a", "per": "frame"}, 422),
                                           ({"q": "a", "video": ""}, 422)])
def test_bad_searches_get_json_errors(client, params, status):
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "status"} and response.json()["status"] == status


def test_bad_bodies_get_json_errors(client):
    cases = [(b"{not json", 400), (json.dumps({"queries": []}).encode(), 422),
             (json.dumps({"queries": ["a"], "k": 10**6}).encode(), 422),
             (json.dumps({"queries": ["a"], "weights": {"bogus": 1}}).encode(), 400),
             (json.dumps({"queries": ["a"], "extra": 1}).encode(), 422),
             (json.dumps(["a"]).encode(), 422)]
    for body, status in cases:
        response = client.post("/api/search", content=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == status, (body, response.text)
        assert response.json()["status"] == status
    huge = client.post("/api/search", content=b" " * (100 << 20),
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]


def test_writes_need_the_token(client):
    body = {"videos": [{"uri": "spare/white.mp4"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.post("/api/videos", json=body, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
        assert client.delete("/api/videos/red", headers=headers).status_code == 401
    assert client.get("/api/videos/red").status_code == 200


def test_read_only_without_a_token(library, tmp_path):
    with TestClient(create_app(library / "index")) as c:
        assert c.post("/api/videos", json={"videos": [{"uri": "x.mp4"}]}).status_code == 403
        assert c.delete("/api/videos/red", headers=AUTH).status_code == 403
        assert c.get("/api/index").json()["writable"] is False


def test_add_job_reports_bad_items_and_search_sees_the_new_version(client, library):
    before = client.get("/api/index").json()
    response = client.post("/api/videos", headers=AUTH, json={"videos": [
        {"uri": "spare/white.mp4", "metadata": {"tag": "new"}},
        {"uri": str(library / "media" / "spare" / "broken.mp4")},
        {"uri": "spare/missing.mp4"},
        {"uri": "library/red.mp4", "id": "red"}]})
    assert response.status_code == 202
    state = wait_job(client, response.json()["job"])
    assert state["state"] == "done" and state["added"] == ["white"]
    assert sorted(f["id"] for f in state["failed"]) == ["broken", "missing", "red"]
    assert state["progress"]["done"] == 4 == state["progress"]["total"]
    deadline = time.monotonic() + 10
    while client.get("/api/index").json()["videos"] != before["videos"] + 1:
        assert time.monotonic() < deadline, "the service did not load the new version"
        time.sleep(0.1)
    assert client.get("/api/videos/white").json()["metadata"] == {"tag": "new"}
    hits = client.get("/api/search", params={"q": "a square", "k": 10,
                                             "filter": "metadata LIKE '%new%'"}).json()["hits"]
    assert [h["video_id"] for h in hits] == ["white"]

    assert client.delete("/api/videos/white", headers=AUTH).json() == {"removed": "white"}
    assert client.delete("/api/videos/white", headers=AUTH).status_code == 404
    deadline = time.monotonic() + 10
    while client.get("/api/videos/white").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_add_refuses_uris_outside_the_media_root(client, library):
    for uri in (str(library / "outside" / "secret.mp4"), "../outside/secret.mp4",
                "/etc/passwd", "s3://bucket/video.mp4"):
        response = client.post("/api/videos", headers=AUTH, json={"videos": [{"uri": uri}]})
        assert response.status_code == 400, (uri, response.text)
    dup = client.post("/api/videos", headers=AUTH, json={"videos": [
        {"uri": "spare/white.mp4", "id": "x"}, {"uri": "spare/purple.mp4", "id": "x"}]})
    assert dup.status_code == 400 and "twice" in dup.json()["error"]


def test_media_outside_the_root_is_not_served(library, tmp_path):
    """An index whose stored uri lies outside --media-root: the file is refused (403)."""
    with TestClient(create_app(library / "index", media_root=library / "media" / "spare")) as c:
        response = c.get("/api/videos/red/media")
        assert response.status_code == 403 and "outside the media root" in response.json()["error"]


def test_health_index_docs_and_page(client):
    assert client.get("/api/health").json()["status"] == "ok"
    info = client.get("/api/index").json()
    assert info["videos"] == 4 and info["model"]["patches"] == 16 and info["writable"] is True
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "page.js" in page.text
    assert client.get("/static/page.js").status_code == 200
    assert client.get("/api/nothing").json()["status"] == 404
    assert client.put("/api/search").status_code == 405


def test_an_unreadable_index_answers_503(library, tmp_path):
    import shutil

    folder = tmp_path / "index"
    shutil.copytree(library / "index", folder)
    app = create_app(folder, hot_in_memory=False)
    with TestClient(app) as c:
        assert c.get("/api/search", params={"q": "a red square"}).status_code == 200
        shutil.rmtree(folder / "videos.lance")
        app.state.searcher.refresh_now()
        deadline = time.monotonic() + 10
        while (r := c.get("/api/search", params={"q": "a red square"})).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["error"]
        assert c.get("/api/health").status_code == 503


def test_pq_index_served_from_its_hot_tier_equals_the_library(tmp_path):
    """A pq-coded index: the service (hot tier in memory, batched) ranks as VideoIndex.search."""
    from test_codecs import add, clustered_features  # the tiny shapes

    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).eval()
    model.tokenizer = CLIPTokenizer.train(["a red square", "something blue moves left"] * 3, 600)
    index = VideoIndex.create(tmp_path / "idx", model)
    add(index, [f"v{i}" for i in range(60)], clustered_features(60, 3))
    assert index.apply_codec() and index.stored_codec() == "pq"
    queries = ["a red square", "something blue moves left", "two shapes"]
    expected = index.search(queries, k=5, topk=20, model=model)
    app = create_app(tmp_path / "idx", model=model)
    assert app.state.searcher.state().hot is not None
    with TestClient(app) as c:
        got = c.post("/api/search", json={"queries": queries, "k": 5, "topk": 20}).json()["results"]
        info = c.get("/api/index").json()
        for width in (0, 20):  # the exact pass's width as asked, as the library reads it
            asked = c.get("/api/search", params={"q": queries[1], "k": 5, "topk": 20,
                                                 "exact_candidates": width}).json()
            library = index.search(queries[1], k=5, topk=20, model=model,
                                   exact_candidates=width)[0]
            assert [h["video_id"] for h in asked["hits"]] == [h.video_id for h in library.hits]
            assert [h["score"] for h in asked["hits"]] == pytest.approx(
                [h.score for h in library.hits])
    assert info["hot_in_memory"] is True and info["cold_reads"] == "mapped"
    for result, want in zip(got, expected):
        assert [h["video_id"] for h in result["hits"]] == [h.video_id for h in want.hits]
        assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in want.hits])
        assert [h["where"]["row"] for h in result["hits"]] == [h.where.row for h in want.hits]


def test_long_videos_come_back_once_with_moments(tmp_path):
    """An index with a segmented video: the service groups as VideoIndex.search does, per
    segment and within one video too, and answers segment and moments in JSON."""
    from test_segments import add_video, features, unit

    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny")).eval()
    model.tokenizer = CLIPTokenizer.train(["a red square", "something blue moves left"] * 3, 600)
    index = VideoIndex.create(tmp_path / "idx", model, codec="exact")
    add_video(index, "long", [(6.0 * i, 6.0 * i + 12) for i in range(30)], seed=1,
              towards=unit(1, 128, seed=5))
    for i in range(4):
        index.add([f"v{i}"], [None], [8.0], [[0.5 + j * 0.6 for j in range(12)]], features(1, 9 + i))
    app = create_app(tmp_path / "idx", model=model)
    with TestClient(app) as c:
        for params in ({}, {"per": "segment"}, {"video": "long"}):
            want = index.search("a red square", k=4, model=model, **params)[0]
            got = c.get("/api/search", params={"q": "a red square", "k": 4, **params}).json()
            assert [h["video_id"] for h in got["hits"]] == [h.video_id for h in want.hits]
            assert [h["moments"] for h in got["hits"]] == [
                [vars(m) for m in h.moments] for h in want.hits]
            assert [h["segment"] for h in got["hits"]] == [
                None if h.segment is None else vars(h.segment) for h in want.hits]
        grouped = c.get("/api/search", params={"q": "a red square", "k": 5}).json()["hits"]
        assert sorted(h["video_id"] for h in grouped) == ["long", "v0", "v1", "v2", "v3"]
        assert c.get("/api/index").json()["videos"] == 5
        assert c.get("/api/videos/long").json()["duration"] == 186.0


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=abc", "bytes=50-10", "items=0-5"])
def test_bad_ranges_get_json_errors_or_the_whole_file(client, header):
    response = client.get("/api/videos/red/media", headers={"Range": header})
    if response.status_code == 200:  # an unknown unit may be ignored (RFC 9110 14.2)
        assert len(response.content) > 1000
    else:
        assert response.status_code in (400, 416), response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["status"] == response.status_code


def test_serve_command_errors_are_one_line(library, tmp_path, capsys):
    assert main(["serve", str(library / "index"), "--token-file", str(tmp_path / "none")]) == 2
    assert "cannot read --token-file" in capsys.readouterr().err
    (tmp_path / "short").write_text("abc")
    assert main(["serve", str(library / "index"), "--token-file", str(tmp_path / "short")]) == 2
    assert "too short" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(library / "index"), "--media-root", str(tmp_path / "x")]) == 2
