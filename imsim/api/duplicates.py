"""Duplicate routes: near-duplicate groups (paged; pairs marked "not a duplicate" left out), byte-identical groups, and
the marks people make."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ..vocabulary import Group, Groups, Link, Marked, MarkRequest, Member
from .deps import ERRORS, Guarded, Warm
from .forms import DuplicatesQuery, ExactQuery

router = APIRouter(prefix="/v1/duplicates", tags=["duplicates"], dependencies=Guarded, responses=ERRORS)


def group_of(group: object) -> Group:
    """A :class:`imsim.duplicates.Group` as the vocabulary's."""
    found = group.as_dict()  # type: ignore[attr-defined]
    return Group(
        size=found["size"],
        best_score=found["best_score"],
        members=[Member(**m) for m in found["members"]],
        edges=[Link(**e) for e in found["edges"]],
    )


@router.get("")
async def duplicates(service: Warm, query: Annotated[DuplicatesQuery, Query()]) -> Groups:
    """Near-duplicate groups, paged, pairs marked "not a duplicate" left out (the pairs are computed once per query and
    kept for a few minutes; ``refresh`` computes them again)."""
    linked, hidden = await run_in_threadpool(service.linked, query, query.refresh)
    groups = linked.groups(hidden)
    page = groups[query.offset : query.offset + query.limit]
    return Groups(
        model=linked.model,
        threshold=linked.threshold.value,
        threshold_source=linked.threshold.source,
        total=len(groups),
        groups=[group_of(g) for g in page],
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
        groups=[group_of(g) for g in found[page.offset : page.offset + (page.limit or 50)]],
    )


@router.post("/not-duplicate")
async def not_duplicate(service: Warm, body: MarkRequest) -> Marked:
    """Mark a pair of stored images "not a duplicate": hidden from `imsim duplicates` from now on (page and CLI), and a
    negative the next time thresholds are calibrated on images with the same contents."""
    mark = await run_in_threadpool(service.mark, body.a, body.b)
    return Marked(marked=[mark.a, mark.b])
