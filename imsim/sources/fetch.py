"""The fetch stage of the embedding step: each item (a local path, an ``s3://`` object, or bytes already read) opened,
asked about, read and hashed, then handed to the step's own processing (decode and resize), one item failing alone.

Asked twice, as rsync decides what to copy: the caller's :class:`SkipRule` sees the file's stat (size, mtime, inode; an
object's listing facts) before a byte is read, then its content hash once read, and says embed, skip or restamp. A
local file is read and processed on one thread of the caller's pool; an object is fetched on an I/O pool of its own
(``IMSIM_S3_CONCURRENCY`` GETs in flight, waiting on the network, not on a core), then processed on the caller's pool;
an object whose listing already decides it takes no thread and no GET.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..errors import ImageError
from ..timing import StageTimes, timed
from .files import FileBytes, FileFacts, FileStat
from .names import absolute, is_uri
from .reading import Limits, open_file
from .s3 import Listed


class Decision(enum.Enum):
    """What to do with one file, asked before it is read (from its size, mtime and inode) and again once read."""

    EMBED = "embed"  # read it (before reading), decode and embed it (after)
    SKIP = "skip"  # stored unchanged: nothing to do
    RESTAMP = "restamp"  # stored with the same content: rewrite the row's file facts and tags, keep its vector


class SkipRule(Protocol):
    """The caller's say on which files need embedding at all (ingest: those not stored unchanged)."""

    def by_stat(self, stat: FileStat) -> Decision: ...

    def by_content(self, file: FileBytes) -> Decision: ...


@dataclass(frozen=True)
class Skipped:
    path: str


@dataclass(frozen=True)
class Restamp:
    facts: FileFacts


T = TypeVar("T")
Fetched = Skipped | Restamp | ImageError  # an item's fate when it is not processed


def _relay(done: Future[T], to: Future[T]) -> None:
    try:
        to.set_result(done.result())
    except BaseException as exc:  # noqa: BLE001 - handed on as it came
        to.set_exception(exc)


class Fetcher(Generic[T]):
    """Items in, ``process(file, times)`` (or the reason it was not processed) out, as futures (see the module doc)."""

    def __init__(
        self,
        limits: Limits,
        process: Callable[[FileBytes, StageTimes | None], T | ImageError],
        pool: ThreadPoolExecutor,
        io_workers: int,
    ):
        self.limits = limits
        self.process = process
        self.pool = pool
        self.io_workers = max(1, io_workers)
        self._io: ThreadPoolExecutor | None = None

    @staticmethod
    def _by_stat(stat: FileStat, rule: SkipRule) -> Fetched | None:
        """What ``rule`` decides from a file's stat (or an object's listing) alone; None: read it."""
        decision = rule.by_stat(stat)
        if decision is Decision.SKIP:
            return Skipped(stat.path)
        if decision is Decision.RESTAMP:
            return Restamp(FileFacts(stat.path, "", stat.file_size, stat.mtime, file_version=stat.file_version))
        return None

    def read(self, item: str, rule: SkipRule | None, times: StageTimes | None) -> FileBytes | Fetched:
        """Open one file or object, ask ``rule`` whether it is stored unchanged (before reading a byte), read and hash
        it. Any error of this one file is this file's outcome alone."""
        try:
            with timed(times, "read"), open_file(item, self.limits) as opened:
                if rule is not None and (decided := self._by_stat(opened.stat, rule)) is not None:
                    return decided
                file = opened.read()
            if times is not None:
                times.count_read(len(file.data))
            return file
        except ImageError as exc:
            return exc
        except OSError as exc:  # anything the checks above did not name: still this file's failure alone
            return ImageError(absolute(item), f"cannot read: {exc.strerror or exc}")

    def _work(self, item: str | FileBytes, rule: SkipRule | None, times: StageTimes | None) -> T | Fetched:
        """One pool task: read (unless given bytes), ask ``rule`` again by content, then process."""
        file = item if isinstance(item, FileBytes) else self.read(item, rule, times)
        if not isinstance(file, FileBytes):
            return file
        if rule is not None:
            decision = rule.by_content(file)
            if decision is Decision.SKIP:
                return Skipped(file.path)
            if decision is Decision.RESTAMP:
                return Restamp(FileFacts(file.path, file.sha256, file.file_size, file.mtime, file_version=file.file_version))
        return self.process(file, times)

    def _decide_listed(self, item: Listed, rule: SkipRule) -> Fetched | None:
        """An object's fate from its listing alone (its facts came with it): skipped, restamped, refused, or None."""
        try:
            with open_file(item, self.limits) as opened:
                return self._by_stat(opened.stat, rule)
        except ImageError as exc:
            return exc

    def submit(self, item: str | FileBytes, rule: SkipRule | None, times: StageTimes | None) -> Future[T | Fetched]:
        """The item's outcome, as a future: a file read and processed on one pool thread; an object fetched on the I/O
        pool, then processed on the pool."""
        if not (isinstance(item, str) and is_uri(item)):
            return self.pool.submit(self._work, item, rule, times)
        outcome: Future[T | Fetched] = Future()
        stat_rule = rule
        if rule is not None and isinstance(item, Listed):  # the listing decides "unchanged" here: no thread, no GET
            decided = self._decide_listed(item, rule)
            if decided is not None:
                outcome.set_result(decided)
                return outcome
            stat_rule = None  # asked already; the content check after the GET still applies

        def fetched(done: Future[FileBytes | Fetched]) -> None:
            try:
                got = done.result()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the outcome
                outcome.set_exception(exc)
                return
            if not isinstance(got, FileBytes):
                outcome.set_result(got)
                return
            try:
                processed = self.pool.submit(self._work, got, rule, times)
            except RuntimeError as exc:  # the pool shut down meanwhile
                outcome.set_exception(exc)
                return
            processed.add_done_callback(lambda d: _relay(d, outcome))

        self._io_pool().submit(self.read, item, stat_rule, times).add_done_callback(fetched)
        return outcome

    def _io_pool(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=self.io_workers, thread_name_prefix="imsim-fetch")
        return self._io

    def close(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)
