"""Job records in Redis: totals, per-chunk results, failures with reasons, start and end time.

A job is the unit a user queues (``imsim ingest``); its chunks are the units workers take.
Progress is recorded per chunk with one atomic Lua script: a chunk's result is counted the
first time it is recorded and ignored after that, so a redelivered chunk never counts twice.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .errors import QueueError

JOBS_INDEX = "imsim:jobs"


def job_key(job_id: str) -> str:
    return f"imsim:job:{job_id}"


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


_RECORD_CHUNK = """
-- KEYS[1]=job hash, KEYS[2]=chunks hash, KEYS[3]=failures hash
-- ARGV[1]=chunk index, ARGV[2]=result json, ARGV[3]=done, ARGV[4]=skipped, ARGV[5]=now, ARGV[6..]=path,reason pairs
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[4])
local nfailed = 0
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  nfailed = nfailed + 1
end
redis.call('HINCRBY', KEYS[1], 'failed', nfailed)
local chunks_done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[5])
if chunks_done >= tonumber(redis.call('HGET', KEYS[1], 'chunks')) then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
end
return 1
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

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - self.skipped, 0)

    @property
    def state(self) -> str:
        if self.finished_at:
            return "finished" if not self.failed else "finished_with_failures"
        return "running" if self.started_at else "queued"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pending": self.pending, "state": self.state}


class JobStore:
    """Job bookkeeping on a Redis connection."""

    def __init__(self, redis_url: str):
        import redis

        self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5)
        self._record = self.redis.register_script(_RECORD_CHUNK)

    def ping(self) -> None:
        import redis

        try:
            self.redis.ping()
        except redis.RedisError as exc:  # the URL may hold a password: name only the error
            raise QueueError(f"Redis is unreachable ({type(exc).__name__}: {exc}); check IMSIM_REDIS_URL") from None

    def create(self, job_id: str, total: int, chunks: int, inputs: list[str], models: list[str], retry_of: str = "") -> None:
        now = time.time()
        with self.redis.pipeline() as pipe:
            pipe.hset(job_key(job_id), mapping={
                "total": total, "done": 0, "failed": 0, "skipped": 0, "chunks": chunks, "chunks_done": 0,
                "created_at": now, "inputs": json.dumps(inputs), "models": json.dumps(models), "retry_of": retry_of,
            })
            if retry_of:
                pipe.hset(job_key(retry_of), "retried_by", job_id)
            if chunks == 0:
                pipe.hset(job_key(job_id), "finished_at", now)
            pipe.zadd(JOBS_INDEX, {job_id: now})
            pipe.execute()

    def record_chunk(self, job_id: str, chunk_index: int, done: int, skipped: int, failures: dict[str, str]) -> bool:
        """Count a chunk's outcome once. Returns False when the chunk had already been counted."""
        payload = json.dumps({"done": done, "skipped": skipped, "failed": len(failures)})
        args: list[Any] = [chunk_index, payload, done, skipped, time.time()]
        for path, reason in failures.items():
            args += [path, reason]
        key = job_key(job_id)
        return bool(self._record(keys=[key, key + ":chunks", key + ":failures"], args=args))

    def mark_started(self, job_id: str, collections: dict[str, str] | None = None) -> None:
        """The job has a worker on it; ``collections`` records which model versions it writes (for ``--activate``)."""
        with self.redis.pipeline() as pipe:
            pipe.hsetnx(job_key(job_id), "started_at", time.time())
            if collections:
                pipe.hsetnx(job_key(job_id), "collections", json.dumps(collections, sort_keys=True))
            pipe.execute()

    def is_finished(self, job_id: str) -> bool:
        """Every chunk of the job counted (one field read, whatever the job's size)."""
        return bool(self.redis.hget(job_key(job_id), "finished_at"))

    def get(self, job_id: str) -> JobStatus:
        raw = self.redis.hgetall(job_key(job_id))
        if not raw:
            raise QueueError(f"no job {job_id!r} in Redis (see `imsim jobs`)")
        failures = self.redis.hgetall(job_key(job_id) + ":failures")
        opt = lambda k: float(raw[k]) if raw.get(k) else None  # noqa: E731
        return JobStatus(
            id=job_id, total=int(raw["total"]), done=int(raw["done"]), failed=int(raw["failed"]),
            skipped=int(raw["skipped"]), chunks=int(raw["chunks"]), chunks_done=int(raw["chunks_done"]),
            created_at=float(raw["created_at"]), started_at=opt("started_at"), finished_at=opt("finished_at"),
            inputs=json.loads(raw.get("inputs", "[]")), models=json.loads(raw.get("models", "[]")), failures=failures,
            retry_of=raw.get("retry_of", ""), retried_by=raw.get("retried_by", ""),
            collections=json.loads(raw.get("collections", "{}")),
        )

    def list(self, limit: int = 20) -> list[JobStatus]:
        return [self.get(j) for j in self.redis.zrevrange(JOBS_INDEX, 0, limit - 1)]
