"""What `imsim serve` keeps warm between requests, independent of HTTP: the models (one :class:`~imsim.client.local.Client`),
micro-batched image queries, thumbnails, near-duplicate groups with the marks people made, and the metrics.

Micro-batching, work-conserving: when the models are free, the next pass takes every image query already waiting
(up to ``IMSIM_API_MAX_BATCH``), so a lone query waits for nothing and queries that arrive while a pass runs go
together in the next one; ``IMSIM_API_BATCH_WINDOW_MS`` adds a wait for more. Queries that ask for the same thing
(k, models, fusion, filters) share one forward pass per model and one store search per collection
(``search_batch``: one request with several query vectors); a batch whose embedding fails is retried one query
at a time, so a bad upload fails alone. One batching thread runs the models; other requests (stored images, jobs,
collections) run on the server's thread pool.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..client.local import Client
from ..errors import ImageError, NotFound
from ..expr import Where, check_tags
from ..fusion import SearchHit
from ..images import DecodeBudget
from ..settings import Settings
from ..sources.reading import Limits, open_file
from ..timing import StageTimes

GROUPS_TTL = 300.0  # seconds the linked pairs of one duplicates query are reused (marks apply at once regardless)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The API's Prometheus metrics, in a registry of its own (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imsim_api_requests", "API requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "imsim_api_request_seconds", "API request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.embed = Histogram(
            "imsim_api_embed_seconds",
            "Forward pass time per model and batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search = Histogram(
            "imsim_api_search_seconds",
            "Store search time per batch (every collection)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "imsim_api_batch_size", "Image queries per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.errors = Counter("imsim_api_errors", "Errors by kind", ["kind"], registry=self.registry)


@dataclass(frozen=True)
class SearchParams:
    """What an image query asks for besides its pixels: queries with equal params can share a batch."""

    k: int = 10
    models: tuple[str, ...] = ()
    fusion: str | None = None
    where: Where | None = None
    filter: str = ""

    def key(self) -> str:
        return repr((self.k, self.models, self.fusion, self.where, self.filter))


@dataclass
class _Pending:
    data: bytes
    params: SearchParams
    name: str = "the upload"
    future: Future[list[SearchHit]] = field(default_factory=Future)


class Service:
    """The warm state behind the HTTP API (see the module doc)."""

    def __init__(self, settings: Settings, client: Client | None = None):
        self.settings = settings
        self.client = client or Client(settings)
        self.limits = Limits.from_settings(settings)
        self.budget = DecodeBudget.process(self.limits.decode_bytes)  # thumbnails' decodes: bounded like ingest's
        self.metrics = Metrics()
        self.ready = False
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._batcher = threading.Thread(target=self._run_batches, name="imsim-api-batcher", daemon=True)
        self._thumbs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._thumb_bytes = 0
        self._thumb_lock = threading.Lock()
        self._groups: dict[str, tuple[float, Any]] = {}

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Load every enabled model (the first query must not pay for it) and start the batching thread."""
        names = self.client.models.names(None)
        for name in names:
            self.client.models.model(name)
        self._batcher.start()
        self.ready = True

    def random_weights(self, names: Sequence[str]) -> list[str]:
        """Which of ``names`` have random weights (demo or test models): their similarities mean nothing."""
        from ..models.base import random_weights

        return [n for n in names if random_weights(self.client.models.model(n).info.source)]

    def close(self) -> None:
        self._queue.put(None)
        self.client.close()

    # --- image queries, micro-batched -----------------------------------------------------------
    def search_image(self, data: bytes, params: SearchParams, name: str = "the upload") -> Future[list[SearchHit]]:
        """Queue an image query for the next batch; ``name`` is how an error names it."""
        pending = _Pending(data, params, name)
        self._queue.put(pending)
        return pending.future

    def _run_batches(self) -> None:
        window = self.settings.api_batch_window_ms / 1000
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + window
            while len(batch) < self.settings.api_max_batch:
                left = deadline - time.monotonic()
                try:  # everything already waiting, then (with a window) what arrives before it closes
                    item = self._queue.get_nowait() if left <= 0 else self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            groups: dict[str, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.params.key(), []).append(item)
            for items in groups.values():
                self._answer(items)

    def _answer(self, items: list[_Pending]) -> None:
        params = items[0].params
        try:
            results = self._search_many([i.data for i in items], params)
        except ImageError as error:
            if len(items) == 1:  # name the upload as its sender knows it, not as "<query 0: bytes>"
                items[0].future.set_exception(type(error)(items[0].name, error.reason))
                return
            for item in items:  # find the bad upload: each one alone
                self._answer([item])
            return
        except BaseException:
            for item in items:
                item.future.set_exception(_current())
            return
        for item, hits in zip(items, results, strict=True):
            item.future.set_result(hits)

    def _search_many(self, images: Sequence[bytes], params: SearchParams) -> list[list[SearchHit]]:
        self.metrics.batch.observe(len(images))
        times = StageTimes()
        vectors = self.client.models.embed_many(list(images), params.models or None, times=times)
        for model, seconds in times.embed.items():
            self.metrics.embed.labels(model).observe(seconds)
        started = time.perf_counter()
        hits = self.client.search_batch(vectors, k=params.k, fusion=params.fusion, where=params.where, filter=params.filter)
        self.metrics.search.observe(time.perf_counter() - started)
        return hits

    # --- duplicates -----------------------------------------------------------------------------
    def linked(
        self, model: str | None, threshold: float | None, precision: float, under: str, refresh: bool
    ) -> tuple[Any, set[tuple[str, str]]]:
        """The pairs `imsim duplicates` links for these arguments (computed once, kept ``GROUPS_TTL`` seconds) and
        the marked pairs among them (read every time: a mark hides its pair at once)."""
        from ..duplicates import link, marked_pairs

        key = repr((model, threshold, precision, under))
        cached = self._groups.get(key)
        if refresh or cached is None or time.monotonic() - cached[0] > GROUPS_TTL:
            where = Where(path_prefix=under) if under else None
            linked = link(self.client, model=model, threshold=threshold, precision=precision, where=where)
            self._groups[key] = cached = (time.monotonic(), linked)
        linked = cached[1]
        return linked, marked_pairs(self.client.store, linked.paths)

    def exact(self, under: str) -> list[Any]:
        from ..duplicates import exact_groups

        name = self.client.models.names(None)[0]
        return exact_groups(self.client.store, self.client.models.collection(name), Where(path_prefix=under) if under else None)

    def mark(self, a: str, b: str) -> Any:
        """Mark two stored images "not a duplicate" (both must be stored; their paths and hashes are kept)."""
        from ..store.marks import Mark, Marks

        collection = self.client.models.collection(self.client.models.names(None)[0])
        rows = self.client.store.rows.get(collection, [a, b], ["path", "sha256"], consistency="Bounded")
        missing = [i for i in (a, b) if i not in rows]
        if missing:
            raise NotFound(f"no stored image {missing[0]}")
        return Marks(self.client.store).add(Mark(a, b, rows[a]["sha256"], rows[b]["sha256"], rows[a]["path"], rows[b]["path"]))

    # --- jobs -----------------------------------------------------------------------------------
    def queue_job(self, paths: list[str], force: bool, tags: object) -> str:
        """Queue an ingest of server-side paths; only under IMSIM_ALLOWED_ROOTS (refused when none are set)."""
        import os

        roots = self.settings.allowed_root_paths
        if not roots:
            raise PermissionError("queuing through the API needs IMSIM_ALLOWED_ROOTS: the folders the server may read")
        for path in paths:
            real = os.path.realpath(path)
            if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                raise PermissionError(f"{path}: outside IMSIM_ALLOWED_ROOTS")
        return self.client.jobs.ingest(paths, force=force, tags=check_tags(tags) or None)

    # --- stored images and thumbnails -----------------------------------------------------------
    def stored_path(self, row_id: str) -> str:
        """The path of a stored image, by its row id only (never a path from a request)."""
        for name in self.client.models.names(None):
            found = self.client.store.rows.get(self.client.models.collection(name), [row_id], consistency="Bounded")
            if row_id in found:
                return str(found[row_id]["path"])
        raise NotFound(f"no stored image {row_id}")

    def image_bytes(self, row_id: str) -> tuple[bytes, str]:
        """(the stored image's file bytes, its media type), read within the byte limit and the allowed roots."""
        path = self.stored_path(row_id)
        with open_file(path, self.limits) as opened:
            data = opened.read().data
        from ..images import read_header

        header = read_header(data, path, self.limits.max_pixels)
        return data, MEDIA_TYPES.get(header.format, "application/octet-stream")

    def thumbnail(self, row_id: str, size: int) -> bytes:
        """A JPEG of the stored image at most ``size`` pixels on a side, made within the decode limits, cached."""
        key = (row_id, size)
        with self._thumb_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        from ..gallery import thumbnail
        from ..images import decode_bytes, decode_memory, jpeg_draft_scale, read_header

        path = self.stored_path(row_id)
        with open_file(path, self.limits) as opened:
            data = opened.read().data
        header = read_header(data, path, self.limits.max_pixels)
        need = decode_memory(header, jpeg_draft_scale(header, size))
        self.budget.reserve(path, need)
        try:
            image = decode_bytes(data, path, min_size=size, max_pixels=self.limits.max_pixels)[0]
        finally:
            self.budget.release(need)
        out = io.BytesIO()
        thumbnail(image, size).save(out, "JPEG", quality=85)
        jpeg = out.getvalue()
        with self._thumb_lock:
            self._thumbs[key] = jpeg
            self._thumb_bytes += len(jpeg)
            while self._thumb_bytes > self.settings.api_thumbnail_cache_mb * 2**20 and self._thumbs:
                _, dropped = self._thumbs.popitem(last=False)
                self._thumb_bytes -= len(dropped)
        return jpeg


MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}


def _current() -> BaseException:
    import sys

    error = sys.exc_info()[1]
    assert error is not None
    return error
