"""Search routes: by an uploaded image (micro-batched with the other image queries), by text, like a stored image;
compare two uploads; the collections. Each takes the vocabulary's :class:`~imsim.vocabulary.SearchOptions` whole and
answers :class:`~imsim.vocabulary.Hits`."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from ..fusion import SearchHit
from ..store import CollectionSummary
from ..vocabulary import Compared, Hits, SearchOptions
from .deps import ERRORS, Guarded, Warm
from .forms import CompareForm, ImageSearch, LikeSearch, TextSearch
from .service import Service
from .translate import hits_of, upload, upload_name

router = APIRouter(prefix="/v1", dependencies=Guarded, responses=ERRORS)


def _checked(service: Service, options: SearchOptions) -> SearchOptions:
    if options.filter.strip() and not service.settings.api_raw_filters:
        raise HTTPException(403, "raw filter expressions are off (IMSIM_API_RAW_FILTERS): use the structured filters")
    service.client.models.names(options.models or None)  # an unknown model is a 422 now, not after a decode
    return options


def _hits(service: Service, options: SearchOptions, found: list[SearchHit], started: float) -> Hits:
    models = list(found[0].scores) if found else service.client.models.names(options.models or None)
    return Hits(
        hits=hits_of(found, service.facts(found)),
        models=models,
        fusion=service.used_fusion(options, found),
        offset=options.offset,
        k=options.k,
        more=len(found) == options.k,
        random_weights=service.random_weights(models),
        ms=round(1000 * (time.perf_counter() - started), 1),
    )


@router.post("/search/image", tags=["search"])
async def search_image(service: Warm, form: Annotated[ImageSearch, Form()]) -> Hits:
    """Search by an uploaded image: fused results, each with every model's score and rank and the image's stored facts.
    The body is refused past IMSIM_API_MAX_UPLOAD_MB as it streams in, before it is spooled anywhere."""
    started = time.perf_counter()
    options = _checked(service, SearchOptions.model_validate(form.model_dump(exclude={"image"})))
    data = await upload(form.image, service.settings)
    found = await asyncio.wrap_future(service.search_image(data, options, upload_name(form.image)))
    return await run_in_threadpool(_hits, service, options, found, started)


@router.get("/search/text", tags=["search"])
async def search_text(service: Warm, query: Annotated[TextSearch, Query()]) -> Hits:
    """Search by text (models with a text tower)."""
    started = time.perf_counter()
    options = _checked(service, SearchOptions.model_validate(query.model_dump(exclude={"text"})))
    found = await run_in_threadpool(service.search, options, text=query.text)
    return await run_in_threadpool(_hits, service, options, found, started)


@router.get("/search/like", tags=["search"])
async def search_like(service: Warm, query: Annotated[LikeSearch, Query()]) -> Hits:
    """More like a stored image: its stored vectors, nothing re-embedded."""
    started = time.perf_counter()
    options = _checked(service, SearchOptions.model_validate(query.model_dump(exclude={"like"})))
    found = await run_in_threadpool(service.search, options, like=query.like)
    return await run_in_threadpool(_hits, service, options, found, started)


@router.post("/compare", tags=["search"])
async def compare(service: Warm, form: Annotated[CompareForm, Form()]) -> Compared:
    """Cosine similarity of two uploaded images per model."""
    first, second = await upload(form.a, service.settings), await upload(form.b, service.settings)
    scores = await run_in_threadpool(service.client.compare, first, second, form.models or None)
    return Compared(scores=scores, random_weights=service.random_weights(list(scores)))


@router.get("/collections", tags=["store"])
async def collections(service: Warm) -> list[CollectionSummary]:
    """Every collection (model version) with its row count and whether queries use it."""
    return await run_in_threadpool(service.client.store.rows.summaries)
