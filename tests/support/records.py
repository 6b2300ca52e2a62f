"""Job records kept in memory, keeping the promises the chunk runner relies on (imsim.jobs.runner.JobRecords): a chunk
counted once, a job finished by its last chunk and then closed to late writes, attempts and deaths, splits, refusals.
The Redis store (imsim.jobs.records.JobStore) keeps the same promises with Lua scripts, checked against a real Redis
in tests/test_jobs.py; this one lets the runner's branches run in the unit tier, in microseconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imsim.vocabulary import JobStatus


@dataclass
class _Job:
    total: int
    chunks: int
    created_at: float = field(default_factory=time.time)
    done: int = 0
    skipped: int = 0
    cancelled: int = 0
    failed: int = 0
    splits: int = 0
    chunks_done: int = 0
    counted: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    collections: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    cancelled_at: float | None = None


class MemoryFleet:
    def __init__(self, jobs: dict[str, _Job]):
        self.jobs = jobs
        self.alive: set[tuple[str, str]] = set()

    def fleet_alive(self, queue: str, identity: str) -> bool:
        return (queue, identity) in self.alive

    def refused_for(
        self, job_id: str, chunk: str, worker: str, why: str, *, capable_alive: bool = False
    ) -> tuple[float, list[str]]:
        job = self.jobs[job_id]
        first, reasons = job.refusals.get(chunk, (time.time(), []))
        if capable_alive:
            first = time.time()
        job.refusals[chunk] = (first, sorted({*reasons, f"{worker}: {why}"}))
        return time.time() - first, job.refusals[chunk][1]


class MemoryJobRecords:
    def __init__(self) -> None:
        self.jobs: dict[str, _Job] = {}
        self.fleet = MemoryFleet(self.jobs)

    def create(self, job_id: str, *, total: int, chunks: int) -> None:
        self.jobs[job_id] = _Job(total, chunks)

    def _open(self, job_id: str) -> _Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.finished_at is None else None

    def mark_cancelled(self, job_id: str) -> None:
        self.jobs[job_id].cancelled_at = self.jobs[job_id].cancelled_at or time.time()

    def is_cancelled(self, job_id: str) -> bool:
        return self.jobs[job_id].cancelled_at is not None

    def is_finished(self, job_id: str) -> bool:
        return self.jobs[job_id].finished_at is not None

    def record_chunk(
        self,
        job_id: str,
        chunk: str | int,
        done: int,
        skipped: int,
        failures: Mapping[str, str],
        cancelled: int = 0,
        read_bytes: int = 0,
        updated: int = 0,
    ) -> bool:
        job = self._open(job_id)
        if job is None or str(chunk) in job.counted:
            return False
        job.counted.add(str(chunk))
        job.running.pop(str(chunk), None)
        job.done, job.skipped, job.cancelled = job.done + done, job.skipped + skipped, job.cancelled + cancelled
        job.failed += len(failures)
        job.failures.update(failures)
        job.started_at = job.started_at or time.time()
        job.chunks_done += 1
        if job.chunks_done >= job.chunks:
            job.finished_at = time.time()
        return True

    def split_chunk(self, job_id: str, chunk: str, parts: int) -> bool:
        job = self._open(job_id)
        if job is None or chunk in job.counted:
            return False
        job.counted.add(chunk)  # the chunk is accounted for by its parts
        job.chunks += parts - 1
        job.splits += 1
        job.running.pop(chunk, None)
        return True

    def deaths(self, job_id: str, chunk: str) -> int:
        job = self.jobs[job_id]
        return job.attempts.get(chunk, 0) - job.ends.get(chunk, 0)

    def begin_attempt(self, job_id: str, chunk: str, info: Mapping[str, Any]) -> int:
        job = self._open(job_id)
        if job is None or chunk in job.counted:
            return -1
        job.attempts[chunk] = job.attempts.get(chunk, 0) + 1
        job.running[chunk] = dict(info)
        return job.attempts[chunk] - 1 - job.ends.get(chunk, 0)

    def end_attempt(self, job_id: str, chunk: str) -> None:
        job = self._open(job_id)
        if job is not None:
            job.ends[chunk] = job.ends.get(chunk, 0) + 1
            job.running.pop(chunk, None)

    def progress(self, job_id: str, chunk: str, files: int) -> None:
        """Progress within a chunk is for display only: nothing the runner reads back."""

    def mark_started(self, job_id: str, collections: Mapping[str, str] | None = None) -> dict[str, str]:
        job = self.jobs[job_id]
        if collections and not job.collections:
            job.collections = dict(collections)
        job.started_at = job.started_at or time.time()
        return dict(job.collections)

    def status(self, job_id: str) -> JobStatus:
        job = self.jobs[job_id]
        return JobStatus(
            id=job_id,
            total=job.total,
            done=job.done,
            failed=job.failed,
            skipped=job.skipped,
            chunks=job.chunks,
            chunks_done=job.chunks_done,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            inputs=["test"],
            models=["clip", "dinov2"],
            failures=dict(job.failures),
            cancelled=job.cancelled,
            cancelled_at=job.cancelled_at,
            splits=job.splits,
            running=dict(job.running),
            collections=dict(job.collections),
        )
