"""The ingest pipeline: open → (skip what is stored unchanged) → read → decode → embed with every model → upsert.

:class:`Ingestor` processes one chunk of paths, the unit of work a Celery task carries. Inside a chunk, files
stream in slices through the :class:`~imsim.embedding.EmbeddingStep`; the stored rows the skip check needs are
fetched ahead, one Bounded read per model for a block of :data:`LOOKUP_IDS` ids (whole slices), issued concurrently
before the block's files are opened, so the check is off the critical path (a Strong read waits for a Milvus
server's next time tick: ~0.2 s each; one read per 1,024 ids instead of per 64 saves the per-request cost). Writes run
on a pool, one upsert per model and slice, several slices in flight, and ``on_progress`` is told as each slice is
stored (so a progress bar moves within a chunk). A bad file, or a row the store refuses, fails alone with its
reason; the rest are stored.

Which files are embedded at all (:class:`UnchangedRule`), as rsync decides what to copy: a file whose size,
mtime and inode equal the stored row's (for every model, at the same model revision) is skipped unread;
otherwise it is read and hashed, and one whose content is unchanged is not embedded again: its row is rewritten
with the new file facts and tags around the stored vector (a *restamp*). ``checksum`` always reads and hashes;
``force`` re-embeds everything. A file skipped because an earlier attempt of the same job stored it (a worker
killed, or the store gone, mid-chunk) counts as done, not unchanged: its rows carry the job's id. :func:`ingest_local`
runs the same chunks in-process, for a laptop with no Redis.
Each chunk reports typed stage timings (:class:`~imsim.timing.StageTimes`), including the time the pipeline waits
on the store.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from .embedding import Embedded, EmbeddingStep
from .expr import check_tags
from .models import Embedder, ModelInfo, load_models
from .settings import Consistency, Settings
from .sources.fetch import Decision
from .sources.files import FileBytes, FileFacts, FileStat
from .sources.names import path_id
from .store import VECTOR, VectorStore, make_row
from .timing import StageTimes, timed
from .util import batched, read_ahead
from .whitening import Whitening

log = logging.getLogger(__name__)
Progress = Callable[[int], None]  # called with how many more files of the chunk are settled (stored, skipped or failed)
StopCheck = Callable[[], bool]  # True: stop before the next slice (the job was cancelled)
LOOKUP_FIELDS = ("sha256", "model_revision", "tags", "file_size", "mtime", "file_version", "job_id")
LOOKUP_IDS = 1024  # ids whose stored rows one skip-check read fetches (per model): whole slices, at least one
LOOKUP_AHEAD = 2  # such reads in flight ahead of the slice being opened
WRITES_IN_FLIGHT = 4  # slices being upserted at once before the pipeline waits for the oldest
SKIP_CHECK_CONSISTENCY: Consistency = "Bounded"  # a row a Bounded read misses is re-embedded: harmless (upsert by id)
FOLLOWERS_TTL = 10.0  # seconds the derived versions of the collections written to are trusted before being read again


class VersionsSink(Protocol):
    """The versions a sink keeps: one collection per model version (:class:`~imsim.store.versions.Versions`)."""

    def ensure_collection(self, info: ModelInfo) -> str: ...


class RowsSink(Protocol):
    """The rows a sink reads and writes (:class:`~imsim.store.rows.Rows`)."""

    def get(
        self, name: str, ids: Sequence[str], output_fields: Sequence[str] = ("path",), consistency: Consistency = "Strong"
    ) -> dict[str, dict[str, Any]]: ...

    def upsert_each(self, name: str, rows: Sequence[dict[str, Any]]) -> dict[str, str]: ...

    def flush(self, name: str, *, wait: bool = True) -> None: ...


class Sink(Protocol):
    """What ingest needs from a store: :class:`~imsim.store.VectorStore`, or the benchmark's no-op sink."""

    @property
    def versions(self) -> VersionsSink: ...

    @property
    def rows(self) -> RowsSink: ...

    def followers(self, base: str) -> dict[str, Whitening]: ...

    def close(self) -> None: ...


@dataclass
class ChunkResult:
    """What happened to one chunk of paths (or to a whole local ingest, merged)."""

    done: int = 0  # stored by this job (an earlier attempt of the chunk included: its worker died or the store went away)
    skipped: int = 0  # stored unchanged (content and model version) before this job: not embedded again
    updated: int = 0  # of those, rows rewritten with new file facts or tags around the stored vector
    cancelled: int = 0  # left unread because the job was cancelled
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    times: StageTimes = field(default_factory=StageTimes)

    def merge(self, other: ChunkResult) -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.updated += other.updated
        self.cancelled += other.cancelled
        self.failures.update(other.failures)
        self.times.merge(other.times)

    @property
    def read_bytes(self) -> int:
        """File bytes read (0 when every file was skipped by size, mtime and inode)."""
        return self.times.read_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "updated": self.updated,
            "cancelled": self.cancelled,
            "read_bytes": self.read_bytes,
            "failed": len(self.failures),
            "failures": self.failures,
            "times": self.times.as_dict(),
        }


Rows = dict[str, dict[str, Any]]  # id -> stored row


class UnchangedRule:
    """The skip rule of one chunk (:class:`~imsim.embedding.SkipRule`): the stored rows of each slice, fetched ahead,
    compared with each file by size, mtime and inode before it is read, then by content hash once read."""

    def __init__(
        self,
        models: Mapping[str, Embedder],
        tags: dict[str, str] | None,
        checksum: bool,
        times: StageTimes,
        skip: bool = True,
        job_id: str = "",
    ) -> None:
        self.revisions = {name: m.info.revision for name, m in models.items()}
        self.tags, self.checksum, self.times, self.skip, self.job_id = tags, checksum, times, skip, job_id
        self._pending: dict[str, Future[dict[str, Rows]]] = {}  # file id -> the lookup that holds its rows
        self.own: set[str] = set()  # ids skipped because every row carries ``job_id``: an earlier attempt stored them

    def expect(self, ids: Sequence[str], lookup: Future[dict[str, Rows]]) -> None:
        for i in ids:
            self._pending[i] = lookup

    def rows(self, image_id: str) -> dict[str, dict[str, Any] | None]:
        """model -> the stored row of ``image_id`` (None where that model has none); waits for its lookup."""
        lookup = self._pending[image_id]
        if not lookup.done():
            with timed(self.times, "wait", "lookup"):
                found = lookup.result()
        else:
            found = lookup.result()
        return {name: found[name].get(image_id) for name in self.revisions}

    def _same_content(self, rows: Mapping[str, dict[str, Any] | None], sha256: str) -> bool:
        return all(
            row is not None and row.get("model_revision") == self.revisions[name] and row.get("sha256") == sha256
            for name, row in rows.items()
        )

    def _tags_kept(self, rows: Mapping[str, dict[str, Any] | None]) -> bool:
        if not self.tags:
            return True
        return all(
            row is not None and (row.get("tags") or {}) == {**(row.get("tags") or {}), **self.tags} for row in rows.values()
        )

    def _skip(self, image_id: str, rows: Mapping[str, dict[str, Any] | None]) -> Decision:
        """Skip it; note it as this job's own when every model's row was written by this job (pool threads call this:
        adding to a set is atomic)."""
        if self.job_id and all(row is not None and row.get("job_id") == self.job_id for row in rows.values()):
            self.own.add(image_id)
        return Decision.SKIP

    def by_stat(self, stat: FileStat) -> Decision:
        if self.checksum or not self.skip:
            return Decision.EMBED
        rows = self.rows(stat.id)
        first = next(iter(rows.values()))
        if first is None or not first.get("file_version"):
            return Decision.EMBED
        if not self._same_content(rows, str(first.get("sha256"))):
            return Decision.EMBED
        if not all(_same_stat(row, stat) for row in rows.values() if row is not None):
            return Decision.EMBED
        return self._skip(stat.id, rows) if self._tags_kept(rows) else Decision.RESTAMP

    def by_content(self, file: FileBytes) -> Decision:
        if not self.skip:
            return Decision.EMBED
        rows = self.rows(file.id)
        if not self._same_content(rows, file.sha256):
            return Decision.EMBED
        facts_kept = all(row is not None and _same_stat(row, file) for row in rows.values())
        return self._skip(file.id, rows) if facts_kept and self._tags_kept(rows) else Decision.RESTAMP


def _whitened(rows: list[dict[str, Any]], whitening: Whitening) -> list[dict[str, Any]]:
    """The rows of a derived version: the same rows, their vectors whitened."""
    if not rows:
        return []
    vectors = whitening.apply(np.asarray([r[VECTOR] for r in rows], np.float32))
    return [{**r, VECTOR: v.tolist()} for r, v in zip(rows, vectors, strict=True)]


def _merged(stored: dict[str, str] | None, tags: dict[str, str] | None) -> dict[str, str]:
    return {**(stored or {}), **(tags or {})}


def _same_stat(row: Mapping[str, Any], file: FileStat | FileFacts) -> bool:
    return bool(
        row.get("file_size") == file.file_size
        and row.get("mtime") == float(file.mtime)
        and row.get("file_version") == file.file_version
        and file.file_version
    )


class Ingestor:
    """Embeds chunks of image paths with every enabled model and upserts them into the store."""

    def __init__(self, settings: Settings, embedders: Mapping[str, Embedder] | None = None, store: Sink | None = None):
        self.settings = settings
        self.models = dict(embedders) if embedders is not None else load_models(settings)
        self.store: Sink = store if store is not None else VectorStore(settings)
        self.collections = {name: self.store.versions.ensure_collection(m.info) for name, m in self.models.items()}
        self._followers: dict[str, dict[str, Whitening]] = {}  # model -> derived versions written beside its collection
        self._followers_read = -FOLLOWERS_TTL
        self.step = EmbeddingStep.from_settings(settings, self.models)
        self._lookups = ThreadPoolExecutor(max_workers=max(2, len(self.models)), thread_name_prefix="imsim-lookup")
        self._writer = ThreadPoolExecutor(max_workers=max(2, len(self.models)), thread_name_prefix="imsim-write")

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def followers(self, name: str) -> dict[str, Whitening]:
        """The derived versions of model ``name``'s collection (collection → whitening), re-read every
        :data:`FOLLOWERS_TTL` seconds: a version derived while this worker runs gets its rows from then on."""
        if time.monotonic() - self._followers_read >= FOLLOWERS_TTL:
            self._followers = {n: self.store.followers(c) for n, c in self.collections.items()}
            self._followers_read = time.monotonic()
        return self._followers.get(name, {})

    def _lookup(self, ids: list[str]) -> Future[dict[str, Rows]]:
        """The stored rows of ``ids`` in every model's collection, one Bounded read per model, all at once."""
        reads = {
            name: self._lookups.submit(
                self.store.rows.get, self.collections[name], ids, LOOKUP_FIELDS, consistency=SKIP_CHECK_CONSISTENCY
            )
            for name in self.models
        }
        combined: Future[dict[str, Rows]] = Future()

        def settle(_: Future[Rows]) -> None:
            if combined.done() or not all(r.done() for r in reads.values()):
                return
            try:
                combined.set_result({name: r.result() for name, r in reads.items()})
            except BaseException as exc:  # an outage: raised where the rows are awaited
                if not combined.done():
                    combined.set_exception(exc)

        for read in reads.values():
            read.add_done_callback(settle)
        return combined

    def ingest(
        self,
        paths: Sequence[str],
        job_id: str = "",
        force: bool = False,
        tags: dict[str, str] | None = None,
        on_progress: Progress | None = None,
        *,
        checksum: bool = False,
        should_stop: StopCheck | None = None,
    ) -> ChunkResult:
        """Process one chunk. Image errors (and rows the store refuses) are recorded per file; outages raise.

        Unless ``force`` (or ``IMSIM_SKIP_UNCHANGED=false``), files stored unchanged are skipped (see the module doc;
        ``checksum``: compare contents, never trust size and mtime). ``tags`` are merged into each row's tags (a
        key given replaces that key's value; other keys stay), for stored rows too, without re-embedding them.
        ``should_stop`` is asked before each slice: once it says yes, the rest of the chunk is left unread and
        counted as cancelled."""
        result = ChunkResult()
        progress = on_progress or (lambda n: None)
        skip = self.settings.skip_unchanged and not force
        rule = UnchangedRule(self.models, tags, checksum, result.times, skip=skip, job_id=job_id)  # also keeps stored tags
        stop = should_stop or (lambda: False)
        size = self.step.slice_size
        blocks = batched(paths, max(1, LOOKUP_IDS // size) * size)  # one stored-row read per block, per model
        lookups: deque[tuple[list[str], list[str], Future[dict[str, Rows]]]] = deque()  # block, its ids, their rows

        def fetch_next() -> None:
            block = next(blocks, None)
            if block is not None:
                ids = [path_id(p) for p in block]
                lookups.append((block, ids, self._lookup(ids)))

        def slices() -> Iterator[list[str]]:
            for _ in range(LOOKUP_AHEAD):
                fetch_next()
            while lookups:
                block, ids, lookup = lookups.popleft()
                fetch_next()
                rule.expect(ids, lookup)
                for start in range(0, len(block), size):
                    if stop():
                        left = sum(len(b) for b, _, _ in lookups) + sum(len(b) for b in blocks)
                        result.cancelled = len(block) - start + left
                        return
                    yield block[start : start + size]

        writes: deque[tuple[list[Future[dict[str, str]]], int]] = deque()
        for embedded in self.step.stream(slices(), result.times, rule=rule):
            result.failures.update(embedded.failures)
            result.skipped += len(embedded.skipped) + len(embedded.restamp)
            if embedded.failures or embedded.skipped:
                progress(len(embedded.failures) + len(embedded.skipped))
            if embedded.restamp:
                result.updated += self._restamp(embedded.restamp, tags, result)
                progress(len(embedded.restamp))
            if embedded.images:  # written while the models run on the next slice
                row_tags = {image.id: self._row_tags(rule, image.id, tags) for image in embedded.images}
                writes.append((self._write(embedded, job_id, row_tags, result.times), len(embedded.images)))
            while writes and (all(f.done() for f in writes[0][0]) or len(writes) > WRITES_IN_FLIGHT):
                self._settle(*writes.popleft(), result, progress)
        while writes:  # the chunk is done (and may be acknowledged) only once every row is stored
            self._settle(*writes.popleft(), result, progress)
        result.done += len(rule.own)  # rows an earlier attempt of this chunk stored: this job's work, not "unchanged"
        result.skipped -= len(rule.own)
        log.info(
            "chunk of %d: %d stored, %d unchanged (%d restamped), %d failed, %d cancelled; %s",
            len(paths),
            result.done,
            result.skipped,
            result.updated,
            len(result.failures),
            result.cancelled,
            ", ".join(f"{label} {seconds:.2f}s" for label, seconds, _ in result.times.rows()),
        )
        return result

    @staticmethod
    def _row_tags(rule: UnchangedRule, image_id: str, tags: dict[str, str] | None) -> dict[str, str] | None:
        """The tags a re-embedded row gets: its stored tags (from any model's row) with ``tags`` merged in."""
        kept = next((dict(row["tags"]) for row in rule.rows(image_id).values() if row and row.get("tags")), {})
        return _merged(kept, tags) or None

    def _restamp(self, files: list[FileFacts], tags: dict[str, str] | None, result: ChunkResult) -> int:
        """Rewrite the rows of files stored with the same content: new file facts and merged tags around the stored
        vector (nothing embedded). Returns how many files were rewritten; a row the store refuses fails its file."""
        ids = [f.id for f in files]
        refused: dict[str, str] = {}
        for name in self.models:
            with timed(result.times, "write", name):
                stored = self.store.rows.get(self.collections[name], ids, ["*", VECTOR], consistency=SKIP_CHECK_CONSISTENCY)
                rows = []
                for facts in files:
                    row = stored.get(facts.id)
                    if row is None:  # gone since the check: nothing to rewrite in this collection
                        continue
                    row = {k: v for k, v in row.items() if not k.startswith("$")}
                    row.update(
                        file_size=facts.file_size,
                        mtime=float(facts.mtime),
                        file_version=facts.file_version,
                        tags=_merged(row.get("tags"), tags),
                    )
                    if facts.sha256:
                        row["sha256"] = facts.sha256
                    rows.append(row)
                refused.update(self.store.rows.upsert_each(self.collections[name], rows))
                for collection, whitening in self.followers(name).items():
                    refused.update(self.store.rows.upsert_each(collection, _whitened(rows, whitening)))
        result.failures.update(refused)
        return len(files) - len(refused)

    def _settle(self, writes: list[Future[dict[str, str]]], size: int, result: ChunkResult, progress: Progress) -> None:
        refused: dict[str, str] = {}
        started = time.perf_counter()
        for write in writes:
            refused.update(write.result())
        result.times.add("wait", time.perf_counter() - started, 0.0, "write")
        result.failures.update(refused)
        result.done += size - len(refused)
        progress(size)

    def _write(
        self, embedded: Embedded, job_id: str, tags: dict[str, dict[str, str] | None], times: StageTimes
    ) -> list[Future[dict[str, str]]]:
        """Upsert one slice into every model's collection, one write per model on the pool; each write's future holds
        the rows the store refused as {path: reason}."""
        futures = []
        for name, model in self.models.items():
            rows = [
                make_row(model.info, image, vec, job_id, tags.get(image.id))
                for image, vec in zip(embedded.images, embedded.vectors[name], strict=True)
            ]
            futures.append(self._writer.submit(self._upsert, name, rows, times))
        return futures

    def _upsert(self, name: str, rows: list[dict[str, Any]], times: StageTimes) -> dict[str, str]:
        """One model's rows of a slice into its collection and into each version derived from it (whitened)."""
        with timed(times, "write", name):
            refused = self.store.rows.upsert_each(self.collections[name], rows)
            for collection, whitening in self.followers(name).items():
                refused.update(self.store.rows.upsert_each(collection, _whitened(rows, whitening)))
            return refused

    def seal(self) -> None:
        """At the end of a job: seal every collection written to, so the new rows are indexed for search (on a
        server without waiting for the sealed segments to be written out: see :meth:`imsim.store.rows.Rows.flush`)."""
        for name, collection in self.collections.items():
            self.store.rows.flush(collection, wait=False)
            for follower in self.followers(name):
                self.store.rows.flush(follower, wait=False)

    def close(self) -> None:
        self.step.close()
        self._lookups.shutdown(wait=True)
        self._writer.shutdown(wait=True)


def ingest_local(
    paths: Iterable[str],
    settings: Settings,
    *,
    ingestor: Ingestor | None = None,
    job_id: str = "",
    force: bool = False,
    checksum: bool = False,
    tags: dict[str, str] | None = None,
    on_progress: Progress | None = None,
    on_chunk: Callable[[ChunkResult], None] | None = None,
    seal: bool = True,
) -> ChunkResult:
    """Run the whole ingest in this process, chunk by chunk (no Redis, no Celery); ``paths`` is consumed lazily.
    ``on_chunk`` is told each chunk's result as it ends (so an interrupted run can say what it stored); ``seal``:
    flush what was written at the end (as a job's last chunk does)."""
    tags = check_tags(tags) or None  # one rule for every door, before anything is read
    own = ingestor is None
    worker = ingestor or Ingestor(settings)
    total = ChunkResult()
    try:
        for chunk in read_ahead(batched(paths, settings.chunk_size)):  # the next chunk is found while this one runs
            part = worker.ingest(chunk, job_id=job_id, force=force, tags=tags, on_progress=on_progress, checksum=checksum)
            total.merge(part)
            if on_chunk is not None:
                on_chunk(part)
        if seal and (total.done or total.updated):
            worker.seal()
    finally:
        if own:
            worker.close()
            worker.store.close()
    return total
