"""Probes (open: they hold no data): the process is up (``/healthz``), it is ready for what this deployment needs
(``/readyz``: searches answer, jobs can be queued; ``IMSIM_API_READY_NEEDS``); and its Prometheus metrics (guarded)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ImsimError
from ..vocabulary import Alive, Readiness
from .deps import Guarded, Warm

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Alive:
    """The process is up (models may still be loading)."""
    return Alive()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready yet."}})
async def readyz(service: Warm) -> JSONResponse:
    """Ready for what this deployment needs: searches (models loaded, the store reachable) and, when
    IMSIM_API_READY_NEEDS says so, queueing (Redis reachable). Each capability is reported either way, so a search-only
    API is ready while Redis is down."""
    checks: dict[str, str] = {"models": "loaded" if service.ready else "loading"}

    def probe() -> None:
        try:
            service.client.store.versions.collections()
            checks["store"] = "ok"
        except ImsimError as exc:
            checks["store"] = str(exc)
        try:
            from ..jobs.queue import job_store

            job_store(service.settings).ping()
            checks["redis"] = "ok"
        except ImsimError as exc:
            checks["redis"] = str(exc)

    await run_in_threadpool(probe)
    search, queueing = service.ready and checks["store"] == "ok", checks["redis"] == "ok"
    ready = search and (queueing or "queueing" not in service.settings.api_ready_needs)
    answer = Readiness(ready=ready, search=search, queueing=queueing, **checks)
    return JSONResponse(answer.model_dump(), 200 if ready else 503)


# the exposition format's media type, without the version the installed prometheus_client adds (the contract stays put)
METRICS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}
}


@router.get("/metrics", response_class=Response, responses=METRICS, dependencies=Guarded)
async def metrics(service: Warm) -> Response:
    """Prometheus metrics: requests and latency per endpoint, embed and search time, batch sizes, errors by kind."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
