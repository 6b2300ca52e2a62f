"""What bounds a request before a route sees it: its body (refused on its Content-Length before a byte is read, and
counted as it streams in when it has none: an upload is never spooled to disk past its cap) and its time (measured from
arrival, ``IMSIM_API_TIMEOUT``: a 504, and the request's queued work given up), with the metrics of both."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from .service import Metrics

FORM_SLACK = 1 << 20  # bytes of a multipart body beyond its files: boundaries, part headers, the other fields
DEFAULT_BODY = 1 << 20  # any other request's body (JSON): a megabyte


def body_limits(settings: Settings) -> Callable[[str], int]:
    """The largest body each path takes: an upload route its files at IMSIM_API_MAX_UPLOAD_MB each, anything else 1 MB."""
    upload = settings.api_max_upload_mb * 2**20
    per_path = {"/v1/search/image": upload + FORM_SLACK, "/v1/compare": 2 * upload + FORM_SLACK}
    return lambda path: per_path.get(path, DEFAULT_BODY)


def too_large(limit: int) -> str:
    return f"the request body is over {limit:,} bytes, the most this endpoint takes (IMSIM_API_MAX_UPLOAD_MB for images)"


class BodyLimit:
    """ASGI middleware: a body over its path's limit is a 413, never read past the limit (see the module doc)."""

    def __init__(self, app: ASGIApp, limits: Callable[[str], int], metrics: Metrics):
        self.app, self.limits, self.metrics = app, limits, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.errors.labels("too_large").inc()
            body = json.dumps({"error": too_large(limit), "kind": "too_large"}).encode()
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, counted, send)


class Timed:
    """ASGI middleware: the request's time from arrival, past ``IMSIM_API_TIMEOUT`` a 504 (the route is cancelled where
    it waits, so its queued image query is cancelled before it is embedded), and each request counted and timed by
    endpoint."""

    def __init__(self, app: ASGIApp, timeout: float, metrics: Metrics):
        self.app, self.timeout, self.metrics = app, timeout, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, sending), timeout=self.timeout)
        except TimeoutError:
            self.metrics.errors.labels("timeout").inc()
            if not status[0]:  # nothing sent yet: the answer is ours to give
                answer = JSONResponse({"error": f"the request took over {self.timeout:g} s", "kind": "timeout"}, 504)
                await answer(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status[0] or 500)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def install(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """The body limits, the timeout from arrival, the per-endpoint metrics and (IMSIM_API_CORS_ORIGINS) CORS."""
    app.add_middleware(BodyLimit, limits=body_limits(settings), metrics=metrics)
    app.add_middleware(Timed, timeout=settings.api_timeout, metrics=metrics)  # outside the body limit: it counts its 413

    if settings.api_cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware

        origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
