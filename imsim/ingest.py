"""The ingest pipeline: read → decode → embed (every enabled model, same decoded batch) → upsert.

:class:`Ingestor` processes one chunk of paths, the unit of work a Celery task carries; a bad
file fails alone and is returned with its reason, the rest are stored; files already stored
with the same content hash and model revision are skipped before decoding. :func:`ingest_local`
runs the same chunks in-process, for a laptop with no Redis. Each chunk reports the seconds
spent reading, decoding, resizing, in each model and writing, so the slow stage is visible.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .errors import ImageError
from .images import DecodedImage, FileBytes, decode_file, read_file
from .models import Embedder, decode_size, load_models
from .settings import Settings
from .store import VectorStore, make_row

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ChunkResult:
    """What happened to one chunk of paths."""

    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds

    def merge(self, other: ChunkResult) -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failures.update(other.failures)
        for stage, seconds in other.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def as_dict(self) -> dict[str, object]:
        return {"done": self.done, "skipped": self.skipped, "failed": len(self.failures),
                "failures": self.failures, "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def _successes(outcomes: Iterable[T | ImageError], failures: dict[str, str]) -> list[T]:
    """Keep the successful outcomes; record each image error (path -> reason) in ``failures``."""
    ok: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, ImageError):
            failures[outcome.path] = outcome.reason
        else:
            ok.append(outcome)
    return ok


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Ingestor:
    """Embeds chunks of image paths with every enabled model and upserts them into the store."""

    def __init__(self, settings: Settings, models: dict[str, Embedder] | None = None, store: VectorStore | None = None):
        self.settings = settings
        self.models = models if models is not None else load_models(settings)
        self.store = store if store is not None else VectorStore(settings)
        self.collections = {name: self.store.ensure_collection(m.info) for name, m in self.models.items()}
        self.draft_size = decode_size(settings, self.models.values())
        self.allowed_roots = settings.allowed_root_paths
        workers = settings.decode_workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imsim-decode")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imsim-write")

    def _read(self, path: str) -> FileBytes | ImageError:
        try:
            return read_file(path, max_bytes=self.settings.max_file_bytes, allowed_roots=self.allowed_roots)
        except ImageError as exc:
            return exc

    def _decode(self, file: FileBytes) -> DecodedImage | ImageError:
        try:
            return decode_file(file, min_size=self.draft_size, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            return exc

    def _stored(self, files: list[FileBytes]) -> dict[str, dict[str, dict]]:
        """model -> id -> stored row (content hash, model revision, tags) for these files."""
        ids = [f.id for f in files]
        return {name: self.store.get(self.collections[name], ids, output_fields=["sha256", "model_revision", "tags"])
                for name in self.models}

    def _unchanged(self, files: list[FileBytes], stored: dict[str, dict[str, dict]], tags: dict[str, str] | None) -> set[str]:
        """Ids whose row, in every model's collection, has this content hash, model revision (and tags, when given)."""
        unchanged = {f.id for f in files}
        for name, model in self.models.items():
            unchanged &= {f.id for f in files if (row := stored[name].get(f.id)) and row["sha256"] == f.sha256
                          and row["model_revision"] == model.info.revision and (tags is None or row.get("tags") == tags)}
        return unchanged

    def ingest(self, paths: Sequence[str], job_id: str = "", force: bool = False,
               tags: dict[str, str] | None = None) -> ChunkResult:
        """Process one chunk. Image errors are recorded per file; store or model errors raise.

        Files already stored with the same content hash and model revision (and the same ``tags``,
        when given) are skipped unless ``force`` (or ``IMSIM_SKIP_UNCHANGED=false``). ``tags`` are
        stored with each row (filterable: ``tags["key"] == "value"``); a re-embedded file given no
        tags keeps the tags it had.
        """
        result = ChunkResult()
        t0 = time.perf_counter()
        files: list[FileBytes] = _successes(self._pool.map(self._read, paths), result.failures)
        stored = self._stored(files) if files else {}
        if self.settings.skip_unchanged and not force and files:
            unchanged = self._unchanged(files, stored, tags)
            result.skipped = len(unchanged)
            files = [f for f in files if f.id not in unchanged]
        row_tags = {f.id: tags if tags is not None else next((rows[f.id]["tags"] for rows in stored.values()
                                                               if f.id in rows and rows[f.id].get("tags")), None) for f in files}
        result.timings["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded: list[DecodedImage] = _successes(self._pool.map(self._decode, files), result.failures)
        result.timings["decode"] = time.perf_counter() - t0
        if not decoded:
            return result
        writes = []
        for name, model, vectors in self._embed_each(decoded, result.timings):
            # The write runs on the writer thread while the next model computes.
            writes.append(self._writer.submit(self._write, name, model, decoded, vectors, job_id, row_tags))
        for future in writes:  # the chunk is done (and may be acknowledged) only once every row is stored
            name, seconds = future.result()
            result.timings[f"write:{name}"] = seconds
        result.done = len(decoded)
        log.info("chunk of %d: %d stored, %d unchanged, %d failed; %s", len(paths), result.done, result.skipped, len(result.failures),
                 ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
        return result

    def _embed_each(self, decoded: list[DecodedImage], timings: dict[str, float]) -> Iterator[tuple[str, Embedder, np.ndarray]]:
        """(name, model, vectors) for each model in turn; pixels are resized once per distinct recipe."""
        pixels_by_recipe: dict[object, list[np.ndarray]] = {}
        for name, model in self.models.items():
            t = time.perf_counter()
            pixels = pixels_by_recipe.get(model.preprocess)
            if pixels is None:
                pixels = list(self._pool.map(model.preprocess.to_uint8, (d.image for d in decoded)))
                pixels_by_recipe[model.preprocess] = pixels
            t_embed = time.perf_counter()
            vectors = model.embed_arrays(pixels)
            timings["resize"] = timings.get("resize", 0.0) + (t_embed - t)
            timings[f"embed:{name}"] = timings.get(f"embed:{name}", 0.0) + time.perf_counter() - t_embed
            yield name, model, vectors

    def embed_files(self, paths: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray], ChunkResult]:
        """Read, decode and embed like :meth:`ingest`, but store nothing: (paths embedded, model -> vectors, outcome).

        The decode path is the ingest one, so a query image and a stored image are treated identically."""
        result = ChunkResult()
        t0 = time.perf_counter()
        files: list[FileBytes] = _successes(self._pool.map(self._read, paths), result.failures)
        decoded: list[DecodedImage] = _successes(self._pool.map(self._decode, files), result.failures)
        result.timings["read+decode"] = time.perf_counter() - t0
        vectors = {name: vecs for name, _, vecs in self._embed_each(decoded, result.timings)} if decoded else {
            name: np.zeros((0, m.dim), np.float32) for name, m in self.models.items()}
        result.done = len(decoded)
        return [d.path for d in decoded], vectors, result

    def _write(self, name: str, model: Embedder, decoded: list[DecodedImage], vectors: np.ndarray, job_id: str,
               tags: dict[str, dict | None]):
        t = time.perf_counter()
        rows = [make_row(model.info, image, vec, job_id, tags.get(image.id)) for image, vec in zip(decoded, vectors)]
        self.store.upsert(self.collections[name], rows)
        return name, time.perf_counter() - t

    def seal(self) -> None:
        """At the end of a job: flush every collection written to, so the new rows are indexed for search."""
        for collection in self.collections.values():
            self.store.flush(collection)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._writer.shutdown(wait=True)


def ingest_local(
    paths: Iterable[str],
    settings: Settings,
    *,
    ingestor: Ingestor | None = None,
    job_id: str = "",
    force: bool = False,
    tags: dict[str, str] | None = None,
    on_chunk: Callable[[ChunkResult, int], None] | None = None,
) -> ChunkResult:
    """Run the whole ingest in this process, chunk by chunk (no Redis, no Celery)."""
    own = ingestor is None
    ingestor = ingestor or Ingestor(settings)
    total = ChunkResult()
    try:
        for chunk in chunked(list(paths), settings.chunk_size):
            part = ingestor.ingest(chunk, job_id=job_id, force=force, tags=tags)
            total.merge(part)
            if on_chunk:
                on_chunk(part, len(chunk))
        if total.done:
            ingestor.seal()
    finally:
        if own:
            ingestor.close()
    return total
