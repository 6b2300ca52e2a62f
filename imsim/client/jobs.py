"""The client's jobs: queue an ingest for the workers, follow it, page through its failures, retry, cancel. Each a
thin call into :mod:`imsim.jobs.queue` and the job records: the ``jobs`` part of :class:`imsim.client.local.Client`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ImsimError, InvalidInput, QueueError
from ..settings import Settings
from ..vocabulary import IngestOptions, check

if TYPE_CHECKING:
    from ..jobs.status import JobStatus


class Jobs:
    """The client's jobs part (see the module doc)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    # --- jobs and upkeep (thin: the work happens in workers, imsim.jobs.queue and imsim.maintenance) ---
    def ingest(self, paths: Sequence[str], options: IngestOptions | None = None, **fields: Any) -> str:
        """Queue files, folders or globs for the workers (streamed into chunks as they are found); returns the job id
        (see :meth:`job`, :meth:`wait`). ``options`` (:class:`~imsim.vocabulary.IngestOptions`), or its fields by name:
        ``force``, ``checksum``, ``tags`` ({"key": "value"}, merged into every image's tags and usable in
        ``Where(tags=...)``; images stored unchanged are re-tagged without being re-embedded)."""
        from ..jobs.queue import enqueue
        from ..sources.paths import Discovery, iter_files
        from ..util import peeked

        if options is not None and fields:
            raise InvalidInput("give options= or ingest fields as keywords, not both")
        chosen = options if options is not None else check(IngestOptions, fields)
        found = Discovery()
        files = peeked(iter_files(paths, found))
        if files is None:
            raise ImsimError(f"no image files found in {', '.join(map(str, paths))}")
        return enqueue(files, self.settings, chosen, inputs=[str(p) for p in paths], found=found)

    def job(self, job_id: str, failures: int = 0) -> JobStatus:
        """A job's :class:`~imsim.jobs.records.JobStatus`: counts and times (O(1) whatever the job's size), with its first
        ``failures`` failures; :meth:`failures` pages through all of them."""
        from ..jobs.queue import job_store

        return job_store(self.settings).reads.get(job_id, failures=failures)

    def failures(self, job_id: str) -> Iterator[tuple[str, str]]:
        """Every (path, reason) that failed in the job, streamed page by page."""
        from ..jobs.queue import job_store

        return job_store(self.settings).reads.iter_failures(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5, failures: int = 100) -> JobStatus:
        """Block until the job has finished (or was cancelled); a :class:`QueueError` after ``timeout`` seconds. The
        status it returns holds the first ``failures`` failures (:meth:`failures` streams them all)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if status.finished_at:
                return self.job(job_id, failures=failures) if status.failed and failures else status
            if deadline is not None and time.monotonic() > deadline:
                raise QueueError(
                    f"job {job_id} still {status.state} after {timeout:g}s ({status.settled}/{status.total} settled)"
                )
            time.sleep(poll)

    def retry(self, job_id: str) -> str | None:
        """Queue the files that failed in ``job_id`` as a new job and return its id; None when nothing failed.
        A :class:`~imsim.errors.JobRunning` error while the job still runs (:meth:`wait` first)."""
        from ..jobs.queue import retry

        return retry(job_id, self.settings)

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job: its queued chunks are taken off the queue, running ones stop at their next slice; returns its
        status."""
        from ..jobs.queue import cancel

        return cancel(job_id, self.settings)
