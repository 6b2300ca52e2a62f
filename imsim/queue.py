"""The Redis/Celery side of ingestion, as seen from imsim: Celery's configuration, and queuing a job.

``workers/`` builds its Celery app from :func:`celery_config`; the CLI and client queue jobs
by task *name* (:data:`EMBED_CHUNK`), so the library never imports the worker package.
One message carries one chunk of paths; the worker batches inside the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ingest import chunked
from .errors import QueueError
from .jobs import JobStore, new_job_id
from .settings import Settings

EMBED_CHUNK = "imsim.embed_chunk"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, redelivery when a worker dies, one chunk at a time."""
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


def enqueue(paths: Sequence[str], settings: Settings, inputs: Sequence[str] = (), job_id: str | None = None,
            force: bool = False, retry_of: str = "", tags: dict[str, str] | None = None) -> str:
    """Record a job in Redis and queue its chunks; returns the job id.

    ``force`` re-embeds unchanged files; ``tags`` are stored with every row of the job.
    """
    jobs = JobStore(settings.redis_url.get_secret_value())
    jobs.ping()
    job_id = job_id or new_job_id()
    chunks = chunked(list(paths), settings.chunk_size)
    jobs.create(job_id, total=len(paths), chunks=len(chunks), inputs=list(inputs), models=settings.model_names,
                retry_of=retry_of)
    app = make_celery(settings)
    for index, chunk in enumerate(chunks):
        app.send_task(EMBED_CHUNK, args=[job_id, index, chunk], kwargs={"force": force, "tags": tags}, queue=settings.queue)
    return job_id


def failed_files(job_id: str, settings: Settings) -> list[str]:
    """The paths that failed in ``job_id``; a :class:`QueueError` if there are none."""
    failed = sorted(JobStore(settings.redis_url.get_secret_value()).get(job_id).failures)
    if not failed:
        raise QueueError(f"job {job_id!r} has no failed files to retry")
    return failed


def retry(job_id: str, settings: Settings) -> str:
    """Queue a new job holding only the files that failed in ``job_id``; returns the new job's id."""
    return enqueue(failed_files(job_id, settings), settings, inputs=[f"failed files of {job_id}"], retry_of=job_id)
