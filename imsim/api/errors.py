"""Every error the API answers is one line of JSON, ``{"error": ..., "kind": ...}``, never a traceback; one kind of
mistake gets one status and one kind whichever parameter made it (a value a request cannot have: 422 ``invalid``, from
FastAPI's validation, the vocabulary's or imsim's own checks alike)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    ConfigError,
    FilterError,
    ImageError,
    ImageTooLarge,
    ImsimError,
    InvalidInput,
    JobRunning,
    ModelError,
    NotFound,
    QueueError,
    StoreError,
    StoreUnavailable,
)
from .service import Metrics

# kind of an answer by HTTP status, for the errors that only have a status (FastAPI's and Starlette's own)
KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
    504: "timeout",
}


def error_status(error: BaseException) -> tuple[int, str]:
    """(status, kind) of an error raised while answering."""
    if isinstance(error, NotFound):
        return 404, "not_found"
    if isinstance(error, ImageTooLarge):
        return 413, "too_large"
    if isinstance(error, ImageError):
        return 422, "bad_image"
    if isinstance(error, InvalidInput | FilterError | ModelError):
        return 422, "invalid"
    if isinstance(error, StoreUnavailable):
        return 503, "store_unavailable"
    if isinstance(error, JobRunning):
        return 409, "job_running"
    if isinstance(error, QueueError):
        return 503, "queue_unavailable"
    if isinstance(error, PermissionError):
        return 403, "forbidden"
    if isinstance(error, StoreError | ConfigError):
        return 409, "conflict"  # the request is well formed; the store or the server's configuration cannot answer it
    if isinstance(error, LookupError):
        return 404, "not_found"
    if isinstance(error, ImsimError | ValueError):
        return 422, "invalid"
    return 500, "internal"


def install(app: FastAPI, metrics: Metrics) -> None:
    """The handlers that turn every error into one line of JSON, counted by kind."""

    def answer(status: int, kind: str, text: str) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse({"error": text, "kind": kind}, status)

    async def raised(request: Request, error: Exception) -> JSONResponse:
        status, kind = error_status(error)
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return answer(status, kind, text if status < 500 else f"internal error: {type(error).__name__}")

    # the errors a request can cause are answered where they are raised (Starlette's exception middleware: no traceback
    # in the log); anything else is a bug, answered as one line too but logged with its traceback by the server
    for expected in (ImsimError, ValueError, LookupError, PermissionError, Exception):
        app.add_exception_handler(expected, raised)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = KINDS.get(error.status_code, f"http_{error.status_code}")
        return answer(error.status_code, kind, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return answer(422, "invalid", f"{where}: {message}" if where else message)
