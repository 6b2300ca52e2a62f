"""Job routes: queue server-side paths (only under IMSIM_ALLOWED_ROOTS), follow a job, its failures a page at a time,
cancel, retry; through the client's jobs part, as the CLI and the Python client do."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ..sources.names import printable
from ..vocabulary import IngestRequest, JobStatus, Queued, Retried
from .deps import ERRORS, Guarded, Warm
from .forms import Page, Recent

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=Guarded, responses=ERRORS)


@router.post("")
async def queue_job(service: Warm, body: IngestRequest) -> Queued:
    """Queue an ingest of server-side paths, which must lie under IMSIM_ALLOWED_ROOTS."""
    return Queued(job=await run_in_threadpool(service.queue_job, body))


@router.get("")
async def jobs(service: Warm, query: Annotated[Recent, Query()]) -> list[JobStatus]:
    """Recent jobs (counts only)."""
    from ..jobs.queue import job_store

    return await run_in_threadpool(job_store(service.settings).reads.list, query.limit)


@router.get("/{job_id}")
async def job(service: Warm, job_id: str, page: Annotated[Page, Query()]) -> JobStatus:
    """A job's counts (O(1) whatever its size), with one page of its failures (path: reason, from ``offset``)."""
    from ..jobs.queue import job_store

    records = job_store(service.settings)
    status = await run_in_threadpool(records.reads.get, job_id)
    failures = await run_in_threadpool(records.reads.failures, job_id, page.offset, page.limit)
    return status.model_copy(update={"failures": {printable(p): r for p, r in failures}})


@router.post("/{job_id}/cancel")
async def cancel(service: Warm, job_id: str) -> JobStatus:
    """Cancel a job: its chunks still queued are taken off the queue, running ones stop at their next slice."""
    return await run_in_threadpool(service.client.jobs.cancel, job_id)


@router.post("/{job_id}/retry")
async def retry(service: Warm, job_id: str) -> Retried:
    """Queue the files that failed in the job as a new job (none failed: ``job`` is null)."""
    return Retried(job=await run_in_threadpool(service.client.jobs.retry, job_id))
