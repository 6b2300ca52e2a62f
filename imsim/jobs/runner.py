"""One chunk's life on a worker, apart from how chunks are delivered (Celery's task in ``workers/tasks.py`` is a
shell around :meth:`ChunkRunner.run`).

In order, for each delivery of a :class:`~imsim.jobs.queue.Chunk`:

1. **cancelled** job: the chunk is counted as cancelled, unread;
2. **refused**: a worker whose models or model settings differ from what the job was queued for
   (:func:`~imsim.jobs.queue.fleet_identity`) puts the chunk back for another worker after a pause; once the chunk has
   waited ``IMSIM_FLEET_WAIT`` for a right worker (and none is alive), its files fail, saying why;
3. **poison**: a chunk whose attempts killed their worker ``IMSIM_MAX_DELIVERIES`` times is split in two halves
   (queued first, then the split recorded: a crash in between leaves a duplicate, counted once, never a lost half),
   down to one file, which then fails with the reason;
4. **attempt bookkeeping**: a duplicate delivery of a chunk already counted, or of a job that ended, is dropped;
   otherwise the attempt is recorded (worker, pid, start) until it ends, whatever happens;
5. **ingest**: the job's collections are checked against this worker's (another model revision refuses the chunk),
   then :meth:`~imsim.ingest.Ingestor.ingest` with progress per slice and the cancel flag read per slice;
6. **count** the outcome on the job, once; the job's last chunk **seals** the collections written.

Store and Redis outages are raised (the delivery mechanism retries the chunk later); everything else is an
:class:`Outcome`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..ingest import Ingestor
from ..settings import Settings
from ..sources.names import printable
from .health import redis_problem
from .queue import Chunk, fleet_identity, identity_digest

log = logging.getLogger(__name__)
REFUSE_PAUSE = 2.0  # seconds a worker waits before putting back a chunk it must not embed

Kind = Literal["stored", "cancelled", "dropped", "refused", "failed", "split"]


class FleetView(Protocol):
    """What a runner asks of the fleet's records (:class:`~imsim.jobs.fleet.FleetRecords`)."""

    def fleet_alive(self, queue: str, identity: str) -> bool: ...

    def refused_for(
        self, job_id: str, chunk: str, worker: str, why: str, *, capable_alive: bool = False
    ) -> tuple[float, list[str]]: ...


class JobRecords(Protocol):
    """What a runner reads and writes of a job's record: :class:`~imsim.jobs.records.JobStore` on Redis (each update
    one atomic script), or any store keeping the same promises (a chunk counted once; a job finished by its last)."""

    @property
    def fleet(self) -> FleetView: ...

    def is_cancelled(self, job_id: str) -> bool: ...

    def is_finished(self, job_id: str) -> bool: ...

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
    ) -> bool: ...

    def split_chunk(self, job_id: str, chunk: str, parts: int) -> bool: ...

    def deaths(self, job_id: str, chunk: str) -> int: ...

    def begin_attempt(self, job_id: str, chunk: str, info: Mapping[str, Any]) -> int: ...

    def end_attempt(self, job_id: str, chunk: str) -> None: ...

    def progress(self, job_id: str, chunk: str, files: int) -> None: ...

    def mark_started(self, job_id: str, collections: Mapping[str, str] | None = None) -> dict[str, str]: ...


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery of a chunk: ``counts`` for the delivery's result (never the failures: they are on
    the job record), ``reason`` for a refusal or a failure."""

    kind: Kind
    counts: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class ChunkRunner:
    """Runs chunks on one worker. ``ingestor`` is called for the (lazily loaded, process-wide) ingestor; ``send``
    queues a chunk (the halves of a split one); ``pause`` is waited before a refusal is handed back."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobRecords,
        ingestor: Callable[[], Ingestor],
        send: Callable[[Chunk], None],
        worker: str,
        *,
        pause: Callable[[float], None] = time.sleep,
        refuse_pause: float = REFUSE_PAUSE,
    ):
        self.settings, self.jobs, self.ingestor, self.send, self.worker = settings, jobs, ingestor, send, worker
        self.pause, self.refuse_pause = pause, refuse_pause

    def run(self, chunk: Chunk) -> Outcome:
        size = len(chunk.paths)
        if self.jobs.is_cancelled(chunk.job_id):
            self.jobs.record_chunk(chunk.job_id, chunk.key, 0, 0, {}, cancelled=size)
            return Outcome("cancelled", {"cancelled": size})
        why = chunk.mismatch(fleet_identity(self.settings))
        if why:
            return self.refuse(chunk, f"this worker embeds with {', '.join(self.settings.model_names)}: {why}")
        died = self.jobs.deaths(chunk.job_id, chunk.key)
        if died >= self.settings.max_deliveries:
            return self.poisoned(chunk, died)
        info = {"worker": self.worker, "pid": os.getpid(), "started": time.time(), "files": size}
        if self.jobs.begin_attempt(chunk.job_id, chunk.key, info) < 0:
            log.info("chunk %s of job %s: already counted or the job is over; dropped", chunk.key, printable(chunk.job_id))
            return Outcome("dropped", {"dropped": size})
        try:
            return self._ingest(chunk)
        finally:
            self.jobs.end_attempt(chunk.job_id, chunk.key)

    def _ingest(self, chunk: Chunk) -> Outcome:
        worker = self.ingestor()
        recorded = self.jobs.mark_started(chunk.job_id, worker.collections)
        if recorded != worker.collections:
            return self.refuse(
                chunk,
                f"the job writes {_versions(recorded)}, this worker would write {_versions(worker.collections)} "
                "(another model revision or weights)",
            )

        def progress(files: int) -> None:
            try:
                self.jobs.progress(chunk.job_id, chunk.key, files)
            except Exception as exc:  # progress is for display; the chunk's result is what counts
                if redis_problem(exc) is None:
                    raise
                log.debug("could not record progress of chunk %s", chunk.key)

        result = worker.ingest(
            chunk.items(),
            job_id=chunk.job_id,
            force=chunk.force,
            tags=chunk.tags,
            on_progress=progress,
            checksum=chunk.checksum,
            should_stop=lambda: self.jobs.is_cancelled(chunk.job_id),
        )
        self.jobs.record_chunk(
            chunk.job_id,
            chunk.key,
            result.done,
            result.skipped,
            result.failures,
            result.cancelled,
            read_bytes=result.read_bytes,
            updated=result.updated,
        )
        if self.jobs.is_finished(chunk.job_id):  # the job's last chunk: seal the new rows so searches use the index
            worker.seal()
        return Outcome("stored", {k: v for k, v in result.as_dict().items() if k != "failures"})

    def refuse(self, chunk: Chunk, why: str) -> Outcome:
        """Hand back a chunk this worker must not embed (after a pause, so the queue is not spun), or, once it has
        waited IMSIM_FLEET_WAIT for a right worker, fail its files saying why."""
        settings = self.settings
        capable = chunk.models is not None and self.jobs.fleet.fleet_alive(settings.queue, identity_digest(chunk.models))
        waited, reasons = self.jobs.fleet.refused_for(chunk.job_id, chunk.key, self.worker, why, capable_alive=capable)
        if waited >= settings.fleet_wait:
            reason = (
                f"no worker on queue {settings.queue!r} embeds with what this job was queued for ({'; '.join(reasons)}); "
                f"waited {waited:.0f}s (IMSIM_FLEET_WAIT={settings.fleet_wait}). Start workers with the job's "
                "IMSIM_MODELS and model settings, then `imsim retry JOB`"
            )
            self.record_failed(chunk, reason)
            log.error("chunk %s of job %s failed: %s", chunk.key, chunk.job_id, reason)
            return Outcome("failed", {"failed": len(chunk.paths)}, reason)
        log.warning("refusing chunk %s of job %s (%s); putting it back for another worker", chunk.key, chunk.job_id, why)
        self.pause(self.refuse_pause)
        return Outcome("refused", reason=why)

    def poisoned(self, chunk: Chunk, died: int) -> Outcome:
        """A chunk whose worker died ``died`` times: split it, or fail its one file with the reason."""
        if len(chunk.paths) == 1:
            reason = (
                f"its worker died {died} times while embedding this file (killed: out of memory? a crashing decoder?); "
                f"not retried again (IMSIM_MAX_DELIVERIES={self.settings.max_deliveries})"
            )
            self.record_failed(chunk, reason)
            log.error("chunk %s of job %s: %s: %s", chunk.key, chunk.job_id, printable(chunk.paths[0]), reason)
            return Outcome("failed", {"failed": 1}, reason)
        parts = chunk.halves()
        for part in parts:  # queued first, then the split recorded: never a lost half
            self.send(part)
        self.jobs.split_chunk(chunk.job_id, chunk.key, len(parts))
        keys = [p.key for p in parts]
        log.warning(
            "chunk %s of job %s killed its worker %d times: split into %s", chunk.key, chunk.job_id, died, ", ".join(keys)
        )
        return Outcome("split", {"split": keys})

    def record_failed(self, chunk: Chunk, reason: str) -> None:
        """Every file of ``chunk`` failed with ``reason`` (a chunk that will not be tried again)."""
        self.jobs.record_chunk(chunk.job_id, chunk.key, 0, 0, {p: reason for p in chunk.paths})


def _versions(collections: dict[str, str]) -> str:
    return ", ".join(f"{model} -> {name}" for model, name in sorted(collections.items())) or "nothing"
