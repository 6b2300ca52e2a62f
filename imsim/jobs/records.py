"""Job records in Redis: counts, per-chunk bookkeeping, failures with reasons (paged), progress, times, cancel.

A job is the unit a user queues (``imsim ingest``); its chunks are the units workers take, each under a
key (``"3"``, and ``"3.0"``/``"3.1"`` once a chunk that kept killing its worker is split). Every update is
one atomic Lua script: a chunk's result is counted the first time it is recorded and ignored after that,
so a redelivered chunk never counts twice. Attempts are counted too: an attempt that started and never
ended (its worker died) is what :mod:`imsim.jobs.queue` uses to stop redelivering a poison chunk.

Costs are bounded per job, whatever its size:

- the job hash holds counts, times and flags only (small values: Redis keeps it in its compact encoding), and a
  second hash (``:about``) short summaries of a few hundred bytes each (the first inputs, the list file's size
  and digest, the first unmatched inputs), so reading a job's status (every poll of a progress display) is O(1)
  and a finished job's record stays under 2 KB, failures aside;
- failures live apart, as a list of ``reason-id TAB path`` entries beside a dictionary of distinct reasons (a
  Milvus outage fails thousands of files with one reason), read in pages (:meth:`JobStore.failures`);
- per-chunk bookkeeping (chunks counted, attempts, progress, running) is deleted when the job finishes, and the
  job's remaining keys expire ``retention`` seconds later (``IMSIM_JOB_RETENTION``); the jobs index is trimmed
  as they expire;
- a job that is queued while its chunks are still being sent (a streamed enqueue) cannot finish before the
  last chunk is sent: ``queuing`` holds it open.

Every string written here is made encodable first (:func:`~imsim.sources.names.printable`), except a failed path,
which is kept byte-exact (base64 when it is not UTF-8) so that ``imsim retry`` re-queues the very file.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import JobNotFound, QueueError
from ..sources.names import printable
from . import scripts as job_scripts
from .fleet import FleetRecords
from .reads import JOBS_EXPIRY, JOBS_INDEX, JobReads, encode_path
from .scripts import job_key
from .status import SUMMARY_BYTES, path_list_json, summary

DEFAULT_RETENTION = 7 * 24 * 3600
OPEN = 1 << 62  # the chunk count of a job whose chunks are still being sent: never reached
CHUNK_SUFFIXES = ("chunks", "attempts", "ends", "progress", "running", "refusals")  # deleted when the job finishes
KEPT_SUFFIXES = ("failures", "reasons", "about")  # expire with the job hash


MAX_REASONS = 2_000  # distinct reason texts kept per job; past it a failure keeps its kind (reason_kind)
MAX_REASON_CHARS = 500  # a reason longer than this is cut (a decoder's message naming a long path)
_NUMBERS = re.compile(r"\d+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_kind(reason: str, path: str) -> str:
    """The kind of a failure: its reason without what makes one file's reason differ from another's (its path, quoted
    names, numbers), cut to 160 characters: "cannot decode image: broken data stream when reading image file",
    whichever file it was."""
    text = reason.replace(printable(path), "…").replace(path, "…")
    text = _NUMBERS.sub("#", _QUOTED.sub("'…'", text))
    return "(kind) " + text[:160]


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


class JobStore:
    """Job bookkeeping on a Redis connection. ``retention``: seconds a finished job's record is kept. Its parts on the
    same connection: ``reads`` (status, failures, the recent jobs: :class:`~imsim.jobs.reads.JobReads`) and ``fleet``
    (heartbeats and refusals: :class:`~imsim.jobs.fleet.FleetRecords`)."""

    def __init__(self, redis_url: str, retention: int = DEFAULT_RETENTION):
        import redis

        try:
            self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30)
        except ValueError as exc:  # a malformed URL: name the problem, never the URL (it may hold a password)
            raise QueueError(f"IMSIM_REDIS_URL is not a Redis URL: {exc}") from None
        self.retention = retention
        self.reads = JobReads(self.redis)
        self.fleet = FleetRecords(self.redis)
        self._record = self.redis.register_script(job_scripts.RECORD_CHUNK)
        self._seal = self.redis.register_script(job_scripts.SEAL)
        self._split = self.redis.register_script(job_scripts.SPLIT_CHUNK)
        self._begin = self.redis.register_script(job_scripts.BEGIN_ATTEMPT)
        self._while_open = self.redis.register_script(job_scripts.WHILE_OPEN)

    def ping(self) -> None:
        import redis

        try:
            self.redis.ping()
        except redis.AuthenticationError:
            raise QueueError("Redis refused the password in IMSIM_REDIS_URL") from None
        except redis.RedisError as exc:  # the URL may hold a password: name only the error
            raise QueueError(f"Redis is unreachable ({type(exc).__name__}: {exc}); check IMSIM_REDIS_URL") from None

    def _keys(self, job_id: str, *names: str) -> list[str]:
        key = job_key(job_id)
        return [key, *(f"{key}:{n}" for n in names)]

    # --- a job's life ----------------------------------------------------------------------------
    def create(
        self,
        job_id: str,
        total: int = 0,
        chunks: int = 0,
        inputs: Sequence[str] = (),
        models: Sequence[str] = (),
        retry_of: str = "",
        skipped: Mapping[str, int] | None = None,
        unmatched: Sequence[str] = (),
        *,
        queuing: bool = False,
        path_list: Mapping[str, Any] | None = None,
        inputs_count: int | None = None,
    ) -> None:
        """Record a new job. ``queuing``: its chunks are about to be sent one by one (:meth:`add_chunks`), and it
        cannot finish before :meth:`seal` says the last one went out; otherwise ``total`` and ``chunks`` are final."""
        now = time.time()
        self.reads.trim_index(now)
        mapping: dict[Any, Any] = {  # redis-py types its keys invariantly
            "total": total,
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "cancelled": 0,
            "read_bytes": 0,
            "chunks": chunks,
            "chunks_done": 0,
            "created_at": now,
            "inputs_count": len(inputs) if inputs_count is None else inputs_count,
            "models": json.dumps(list(models)),
            "retry_of": retry_of,
            "unmatched_count": len(unmatched),
        }
        about: dict[Any, Any] = {
            "inputs": summary(inputs),
            "skipped_files": json.dumps(dict(skipped or {})),
            "unmatched": summary(unmatched),
        }
        if path_list:
            about["path_list"] = path_list_json(path_list)
        if queuing:
            mapping["queuing"] = 1
        with self.redis.pipeline() as pipe:
            pipe.hset(job_key(job_id), mapping=mapping)
            pipe.hset(job_key(job_id) + ":about", mapping=about)
            if retry_of:
                pipe.hset(job_key(retry_of), "retried_by", job_id)
            pipe.zadd(JOBS_INDEX, {job_id: now})
            pipe.execute()
        if not queuing:
            self.seal(job_id)

    def add_chunks(self, job_id: str, files: int, chunks: int = 1) -> None:
        """``chunks`` more chunks holding ``files`` files went out (a job that is still queuing)."""
        with self.redis.pipeline() as pipe:
            pipe.hincrby(job_key(job_id), "total", files)
            pipe.hincrby(job_key(job_id), "chunks", chunks)
            pipe.execute()

    def seal(
        self,
        job_id: str,
        *,
        skipped: Mapping[str, int] | None = None,
        unmatched: Sequence[str] | None = None,
        unmatched_count: int | None = None,
        path_list: Mapping[str, Any] | None = None,
        error: str = "",
    ) -> None:
        """Every chunk of the job went out (or, with ``error``, sending stopped and the job holds those that did): the
        job may now finish; what the inputs' expansion left out is recorded. A job with no chunk finishes here."""
        fields: dict[str, Any] = {}
        if skipped is not None:
            fields["skipped_files"] = json.dumps(dict(skipped))
        if unmatched is not None:
            fields["unmatched"] = summary(unmatched)
            self.redis.hset(job_key(job_id), "unmatched_count", len(unmatched) if unmatched_count is None else unmatched_count)
        if path_list:
            fields["path_list"] = path_list_json(path_list)
        if error:
            fields["enqueue_error"] = printable(error)[:SUMMARY_BYTES]
        args: list[Any] = [time.time(), self.retention, job_id]
        for name, value in fields.items():
            args += [name, value]
        self._seal(keys=[job_key(job_id), JOBS_EXPIRY, job_key(job_id) + ":about"], args=args)

    def abandon_queuing(self, job_id: str, sent: int) -> None:
        """What can still be done when Redis refuses writes (full): let the job finish with the chunks that went out
        (no chunk: the job is dropped, nothing refers to it). Never raises."""
        import redis

        try:
            if sent:
                self.redis.hdel(job_key(job_id), "queuing")
            else:
                self.redis.delete(*self._keys(job_id, "about"))
        except redis.RedisError:
            pass

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
    ) -> bool:
        """Count a chunk's outcome once. Returns False when the chunk had already been counted (or the job is over)."""
        payload = json.dumps({"done": done, "skipped": skipped, "failed": len(failures), "cancelled": cancelled})
        args: list[Any] = [str(chunk), payload, done, skipped, cancelled, time.time(), self.retention, job_id, read_bytes]
        args += [updated, MAX_REASONS]
        for path, reason in failures.items():
            text = printable(reason)[:MAX_REASON_CHARS]
            args += [text, reason_kind(text, path), encode_path(path)]
        keys = self._keys(job_id, "chunks", "failures", "reasons", "progress", "running") + [JOBS_EXPIRY]
        return bool(self._record(keys=keys, args=args))

    def split_chunk(self, job_id: str, chunk: str, parts: int) -> bool:
        """Record that ``chunk`` was replaced by ``parts`` smaller chunks (False if it was already counted or split)."""
        return bool(self._split(keys=self._keys(job_id, "chunks", "progress", "running"), args=[chunk, parts]))

    def deaths(self, job_id: str, chunk: str) -> int:
        """How many attempts at ``chunk`` started and never ended: their worker died (killed, out of memory)."""
        key = job_key(job_id)
        started, ended = self.redis.hget(key + ":attempts", chunk), self.redis.hget(key + ":ends", chunk)
        return int(started or 0) - int(ended or 0)

    def begin_attempt(self, job_id: str, chunk: str, info: Mapping[str, Any]) -> int:
        """Start an attempt at embedding ``chunk`` (shown in ``running``); returns the deaths before it, or -1 when
        there is nothing to do (the job finished or expired, or this chunk was already counted)."""
        keys = self._keys(job_id, "attempts", "ends", "progress", "running", "chunks")
        return int(self._begin(keys=keys, args=[chunk, json.dumps(dict(info))]))

    def end_attempt(self, job_id: str, chunk: str) -> None:
        key = job_key(job_id)
        self._while_open(keys=[key, key + ":ends", key + ":running"], args=["end", chunk, 1])

    def progress(self, job_id: str, chunk: str, files: int) -> None:
        """``files`` more files of a running chunk have an outcome (shown until the chunk is recorded)."""
        key = job_key(job_id)
        self._while_open(keys=[key, key + ":progress", key + ":progress"], args=["incr", chunk, files])

    def mark_started(self, job_id: str, collections: Mapping[str, str] | None = None) -> dict[str, str]:
        """The job has a worker on it. ``collections`` (model -> collection: the model versions this worker writes)
        is recorded by the first worker; returns the job's recorded versions, which every later worker must match."""
        key = job_key(job_id)
        if not self.redis.exists(key):
            return dict(collections or {})
        with self.redis.pipeline() as pipe:
            pipe.hsetnx(key, "started_at", time.time())
            if collections:
                pipe.hsetnx(key + ":about", "collections", json.dumps(dict(collections), sort_keys=True))
            pipe.hget(key + ":about", "collections")
            recorded = pipe.execute()[-1]
        return json.loads(recorded) if recorded else dict(collections or {})

    def mark_cancelled(self, job_id: str) -> None:
        """O(1): set the flag workers read before each chunk and each slice; they drop what is left."""
        self._exists(job_id)
        self.redis.hsetnx(job_key(job_id), "cancelled_at", time.time())

    def is_cancelled(self, job_id: str) -> bool:
        return bool(self.redis.hget(job_key(job_id), "cancelled_at"))

    def is_finished(self, job_id: str) -> bool:
        """Every chunk of the job counted (one field read, whatever the job's size)."""
        return bool(self.redis.hget(job_key(job_id), "finished_at"))

    def _exists(self, job_id: str) -> None:
        if not self.redis.exists(job_key(job_id)):
            raise JobNotFound(f"no job {job_id!r} in Redis: unknown, or older than IMSIM_JOB_RETENTION (see `imsim jobs`)")
