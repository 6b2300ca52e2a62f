"""The HTTP API and its pages (FastAPI; `imsim serve` runs it under uvicorn): routers per area over one warm
:class:`~imsim.api.service.Service`, speaking the vocabulary of :mod:`imsim.vocabulary` (the OpenAPI document is
docs/openapi.json, checked against the served one by the tests).

Secure by default: the token (``IMSIM_API_TOKEN``) is one dependency of every router that serves data (the probes, the
pages and the schema are open), and required to bind beyond loopback (:func:`imsim.api.server.check_bind`); bodies are
capped per endpoint as they stream in (:mod:`~imsim.api.limits`); uploads are decoded within the same limits as ingest;
images are served by stored id only; raw filter expressions are refused unless ``IMSIM_API_RAW_FILTERS``; CORS is off
unless ``IMSIM_API_CORS_ORIGINS``; every error is one line of JSON (:mod:`~imsim.api.errors`); a request that runs
past ``IMSIM_API_TIMEOUT`` from its arrival ends with 504 and its queued work is dropped.
"""

from __future__ import annotations

from fastapi import FastAPI

from . import duplicates, errors, health, images, jobs, limits, pages, search, topics
from .service import Service

DESCRIPTION = (
    "Image-similarity search over CLIP, DINOv2, SSCD and other embeddings in Milvus. Every endpoint under /v1 and "
    "/metrics wants `Authorization: Bearer TOKEN` when IMSIM_API_TOKEN is set. Errors are `{error, kind}`."
)


def create_app(service: Service) -> FastAPI:
    """The API over a started (or starting) :class:`Service`."""
    app = FastAPI(title="imsim", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    app.state.service = service
    errors.install(app, service.metrics)
    limits.install(app, service.settings, service.metrics)
    for area in (health, search, duplicates, topics, jobs, images, pages):
        app.include_router(area.router)
    return app


def open_paths(app: FastAPI) -> set[str]:
    """The documented paths a request without the token may call: those whose operations declare no security (the token
    dependency declares the bearer scheme on every guarded operation of the OpenAPI document)."""
    paths: dict[str, dict[str, dict[str, object]]] = app.openapi()["paths"]
    return {path for path, operations in paths.items() if not any("security" in op for op in operations.values())}


def contract() -> dict[str, object]:
    """The API's OpenAPI document, the same whatever the settings (it is made from the code's routes and the
    vocabulary): docs/openapi.json holds it, and a test fails when the served one differs, so a change to the contract
    is a reviewed change (`imsim serve --openapi > docs/openapi.json`)."""
    import os

    from ..settings import load

    return create_app(Service(load({"env_file": os.devnull}))).openapi()
