"""What keeps the service's answers JSON and its inputs bounded: one error shape for every
failure, and a cap on request bodies (checked while they arrive, not after)."""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import EercfError
from .media import MediaError
from .searcher import Unavailable

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes a request body may have (a search or a job of 1,000 videos fits)


def error(status: int, message: str, headers: dict[str, str] | None = None,
          detail: list | None = None) -> JSONResponse:
    body: dict = {"error": message, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to ``{"error", "status"}``: HTTP errors as raised, bad input 400 or
    422, an unreadable index 503, anything unforeseen 500 without a traceback."""

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        message = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        if err.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        if err.status_code == 405:
            message = "method not allowed on this endpoint"
        return error(err.status_code, message, getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, "the request body is not valid JSON")
        detail = [{"where": ".".join(str(part) for part in p.get("loc", ())),
                   "problem": p.get("msg", "")} for p in problems]
        first = detail[0] if detail else {"where": "request", "problem": "invalid"}
        return error(422, f"{first['where']}: {first['problem']}", detail=detail)

    @app.exception_handler(EercfError)
    async def user_error(_: Request, err: EercfError) -> JSONResponse:
        return error(400, str(err))

    @app.exception_handler(MediaError)
    async def media_error(_: Request, err: MediaError) -> JSONResponse:
        return error(err.status, str(err))

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, err: Unavailable) -> JSONResponse:
        return error(503, str(err), {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unforeseen(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(err).__name__}); the server log has details")


class BodyLimit:
    """ASGI middleware answering 413 to a body over ``limit`` bytes: at once when its
    Content-Length says so, else as soon as that many bytes have arrived."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._too_large(scope, receive, send, bool(length.isdigit()))
            return
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send, True)
                return
            body.append(chunk)
            more = message.get("more_body", False)
        data = b"".join(body)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, numeric: bool) -> None:
        if numeric:
            response = error(413, f"the request body is larger than {self.limit:,} bytes")
        else:
            response = error(400, "invalid Content-Length header")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
