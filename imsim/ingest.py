"""The ingest pipeline: read → (skip what is stored unchanged) → decode → embed with every model → upsert.

:class:`Ingestor` processes one chunk of paths, the unit of work a Celery task carries. Inside a chunk, files
stream in slices through the :class:`~imsim.embedding.EmbeddingStep` while a writer thread upserts the slice
before, and ``on_progress`` is told after each slice (so a progress bar moves within a chunk). A bad file, or
a row the store refuses, fails alone with its reason; the rest are stored. Files already stored with the same
content hash and model version are skipped before decoding. :func:`ingest_local` runs the same chunks
in-process, for a laptop with no Redis. Each chunk reports typed stage timings (:class:`~imsim.timing.StageTimes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from .embedding import Embedded, EmbeddingStep
from .images import FileBytes
from .models import Embedder, ModelInfo, load_models
from .paths import path_id
from .settings import Settings
from .store import VectorStore, make_row
from .timing import StageTimes, timed
from .util import chunked

log = logging.getLogger(__name__)
Progress = Callable[[int], None]  # called with how many more files of the chunk are settled (stored, skipped or failed)


class Sink(Protocol):
    """What ingest needs from a store: :class:`~imsim.store.VectorStore`, or the benchmark's no-op sink."""

    def ensure_collection(self, info: ModelInfo) -> str: ...

    def get(self, name: str, ids: Sequence[str], output_fields: Sequence[str] = ("path",)) -> dict[str, dict[str, Any]]: ...

    def upsert_each(self, name: str, rows: Sequence[dict[str, Any]]) -> dict[str, str]: ...

    def flush(self, name: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class ChunkResult:
    """What happened to one chunk of paths (or to a whole local ingest, merged)."""

    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    times: StageTimes = field(default_factory=StageTimes)

    def merge(self, other: ChunkResult) -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failures.update(other.failures)
        self.times.merge(other.times)

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": len(self.failures),
            "failures": self.failures,
            "times": self.times.as_dict(),
        }


class Ingestor:
    """Embeds chunks of image paths with every enabled model and upserts them into the store."""

    def __init__(self, settings: Settings, embedders: Mapping[str, Embedder] | None = None, store: Sink | None = None):
        self.settings = settings
        self.models = dict(embedders) if embedders is not None else load_models(settings)
        self.store: Sink = store if store is not None else VectorStore(settings)
        self.collections = {name: self.store.ensure_collection(m.info) for name, m in self.models.items()}
        self.step = EmbeddingStep.from_settings(settings, self.models)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imsim-write")

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _stored(self, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """model -> id -> stored row (content hash, model revision, tags) for these ids."""
        return {
            name: self.store.get(self.collections[name], ids, output_fields=["sha256", "model_revision", "tags"])
            for name in self.models
        }

    def ingest(
        self,
        paths: Sequence[str],
        job_id: str = "",
        force: bool = False,
        tags: dict[str, str] | None = None,
        on_progress: Progress | None = None,
    ) -> ChunkResult:
        """Process one chunk. Image errors (and rows the store refuses) are recorded per file; outages raise.

        Files already stored with the same content hash and model revision (and the same ``tags``, when given)
        are skipped unless ``force`` (or ``IMSIM_SKIP_UNCHANGED=false``): the stored rows of a slice are fetched by
        id (a hash of the path, known before reading), and each file is compared once read, before it is decoded.
        ``tags`` are stored with each row (filterable: ``tags["key"] == "value"``); a re-embedded file given no
        tags keeps the tags it had."""
        result = ChunkResult()
        stored: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.models}
        progress = on_progress or (lambda n: None)
        skip = self.settings.skip_unchanged and not force

        def slices() -> Iterator[list[str]]:
            for part in chunked(paths, self.step.slice_size):
                found = self._stored([path_id(p) for p in part])
                for name, rows in found.items():
                    stored[name].update(rows)
                yield part

        def keep(file: FileBytes) -> bool:
            """Whether ``file`` must be embedded: not every model's row has this content, revision (and tags)."""
            for name, model in self.models.items():
                row = stored[name].get(file.id)
                if not row or row["sha256"] != file.sha256 or row["model_revision"] != model.info.revision:
                    return True
                if tags is not None and (row.get("tags") or {}) != tags:
                    return True
            return False

        writes: list[tuple[Future[dict[str, str]], int]] = []
        for embedded in self.step.stream(slices(), result.times, keep=keep if skip else None):
            result.failures.update(embedded.failures)
            result.skipped += len(embedded.skipped)
            if embedded.failures or embedded.skipped:
                progress(len(embedded.failures) + len(embedded.skipped))
            if embedded.images:  # written while the models run on the next slice
                row_tags = {
                    image.id: tags if tags is not None else self._kept_tags(stored, image.id) for image in embedded.images
                }
                writes.append((self._writer.submit(self._write, embedded, job_id, row_tags, result.times), len(embedded.images)))
            while writes and writes[0][0].done():
                self._settle(*writes.pop(0), result, progress)
        while writes:  # the chunk is done (and may be acknowledged) only once every row is stored
            self._settle(*writes.pop(0), result, progress)
        log.info(
            "chunk of %d: %d stored, %d unchanged, %d failed; %s",
            len(paths),
            result.done,
            result.skipped,
            len(result.failures),
            ", ".join(f"{label} {seconds:.2f}s" for label, seconds, _ in result.times.rows()),
        )
        return result

    @staticmethod
    def _kept_tags(stored: dict[str, dict[str, dict[str, Any]]], image_id: str) -> dict[str, str] | None:
        return next(
            (rows[image_id].get("tags") for rows in stored.values() if image_id in rows and rows[image_id].get("tags")), None
        )

    @staticmethod
    def _settle(write: Future[dict[str, str]], size: int, result: ChunkResult, progress: Progress) -> None:
        refused = write.result()
        result.failures.update(refused)
        result.done += size - len(refused)
        progress(size)

    def _write(
        self, embedded: Embedded, job_id: str, tags: dict[str, dict[str, str] | None], times: StageTimes
    ) -> dict[str, str]:
        """Upsert one slice into every model's collection; rows the store refuses come back as {path: reason}."""
        refused: dict[str, str] = {}
        for name, model in self.models.items():
            with timed(times, "write", name):
                rows = [
                    make_row(model.info, image, vec, job_id, tags.get(image.id))
                    for image, vec in zip(embedded.images, embedded.vectors[name], strict=True)
                ]
                refused.update(self.store.upsert_each(self.collections[name], rows))
        return refused

    def seal(self) -> None:
        """At the end of a job: flush every collection written to, so the new rows are indexed for search."""
        for collection in self.collections.values():
            self.store.flush(collection)

    def close(self) -> None:
        self.step.close()
        self._writer.shutdown(wait=True)


def ingest_local(
    paths: Iterable[str],
    settings: Settings,
    *,
    ingestor: Ingestor | None = None,
    job_id: str = "",
    force: bool = False,
    tags: dict[str, str] | None = None,
    on_progress: Progress | None = None,
) -> ChunkResult:
    """Run the whole ingest in this process, chunk by chunk (no Redis, no Celery)."""
    own = ingestor is None
    worker = ingestor or Ingestor(settings)
    total = ChunkResult()
    try:
        for chunk in chunked(list(paths), settings.chunk_size):
            total.merge(worker.ingest(chunk, job_id=job_id, force=force, tags=tags, on_progress=on_progress))
        if total.done:
            worker.seal()
    finally:
        if own:
            worker.close()
            worker.store.close()
    return total
