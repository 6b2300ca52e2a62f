"""Celery tasks: thin wrappers that hand a chunk of paths to :class:`imsim.ingest.Ingestor`.

Models load lazily in the process that runs the task (after the prefork fork), never in the
Celery parent, so CUDA is never initialised before a fork. Milvus or Redis being unreachable
is retried by Celery itself (``autoretry_for`` with exponential backoff); a chunk that still
fails after the last retry, or fails for a non-transient reason, is recorded on its job with
the reason for every path in it, so the job always ends and ``imsim retry`` can re-queue it.
A retry that cannot be published (Redis, the broker, is down) puts the chunk's own message back
instead of dropping it: see :meth:`ChunkTask.retry`.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from celery import Task
from celery.exceptions import Reject

from imsim.errors import StoreUnavailable
from imsim.ingest import Ingestor
from imsim.jobs import JobStore
from imsim.queue import EMBED_CHUNK
from imsim.settings import get_settings

from .app import app

log = logging.getLogger(__name__)
TRANSIENT = (StoreUnavailable, redis.ConnectionError, redis.TimeoutError)


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    return Ingestor(get_settings())


@lru_cache(maxsize=1)
def jobs() -> JobStore:
    return JobStore(get_settings().redis_url.get_secret_value())


class ChunkTask(Task):
    autoretry_for = TRANSIENT
    retry_backoff = 2  # seconds before the first retry, doubling
    retry_backoff_max = 30  # a recovered Milvus is used again within 30 s
    retry_jitter = True
    max_retries = get_settings().task_max_retries

    def retry(self, *args, **kwargs):
        """Celery's retry, except that a retry which cannot be published requeues the chunk's message.

        Celery answers a failed publish with ``Reject(requeue=False)``, which acks (deletes) the message:
        when Redis is back by the time of that ack, e.g. after a restart, the chunk is lost and its job never
        ends. Requeued instead, the message goes back to the queue; if Redis is still down the requeue fails,
        the message stays unacked, and the redelivery sweep brings it back after the visibility timeout.
        The retry's backoff is waited here first, so a chunk requeued at once is not retried in a tight loop.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as reject:
            if reject.requeue:
                raise
            pause = min(float(kwargs.get("countdown") or 0), self.retry_backoff_max)
            log.warning("could not queue the retry of task %s (%s): requeueing its message in %.1fs", self.request.id,
                        reject.reason, pause)
            time.sleep(pause)
            raise Reject(reject.reason, requeue=True) from reject

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: ANN001 - Celery's signature
        """Record every path of a chunk that will not be retried again as failed, with the reason."""
        job_id, chunk_index, paths = (list(args) + [None, None, None])[:3]
        if job_id is None:
            return
        reason = f"chunk failed after {self.request.retries} retries: {type(exc).__name__}: {exc}"
        try:
            jobs().record_chunk(job_id, chunk_index, 0, 0, {p: reason for p in paths})
        except redis.RedisError:
            log.error("could not record failed chunk %s of job %s: Redis unreachable", chunk_index, job_id)


@app.task(name=EMBED_CHUNK, bind=True, base=ChunkTask)
def embed_chunk(self, job_id: str, chunk_index: int, paths: list[str], force: bool = False,
                tags: dict[str, str] | None = None) -> dict:
    """Embed and store one chunk, then count its outcome on the job (once, even if redelivered)."""
    worker = ingestor()
    jobs().mark_started(job_id, worker.collections)
    result = worker.ingest(paths, job_id=job_id, force=force, tags=tags)
    jobs().record_chunk(job_id, chunk_index, result.done, result.skipped, result.failures)
    if jobs().is_finished(job_id):  # the job's last chunk: seal the new rows so searches use the index
        worker.seal()
    return result.as_dict()
