"""Celery's shell around :class:`imsim.jobs.runner.ChunkRunner`, which owns a chunk's life (cancel, refusal, poison
split, attempt bookkeeping, ingest, count, seal) and is tested without Celery.

What stays here is Celery's part: models load lazily in the process that runs the task (after the prefork fork),
never in the Celery parent, so CUDA is never initialised before a fork; Milvus, Redis or the image store being
unreachable is retried by Celery itself (``autoretry_for`` with exponential backoff); a retry that cannot be
published (Redis, the broker, is down) puts the chunk's own message back instead of dropping it
(:meth:`ChunkTask.retry`); a refused chunk is rejected with requeue; and a chunk that still fails after the last
retry, or for a non-transient reason, is recorded on its job with the reason for every path in it, so the job always
ends and ``imsim retry`` can re-queue it.
"""

from __future__ import annotations

import logging
import socket
import time
from functools import lru_cache
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from imsim.errors import SourceUnavailable, StoreUnavailable
from imsim.ingest import Ingestor
from imsim.jobs.queue import EMBED_CHUNK, Chunk, job_store, send_chunk
from imsim.jobs.records import JobStore
from imsim.jobs.runner import ChunkRunner
from imsim.settings import get_settings
from imsim.sources.names import printable

from .app import app

log = logging.getLogger(__name__)
TRANSIENT = (StoreUnavailable, SourceUnavailable, redis.ConnectionError, redis.TimeoutError)


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    return Ingestor(get_settings())


@lru_cache(maxsize=1)
def jobs() -> JobStore:
    return job_store(get_settings())


class ChunkTask(Task):
    autoretry_for = TRANSIENT
    retry_backoff = 2  # seconds before the first retry, doubling
    retry_backoff_max = 30  # a recovered Milvus is used again within 30 s
    retry_jitter = True
    max_retries = get_settings().task_max_retries

    def retry(self, *args: Any, **kwargs: Any) -> Any:
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
            log.warning(
                "could not queue the retry of task %s (%s): requeueing its message in %.1fs",
                self.request.id,
                reject.reason,
                pause,
            )
            time.sleep(pause)
            raise Reject(reject.reason, requeue=True) from reject

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Record every path of a chunk that will not be retried again as failed, with the reason. Never raises."""
        try:
            chunk = Chunk.from_message(list(args or []), kwargs)
        except Exception:
            log.exception("task %s failed with a message that holds no readable chunk", task_id)
            return
        if chunk is None:
            return
        reason = f"chunk failed after {self.request.retries} retries: {type(exc).__name__}: {exc}"
        try:
            runner(self).record_failed(chunk, reason)
        except Exception:  # recording must never raise out of Celery's failure handler
            log.exception("could not record failed chunk %s of job %s", chunk.key, printable(chunk.job_id))


@app.task(name=EMBED_CHUNK, bind=True, base=ChunkTask)
def embed_chunk(self: ChunkTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Embed and store one chunk (:meth:`imsim.jobs.runner.ChunkRunner.run`: cancel, refuse, split, bookkeeping,
    ingest, count, seal); the message is read by :meth:`imsim.jobs.queue.Chunk.from_message` only. Returns counts
    only: the failures are on the job record, not in a second copy in Celery's results. A refused chunk goes back on
    the queue for another worker."""
    work = Chunk.from_message(args, kwargs)
    if work is None:
        raise Reject(f"message holds no chunk: {len(args)} arguments", requeue=False)
    outcome = runner(self).run(work)
    if outcome.kind == "refused":
        raise Reject(outcome.reason, requeue=True)
    return outcome.counts


def runner(task: ChunkTask) -> ChunkRunner:
    settings = get_settings()
    return ChunkRunner(
        settings,
        jobs(),
        ingestor,
        send=lambda part: send_chunk(task.app, settings, part),
        worker=task.request.hostname or socket.gethostname(),
    )
