"""``eercf download`` against a local HTTP server serving files made here: OpenAI's layout
(``/<sha256>/ViT-B-32.pt`` + the BPE file) and a Hugging Face repository (file listing API
+ ``resolve/main``), with a connection cut midway to exercise resume and hash checks."""
from __future__ import annotations

from importlib import resources
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import eercf
from eercf.weights import pretrained as dl
from eercf.cli import main
from eercf.model.config import get_model_config, merge
from eercf.errors import EercfError

from test_checkpoint import HF_CONFIG, SMALL, assert_same_model, huggingface_state, openai_state

BPE = (resources.files("eercf.model") / "bpe_simple_vocab_16e6.txt.gz").read_bytes()  # shipped
REAL_B32_SHA = dl.OPENAI_MODELS["ViT-B-32"]


class Server:
    """Serves ``files`` (URL path -> bytes) with Range support. ``cut[path] = n`` makes the
    next response for ``path`` stop after ``n`` body bytes and close the connection;
    ``ignore_range`` answers every request with the whole file, as some servers do."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.ignore_range = files, {}, False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.cut:
                    body = body[: server.cut.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EERCF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EERCF_DOWNLOAD_BASE_URL", raising=False)


@pytest.fixture(scope="module")
def clip_model() -> eercf.EERCF:
    """A small CLIP with OpenAI's vocabulary size, so OpenAI's BPE fits it."""
    torch.manual_seed(0)
    config = merge(get_model_config("tiny"), merge(SMALL, {"text": {"vocab_size": 49408}}))
    return eercf.EERCF(config).eval()


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(2)
    ids = torch.randint(1, 49000, (2, 32))
    ids[:, 0], ids[:, 9], ids[:, 10:] = 49406, 49407, 0
    return ids, torch.randn(1, 12, 3, 32, 32)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialized(state: dict, path: Path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


def test_openai_download_resumes_and_converts(server, clip_model, inputs, tmp_path, monkeypatch):
    blob = serialized(openai_state(clip_model), tmp_path / "made.pt")
    sha = sha256(blob)
    monkeypatch.setitem(dl.OPENAI_MODELS, "ViT-B-32", sha)
    weights_path = f"/{sha}/ViT-B-32.pt"
    server.files.update({weights_path: blob, "/bpe_simple_vocab_16e6.txt.gz": BPE})
    server.cut[weights_path] = len(blob) // 3
    dst = tmp_path / "b32"
    assert main(["download", "ViT-B-32", str(dst), "--base-url", server.url, "--json"]) == 0
    # the cut transfer was continued from where it stopped, not restarted
    assert (weights_path, f"bytes={len(blob) // 3}-") in server.requests
    assert_same_model(eercf.load_model(dst), clip_model, inputs)
    home = tmp_path / "home"
    assert (home / "downloads" / "ViT-B-32" / "ViT-B-32.pt").read_bytes() == blob
    assert not list(home.rglob("*.part"))
    # the cached tokenizer now serves checkpoints that carry none
    assert eercf.load_model(tmp_path / "made.pt").tokenizer.vocab_size == 49408
    # a second download reuses the verified cache: no transfer
    before = len(server.requests)
    dl.download("ViT-B-32", tmp_path / "again", base_url=server.url, progress=False)
    assert len(server.requests) == before


def test_raw_download_keeps_files_as_published(server, clip_model, tmp_path, monkeypatch):
    blob = serialized(openai_state(clip_model), tmp_path / "made.pt")
    monkeypatch.setitem(dl.OPENAI_MODELS, "ViT-B-16", sha256(blob))
    server.files.update({f"/{sha256(blob)}/ViT-B-16.pt": blob, "/bpe_simple_vocab_16e6.txt.gz": BPE})
    info = dl.download("ViT-B-16", tmp_path / "raw", raw=True, base_url=server.url, progress=False)
    assert info["raw"] is True
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["ViT-B-16.pt", "bpe_simple_vocab_16e6.txt.gz"]
    model = eercf.load_model(tmp_path / "raw" / "ViT-B-16.pt")  # finds the BPE beside it
    assert model.tokenize(["a dog"])[0, :3].tolist() == [49406, 320, 1929]


def test_sha256_mismatch_removes_file(server, tmp_path):
    server.files.update({f"/{REAL_B32_SHA}/ViT-B-32.pt": b"not the real weights" * 100,
                         "/bpe_simple_vocab_16e6.txt.gz": BPE})
    with pytest.raises(EercfError, match="sha256 mismatch.*removed"):
        dl.download("ViT-B-32", tmp_path / "out", base_url=server.url, progress=False)
    folder = tmp_path / "home" / "downloads" / "ViT-B-32"
    assert not list(folder.iterdir()) and not (tmp_path / "out").exists()


def test_resume_in_a_later_run(server, tmp_path):
    data = bytes(range(256)) * 4096
    server.files["/f.bin"] = data
    remote = dl.RemoteFile(f"{server.url}/f.bin", "f.bin", sha256=sha256(data))
    server.cut["/f.bin"] = 100_000
    with pytest.raises(EercfError, match="interrupted.*run the command again to resume"):
        dl.fetch(remote, tmp_path, retries=0, progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == 100_000
    assert dl.fetch(remote, tmp_path, retries=0, progress=False).read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")
    assert not (tmp_path / "f.bin.part").exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    data = bytes(range(256)) * 1024
    server.files["/f.bin"] = data
    server.ignore_range = True
    server.cut["/f.bin"] = 5000
    remote = dl.RemoteFile(f"{server.url}/f.bin", "f.bin", sha256=sha256(data))
    assert dl.fetch(remote, tmp_path, progress=False).read_bytes() == data
    assert len(server.requests) == 2


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> bytes:
    from eercf.model.tokenizer import CLIPTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    CLIPTokenizer.train(["a dog runs", "a cat sleeps on a mat"] * 10, vocab_size=600).save(path)
    return path.read_bytes()


def test_huggingface_download(server, tokenizer_json, tmp_path, monkeypatch):
    torch.manual_seed(3)
    model = eercf.EERCF(merge(get_model_config("tiny"), SMALL)).eval()
    save_file(huggingface_state(model), str(tmp_path / "w.safetensors"))
    files = {"model.safetensors": (tmp_path / "w.safetensors").read_bytes(),
             "config.json": json.dumps(HF_CONFIG).encode(), "tokenizer.json": tokenizer_json,
             "README.md": b"# a model card"}
    listing = []
    for name, data in files.items():
        entry = {"type": "file", "path": name, "size": len(data),
                 "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if name.endswith(".safetensors"):
            entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
        listing.append(entry)
        server.files[f"/acme/clip-small/resolve/main/{name}"] = data
    server.files["/api/models/acme/clip-small/tree/main"] = json.dumps(listing).encode()
    server.cut["/acme/clip-small/resolve/main/model.safetensors"] = 1000
    monkeypatch.setenv("EERCF_DOWNLOAD_BASE_URL", server.url)
    info = dl.download("hf:acme/clip-small", tmp_path / "out", progress=False)
    assert info["format"] == "huggingface" and info["tokenizer"] is True
    loaded = eercf.load_model(tmp_path / "out")
    torch.manual_seed(4)
    assert_same_model(loaded, model, (torch.randint(1, 1000, (2, 32)), torch.randn(1, 12, 3, 32, 32)))
    assert not any("README" in path for path, _ in server.requests)
    # a tampered small file fails its git blob id
    server.files["/acme/clip-small/resolve/main/config.json"] = b"{}"
    with pytest.raises(EercfError, match="config.json: git blob id mismatch"):
        dl.download("hf:acme/clip-small", tmp_path / "out2", raw=True, progress=False)


def test_errors(server, tmp_path, capsys):
    with pytest.raises(EercfError, match="unknown model 'ViT-L-14'"):
        dl.plan("ViT-L-14")
    with pytest.raises(EercfError, match="hf:owner/repository"):
        dl.plan("hf:no-slash")
    with pytest.raises(EercfError, match="hf:acme/missing: cannot list the repository .*HTTP 404"):
        dl.plan("hf:acme/missing", base_url=server.url)
    server.files["/api/models/acme/empty/tree/main"] = b"[]"
    with pytest.raises(EercfError, match="not a Hugging Face CLIP repository"):
        dl.plan("hf:acme/empty", base_url=server.url)
    assert main(["download", "ViT-B-32", str(tmp_path / "x"), "--base-url", server.url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HTTP 404" in err and "ViT-B-32.pt" in err
    closed = Server({})
    url = closed.url
    closed.close()
    with pytest.raises(EercfError, match="cannot reach"):
        dl.fetch(dl.RemoteFile(f"{url}/f.bin", "f.bin"), tmp_path, progress=False)
