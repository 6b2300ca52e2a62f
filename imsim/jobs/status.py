"""A job as a user reads it: :class:`~imsim.vocabulary.JobStatus` (counts, summaries, state: part of the vocabulary every
door speaks) made from the fields of its Redis record (:func:`status_of`), and the bounded summaries written into that
record (:func:`summary`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..sources.names import printable
from ..vocabulary import JobStatus

__all__ = ["JobStatus", "status_of", "summary"]

SUMMARY_ITEMS = 20  # inputs and unmatched inputs kept by name (the rest are counted) ...
SUMMARY_BYTES = 300  # ... within this many bytes of JSON each


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
        reasons_folded=int(raw.get("reasons_folded", 0)),
        expires_at=time.time() + ttl if ttl and ttl > 0 else None,
    )
