"""Celery tasks: thin wrappers that hand a chunk of paths to :class:`imsim.ingest.Ingestor`.

Models load lazily in the process that runs the task (after the prefork fork), never in the Celery parent,
so CUDA is never initialised before a fork. Milvus or Redis being unreachable is retried by Celery itself
(``autoretry_for`` with exponential backoff); a chunk that still fails after the last retry, or fails for a
non-transient reason, is recorded on its job with the reason for every path in it, so the job always ends
and ``imsim retry`` can re-queue it. A retry that cannot be published (Redis, the broker, is down) puts the
chunk's own message back instead of dropping it (:meth:`ChunkTask.retry`). A chunk whose attempts keep
dying with their worker (out of memory, a crashing decoder) is split after ``IMSIM_MAX_DELIVERIES`` such
attempts, down to the one file that is then recorded as failed, so one poison file never stalls a job.
A cancelled job's chunks are dropped unread.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import lru_cache
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from imsim.errors import SourceUnavailable, StoreUnavailable
from imsim.ingest import Ingestor
from imsim.jobs import JobStore
from imsim.names import printable
from imsim.queue import EMBED_CHUNK, Chunk, fleet_identity, identity_digest, job_store, split
from imsim.settings import get_settings

from .app import app

log = logging.getLogger(__name__)
TRANSIENT = (StoreUnavailable, SourceUnavailable, redis.ConnectionError, redis.TimeoutError)
REFUSE_PAUSE = 2.0  # seconds a worker waits before putting back a chunk it must not embed


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
        job_id, chunk, paths = (list(args) + [None, None, None])[:3]
        if job_id is None:
            return
        reason = f"chunk failed after {self.request.retries} retries: {type(exc).__name__}: {exc}"
        try:
            jobs().record_chunk(job_id, str(chunk), 0, 0, {p: reason for p in paths or []})
        except Exception:  # recording must never raise out of Celery's failure handler
            log.exception("could not record failed chunk %s of job %s", chunk, printable(str(job_id)))


@app.task(name=EMBED_CHUNK, bind=True, base=ChunkTask)
def embed_chunk(
    self: ChunkTask,
    job_id: str,
    chunk: str | int,
    paths: list[str],
    force: bool = False,
    tags: dict[str, str] | None = None,
    checksum: bool = False,
    models: dict[str, str] | None = None,
    listed: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """Embed and store one chunk, then count its outcome on the job (once, even if redelivered). Returns counts only:
    the failures are on the job record, not in a second copy in Celery's results."""
    work = Chunk(job_id, str(chunk), list(paths), force=force, checksum=checksum, tags=tags, models=models, listed=listed)
    settings, store = get_settings(), jobs()
    if store.is_cancelled(job_id):
        store.record_chunk(job_id, work.key, 0, 0, {}, cancelled=len(paths))
        return {"cancelled": len(paths)}
    why = work.mismatch(fleet_identity(settings))
    if why:
        return _refuse(self, work, f"this worker embeds with {', '.join(settings.model_names)}: {why}")
    died = store.deaths(job_id, work.key)
    if died >= settings.max_deliveries:
        return _poison(self, work, died)
    before = store.begin_attempt(
        job_id,
        work.key,
        {
            "worker": self.request.hostname or socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "files": len(paths),
        },
    )
    if before < 0:  # a duplicate delivery of a chunk already counted, or of a job that ended or expired
        log.info("chunk %s of job %s: already counted or the job is over; dropped", work.key, printable(job_id))
        return {"dropped": len(paths)}
    try:
        worker = ingestor()
        recorded = store.mark_started(job_id, worker.collections)
        if recorded != worker.collections:
            return _refuse(
                self,
                work,
                f"the job writes {_versions(recorded)}, this worker would write {_versions(worker.collections)} "
                "(another model revision or weights)",
            )

        def progress(files: int) -> None:
            try:
                store.progress(job_id, work.key, files)
            except redis.RedisError:  # progress is for display; the chunk's result is what counts
                log.debug("could not record progress of chunk %s", work.key)

        result = worker.ingest(
            work.items(),
            job_id=job_id,
            force=force,
            tags=tags,
            on_progress=progress,
            checksum=checksum,
            should_stop=lambda: store.is_cancelled(job_id),
        )
        store.record_chunk(
            job_id,
            work.key,
            result.done,
            result.skipped,
            result.failures,
            result.cancelled,
            read_bytes=result.read_bytes,
            updated=result.updated,
        )
        if store.is_finished(job_id):  # the job's last chunk: seal the new rows so searches use the index
            worker.seal()
        return {k: v for k, v in result.as_dict().items() if k != "failures"}
    finally:
        store.end_attempt(job_id, work.key)


def _versions(collections: dict[str, str]) -> str:
    return ", ".join(f"{model} -> {name}" for model, name in sorted(collections.items())) or "nothing"


def _refuse(task: ChunkTask, work: Chunk, why: str) -> dict[str, Any]:
    """Put back a chunk this worker must not embed (another worker on the queue may be the right one), after a pause so
    the queue is not spun; once the chunk has waited IMSIM_FLEET_WAIT for a right worker, fail its files saying why."""
    settings = get_settings()
    capable = work.models is not None and jobs().fleet_alive(settings.queue, identity_digest(work.models))
    waited, reasons = jobs().refused_for(
        work.job_id, work.key, task.request.hostname or socket.gethostname(), why, capable_alive=capable
    )
    if waited >= settings.fleet_wait:
        reason = (
            f"no worker on queue {settings.queue!r} embeds with what this job was queued for ({'; '.join(reasons)}); waited "
            f"{waited:.0f}s (IMSIM_FLEET_WAIT={settings.fleet_wait}). Start workers with the job's IMSIM_MODELS and model "
            "settings, then `imsim retry JOB`"
        )
        jobs().record_chunk(work.job_id, work.key, 0, 0, {p: reason for p in work.paths})
        log.error("chunk %s of job %s failed: %s", work.key, work.job_id, reason)
        return {"failed": len(work.paths)}
    log.warning("refusing chunk %s of job %s (%s); putting it back for another worker", work.key, work.job_id, why)
    time.sleep(REFUSE_PAUSE)
    raise Reject(why, requeue=True)


def _poison(task: ChunkTask, work: Chunk, died: int) -> dict[str, Any]:
    """A chunk whose worker died ``died`` times: split it, or fail its one file with the reason."""
    if len(work.paths) == 1:
        reason = (
            f"its worker died {died} times while embedding this file (killed: out of memory? a crashing decoder?); "
            f"not retried again (IMSIM_MAX_DELIVERIES={get_settings().max_deliveries})"
        )
        jobs().record_chunk(work.job_id, work.key, 0, 0, {work.paths[0]: reason})
        log.error("chunk %s of job %s: %s: %s", work.key, work.job_id, printable(work.paths[0]), reason)
        return {"failed": 1}
    parts = split(task.app, get_settings(), work)
    log.warning("chunk %s of job %s killed its worker %d times: split into %s", work.key, work.job_id, died, ", ".join(parts))
    return {"split": parts}
