"""Which workers serve a queue, and with what models: one heartbeat per worker in a sorted set (bounded by the
fleet, dropped ``FLEET_TTL`` seconds after a worker's last beat), and, per chunk, how long it has waited for a worker
that can embed it and why each refusing worker could not (:meth:`FleetRecords.refused_for`). Part of
:class:`imsim.jobs.records.JobStore`."""

from __future__ import annotations

import re
import time
from typing import Any

from .scripts import job_key

FLEET_KEY = "imsim:fleet:{queue}"  # sorted set: "identity|worker" -> last heartbeat (Unix seconds)
FLEET_TTL = 60  # seconds a worker counts as on the queue after its last heartbeat (it beats every FLEET_TTL / 4)


class FleetRecords:
    """Fleet heartbeats and chunk refusals, on the job store's Redis connection: the ``fleet`` part of
    :class:`~imsim.jobs.records.JobStore`."""

    def __init__(self, redis: Any):
        self.redis = redis

    def refused_for(
        self, job_id: str, chunk: str, worker: str, why: str, *, capable_alive: bool = False
    ) -> tuple[float, list[str]]:
        """``worker`` refused ``chunk`` because ``why`` (it embeds with other models or versions than the job's): seconds
        since the wait for a capable worker began and the distinct reasons every refusing worker gave, so a chunk no
        worker can take fails after a bounded wait, saying what each kind of worker lacked, instead of circling forever.
        ``capable_alive``: a worker that can take it is on the queue (busy): the wait starts again."""
        key = job_key(job_id) + ":refusals"
        now = time.time()
        with self.redis.pipeline() as pipe:
            if capable_alive:
                pipe.hset(key, chunk, now)
            else:
                pipe.hsetnx(key, chunk, now)
            pipe.hset(key, f"{chunk}|{worker}", why)
            pipe.hget(key, chunk)
            first = pipe.execute()[-1]
        reasons = {
            v.decode() if isinstance(v, bytes) else str(v)
            for _, v in self.redis.hscan_iter(key, match=f"{glob_escape(chunk)}|*", count=100)
        }
        return now - float(first or now), sorted(reasons)

    # --- which workers serve a queue, and with what -----------------------------------------------
    def fleet_beat(self, queue: str, identity: str, worker: str) -> None:
        """``worker`` on ``queue`` embeds with ``identity`` (:func:`imsim.jobs.queue.identity_digest`), as of now: one
        sorted-set member per worker, dropped ``FLEET_TTL`` seconds after its last beat (bounded by the fleet)."""
        key, now = FLEET_KEY.format(queue=queue), time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {f"{identity}|{worker}": now})
            pipe.zremrangebyscore(key, "-inf", now - FLEET_TTL)
            pipe.expire(key, 2 * FLEET_TTL)
            pipe.execute()

    def fleet_leave(self, queue: str, identity: str, worker: str) -> None:
        self.redis.zrem(FLEET_KEY.format(queue=queue), f"{identity}|{worker}")

    def fleet_alive(self, queue: str, identity: str) -> bool:
        """Whether a worker embedding with ``identity`` has beaten on ``queue`` in the last ``FLEET_TTL`` seconds."""
        members = self.redis.zrangebyscore(FLEET_KEY.format(queue=queue), time.time() - FLEET_TTL, "+inf")
        return any(str(m).startswith(identity + "|") for m in members)


def glob_escape(text: str) -> str:
    """``text`` taken literally in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
