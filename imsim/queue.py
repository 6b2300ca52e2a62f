"""The Redis/Celery side of ingestion, as seen from imsim: Celery's configuration, queuing, retrying and
cancelling a job, and splitting a chunk that keeps killing its worker.

``workers/`` builds its Celery app from :func:`celery_config`; the CLI and client queue jobs by task *name*
(:data:`EMBED_CHUNK`), so the library never imports the worker package. One message carries one chunk of
paths; the worker batches inside the task.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from .errors import JobRunning
from .jobs import JobStore, new_job_id
from .settings import Settings
from .util import chunked

EMBED_CHUNK = "imsim.embed_chunk"
PRIORITY_SEP = "\x06\x16"  # kombu's redis transport keeps priority levels in lists named QUEUE + this + level


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, redelivery when a worker dies, one chunk at a time, task events on
    (so Flower shows waiting and running chunks)."""
    url = settings.redis_url.get_secret_value()
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_track_started": True,
        "task_send_sent_event": settings.task_events,  # a queued chunk shows in Flower before a worker takes it
        "worker_send_task_events": settings.task_events,
        "result_expires": 7 * 24 * 3600,
        "broker_connection_retry_on_startup": True,
        # A chunk whose worker died (SIGKILL, node lost) stays "unacked" in Redis; every worker sweeps
        # for ones older than the visibility timeout each `redelivery_interval` seconds and re-queues them.
        # The sweep runs under a Redis lock; a worker SIGKILLed while holding it would block every
        # other worker's sweep for kombu's default 300 s, so the lock expires after a few sweep periods.
        # (Two sweeps overlapping is harmless: each restore is a WATCHed transaction.)
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.redelivery_interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": restore_lock_expiry(settings),
        },
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "worker_hijack_root_logger": False,
    }


def restore_lock_expiry(settings: Settings) -> int:
    """Seconds before the lock around kombu's redelivery sweep expires if its holder died."""
    return max(10, 3 * settings.redelivery_interval)


def make_celery(settings: Settings, main: str = "imsim") -> Any:
    from celery import Celery

    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app


def job_store(settings: Settings) -> JobStore:
    return JobStore(settings.redis_url.get_secret_value())


def enqueue(
    paths: Sequence[str],
    settings: Settings,
    inputs: Sequence[str] = (),
    job_id: str | None = None,
    force: bool = False,
    retry_of: str = "",
    tags: dict[str, str] | None = None,
    skipped: dict[str, int] | None = None,
    unmatched: Sequence[str] = (),
) -> str:
    """Record a job in Redis and queue its chunks; returns the job id.

    ``force`` re-embeds unchanged files; ``tags`` are stored with every row of the job; ``skipped`` (reason →
    count) and ``unmatched`` record what the inputs' expansion left out."""
    jobs = job_store(settings)
    jobs.ping()
    job_id = job_id or new_job_id()
    chunks = chunked(list(paths), settings.chunk_size)
    jobs.create(
        job_id,
        total=len(paths),
        chunks=len(chunks),
        inputs=list(inputs),
        models=settings.model_names,
        retry_of=retry_of,
        skipped=skipped,
        unmatched=list(unmatched),
    )
    app = make_celery(settings)
    for index, chunk in enumerate(chunks):
        send_chunk(app, settings, job_id, str(index), chunk, force=force, tags=tags)
    return job_id


def send_chunk(
    app: Any,
    settings: Settings,
    job_id: str,
    key: str,
    paths: Sequence[str],
    *,
    force: bool = False,
    tags: dict[str, str] | None = None,
) -> None:
    app.send_task(EMBED_CHUNK, args=[job_id, key, list(paths)], kwargs={"force": force, "tags": tags}, queue=settings.queue)


def split(
    app: Any,
    settings: Settings,
    job_id: str,
    key: str,
    paths: Sequence[str],
    *,
    force: bool = False,
    tags: dict[str, str] | None = None,
) -> list[str]:
    """Replace chunk ``key`` by its two halves (``key.0``, ``key.1``): queued first, then the split recorded, so a
    crash in between leaves duplicates (counted once), never a lost half. Returns the new keys."""
    half = len(paths) // 2
    parts = {f"{key}.0": list(paths[:half]), f"{key}.1": list(paths[half:])}
    for part_key, part in parts.items():
        send_chunk(app, settings, job_id, part_key, part, force=force, tags=tags)
    job_store(settings).split_chunk(job_id, key, len(parts))
    return list(parts)


def failed_files(job_id: str, settings: Settings) -> list[str]:
    """The paths that failed in ``job_id`` (empty when none did); :class:`JobRunning` while it still runs."""
    status = job_store(settings).get(job_id)
    if not status.finished_at:
        raise JobRunning(
            f"job {job_id} is still {status.state} ({status.settled}/{status.total} files settled): wait "
            f"for it to finish (`imsim status {job_id}`, Client.wait) before retrying its failures"
        )
    return sorted(status.failures)


def retry(job_id: str, settings: Settings) -> str | None:
    """Queue a new job holding only the files that failed in ``job_id``; returns its id, or None if none failed."""
    failed = failed_files(job_id, settings)
    if not failed:
        return None
    return enqueue(failed, settings, inputs=[f"failed files of {job_id}"], retry_of=job_id)


def _message_job(raw: str) -> tuple[str, str, int] | None:
    """(job id, chunk key, number of files) of one queued Celery message of ours, or None."""
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != EMBED_CHUNK:
            return None
        body = (
            json.loads(base64.b64decode(message["body"]))
            if message.get("properties", {}).get("body_encoding") == "base64"
            else json.loads(message["body"])
        )
        args = body[0]
        return str(args[0]), str(args[1]), len(args[2])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def cancel(job_id: str, settings: Settings) -> Any:
    """Cancel a job: marked cancelled at once; its chunks still in the queue are removed and counted as cancelled;
    chunks a worker already holds finish; a chunk a worker takes later is dropped unread. Returns the job's status."""
    jobs = job_store(settings)
    jobs.ping()
    jobs.mark_cancelled(job_id)
    queues = [settings.queue] + [f"{settings.queue}{PRIORITY_SEP}{level}" for level in range(10)]
    for queue_name in queues:
        for raw in jobs.redis.lrange(queue_name, 0, -1):
            raw = raw if isinstance(raw, str) else raw.decode()
            found = _message_job(raw)
            if found and found[0] == job_id and jobs.redis.lrem(queue_name, 1, raw):
                jobs.record_chunk(job_id, found[1], 0, 0, {}, cancelled=found[2])
    return jobs.get(job_id)


def queue_length(settings: Settings) -> int:
    jobs = job_store(settings)
    return int(sum(jobs.redis.llen(q) for q in [settings.queue] + [f"{settings.queue}{PRIORITY_SEP}{n}" for n in range(10)]))


def workers_on_queue(settings: Settings, timeout: float = 1.0) -> list[str] | None:
    """Names of the workers that consume ``settings.queue`` (asked over the broker), or None if they cannot be asked.

    A ping would also count workers of other queues on the same Redis; this asks each for its queues."""
    try:
        replies = make_celery(settings).control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # any broker failure means "cannot ask"
        return None
    return sorted(name for name, queues in replies.items() if any(q.get("name") == settings.queue for q in queues or []))
