"""The HTTP API and its web pages (FastAPI; `imsim serve` runs it under uvicorn). Versioned JSON endpoints mirror
:class:`imsim.Client`; the OpenAPI schema is at ``/docs``.

Secure by default: the token (``IMSIM_API_TOKEN``) is checked on every request but ``/healthz`` when set, and
required to bind beyond loopback (:func:`imsim.api.server.check_bind`); uploads are capped
(``IMSIM_API_MAX_UPLOAD_MB``) and decoded within the same limits as ingest; images are served by stored id only,
never by a path from a request; raw filter expressions are refused unless ``IMSIM_API_RAW_FILTERS``; CORS is off
unless ``IMSIM_API_CORS_ORIGINS``; every error is one line of JSON (``{"error": ..., "kind": ...}``), never a
traceback; a request that runs past ``IMSIM_API_TIMEOUT`` ends with 504.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import (
    ImageError,
    ImageTooLarge,
    ImsimError,
)
from ..expr import Where
from ..fusion import SearchHit
from .service import SearchParams, Service
from .translate import error_status, hit_json, upload_name, where_of

ROW_ID = re.compile(r"^[0-9a-f]{32}$")
OPEN = {"/healthz", "/readyz", "/", "/duplicates"}  # no data: probes, and the pages (they ask for the token)


def create_app(service: Service) -> FastAPI:
    """The API over a started (or starting) :class:`Service`."""
    settings = service.settings
    app = FastAPI(
        title="imsim",
        version="1",
        description="Image-similarity search over CLIP, DINOv2 and other embeddings in Milvus. "
        "Every endpoint but /healthz wants `Authorization: Bearer TOKEN` when IMSIM_API_TOKEN is set.",
    )
    token = settings.api_token.get_secret_value()
    metrics = service.metrics
    if settings.api_cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware

        origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        started = time.perf_counter()
        if token and request.url.path not in OPEN:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                metrics.errors.labels("unauthorized").inc()
                response: Response = JSONResponse(
                    {"error": "missing or wrong token: send Authorization: Bearer TOKEN", "kind": "unauthorized"}, 401
                )
                metrics.requests.labels(endpoint, "401").inc()
                return response
        try:
            response = await asyncio.wait_for(call_next(request), timeout=settings.api_timeout)
        except TimeoutError:
            metrics.errors.labels("timeout").inc()
            response = JSONResponse({"error": f"the request took over {settings.api_timeout:g} s", "kind": "timeout"}, 504)
        endpoint = getattr(request.scope.get("route"), "path", endpoint)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ImsimError)
    @app.exception_handler(ValueError)
    @app.exception_handler(LookupError)
    @app.exception_handler(PermissionError)
    @app.exception_handler(Exception)
    async def one_line(request: Request, error: Exception) -> JSONResponse:
        status, kind = error_status(error)
        metrics.errors.labels(kind).inc()
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return JSONResponse({"error": text if status < 500 else f"internal error: {type(error).__name__}", "kind": kind}, status)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)  # FastAPI's, and Starlette's own (bad multipart, 404, 405)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        metrics.errors.labels(f"http_{error.status_code}").inc()
        return JSONResponse({"error": str(error.detail), "kind": f"http_{error.status_code}"}, error.status_code)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        metrics.errors.labels("invalid").inc()
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}", "kind": "invalid"}, 422)

    # --- health -------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready to answer: models loaded, the store and Redis reachable."""
        checks: dict[str, str] = {"models": "loaded" if service.ready else "loading"}

        def probe() -> None:
            try:
                service.client.store.versions.collections()
                checks["store"] = "ok"
            except ImsimError as exc:
                checks["store"] = str(exc)
            try:
                from ..jobs.queue import job_store

                job_store(settings).ping()
                checks["redis"] = "ok"
            except ImsimError as exc:
                checks["redis"] = str(exc)

        await run_in_threadpool(probe)
        ok = service.ready and checks.get("store") == "ok" and checks.get("redis") == "ok"
        return JSONResponse({"ready": ok, **checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        """Prometheus metrics: requests and latency per endpoint, embed and search time, batch sizes, errors by kind."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- search -------------------------------------------------------------------------------------
    def params(k: int, models: str, fusion: str | None, where: Where | None, filter: str) -> SearchParams:
        if filter.strip() and not settings.api_raw_filters:
            raise HTTPException(400, "raw filter expressions are off (IMSIM_API_RAW_FILTERS): use the structured filters")
        if not 1 <= k <= 1000:
            raise HTTPException(422, f"k must be 1 to 1000, got {k}")
        names = tuple(service.client.models.names(models or None))
        return SearchParams(k, names, fusion or None, where, filter)

    def query_params(
        k: int = 10,
        models: str = "",
        fusion: str = "",
        under: str = "",
        glob: str = "",
        job: str = "",
        tag: Annotated[list[str] | None, Query()] = None,
        min_width: Annotated[int | None, Query(ge=0)] = None,
        min_height: Annotated[int | None, Query(ge=0)] = None,
        after: float | None = None,
        before: float | None = None,
        filter: str = "",
    ) -> SearchParams:
        """The query parameters every GET search takes (k, models, fusion and the structured filters), checked."""
        return params(k, models, fusion, where_of(under, glob, job, tag, min_width, min_height, after, before), filter)

    async def searched(query: SearchParams, **by: str) -> dict[str, Any]:
        """``Client.search`` by text or by a stored image (``by``), off the event loop."""
        hits = await run_in_threadpool(
            service.client.search,
            k=query.k,
            models=list(query.models),
            fusion=query.fusion,
            where=query.where,
            filter=query.filter,
            **by,
        )
        return answer(hits, query)

    def answer(hits: list[SearchHit], query: SearchParams) -> dict[str, Any]:
        models = list(hits[0].scores) if hits else list(query.models)
        return {"hits": [hit_json(h) for h in hits], "models": models, "random_weights": service.random_weights(models)}

    async def upload(file: UploadFile) -> bytes:
        """The upload's bytes, refused before any decoding when over the byte cap, empty, not an image, or over the
        pixel limit by its header (a decompression bomb costs its header's bytes, never its pixels)."""
        from ..images import read_header

        name = upload_name(file)
        limit = settings.api_max_upload_mb * 2**20
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLarge(name, f"over {settings.api_max_upload_mb} MB (IMSIM_API_MAX_UPLOAD_MB)")
        if not data:
            raise ImageError(name, "empty upload (0 bytes)")
        read_header(data, name, settings.max_image_pixels)
        return data

    @app.post("/v1/search/image", tags=["search"])
    async def search_image(
        image: Annotated[UploadFile, File(description="The query image.")],
        k: Annotated[int, Form()] = 10,
        models: Annotated[str, Form(description="Comma-separated model names (default: all enabled).")] = "",
        fusion: Annotated[str, Form(description="rrf, weighted, calibrated or none.")] = "",
        under: Annotated[str, Form()] = "",
        glob: Annotated[str, Form()] = "",
        job: Annotated[str, Form()] = "",
        tag: Annotated[list[str] | None, Form()] = None,
        min_width: Annotated[int | None, Form(ge=0)] = None,
        min_height: Annotated[int | None, Form(ge=0)] = None,
        after: Annotated[float | None, Form(description="Ingested at or after (Unix seconds).")] = None,
        before: Annotated[float | None, Form(description="Ingested before (Unix seconds).")] = None,
        filter: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        """Search by an uploaded image: fused results, each with every model's score and rank."""
        data = await upload(image)
        query = params(k, models, fusion, where_of(under, glob, job, tag, min_width, min_height, after, before), filter)
        started = time.perf_counter()
        hits = await asyncio.wrap_future(service.search_image(data, query, upload_name(image)))
        return answer(hits, query) | {"ms": 1000 * (time.perf_counter() - started)}

    @app.get("/v1/search/text", tags=["search"])
    async def search_text(
        q: Annotated[str, Query(description="The text to search by (text-capable models only).")],
        query: SearchParams = Depends(query_params),  # noqa: B008 - FastAPI reads the dependency from the default
    ) -> dict[str, Any]:
        """Search by text."""
        return await searched(query, text=q)

    @app.get("/v1/search/like", tags=["search"])
    async def search_like(
        id: Annotated[str, Query(description="A stored image's row id (or its path) whose stored vectors are the query.")],
        query: SearchParams = Depends(query_params),  # noqa: B008 - FastAPI reads the dependency from the default
    ) -> dict[str, Any]:
        """More like a stored image: its stored vectors, nothing re-embedded."""
        return await searched(query, like=id)

    @app.post("/v1/compare", tags=["search"])
    async def compare(a: UploadFile, b: UploadFile, models: Annotated[str, Form()] = "") -> dict[str, float]:
        """Cosine similarity of two uploaded images per model."""
        first, second = await upload(a), await upload(b)
        return await run_in_threadpool(service.client.compare, first, second, models or None)

    # --- collections and versions -----------------------------------------------------------------
    @app.get("/v1/collections", tags=["store"])
    async def collections() -> list[dict[str, Any]]:
        """Every collection (model version) with its row count and whether queries use it."""
        return [s.__dict__ for s in await run_in_threadpool(service.client.collections)]

    # --- duplicates ---------------------------------------------------------------------------------
    @app.get("/v1/duplicates", tags=["duplicates"])
    async def duplicates(
        model: str = "",
        threshold: float | None = None,
        precision: float = 0.95,
        under: str = "",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """Near-duplicate groups, paged, pairs marked "not a duplicate" left out (the pairs are computed once per
        query and kept for IMSIM_API's group cache; ``refresh`` computes them again)."""
        linked, hidden = await run_in_threadpool(service.linked, model or None, threshold, precision, under, refresh)
        groups = linked.groups(hidden)
        return {
            "model": linked.model,
            "threshold": linked.threshold.value,
            "threshold_source": linked.threshold.source,
            "total": len(groups),
            "groups": [g.as_dict() | {"paths": {i: p for i, p in g.members}} for g in groups[offset : offset + limit]],
        }

    @app.get("/v1/duplicates/exact", tags=["duplicates"])
    async def exact(
        under: str = "", offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """Images whose files are byte-identical (same sha256), found without any model."""
        groups = await run_in_threadpool(service.exact, under)
        return {"total": len(groups), "groups": [g.as_dict() for g in groups[offset : offset + limit]]}

    @app.post("/v1/duplicates/not-duplicate", tags=["duplicates"])
    async def not_duplicate(body: dict[str, str]) -> dict[str, Any]:
        """Mark a pair of stored images "not a duplicate": hidden from `imsim duplicates` from now on (page and CLI),
        and a negative the next time thresholds are calibrated on images with the same contents."""
        a, b = body.get("a", ""), body.get("b", "")
        if not (ROW_ID.match(a) and ROW_ID.match(b)) or a == b:
            raise HTTPException(422, "give two different stored image ids as a and b")
        mark = await run_in_threadpool(service.mark, a, b)
        return {"marked": [mark.a, mark.b]}

    # --- jobs ---------------------------------------------------------------------------------------
    @app.post("/v1/jobs", tags=["jobs"])
    async def queue_job(body: dict[str, Any]) -> dict[str, str]:
        """Queue an ingest of server-side paths, which must lie under IMSIM_ALLOWED_ROOTS."""
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise HTTPException(422, "paths: give a list of server-side paths")
        job_id = await run_in_threadpool(service.queue_job, paths, bool(body.get("force")), body.get("tags"))
        return {"job": job_id}

    @app.get("/v1/jobs", tags=["jobs"])
    async def jobs(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict[str, Any]]:
        """Recent jobs (counts only)."""
        from ..jobs.queue import job_store

        found = await run_in_threadpool(job_store(settings).reads.list, limit)
        return [s.as_dict() for s in found]

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def job(
        job_id: str, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=0, le=1000)] = 20
    ) -> dict[str, Any]:
        """A job's counts (O(1)), with one page of its failures."""
        from ..jobs.queue import job_store
        from ..sources.names import printable

        records = job_store(settings)
        status = await run_in_threadpool(records.reads.get, job_id)
        page = await run_in_threadpool(records.reads.failures, job_id, offset, limit)
        return status.as_dict() | {"failures": [{"path": printable(p), "reason": r} for p, r in page]}

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel(job_id: str) -> dict[str, Any]:
        from ..jobs.queue import cancel as cancel_job

        return (await run_in_threadpool(cancel_job, job_id, settings)).as_dict() | {"failures": {}}

    @app.post("/v1/jobs/{job_id}/retry", tags=["jobs"])
    async def retry(job_id: str) -> dict[str, str | None]:
        from ..jobs.queue import retry as retry_job

        return {"job": await run_in_threadpool(retry_job, job_id, settings)}

    # --- stored images ------------------------------------------------------------------------------
    def row_id(value: str) -> str:
        if not ROW_ID.match(value):
            raise HTTPException(404, f"not an image id: {value[:40]!r} (images are served by stored id only)")
        return value

    @app.get("/v1/images/{image_id}", tags=["images"])
    async def image(image_id: str) -> Response:
        """The stored image's file, by its row id only."""
        data, media = await run_in_threadpool(service.image_bytes, row_id(image_id))
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/images/{image_id}/thumbnail", tags=["images"])
    async def thumbnail(image_id: str, size: Annotated[int, Query(ge=16, le=1024)] = 256) -> Response:
        """A JPEG thumbnail of the stored image, made within the decode limits and cached."""
        jpeg = await run_in_threadpool(service.thumbnail, row_id(image_id), size)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    # --- pages --------------------------------------------------------------------------------------
    def page(name: str) -> HTMLResponse:
        return HTMLResponse(resources.files("imsim.api").joinpath("static", name).read_text(encoding="utf-8"))

    @app.get("/", include_in_schema=False)
    async def search_page() -> HTMLResponse:
        return page("search.html")

    @app.get("/duplicates", include_in_schema=False)
    async def duplicates_page() -> HTMLResponse:
        return page("duplicates.html")

    return app
