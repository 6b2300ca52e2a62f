"""Keeping the store true to the disk: select rows by id, path, folder or glob; delete them; find rows whose file is gone.

Rows of one image share its id (the path hash) across every model collection, so selection and
deletion work over all of imsim's collections at once; a collection that lacks some rows (a
model added later) is simply missing them. ``imsim delete`` and ``imsim sync`` are built on this.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence

from . import expr
from .images import GLOB_CHARS
from .store import VectorStore

ROW_ID = re.compile(r"^[0-9a-f]{32}$")


def _rows_with_prefix(store: VectorStore, prefix: str) -> Iterable[dict]:
    for name in store.collections():
        for batch in store.iter_rows(name, expr.prefix("path", prefix), output_fields=["path"]):
            yield from batch


def select(store: VectorStore, selectors: Sequence[str]) -> dict[str, str]:
    """Stored rows matched by any selector, as {id: path}.

    A selector is a row id (32 hex digits), a glob (``*``, ``?``, ``[``; matched against the
    absolute stored path), or a path: that file's row plus every row below it if it names a folder.
    Paths need not exist any more.
    """
    found: dict[str, str] = {}
    for raw in selectors:
        if ROW_ID.match(raw):
            for name in store.collections():
                found.update({i: r["path"] for i, r in store.get(name, [raw], output_fields=["path"]).items()})
            continue
        pattern = os.path.abspath(os.path.expanduser(raw))
        if GLOB_CHARS & set(raw):
            literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
            found.update({r["id"]: r["path"] for r in _rows_with_prefix(store, literal) if fnmatch.fnmatchcase(r["path"], pattern)})
        else:
            found.update({r["id"]: r["path"] for r in _rows_with_prefix(store, pattern) if expr.path_under(r["path"], pattern)})
    return found


def delete(store: VectorStore, ids: Iterable[str]) -> dict[str, int]:
    """Delete the given row ids from every imsim collection; returns {collection: rows that were there}."""
    ids = sorted(set(ids))
    removed: dict[str, int] = {}
    for name in store.collections():
        present = list(store.get(name, ids, output_fields=["path"])) if ids else []
        store.delete(name, present)
        removed[name] = len(present)
    return removed


def missing(store: VectorStore, roots: Sequence[str]) -> dict[str, str]:
    """Rows stored under ``roots`` whose file no longer exists, as {id: path}."""
    rows = select(store, [os.path.abspath(r) for r in roots])
    return {i: p for i, p in rows.items() if not os.path.lexists(p)}
