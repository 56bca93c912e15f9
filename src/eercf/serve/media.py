"""The service's media: which file belongs to a video, and a JPEG of its frame at a time.

A file is served only as the stored uri of a video the index holds, found by its id, never by a
path a client sends; with media roots, only files whose real path (symlinks resolved) lies
inside one of them."""
from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from starlette.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from ..data.sources import URL_SCHEMES
from ..data.video import folder_images

THUMBNAIL_CACHE = 512          # JPEGs kept in memory
MAX_THUMBNAIL_WIDTH = 1280


class MediaError(Exception):
    """Why a video's media cannot be served: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (resolved) lies in one of ``roots`` (resolved); no roots: anywhere."""
    if not roots:
        return True
    real = path.resolve()
    return any(real == root or root in real.parents for root in roots)


def local_file(uri: str | None, video_id: str, roots: Sequence[Path]) -> Path:
    """The local file or frame folder a stored uri names, checked against the media roots."""
    if not uri:
        raise MediaError(404, f"video {video_id!r} has no stored uri")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif uri.startswith(URL_SCHEMES):
        raise MediaError(404, f"video {video_id!r} is stored at {uri.split('://')[0]}:// and "
                              "the service serves local files only")
    path = Path(uri)
    if not inside(path, roots):
        raise MediaError(403, f"the media of video {video_id!r} lies outside the media root")
    if not path.exists():
        raise MediaError(404, f"the media of video {video_id!r} is missing on the server")
    return path


class MediaFile(FileResponse):
    """A file with HTTP Range (Starlette's), whose range errors (400 for a malformed header,
    416 for one past the end) come back as the service's JSON errors, not plain text."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failed: dict[str, Any] = {}

        async def send_json_errors(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                failed["start"] = message
                return
            if failed and message["type"] == "http.response.body":
                start = failed["start"]
                status = start["status"]
                text = "the Range header is malformed" if status == 400 else \
                    "the requested range lies outside the file"
                body = json.dumps({"error": text, "status": status}).encode()
                headers = [(k, v) for k, v in start["headers"]
                           if k.lower() not in (b"content-type", b"content-length")]
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await super().__call__(scope, receive, send_json_errors)


class Thumbnails:
    """JPEG frames by (file, time, width), made with PyAV and Pillow, the latest kept in memory."""

    def __init__(self, size: int = THUMBNAIL_CACHE):
        self.size = size
        self._cache: "OrderedDict[tuple, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, seconds: float, width: int, timestamps: np.ndarray | None = None
            ) -> bytes:
        key = (str(path), path.stat().st_mtime_ns, round(seconds, 2), width)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = _jpeg(_frame(path, seconds, timestamps), width)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return data


def _frame(path: Path, seconds: float, timestamps: np.ndarray | None):
    """The picture shown at ``seconds`` (the nearest stored frame of a frame folder)."""
    from PIL import Image

    if path.is_dir():
        images = folder_images(path)
        if not images:
            raise MediaError(404, f"frame folder {path.name} holds no images")
        times = timestamps[np.isfinite(timestamps)] if timestamps is not None else None
        if times is not None and len(times) == len(images):
            at = int(np.argmin(np.abs(times - seconds)))
        else:
            at = min(len(images) - 1, max(0, int(seconds)))
        with Image.open(images[at]) as image:
            return image.convert("RGB")
    import av

    try:
        with av.open(str(path), timeout=10.0) as container:
            if not container.streams.video:
                raise MediaError(422, f"{path.name} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if stream.time_base is not None and seconds > 0:
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
            picture = None
            for frame in container.decode(stream):
                picture = frame
                if frame.time is None or frame.time + 1e-3 >= seconds:
                    break
            if picture is None:
                raise MediaError(422, f"no frame of {path.name} could be decoded at {seconds:g} s")
            return picture.to_image()
    except av.FFmpegError as err:
        raise MediaError(422, f"{path.name} cannot be decoded: {err}") from None


def _jpeg(image, width: int) -> bytes:
    from PIL import Image

    width = max(16, min(width, MAX_THUMBNAIL_WIDTH, image.width))
    height = max(1, round(image.height * width / image.width))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    return out.getvalue()
