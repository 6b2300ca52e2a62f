"""A job as a user reads it: :class:`JobStatus` (counts, summaries, state), made from the fields of its Redis record
(:func:`status_of`), and the bounded summaries written into that record (:func:`summary`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .names import printable

SUMMARY_ITEMS = 20  # inputs and unmatched inputs kept by name (the rest are counted) ...
SUMMARY_BYTES = 300  # ... within this many bytes of JSON each


@dataclass
class JobStatus:
    id: str
    total: int
    done: int
    failed: int
    skipped: int
    chunks: int
    chunks_done: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    inputs: list[str]  # the first inputs by name (``inputs_count`` in all)
    models: list[str]
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason: the first failures read (see ``failed``)
    retry_of: str = ""  # the job whose failed files this job re-queued
    retried_by: str = ""  # the latest job that re-queued this job's failed files
    collections: dict[str, str] = field(default_factory=dict)  # model -> collection (model version) the workers wrote
    cancelled: int = 0  # files dropped because the job was cancelled
    cancelled_at: float | None = None
    in_progress: int = 0  # files settled inside chunks not yet recorded (progress within a chunk)
    skipped_files: dict[str, int] = field(default_factory=dict)  # files left out when the inputs were expanded, by reason
    unmatched: list[str] = field(default_factory=list)  # the first inputs that matched no image (``unmatched_count``)
    splits: int = 0  # chunks split because they kept killing their worker
    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # chunk key -> worker, pid, started, files
    inputs_count: int = 0
    unmatched_count: int = 0
    path_list: dict[str, Any] = field(default_factory=dict)  # --from-file: {"file", "lines", "sha256"}
    queuing: bool = False  # chunks are still being sent
    enqueue_error: str = ""  # why sending stopped early (the job holds only the chunks that went out)
    read_bytes: int = 0  # file bytes read by the workers (0 for a re-ingest of unchanged files)
    updated: int = 0  # of the skipped files, rows rewritten with new tags or file facts (no re-embedding)
    expires_at: float | None = None  # when the record is deleted (finished jobs; IMSIM_JOB_RETENTION)

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - self.skipped - self.cancelled, 0)

    @property
    def settled(self) -> int:
        """Files with an outcome, including those settled inside running chunks (for progress displays)."""
        return min(self.total, self.done + self.failed + self.skipped + self.cancelled + self.in_progress)

    @property
    def state(self) -> str:
        if self.cancelled_at:
            return "cancelled" if self.finished_at else "cancelling"
        if self.finished_at:
            return "finished" if not self.failed else "finished_with_failures"
        if self.queuing:
            return "queuing"
        return "running" if self.started_at else "queued"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pending": self.pending, "state": self.state}


def summary(items: Sequence[str]) -> str:
    """The first items as JSON within :data:`SUMMARY_BYTES` (at least the first, cut if it alone is longer)."""
    kept: list[str] = []
    size = 2
    for item in list(items)[:SUMMARY_ITEMS]:
        text = printable(item)
        if not kept and len(text) > SUMMARY_BYTES:
            text = text[: SUMMARY_BYTES - 1] + "…"
        size += len(json.dumps(text, ensure_ascii=False)) + 2
        if kept and size > SUMMARY_BYTES:
            break
        kept.append(text)
    return json.dumps(kept, ensure_ascii=False)


def path_list_json(path_list: Mapping[str, Any]) -> str:
    return json.dumps({k: printable(v)[:SUMMARY_BYTES] if isinstance(v, str) else v for k, v in path_list.items()})


def status_of(job_id: str, raw: dict[str, str], progress: dict[str, str], running: dict[str, str], ttl: int) -> JobStatus:
    def opt(k: str) -> float | None:
        return float(raw[k]) if raw.get(k) else None

    return JobStatus(
        id=job_id,
        total=int(raw.get("total", 0)),
        done=int(raw.get("done", 0)),
        failed=int(raw.get("failed", 0)),
        skipped=int(raw.get("skipped", 0)),
        chunks=int(raw.get("chunks", 0)),
        chunks_done=int(raw.get("chunks_done", 0)),
        created_at=float(raw.get("created_at", 0)),
        started_at=opt("started_at"),
        finished_at=opt("finished_at"),
        inputs=json.loads(raw.get("inputs", "[]")),
        models=json.loads(raw.get("models", "[]")),
        retry_of=raw.get("retry_of", ""),
        retried_by=raw.get("retried_by", ""),
        collections=json.loads(raw.get("collections", "{}")),
        cancelled=int(raw.get("cancelled", 0)),
        cancelled_at=opt("cancelled_at"),
        in_progress=sum(max(0, int(v)) for v in progress.values()),
        skipped_files=json.loads(raw.get("skipped_files", "{}")),
        unmatched=json.loads(raw.get("unmatched", "[]")),
        splits=int(raw.get("splits", 0)),
        running={k: json.loads(v) for k, v in running.items()},
        inputs_count=int(raw.get("inputs_count", 0)),
        unmatched_count=int(raw.get("unmatched_count", 0)),
        path_list=json.loads(raw.get("path_list", "{}")),
        queuing=bool(raw.get("queuing")),
        enqueue_error=raw.get("enqueue_error", ""),
        read_bytes=int(raw.get("read_bytes", 0)),
        updated=int(raw.get("updated", 0)),
        expires_at=time.time() + ttl if ttl and ttl > 0 else None,
    )
