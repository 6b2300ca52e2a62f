"""Job records in Redis: totals, per-chunk results, failures with reasons, progress, start, end and cancel times.

A job is the unit a user queues (``imsim ingest``); its chunks are the units workers take, each under a
key (``"3"``, and ``"3.0"``/``"3.1"`` once a chunk that kept killing its worker is split). Every update is
one atomic Lua script: a chunk's result is counted the first time it is recorded and ignored after that,
so a redelivered chunk never counts twice. Attempts are counted too: an attempt that started and never
ended (its worker died) is what :func:`imsim.queue` uses to stop redelivering a poison chunk. Every string
written here is made encodable first (:func:`~imsim.images.printable`), so recording a failure never raises
on an odd file name.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import QueueError
from .paths import printable

JOBS_INDEX = "imsim:jobs"


def job_key(job_id: str) -> str:
    return f"imsim:job:{job_id}"


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


_RECORD_CHUNK = """
-- KEYS: 1 job hash, 2 chunks hash, 3 failures hash, 4 progress hash, 5 running hash
-- ARGV: 1 chunk key, 2 result json, 3 done, 4 skipped, 5 cancelled, 6 now, 7.. path,reason pairs
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'cancelled', ARGV[5])
local nfailed = 0
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  nfailed = nfailed + 1
end
redis.call('HINCRBY', KEYS[1], 'failed', nfailed)
local chunks_done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[6])
if chunks_done >= tonumber(redis.call('HGET', KEYS[1], 'chunks')) then
  redis.call('HSETNX', KEYS[1], 'finished_at', ARGV[6])
end
return 1
"""

_SPLIT_CHUNK = """
-- KEYS: 1 job hash, 2 chunks hash, 3 progress hash, 4 running hash; ARGV: 1 chunk key, 2 number of parts it became
if redis.call('HSETNX', KEYS[2], ARGV[1], 'split') == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'chunks', tonumber(ARGV[2]) - 1)
redis.call('HINCRBY', KEYS[1], 'splits', 1)
return 1
"""

_BEGIN_ATTEMPT = """
-- KEYS: 1 attempts hash, 2 ends hash, 3 progress hash, 4 running hash; ARGV: 1 chunk key, 2 running json
local started = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local ended = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('HSET', KEYS[3], ARGV[1], 0)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
return started - 1 - ended
"""


@dataclass
class JobStatus:
    id: str
    total: int
    done: int
    failed: int
    skipped: int
    chunks: int
    chunks_done: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    inputs: list[str]
    models: list[str]
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    retry_of: str = ""  # the job whose failed files this job re-queued
    retried_by: str = ""  # the latest job that re-queued this job's failed files
    collections: dict[str, str] = field(default_factory=dict)  # model -> collection (model version) the workers wrote
    cancelled: int = 0  # files dropped because the job was cancelled
    cancelled_at: float | None = None
    in_progress: int = 0  # files settled inside chunks not yet recorded (progress within a chunk)
    skipped_files: dict[str, int] = field(default_factory=dict)  # files left out when the inputs were expanded, by reason
    unmatched: list[str] = field(default_factory=list)  # inputs that matched no image
    splits: int = 0  # chunks split because they kept killing their worker
    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # chunk key -> worker, pid, started, files

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - self.skipped - self.cancelled, 0)

    @property
    def settled(self) -> int:
        """Files with an outcome, including those settled inside running chunks (for progress displays)."""
        return min(self.total, self.done + self.failed + self.skipped + self.cancelled + self.in_progress)

    @property
    def state(self) -> str:
        if self.cancelled_at:
            return "cancelled" if self.finished_at else "cancelling"
        if self.finished_at:
            return "finished" if not self.failed else "finished_with_failures"
        return "running" if self.started_at else "queued"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pending": self.pending, "state": self.state}


class JobStore:
    """Job bookkeeping on a Redis connection."""

    def __init__(self, redis_url: str):
        import redis

        try:
            self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30)
        except ValueError as exc:  # a malformed URL: name the problem, never the URL (it may hold a password)
            raise QueueError(f"IMSIM_REDIS_URL is not a Redis URL: {exc}") from None
        self._record = self.redis.register_script(_RECORD_CHUNK)
        self._split = self.redis.register_script(_SPLIT_CHUNK)
        self._begin = self.redis.register_script(_BEGIN_ATTEMPT)

    def ping(self) -> None:
        import redis

        try:
            self.redis.ping()
        except redis.AuthenticationError:
            raise QueueError("Redis refused the password in IMSIM_REDIS_URL") from None
        except redis.RedisError as exc:  # the URL may hold a password: name only the error
            raise QueueError(f"Redis is unreachable ({type(exc).__name__}: {exc}); check IMSIM_REDIS_URL") from None

    def create(
        self,
        job_id: str,
        total: int,
        chunks: int,
        inputs: list[str],
        models: list[str],
        retry_of: str = "",
        skipped: dict[str, int] | None = None,
        unmatched: list[str] | None = None,
    ) -> None:
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.hset(
                job_key(job_id),
                mapping={
                    "total": total,
                    "done": 0,
                    "failed": 0,
                    "skipped": 0,
                    "cancelled": 0,
                    "chunks": chunks,
                    "chunks_done": 0,
                    "created_at": now,
                    "inputs": json.dumps([printable(i) for i in inputs]),
                    "models": json.dumps(models),
                    "retry_of": retry_of,
                    "skipped_files": json.dumps(skipped or {}),
                    "unmatched": json.dumps([printable(u) for u in unmatched or []]),
                },
            )
            if retry_of:
                pipe.hset(job_key(retry_of), "retried_by", job_id)
            if chunks == 0:
                pipe.hset(job_key(job_id), "finished_at", now)
            pipe.zadd(JOBS_INDEX, {job_id: now})
            pipe.execute()

    def _keys(self, job_id: str, *names: str) -> list[str]:
        key = job_key(job_id)
        return [key, *(f"{key}:{n}" for n in names)]

    def record_chunk(
        self, job_id: str, chunk: str | int, done: int, skipped: int, failures: dict[str, str], cancelled: int = 0
    ) -> bool:
        """Count a chunk's outcome once. Returns False when the chunk had already been counted."""
        payload = json.dumps({"done": done, "skipped": skipped, "failed": len(failures), "cancelled": cancelled})
        args: list[Any] = [str(chunk), payload, done, skipped, cancelled, time.time()]
        for path, reason in failures.items():
            args += [printable(path), printable(reason)]
        return bool(self._record(keys=self._keys(job_id, "chunks", "failures", "progress", "running"), args=args))

    def split_chunk(self, job_id: str, chunk: str, parts: int) -> bool:
        """Record that ``chunk`` was replaced by ``parts`` smaller chunks (False if it was already counted or split)."""
        return bool(self._split(keys=self._keys(job_id, "chunks", "progress", "running"), args=[chunk, parts]))

    def deaths(self, job_id: str, chunk: str) -> int:
        """How many attempts at ``chunk`` started and never ended: their worker died (killed, out of memory)."""
        key = job_key(job_id)
        started, ended = self.redis.hget(key + ":attempts", chunk), self.redis.hget(key + ":ends", chunk)
        return int(started or 0) - int(ended or 0)

    def begin_attempt(self, job_id: str, chunk: str, info: dict[str, Any]) -> int:
        """Start an attempt at embedding ``chunk`` (shown in ``running``); returns the deaths before it."""
        keys = self._keys(job_id, "attempts", "ends", "progress", "running")[1:]
        return int(self._begin(keys=keys, args=[chunk, json.dumps(info)]))

    def end_attempt(self, job_id: str, chunk: str) -> None:
        key = job_key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key + ":ends", chunk, 1)
            pipe.hdel(key + ":running", chunk)
            pipe.execute()

    def progress(self, job_id: str, chunk: str, files: int) -> None:
        """``files`` more files of a running chunk have an outcome (shown until the chunk is recorded)."""
        self.redis.hincrby(job_key(job_id) + ":progress", chunk, files)

    def mark_started(self, job_id: str, collections: dict[str, str] | None = None) -> None:
        """The job has a worker on it; ``collections`` records which model versions it writes (for ``--activate``)."""
        with self.redis.pipeline() as pipe:
            pipe.hsetnx(job_key(job_id), "started_at", time.time())
            if collections:
                pipe.hsetnx(job_key(job_id), "collections", json.dumps(collections, sort_keys=True))
            pipe.execute()

    def mark_cancelled(self, job_id: str) -> None:
        self.get(job_id)  # an unknown job is an error
        self.redis.hsetnx(job_key(job_id), "cancelled_at", time.time())

    def is_cancelled(self, job_id: str) -> bool:
        return bool(self.redis.hget(job_key(job_id), "cancelled_at"))

    def is_finished(self, job_id: str) -> bool:
        """Every chunk of the job counted (one field read, whatever the job's size)."""
        return bool(self.redis.hget(job_key(job_id), "finished_at"))

    def get(self, job_id: str) -> JobStatus:
        key = job_key(job_id)
        with self.redis.pipeline() as pipe:
            for suffix in ("", ":failures", ":progress", ":running"):
                pipe.hgetall(key + suffix)
            raw, failures, progress, running = pipe.execute()
        if not raw:
            raise QueueError(f"no job {job_id!r} in Redis (see `imsim jobs`)")

        def opt(k: str) -> float | None:
            return float(raw[k]) if raw.get(k) else None

        return JobStatus(
            id=job_id,
            total=int(raw["total"]),
            done=int(raw["done"]),
            failed=int(raw["failed"]),
            skipped=int(raw["skipped"]),
            chunks=int(raw["chunks"]),
            chunks_done=int(raw["chunks_done"]),
            created_at=float(raw["created_at"]),
            started_at=opt("started_at"),
            finished_at=opt("finished_at"),
            inputs=json.loads(raw.get("inputs", "[]")),
            models=json.loads(raw.get("models", "[]")),
            failures=failures,
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
        )

    def list(self, limit: int = 20) -> list[JobStatus]:
        return [self.get(str(j)) for j in self.redis.zrevrange(JOBS_INDEX, 0, limit - 1)]
