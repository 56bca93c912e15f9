"""The HTTP service (``eercf serve``): a JSON API over one index and the search page.

Every error is JSON ``{"error": MESSAGE, "status": CODE}`` with a status saying what happened;
nothing answers 500 with a traceback. Writes need ``Authorization: Bearer TOKEN``; a service
started without a token is read-only."""
from __future__ import annotations

import hmac
import math
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .. import __version__, paths
from ..errors import EercfError
from .guard import BodyLimit, install_error_handlers
from .jobs import Item, Writer, clear_partial
from .media import MediaError, MediaFile, Thumbnails, inside, local_file
from .searcher import Searcher

if TYPE_CHECKING:
    from ..model import EERCF

PAGE = Path(__file__).with_name("page")
MAX_QUERY_CHARS = 1000
MAX_QUERIES = 256
MAX_K = 1000
MAX_VIDEOS_PER_JOB = 1000
EXACT_HELP = ("a pq index: candidates read whole and scored exactly (default: the larger of 15 "
              "and k, so every re-scored hit has the exact score, moment and place; 0: the "
              "codes' scores alone)")


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(min_length=1, max_length=MAX_QUERIES)
    k: int = Field(10, ge=1, le=MAX_K)
    topk: int | None = Field(None, ge=1, le=MAX_K)
    weights: dict[str, float] | None = None
    filter: str | None = Field(None, max_length=2000)
    per: Literal["video", "segment"] = "video"
    video: str | None = Field(None, min_length=1, max_length=256)
    exact_candidates: int | None = Field(None, ge=0, le=MAX_K, description=EXACT_HELP)


class VideoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str = Field(min_length=1, max_length=4096)
    id: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
    metadata: dict[str, Any] | None = None


class AddBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    videos: list[VideoIn] = Field(min_length=1, max_length=MAX_VIDEOS_PER_JOB)


def create_app(index: str | Path, *, token: str | None = None,
               media_root: str | Path | None = None, model: "EERCF | None" = None,
               hot_in_memory: bool = True) -> FastAPI:
    """The service for the index folder ``index`` (its recorded model unless ``model``)."""
    searcher = Searcher(index, model, hot_in_memory=hot_in_memory)
    folder = searcher.index.location
    # a URL's video is fetched beside a local index; a remote index's into the cache root
    downloads = (folder.local / "downloads" if folder.local is not None
                 else paths.home() / "serve-downloads" / paths.slug(folder.uri))
    clear_partial(downloads)
    roots = [Path(media_root).resolve(), downloads.resolve()] if media_root else []
    writer = Writer(folder, searcher.model, searcher.refresh_now, downloads) if token else None
    thumbnails = Thumbnails()
    side = max(1, math.isqrt(searcher.index.model_info.patches))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if writer is not None:
            writer.close()
        searcher.close()

    app = FastAPI(title="eercf", version=__version__, lifespan=lifespan,
                  description="Text-to-video search over an eercf index: two-stage retrieval "
                              "with the moment and the patch that matched.")
    app.state.searcher, app.state.writer = searcher, writer
    app.add_middleware(BodyLimit)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    def authorised(request: Request) -> None:
        if token is None:
            raise HTTPException(403, "this service is read-only: start it with --token-file "
                                     "to allow changes")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token.encode()):
            raise HTTPException(401, "a valid Authorization: Bearer token is needed",
                                headers={"WWW-Authenticate": 'Bearer realm="eercf"'})

    def hit_json(hit: dict[str, Any]) -> dict[str, Any]:
        base = f"/api/videos/{_quote(hit['video_id'])}"
        at = (hit.get("moment") or {}).get("time")
        hit["links"] = {"video": base, "media": f"{base}/media",
                        "thumbnail": f"{base}/thumbnail?t={at or 0:.3f}"}
        if hit.get("where"):
            hit["where"]["grid"] = side
        return hit

    async def run_search(queries: list[str], k: int, topk: int | None,
                         weights: dict[str, float] | None, filter: str | None,
                         per: str = "video", video: str | None = None,
                         exact_candidates: int | None = None) -> list[dict]:
        for q in queries:
            if not q.strip():
                raise HTTPException(400, "a query is empty")
            if len(q) > MAX_QUERY_CHARS:
                raise HTTPException(400, f"a query has {len(q)} characters; at most "
                                         f"{MAX_QUERY_CHARS} are searched")
        results = await searcher.search(queries, k, topk, weights, filter, per, video,
                                        exact_candidates)
        out = []
        for result in results:
            body = result.to_dict()
            body["hits"] = [hit_json(h) for h in body["hits"]]
            out.append(body)
        return out

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", summary="Whether the index can be searched")
    def health() -> dict[str, Any]:
        state = searcher.state()
        return {"status": "ok", "version": state.version, "eercf": __version__}

    @app.get("/api/index", summary="The collection, model, sizes and timings so far")
    def index_info() -> dict[str, Any]:
        report = searcher.report()
        report["writable"] = writer is not None
        return report

    @app.get("/api/search", summary="Search with one query")
    async def search_get(q: str = Query(..., description="the text to search for"),
                         k: int = Query(10, ge=1, le=MAX_K),
                         topk: int | None = Query(None, ge=1, le=MAX_K),
                         filter: str | None = Query(None, max_length=2000),
                         per: Literal["video", "segment"] = Query(
                             "video", description="one hit per video, or per stored segment"),
                         video: str | None = Query(None, min_length=1, max_length=256,
                                                   description="search inside this video only"),
                         exact_candidates: int | None = Query(
                             None, ge=0, le=MAX_K, description=EXACT_HELP)
                         ) -> dict[str, Any]:
        return (await run_search([q], k, topk, None, filter, per, video, exact_candidates))[0]

    @app.post("/api/search", summary="Search with several queries (one batch)")
    async def search_post(body: SearchBody) -> dict[str, Any]:
        return {"results": await run_search(body.queries, body.k, body.topk, body.weights,
                                            body.filter, body.per, body.video,
                                            body.exact_candidates)}

    def stored(video_id: str):
        try:
            state, rows = searcher.row(video_id)
        except KeyError:
            raise HTTPException(404, f"no video {video_id!r} in the index") from None
        return state, rows

    @app.get("/api/videos/{video_id:path}/media", summary="The video file (HTTP Range)")
    def media(video_id: str):
        _, rows = stored(video_id)
        uri = rows.uris[0]
        if uri and uri.startswith(("http://", "https://")) and not roots:
            return RedirectResponse(uri, status_code=307)
        path = _media(uri, video_id, roots)
        if path.is_dir():
            raise HTTPException(415, f"video {video_id!r} is a folder of frames, not a "
                                     "playable file")
        return MediaFile(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/videos/{video_id:path}/thumbnail", summary="A JPEG of the frame at t seconds")
    def thumbnail(video_id: str, t: float = Query(0.0, ge=0.0, le=1e7),
                  w: int = Query(320, ge=16, le=1280)) -> Response:
        _, rows = stored(video_id)
        path = _media(rows.uris[0], video_id, roots)
        try:
            data = thumbnails.get(path, t, w, rows.timestamps[0])
        except MediaError as err:
            raise HTTPException(err.status, str(err)) from None
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/videos/{video_id:path}", summary="What the index holds about a video")
    def video(video_id: str) -> dict[str, Any]:
        state, rows = stored(video_id)
        times = [float(x) for x in rows.timestamps[0] if math.isfinite(x)]
        base = f"/api/videos/{_quote(video_id)}"
        return {"id": rows.ids[0], "uri": rows.uris[0], "duration": rows.durations[0],
                "timestamps": times, "metadata": rows.metadata[0], "version": state.version,
                "links": {"media": f"{base}/media", "thumbnail": f"{base}/thumbnail"}}

    @app.post("/api/videos", status_code=202, dependencies=[Depends(authorised)],
              summary="Add videos (a background job)")
    def add_videos(body: AddBody) -> dict[str, str]:
        items = [_item(v, roots, media_root) for v in body.videos]
        ids = [item.video_id for item in items]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise HTTPException(400, f"video id {repeated[0]!r} appears twice in one request")
        return {"job": writer.submit(items).id}

    @app.get("/api/jobs/{job_id}", summary="State of an add job")
    def job(job_id: str) -> dict[str, Any]:
        found = writer.jobs.get(job_id) if writer is not None else None
        if found is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return found.to_dict()

    @app.delete("/api/videos/{video_id:path}", dependencies=[Depends(authorised)],
                summary="Remove a video")
    def delete_video(video_id: str) -> dict[str, Any]:
        try:
            removed = writer.remove(video_id)
        except EercfError as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "5"}) from None
        if not removed:
            raise HTTPException(404, f"no video {video_id!r} in the index")
        return {"removed": video_id}

    return app


def _quote(video_id: str) -> str:
    from urllib.parse import quote

    return quote(video_id, safe="")


def _media(uri: str | None, video_id: str, roots: list[Path]) -> Path:
    try:
        return local_file(uri, video_id, roots)
    except MediaError as err:
        raise HTTPException(err.status, str(err)) from None


def _item(video: VideoIn, roots: list[Path], media_root: str | Path | None) -> Item:
    """One video of ``POST /api/videos``: a URL as given, a path made absolute (relative to
    the media root if there is one) and refused if it lies outside the media root."""
    uri = video.uri.strip()
    if uri.startswith(("http://", "https://")):
        name = uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        return Item(uri, video.id or Path(name).stem or name, video.metadata)
    if "://" in uri and not uri.startswith("file://"):
        raise HTTPException(400, f"uri {uri!r}: only local paths and http(s) URLs can be added")
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if not path.is_absolute():
        path = (Path(media_root) if media_root else Path.cwd()) / path
    if not inside(path, roots):
        raise HTTPException(400, f"uri {uri!r} lies outside the media root")
    return Item(str(path.absolute()), video.id or path.stem, video.metadata)


__all__ = ["create_app"]
