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
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter, Histogram

from ..client.local import Client
from ..errors import ImageError, NotFound
from ..expr import Where
from ..fusion import SearchHit
from ..images import DecodeBudget
from ..settings import Settings
from ..sources.reading import Limits, open_file
from ..timing import StageTimes
from ..vocabulary import DuplicatesOptions, IngestOptions, IngestRequest, SearchOptions

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


@dataclass
class _Pending:
    data: bytes
    options: SearchOptions
    name: str = "the upload"
    deadline: float = float("inf")  # monotonic time past which its request has given up (IMSIM_API_TIMEOUT from arrival)
    future: Future[list[SearchHit]] = field(default_factory=Future)


def _key(options: SearchOptions) -> str:
    """Queries that ask for the same thing (everything but the image) share a batch."""
    return options.model_dump_json()


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
        # thumbnails made, least recently used dropped first, bounded by their bytes (IMSIM_API_THUMBNAIL_CACHE_MB)
        self._thumbs: LRUCache[tuple[str, int], bytes] = LRUCache(
            maxsize=max(1, settings.api_thumbnail_cache_mb * 2**20), getsizeof=len
        )
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
    def search_image(self, data: bytes, options: SearchOptions, name: str = "the upload") -> Future[list[SearchHit]]:
        """Queue an image query for the next batch; ``name`` is how an error names it. Cancel the future (a request
        that gave up does) and the batcher drops the query before embedding it; past ``IMSIM_API_TIMEOUT`` from now it
        is dropped with a timeout."""
        pending = _Pending(data, options, name, time.monotonic() + self.settings.api_timeout)
        self._queue.put(pending)
        return pending.future

    def search(self, options: SearchOptions, *, text: str | None = None, like: str | None = None) -> list[SearchHit]:
        """A text or more-like-this search (no image to embed: no batch), as the client answers it."""
        return self.client.search(text=text, like=like, options=options)

    def facts(self, hits: Sequence[SearchHit]) -> dict[str, dict[str, Any]]:
        """What the store says of each hit's image (size, file size, mtime, tags): one Bounded read of the first model's
        collection for a page of hits."""
        if not hits:
            return {}
        name = next(iter(hits[0].scores), None) or self.client.models.names(None)[0]
        fields = ["width", "height", "file_size", "mtime", "tags"]
        return self.client.store.rows.get(self.client.models.collection(name), [h.id for h in hits], fields, "Bounded")

    def used_fusion(self, options: SearchOptions, hits: Sequence[SearchHit]) -> str:
        names = list(hits[0].scores) if hits else self.client.models.names(options.models or None)
        return self.client.resolve_fusion(options.fusion or self.settings.fusion, names)

    def _run_batches(self) -> None:
        window = self.settings.api_batch_window_ms / 1000
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first] if _live(first) else []
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
                if _live(item):
                    batch.append(item)
            groups: dict[str, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(_key(item.options), []).append(item)
            for items in groups.values():
                self._answer(items)

    def _where(self, options: SearchOptions) -> Where | None:
        members = self.client.topic_members(options.clustering, options.cluster) if options.cluster is not None else None
        return options.where(members)

    def _answer(self, items: list[_Pending]) -> None:
        options = items[0].options
        try:
            results = self._search_many([i.data for i in items], options)
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

    def _search_many(self, images: Sequence[bytes], options: SearchOptions) -> list[list[SearchHit]]:
        self.metrics.batch.observe(len(images))
        times = StageTimes()
        vectors = self.client.models.embed_many(list(images), options.models or None, times=times)
        for model, seconds in times.embed.items():
            self.metrics.embed.labels(model).observe(seconds)
        started = time.perf_counter()
        hits = self.client.search_batch(
            vectors, k=options.k, fusion=options.fusion, where=self._where(options), filter=options.filter, offset=options.offset
        )
        self.metrics.search.observe(time.perf_counter() - started)
        return hits

    # --- duplicates -----------------------------------------------------------------------------
    def linked(self, options: DuplicatesOptions, refresh: bool = False) -> tuple[Any, set[tuple[str, str]]]:
        """The pairs `imsim duplicates` links for these options (computed once, kept ``GROUPS_TTL`` seconds) and the
        marked pairs among them (read every time: a mark hides its pair at once)."""
        from ..duplicates import default_model, link, marked_pairs
        from ..review import ensure_threshold

        model, threshold, precision, under = options.model or None, options.threshold, options.precision, options.under
        key = repr((model, threshold, precision, under, options.neighbours))
        cached = self._groups.get(key)
        if refresh or cached is None or time.monotonic() - cached[0] > GROUPS_TTL:
            if threshold is None:  # none calibrated: measured on the collection itself, once (kept in the store)
                ensure_threshold(self.client, model or default_model(self.client), precision)
            where = Where(path_prefix=under) if under else None
            linked = link(
                self.client, model=model, threshold=threshold, precision=precision, neighbours=options.neighbours, where=where
            )
            self._groups[key] = cached = (time.monotonic(), linked)
        linked = cached[1]
        return linked, marked_pairs(self.client.store, linked.paths)

    def exact(self, under: str) -> list[Any]:
        from ..duplicates import exact_groups

        name = self.client.models.names(None)[0]
        return exact_groups(self.client.store, self.client.models.collection(name), Where(path_prefix=under) if under else None)

    def review(self, options: DuplicatesOptions, refresh: bool = False) -> Any:
        """One page of groups as the review page shows them (:func:`imsim.review.review_page`), and the links."""
        from ..review import review_page

        linked, hidden = self.linked(options, refresh)
        page = review_page(
            self.client,
            linked,
            hidden,
            show=options.show,
            order=options.order,
            keep=options.keep,
            offset=options.offset,
            limit=options.limit,
        )
        return linked, page

    def resolve(self, keep: str, members: list[str]) -> Any:
        """Resolve a group (:func:`imsim.review.resolve`): the members must be stored."""
        from ..review import member_facts, resolve

        facts = member_facts(self.client, self.client.models.names(None)[0], members)
        return resolve(self.client.store, keep, members, facts)

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
    def queue_job(self, request: IngestRequest) -> str:
        """Queue an ingest of server-side paths; only under IMSIM_ALLOWED_ROOTS (refused when none are set), checked
        as the workers check what they read (local paths and s3:// prefixes alike)."""
        from ..sources.names import glob_base, is_glob
        from ..sources.reading import check_allowed

        roots = self.settings.allowed_root_paths
        if not roots:
            raise PermissionError("queuing through the API needs IMSIM_ALLOWED_ROOTS: the folders the server may read")
        for path in request.paths:
            try:
                check_allowed(glob_base(path) if is_glob(path) else path, roots)
            except ImageError as exc:
                raise PermissionError(f"{exc.path}: outside IMSIM_ALLOWED_ROOTS") from None
        return self.client.jobs.ingest(request.paths, IngestOptions.model_validate(request.model_dump(exclude={"paths"})))

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

    def cached_thumbnail(self, row_id: str, size: int) -> bytes | None:
        """The thumbnail if it was made before (a dictionary lookup: answered without a worker thread)."""
        with self._thumb_lock:
            return self._thumbs.get((row_id, size))

    def thumbnail(self, row_id: str, size: int) -> bytes:
        """A JPEG of the stored image at most ``size`` pixels on a side, made within the decode limits, cached."""
        key = (row_id, size)
        cached = self.cached_thumbnail(row_id, size)
        if cached is not None:
            return cached
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
        if len(jpeg) <= self._thumbs.maxsize:
            with self._thumb_lock:
                self._thumbs[key] = jpeg
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


def _live(item: _Pending) -> bool:
    """Whether a queued query is still wanted: not given up by its request (cancelled), not past its deadline."""
    if time.monotonic() > item.deadline:
        if item.future.set_running_or_notify_cancel():
            item.future.set_exception(TimeoutError("the query waited past IMSIM_API_TIMEOUT before its turn"))
        return False
    return item.future.set_running_or_notify_cancel()


def _current() -> BaseException:
    import sys

    error = sys.exc_info()[1]
    assert error is not None
    return error
