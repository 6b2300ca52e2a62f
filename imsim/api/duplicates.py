"""Duplicate routes: the review's groups (paged; pairs marked "not a duplicate" left out; each member with its stored
facts and decision, a suggested keeper; a threshold measured on the collection when none was calibrated), byte-identical
groups, and what a person decides: "not a duplicate", a group resolved with a keeper (undone on request), the decisions
exported as CSV or JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..review import to_group
from ..vocabulary import Decided, Groups, Marked, MarkRequest, Resolved, ResolveRequest, Undone, UndoRequest
from .deps import ERRORS, Guarded, Warm
from .forms import DecisionsQuery, DuplicatesQuery, ExactQuery

router = APIRouter(prefix="/v1/duplicates", tags=["duplicates"], dependencies=Guarded, responses=ERRORS)
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "One row (line) per decided image."}
}


@router.get("")
async def duplicates(service: Warm, query: Annotated[DuplicatesQuery, Query()]) -> Groups:
    """Near-duplicate groups for review, paged: ``show`` open (default), decided or all; ``order`` by size or score;
    a suggested keeper by the ``keep`` rule. With no threshold given, calibrated or defaulted, one is measured on the
    collection itself (once; the answer's ``threshold_source`` says how). Links are computed once per query and kept
    for a few minutes (``refresh`` computes them again); marks and decisions apply at once."""
    linked, page = await run_in_threadpool(service.review, query, query.refresh)
    models = service.settings.model_names if linked.model == "fused" else [linked.model]
    return Groups(
        model=linked.model,
        threshold=linked.threshold.value,
        threshold_source=linked.threshold.source,
        total=page.total,
        groups=[to_group(g, keeper, decided, page.facts, page.decided) for g, keeper, decided in page.groups],
        random_weights=await run_in_threadpool(service.random_weights, models),
    )


@router.get("/exact")
async def exact(service: Warm, page: Annotated[ExactQuery, Query()]) -> Groups:
    """Images whose files are byte-identical (same sha256), found without any model."""
    found = await run_in_threadpool(service.exact, page.under)
    return Groups(
        model="sha256",
        threshold=1.0,
        threshold_source="identical bytes",
        total=len(found),
        groups=[to_group(g) for g in found[page.offset : page.offset + (page.limit or 50)]],
    )


@router.post("/not-duplicate")
async def not_duplicate(service: Warm, body: MarkRequest) -> Marked:
    """Mark a pair of stored images "not a duplicate": hidden from `imsim duplicates` from now on (page and CLI), and a
    negative the next time thresholds are calibrated on images with the same contents."""
    mark = await run_in_threadpool(service.mark, body.a, body.b)
    return Marked(marked=[mark.a, mark.b])


@router.post("/resolve")
async def resolve(service: Warm, body: ResolveRequest) -> Resolved:
    """Resolve a group: ``keep`` is kept, every other member recorded as its duplicate. No file is moved or deleted."""
    made = await run_in_threadpool(service.resolve, body.keep, body.members)
    return Resolved(decisions=[Decided(**d.__dict__) for d in made])


@router.post("/undo")
async def undo(service: Warm, body: UndoRequest) -> Undone:
    """Reopen the group kept by ``keep``: its decisions are forgotten."""
    from ..store.decisions import Decisions

    return Undone(forgotten=await run_in_threadpool(Decisions(service.client.store).undo, body.keep))


@router.get("/decisions", response_class=StreamingResponse, responses=CSV)
async def decisions(service: Warm, query: Annotated[DecisionsQuery, Query()]) -> StreamingResponse:
    """Every decision, streamed: CSV (``format=csv``, a header first) or JSON lines (``format=json``)."""
    from ..review import export
    from ..store.decisions import Decisions

    media = "text/csv" if query.format == "csv" else "application/x-ndjson"
    name = f"imsim-decisions.{'csv' if query.format == 'csv' else 'jsonl'}"
    lines = export(iter(Decisions(service.client.store)), query.format)
    return StreamingResponse(lines, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
