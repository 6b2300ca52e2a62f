"""Reading job records: a job's status in O(1) whatever its size, its failures page by page (byte-exact paths),
and the most recent jobs (the index trimmed as records expire). Part of :class:`imsim.jobs.records.JobStore`, which writes
them; the key layout is :mod:`imsim.jobs.scripts`'s."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

from ..errors import JobNotFound
from .scripts import job_key
from .status import JobStatus, status_of

JOBS_INDEX = "imsim:jobs"  # job id -> created_at
JOBS_EXPIRY = "imsim:jobs:expiry"  # finished job id -> when its keys expire (to trim the index)


def encode_path(path: str) -> str:
    """A path as stored in a failure entry, byte-exact: ``u`` + the text, or ``b`` + base64 of its raw bytes when it
    is not UTF-8 or holds a NUL (a name listed in a path file can hold both)."""
    raw = path.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and "\x00" not in text:
        return "u" + text
    return "b" + base64.b64encode(raw).decode("ascii")


def decode_path(stored: str) -> str:
    if stored.startswith("b"):
        return base64.b64decode(stored[1:]).decode("utf-8", "surrogateescape")
    return stored[1:]


class JobReads:
    """The reads of job records, on the job store's Redis connection: the ``reads`` part of
    :class:`~imsim.jobs.records.JobStore`."""

    def __init__(self, redis: Any):
        self.redis = redis

    def get(self, job_id: str, failures: int = 0) -> JobStatus:
        """The job's counts and summaries (O(1) in its size), with its first ``failures`` failures."""
        key = job_key(job_id)
        with self.redis.pipeline(transaction=False) as pipe:  # no MULTI: a full Redis refuses MULTI's reads too
            _read(pipe, key)
            raw, about, progress, running, ttl = pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r} in Redis: unknown, or older than IMSIM_JOB_RETENTION (see `imsim jobs`)")
        status = status_of(job_id, {**about, **raw}, progress, running, ttl)
        if failures:
            status.failures = dict(self.failures(job_id, 0, failures))
        return status

    def failures(self, job_id: str, start: int = 0, count: int = 100) -> list[tuple[str, str]]:
        """(path, reason) of failures ``start`` .. ``start + count - 1``, in the order they were recorded; paths are
        byte-exact (non-UTF-8 bytes as surrogates: print them with :func:`~imsim.sources.names.printable`)."""
        if count <= 0:
            return []
        key = job_key(job_id)
        entries = [str(e) for e in self.redis.lrange(key + ":failures", start, start + count - 1)]
        if not entries:
            return []
        ids = sorted({e.split("\t", 1)[0] for e in entries})
        texts = dict(zip(ids, self.redis.hmget(key + ":reasons", [f"n:{i}" for i in ids]), strict=True))
        out = []
        for entry in entries:
            rid, _, path = entry.partition("\t")
            out.append((decode_path(path), str(texts.get(rid) or "?")))
        return out

    def iter_failures(self, job_id: str, page: int = 10_000) -> Iterator[tuple[str, str]]:
        """Every failure of the job, page by page (bounded memory, however many there are)."""
        start = 0
        while True:
            batch = self.failures(job_id, start, page)
            yield from batch
            if len(batch) < page:
                return
            start += page

    def list(self, limit: int = 20) -> list[JobStatus]:
        """The most recent jobs (one round trip for the page; records that expired are dropped from the index)."""
        self.trim_index(time.time())
        ids = [str(j) for j in self.redis.zrevrange(JOBS_INDEX, 0, max(0, limit - 1))]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                _read(pipe, job_key(job_id))
            replies = pipe.execute()
        found, gone = [], []
        for n, job_id in enumerate(ids):
            raw, about, progress, running, ttl = replies[5 * n : 5 * n + 5]
            if raw:
                found.append(status_of(job_id, {**about, **raw}, progress, running, ttl))
            else:
                gone.append(job_id)
        if gone:
            self.redis.zrem(JOBS_INDEX, *gone)
        return found

    def trim_index(self, now: float) -> None:
        """Drop expired jobs from the index (bounded by how many expired since the last trim)."""
        expired = self.redis.zrangebyscore(JOBS_EXPIRY, "-inf", now, start=0, num=1000)
        if expired:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(JOBS_INDEX, *expired)
                pipe.zrem(JOBS_EXPIRY, *expired)
                pipe.execute()


def _read(pipe: Any, key: str) -> None:
    """Queue the reads of one job's status on a pipeline: its hash, its summaries, progress, running chunks, TTL."""
    pipe.hgetall(key)
    pipe.hgetall(key + ":about")
    pipe.hgetall(key + ":progress")
    pipe.hgetall(key + ":running")
    pipe.ttl(key)
