"""Celery tasks: thin wrappers that hand a chunk of paths to :class:`imsim.ingest.Ingestor`.

Models load lazily in the process that runs the task (after the prefork fork), never in the
Celery parent, so CUDA is never initialised before a fork.
"""

from __future__ import annotations

from functools import lru_cache

from imsim.ingest import Ingestor
from imsim.jobs import JobStore
from imsim.queue import EMBED_CHUNK
from imsim.settings import get_settings

from .app import app


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    return Ingestor(get_settings())


@lru_cache(maxsize=1)
def jobs() -> JobStore:
    return JobStore(get_settings().redis_url.get_secret_value())


@app.task(name=EMBED_CHUNK, bind=True)
def embed_chunk(self, job_id: str, chunk_index: int, paths: list[str], force: bool = False) -> dict:
    """Embed and store one chunk, then count its outcome on the job (once, even if redelivered)."""
    jobs().mark_started(job_id)
    result = ingestor().ingest(paths, job_id=job_id, force=force)
    jobs().record_chunk(job_id, chunk_index, result.done, result.skipped, result.failures)
    return result.as_dict()
