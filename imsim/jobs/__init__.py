"""Jobs: everything Redis and Celery hold for imsim, in one wing.

- :mod:`~imsim.jobs.records`: :class:`JobStore`, the job records (each update one Lua script of
  :mod:`~imsim.jobs.scripts`); reading them is :mod:`~imsim.jobs.reads`, a record as a user reads it
  :mod:`~imsim.jobs.status`; the fleet's heartbeats and refusals :mod:`~imsim.jobs.fleet`; Redis errors and health
  :mod:`~imsim.jobs.health`;
- :mod:`~imsim.jobs.queue`: the Celery side: the :class:`Chunk` a message carries, enqueue, retry, cancel (and the
  purge of a cancelled job's queued chunks);
- :mod:`~imsim.jobs.runner`: one chunk's life on a worker, apart from Celery (:class:`ChunkRunner`).

Nothing outside this wing (and ``workers/``) imports redis, Celery or kombu (import-linter contracts).
"""
