"""Where an index lives: a local folder, or a prefix on object storage (``s3://bucket/prefix``,
and ``gs://`` / ``az://`` where Lance and pyarrow support them).

The Lance dataset is opened at ``location.join("videos.lance")`` with the location's storage
options; the index's small files (manifest, stage-1 pointer and files, codebooks) go through
pyarrow's filesystem for the same URI. Storage options come from the environment: the usual
``AWS_*`` variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ALLOW_HTTP``), overridden by ``EERCF_STORAGE_OPTIONS``: a JSON object, or
the path of a file holding one, with Lance's keys (``aws_endpoint``, ``aws_region``,
``aws_access_key_id``, ``aws_secret_access_key``, ``allow_http``, ...).

Object storage has no file locks: concurrent writers are kept safe by Lance committing each
version with a conditional put (``If-None-Match: *``), so a store must honour it;
:func:`check_conditional_put` refuses one that does not.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import EercfError

REMOTE_SCHEMES = ("s3://", "gs://", "az://", "abfs://")
_ENV = {"aws_endpoint": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
        "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
        "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
        "aws_session_token": ("AWS_SESSION_TOKEN",),
        "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
        "allow_http": ("AWS_ALLOW_HTTP",)}
_checked: set[tuple[str, str]] = set()   # (endpoint, bucket) whose conditional puts were checked
_checked_lock = threading.Lock()


def is_remote(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


def storage_options(uri: str) -> dict[str, str]:
    """The storage options for ``uri`` (none for a local folder), from the environment."""
    if not is_remote(uri):
        return {}
    options: dict[str, str] = {}
    if uri.startswith("s3://"):
        for key, names in _ENV.items():
            value = next((os.environ[n] for n in names if os.environ.get(n)), None)
            if value is not None:
                options[key] = value
    given = os.environ.get("EERCF_STORAGE_OPTIONS", "").strip()
    if given:
        text = given
        if not given.startswith("{"):
            try:
                text = Path(given).read_text()
            except OSError as err:
                raise EercfError(f"EERCF_STORAGE_OPTIONS names {given}, which cannot be read: "
                                 f"{err.strerror or err}") from None
        try:
            extra = json.loads(text)
        except ValueError as err:
            raise EercfError(f"EERCF_STORAGE_OPTIONS is not a JSON object: {err}") from None
        if not isinstance(extra, dict):
            raise EercfError("EERCF_STORAGE_OPTIONS must be a JSON object of strings")
        options.update({str(k): str(v) for k, v in extra.items()})
    return options


@dataclass
class Location:
    """A local folder or an object-store prefix holding one index."""

    uri: str
    options: dict[str, str] = field(default_factory=dict)
    _filesystem: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, where: "str | os.PathLike | Location") -> "Location":
        if isinstance(where, Location):
            return where
        text = str(where)
        if is_remote(text):
            return cls(text.rstrip("/"), storage_options(text))
        return cls(str(Path(text)))

    def __str__(self) -> str:
        return self.uri

    @property
    def local(self) -> Path | None:
        """The folder, for a local index; None on object storage."""
        return None if is_remote(self.uri) else Path(self.uri)

    def join(self, name: str) -> str:
        return f"{self.uri}/{name}" if self.local is None else str(self.local / name)

    # ------------------------------------------------------------------ small files
    def _fs(self):
        """pyarrow's filesystem for this location and the path of the prefix in it (made once:
        an S3 filesystem holds a client and its connections)."""
        if self._filesystem is None:
            self._filesystem = self._make_fs()
        return self._filesystem

    def _make_fs(self):
        import pyarrow.fs as pafs

        if self.local is not None:
            return pafs.LocalFileSystem(), str(self.local.absolute())
        if self.uri.startswith("s3://"):
            o = self.options
            endpoint = o.get("aws_endpoint") or o.get("endpoint")
            scheme = "https"
            if endpoint and "://" in endpoint:
                scheme, endpoint = endpoint.split("://", 1)
            fs = pafs.S3FileSystem(access_key=o.get("aws_access_key_id"),
                                   secret_key=o.get("aws_secret_access_key"),
                                   session_token=o.get("aws_session_token"),
                                   region=o.get("aws_region") or o.get("region"),
                                   endpoint_override=endpoint, scheme=scheme)
            return fs, self.uri[len("s3://"):]
        try:
            return pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as err:
            raise EercfError(f"cannot reach {self.uri}: {err}") from None

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except OSError as err:
            raise EercfError(f"cannot {what} in {self.uri}: {str(err).splitlines()[0]}") from None

    def read_bytes(self, name: str) -> bytes:
        """The whole file ``name`` (FileNotFoundError if absent)."""
        if self.local is not None:
            return (self.local / name).read_bytes()
        fs, base = self._fs()

        def read() -> bytes:
            with fs.open_input_stream(f"{base}/{name}") as f:
                return f.read()
        return self._call(f"read {name}", read)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` whole: a reader sees the old file or the new one (a temporary file
        renamed here; one PUT on object storage, atomic there)."""
        if self.local is not None:
            path = self.local / name
            tmp = path.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return
        fs, base = self._fs()

        def write() -> None:
            with fs.open_output_stream(f"{base}/{name}") as f:
                f.write(data)
        self._call(f"write {name}", write)

    def exists(self, name: str) -> bool:
        if self.local is not None:
            return (self.local / name).exists()
        import pyarrow.fs as pafs

        fs, base = self._fs()
        info = self._call(f"look for {name}", fs.get_file_info, f"{base}/{name}")
        return info.type != pafs.FileType.NotFound

    def delete(self, name: str) -> None:
        if self.local is not None:
            (self.local / name).unlink(missing_ok=True)
            return
        fs, base = self._fs()
        try:
            fs.delete_file(f"{base}/{name}")
        except (FileNotFoundError, OSError):
            pass

    def names(self, pattern: str = "*") -> list[str]:
        """Top-level names under the location matching a glob ``pattern``."""
        import pyarrow.fs as pafs

        fs, base = self._fs()
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as err:
            raise EercfError(f"cannot list {self.uri}: {str(err).splitlines()[0]}") from None
        return sorted(n for n in (i.base_name for i in infos) if fnmatch.fnmatch(n, pattern))

    def size(self) -> int:
        """Bytes of every file under the location."""
        import pyarrow.fs as pafs

        fs, base = self._fs()
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)

    def is_empty(self) -> bool:
        if self.local is not None:
            return not self.local.exists() or (self.local.is_dir() and not any(self.local.iterdir()))
        return not self.names()

    def prepare_new(self, manifest: str) -> None:
        """Make ready for a new index: refused unless absent or empty (saying whether an index
        is there already, ``manifest`` present) and, on S3, unless the store honours
        conditional puts; a folder is created."""
        if self.local is not None and self.local.exists() and not self.local.is_dir():
            raise EercfError(f"cannot create an index in {self}: it is not a folder")
        if not self.is_empty():
            what = "an index already" if self.exists(manifest) else "not empty"
            raise EercfError(f"cannot create an index in {self}: it is {what}")
        check_conditional_put(self)
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)


def check_conditional_put(location: Location, racers: int = 16) -> None:
    """Refuse an S3 store that does not honour ``If-None-Match: *``: ``racers`` threads put
    the same new key at once, and exactly one may win (once per bucket and process)."""
    if not location.uri.startswith("s3://"):
        return
    bucket, _, prefix = location.uri[len("s3://"):].partition("/")
    endpoint = location.options.get("aws_endpoint") or location.options.get("endpoint") or ""
    with _checked_lock:
        if (endpoint, bucket) in _checked:
            return
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError
    except ImportError:
        raise EercfError("writing an index on S3 needs boto3 to check the store's conditional "
                         "puts: pip install 'eercf[s3]'") from None
    o = location.options
    client = boto3.client("s3", endpoint_url=endpoint or None,
                          aws_access_key_id=o.get("aws_access_key_id"),
                          aws_secret_access_key=o.get("aws_secret_access_key"),
                          aws_session_token=o.get("aws_session_token"),
                          region_name=o.get("aws_region") or o.get("region") or "us-east-1",
                          config=Config(retries={"max_attempts": 2},
                                        max_pool_connections=racers))
    key = f"{prefix}/.eercf-put-probe-{uuid.uuid4().hex}".lstrip("/")
    outcomes: list[Any] = []

    def race() -> None:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"probe", IfNoneMatch="*")
            outcomes.append("won")
        except ClientError as err:
            outcomes.append(err.response.get("Error", {}).get("Code", "error"))
        except Exception as err:  # noqa: BLE001 - reported below
            outcomes.append(repr(err))

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - a leftover probe object is harmless
        pass
    wins = outcomes.count("won")
    if wins != 1:
        others = sorted(set(o for o in outcomes if o != "won"))
        raise EercfError(
            f"the object store behind {location.uri} does not honour conditional puts "
            f"(If-None-Match): {wins} of {racers} racing puts of one new key won "
            f"({', '.join(others) or 'no refusals'}); concurrent writers could lose commits "
            "there. Use a store that enforces them (AWS S3, MinIO, SeaweedFS, ...)")
    with _checked_lock:
        _checked.add((endpoint, bucket))


@contextlib.contextmanager
def writer_lock(location: Location, name: str, wait: float) -> Iterator[None]:
    """One writer at a time: in a folder an exclusive ``flock`` on ``name`` (released by the
    kernel even on SIGKILL), waiting up to ``wait`` seconds for another holder; on object
    storage no lock (none exists there) but a store checked to honour conditional puts."""
    if location.local is None:
        check_conditional_put(location)
        yield
        return
    deadline = time.monotonic() + wait
    with open(location.local / name, "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EercfError(f"index {location} is being written by another process; "
                                     "one writer at a time") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
