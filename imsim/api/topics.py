"""Topic routes: the clusterings `imsim clusters` kept, and one of them read back (each topic's size, the images
nearest its centre and its outliers, its label when guessed, the map of the centres). Made by the CLI (a clustering
of a large collection takes minutes, past a request's time)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ..vocabulary import Topics
from .deps import ERRORS, Guarded, Warm

router = APIRouter(prefix="/v1/clusters", tags=["topics"], dependencies=Guarded, responses=ERRORS)


@router.get("")
async def clusterings(service: Warm) -> list[dict[str, Any]]:
    """The kept clusterings, newest first: name, collection, k, seed, rows, sample, fit, when."""
    from ..store.clustering import Clusterings

    return await run_in_threadpool(Clusterings(service.client.store).kept)


@router.get("/{name}")
async def clustering(service: Warm, name: str) -> Topics:
    """One clustering's topics (``latest``: the newest), largest first."""
    from .. import topics

    return await run_in_threadpool(topics.read, service.client, None if name == "latest" else name)
