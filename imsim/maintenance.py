"""Keeping the store true to the disk: select rows by id, path, folder or glob; count, sample and delete them; find
rows whose file is gone. Every operation streams: nothing holds every matching row.

Rows of one image share its id (the path hash) across every model collection, so a selection applies to every
imsim collection; a collection that lacks some rows (a model added later) is simply missing them. A selector
is a row id, a path (that file's row and, if it is a folder, every row below it), or a glob. One rule decides
between path and glob for every command (ingest, delete, sync): **a path that exists on disk, or has stored
rows, is literal**, brackets and all (``photo[1].jpg``); otherwise ``*``, ``?`` and ``[`` make it a glob, matched
with :class:`imsim.sources.names.Glob` (``*`` stays in a folder, ``**`` crosses folders).

A folder or a literal path is selected by a Milvus filter expression that is exact on the backend, so it is
counted, sampled and deleted by that expression, server-side. A glob is pre-filtered by LIKE prefixes (its literal
head, a character class in it expanded: ``d[23]/**`` reads the rows under ``d2/`` and ``d3/`` only) and then
matched exactly here, streaming ids; so is a folder on a backend whose LIKE is not exact for its name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import expr
from .sources.names import Glob, absolute, compile_glob, is_glob, is_uri
from .store import VectorStore

ROW_ID = re.compile(r"^[0-9a-f]{32}$")
DELETE_BATCH = 1000
SAMPLE = 10


@dataclass(frozen=True)
class Selector:
    """One selector, resolved: a Milvus filter, and (when the filter may match more) the exact check on the path."""

    text: str
    filter: str
    exact: Glob | None = None  # None: the filter is exact
    under: str = ""  # a folder checked exactly in Python (the backend's LIKE cannot say it)

    def accepts(self, path: str) -> bool:
        if self.exact is not None and not self.exact.match(path):
            return False
        return not self.under or expr.path_under(path, self.under)

    @property
    def needs_check(self) -> bool:
        return self.exact is not None or bool(self.under)


def resolve(store: VectorStore, raw: str) -> Selector:
    """A selector by the one rule (module doc): a row id; an existing or stored path, literally; else a glob."""
    if ROW_ID.match(raw):
        return Selector(raw, expr.eq("id", raw))
    path = absolute(raw)
    dialect = store.connection.like_dialect
    if is_glob(raw) and not os.path.lexists(path) and not _stored(store, path):
        glob = compile_glob(path)
        return Selector(raw, expr.any_prefix("path", glob.prefixes(), dialect), exact=glob)
    exact_like = dialect == "escape" or "%" not in path
    return Selector(raw, expr.folder_filter(path, dialect), under="" if exact_like else path)


def _stored(store: VectorStore, path: str) -> bool:
    """Whether some collection holds a row at exactly ``path`` (one bounded query per collection)."""
    return any(store.rows.query(name, expr.eq("path", path), limit=1) for name in store.versions.collections())


def select_ids(store: VectorStore, name: str, selectors: Sequence[Selector], batch: int = 2000) -> Iterator[list[str]]:
    """Batches of the ids in collection ``name`` that any selector matches (streamed)."""
    for selector in selectors:
        for rows in store.rows.iter_rows(name, selector.filter, output_fields=["path"], batch=batch):
            ids = [r["id"] for r in rows if selector.accepts(r["path"])]
            if ids:
                yield ids


def count(store: VectorStore, selectors: Sequence[Selector]) -> dict[str, int]:
    """Rows matched per collection: a server-side count for an exact filter, a streamed count otherwise."""
    out = {}
    for name in store.versions.collections():
        total = 0
        for selector in selectors:
            if selector.needs_check:
                total += sum(len(ids) for ids in select_ids(store, name, [selector]))
            else:
                total += store.rows.count(name, selector.filter)
        out[name] = total
    return out


def sample(store: VectorStore, selectors: Sequence[Selector], size: int = SAMPLE) -> list[str]:
    """Up to ``size`` matched paths (bounded queries; a glob streams until it has them)."""
    paths: dict[str, None] = {}
    for name in store.versions.collections():
        for selector in selectors:
            if selector.needs_check:
                for rows in store.rows.iter_rows(name, selector.filter, output_fields=["path"], batch=200):
                    paths.update((r["path"], None) for r in rows if selector.accepts(r["path"]))
                    if len(paths) >= size:
                        break
            else:
                paths.update((r["path"], None) for r in store.rows.query(name, selector.filter, ["path"], limit=size))
            if len(paths) >= size:
                return sorted(paths)[:size]
    return sorted(paths)


def delete(store: VectorStore, selectors: Sequence[Selector]) -> dict[str, int]:
    """Delete every matched row from every imsim collection; returns {collection: rows deleted}. An exact filter is
    deleted server-side by expression; otherwise ids stream out and are deleted in batches."""
    removed: dict[str, int] = {}
    for name in store.versions.collections():
        total = 0
        for selector in selectors:
            if selector.needs_check:
                for ids in select_ids(store, name, [selector]):
                    for start in range(0, len(ids), DELETE_BATCH):
                        total += store.rows.delete(name, ids[start : start + DELETE_BATCH])
            else:
                total += store.rows.delete_where(name, selector.filter)
        removed[name] = total
    return removed


def delete_ids(store: VectorStore, ids: Sequence[str]) -> dict[str, int]:
    """Delete rows by id from every imsim collection; returns {collection: rows that were there}."""
    chosen = sorted(set(ids))
    removed: dict[str, int] = {}
    for name in store.versions.collections():
        present = list(store.rows.get(name, chosen, output_fields=["path"])) if chosen else []
        if present:
            store.rows.delete(name, present)
        removed[name] = len(present)
    return removed


def select(store: VectorStore, selectors: Sequence[str]) -> dict[str, str]:
    """Stored rows matched by any selector, as {id: path} (for small selections: it holds them all)."""
    resolved = [resolve(store, s) for s in selectors]
    found: dict[str, str] = {}
    for name in store.versions.collections():
        for selector in resolved:
            for rows in store.rows.iter_rows(name, selector.filter, output_fields=["path"]):
                found.update((r["id"], r["path"]) for r in rows if selector.accepts(r["path"]))
    return found


@dataclass
class Gone:
    """Rows whose file no longer exists, found by :func:`remove_missing`: how many per collection, and a sample."""

    rows: dict[str, int]
    sample: list[str]

    @property
    def total(self) -> int:
        return max(self.rows.values(), default=0)


class _Listed:
    """The URIs of a listing as 16-byte digests (a million keys in ~60 MB, not the keys themselves)."""

    def __init__(self, uris: Sequence[str]):
        from .sources.paths import Discovery, iter_files

        self._digests = {self._digest(u) for u in iter_files(uris, Discovery())} if uris else set()

    @staticmethod
    def _digest(path: str) -> bytes:
        import hashlib

        return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).digest()

    def __contains__(self, path: str) -> bool:
        return self._digest(path) in self._digests


def remove_missing(store: VectorStore, roots: Sequence[str], *, dry_run: bool = False, batch: int = 2000) -> Gone:
    """Rows stored under ``roots`` whose file no longer exists: deleted (unless ``dry_run``), collection by collection,
    streaming (one ``lstat`` per row; nothing held but a sample of what was found). An ``s3://`` root is listed once
    (page by page) into 16-byte digests of its URIs, then each row is looked up there: no request per row."""
    selectors = [resolve(store, absolute(r)) for r in roots]
    listed = _Listed([absolute(r) for r in roots if is_uri(r)])

    def exists(path: str) -> bool:
        return path in listed if is_uri(path) else os.path.lexists(path)

    gone = Gone({}, [])
    for name in store.versions.collections():
        total = 0
        for selector in selectors:
            for rows in store.rows.iter_rows(name, selector.filter, output_fields=["path"], batch=batch):
                missing = [r for r in rows if selector.accepts(r["path"]) and not exists(r["path"])]
                if not missing:
                    continue
                total += len(missing)
                for r in missing:
                    if len(gone.sample) < SAMPLE and r["path"] not in gone.sample:
                        gone.sample.append(r["path"])
                if not dry_run:
                    store.rows.delete(name, [r["id"] for r in missing])
        gone.rows[name] = total
    return gone
