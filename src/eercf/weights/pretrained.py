"""Fetch released CLIP weights: OpenAI's ViT-B/32 and ViT-B/16 (sha256-checked, as OpenAI's
URLs name the hash) or a Hugging Face CLIP repository (checked against the hashes its file
listing gives). Downloads stream to a ``.part`` file with a progress bar and resume with an
HTTP Range request after an interruption, in the same run or the next. The converted
checkpoint goes to ``paths.pretrained_dir(NAME)``, which is what the name then means to
:func:`eercf.load_model` and every command."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, paths
from ..errors import EercfError
from .names import HF_PREFIX, OPENAI_MODELS

OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"
BPE_BASE = "https://raw.githubusercontent.com/openai/CLIP/main/clip"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
HF_BASE = "https://huggingface.co"
BASE_URL_ENV = "EERCF_DOWNLOAD_BASE_URL"
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch and how to check it: a sha256, or the git blob id Hugging Face
    lists for files kept in git rather than LFS."""

    url: str
    name: str
    sha256: str | None = None
    git_sha1: str | None = None


class _Interrupted(Exception):
    """The transfer stopped early; the ``.part`` file holds what arrived."""


def plan(name: str, base_url: str | None = None) -> list[RemoteFile]:
    """The files of ``name`` (``ViT-B-32``, ``ViT-B-16`` or ``hf:owner/repo``), weights
    first. ``base_url`` (or ``$EERCF_DOWNLOAD_BASE_URL``) replaces the host of every URL:
    a mirror lays the files out under it as the original hosts do."""
    base = (base_url or os.environ.get(BASE_URL_ENV) or "").rstrip("/")
    if name in OPENAI_MODELS:
        sha = OPENAI_MODELS[name]
        return [RemoteFile(f"{base or OPENAI_BASE}/{sha}/{name}.pt", f"{name}.pt", sha256=sha),
                RemoteFile(f"{base or BPE_BASE}/{BPE_NAME}", BPE_NAME, sha256=BPE_SHA256)]
    if name.startswith(HF_PREFIX):
        repo = name[len(HF_PREFIX):]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise EercfError(f"{name}: a Hugging Face name is hf:owner/repository")
        return _huggingface_plan(repo, base or HF_BASE)
    raise EercfError(f"unknown model {name!r}: choose {', '.join(OPENAI_MODELS)} or hf:owner/repo")


def _huggingface_plan(repo: str, base: str) -> list[RemoteFile]:
    listing_url = f"{base}/api/models/{repo}/tree/main"
    try:
        with urllib.request.urlopen(_request(listing_url), timeout=TIMEOUT_S) as response:
            listing = json.load(response)
        files = {entry["path"]: entry for entry in listing if entry.get("type") == "file"}
    except urllib.error.HTTPError as err:
        raise EercfError(f"hf:{repo}: cannot list the repository ({listing_url}: HTTP {err.code})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise EercfError(f"hf:{repo}: cannot reach {listing_url} ({_reason(err)})") from None
    except (ValueError, TypeError, KeyError, AttributeError):
        raise EercfError(f"hf:{repo}: {listing_url} did not return a file listing") from None
    weights = next((n for n in ("model.safetensors", "pytorch_model.bin") if n in files), None)
    if weights is None or "config.json" not in files:
        raise EercfError(f"hf:{repo}: not a Hugging Face CLIP repository (needs config.json and "
                         "model.safetensors or pytorch_model.bin)")
    wanted = [weights, "config.json"] + (["tokenizer.json"] if "tokenizer.json" in files else [])
    out = []
    for path in wanted:
        entry = files[path]
        lfs = entry.get("lfs")
        out.append(RemoteFile(f"{base}/{repo}/resolve/main/{path}", path,
                              sha256=lfs["oid"] if lfs else None,
                              git_sha1=None if lfs else entry.get("oid")))
    return out


def _request(url: str, start: int = 0) -> urllib.request.Request:
    headers = {"User-Agent": f"eercf/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _reason(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or err) or type(err).__name__


def fetch(remote: RemoteFile, folder: str | Path, *, retries: int = 5, progress: bool = True) -> Path:
    """Download ``remote`` into ``folder`` (kept if already there and intact), resuming a
    partial ``.part`` file; a file failing its hash check is removed and reported."""
    folder = Path(folder)
    dest = folder / remote.name
    if dest.is_file():
        if _check(dest, remote) is None:
            return dest
        dest.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(remote, part, progress)
            break
        except _Interrupted:
            if attempt < retries:
                time.sleep(min(2 ** attempt - 1, 30))  # first retry at once, then back off
    else:
        got = part.stat().st_size if part.exists() else 0
        raise EercfError(f"{remote.url}: download interrupted {retries + 1} times ({got} bytes "
                         f"kept in {part}); run the command again to resume")
    problem = _check(part, remote)
    if problem:
        part.unlink()
        raise EercfError(f"{remote.url}: {problem}; the bad file was removed")
    os.replace(part, dest)
    return dest


def _transfer(remote: RemoteFile, part: Path, progress: bool) -> None:
    """One HTTP request: continue ``part`` from its size (or restart where the server
    ignores the range) and raise :class:`_Interrupted` if fewer bytes arrive than announced."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    try:
        response = urllib.request.urlopen(_request(remote.url, have), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # asked past the end: the part is stale, start over
            part.unlink()
            raise _Interrupted() from None
        if err.code >= 500:
            raise _Interrupted() from None
        raise EercfError(f"{remote.url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        if isinstance(getattr(err, "reason", None), (ConnectionRefusedError, socket.gaierror)):
            raise EercfError(f"cannot reach {remote.url} ({_reason(err)})") from None
        raise _Interrupted() from None
    with response:
        if response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != have:
                part.unlink()
                raise _Interrupted()
            total = int(match[2]) if match[2] != "*" else None
        else:
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=remote.name, disable=not progress, leave=False) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                raise _Interrupted() from None
    if total is not None and part.stat().st_size < total:
        raise _Interrupted()


def _check(path: Path, remote: RemoteFile) -> str | None:
    """None if ``path`` has the expected hash, else what is wrong."""
    if remote.sha256:
        digest = hashlib.sha256()
        expected = remote.sha256
        label = "sha256"
    elif remote.git_sha1:
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
        expected = remote.git_sha1
        label = "git blob id"
    else:
        return None
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != expected:
        return f"{label} mismatch (expected {expected}, got {digest.hexdigest()})"
    return None


def download(name: str, destination: str | Path | None = None, *, raw: bool = False,
             base_url: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Fetch ``name`` and convert it into ``paths.pretrained_dir(name)``, where the name then
    resolves, and into ``destination`` too if given; with ``raw`` put the files as published
    into ``destination`` instead (nothing converted)."""
    from .factory import convert, load_model, save_model

    if raw and destination is None:
        raise EercfError("--raw needs a destination folder")
    files = plan(name, base_url)
    folder = Path(destination) if raw else paths.downloads_dir(name)
    downloaded = [fetch(remote, folder, progress=progress) for remote in files]
    summary: dict[str, Any] = {"name": name, "files": [str(p) for p in downloaded], "raw": raw,
                               "destination": str(destination or paths.pretrained_dir(name))}
    if raw:
        return summary
    tokenizer = next((p for p in downloaded if p.name in (BPE_NAME, "tokenizer.json")), None)
    source = downloaded[0] if name in OPENAI_MODELS else folder
    info = convert(source, paths.pretrained_dir(name), tokenizer=tokenizer, progress=progress)
    if destination is not None:
        save_model(load_model(paths.pretrained_dir(name)), destination)
    return summary | {k: info[k] for k in ("format", "model", "parameters", "tokenizer")}
