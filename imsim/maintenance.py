"""Keeping the store true to the disk: select rows by id, path, folder or glob; delete them; find rows whose file is gone.

Rows of one image share its id (the path hash) across every model collection, so selection and deletion
work over all of imsim's collections at once; a collection that lacks some rows (a model added later) is
simply missing them. Globs follow :func:`imsim.images.glob_regex` — the semantics of ingest and search:
``*`` stays inside a folder, ``**`` crosses folders. ``imsim delete`` and ``imsim sync`` are built on this.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence

from . import expr
from .paths import glob_base, glob_regex, is_glob
from .store import VectorStore

ROW_ID = re.compile(r"^[0-9a-f]{32}$")


def _rows_under(store: VectorStore, folder_or_prefix: str, folder: bool) -> Iterator[dict[str, str]]:
    condition = (
        expr.folder_filter(folder_or_prefix, store.like_dialect)
        if folder
        else expr.like_prefix("path", folder_or_prefix, store.like_dialect)
    )
    for name in store.collections():
        for batch in store.iter_rows(name, condition, output_fields=["path"]):
            yield from batch


def select(store: VectorStore, selectors: Sequence[str]) -> dict[str, str]:
    """Stored rows matched by any selector, as {id: path}.

    A selector is a row id (32 hex digits), a glob (``*``, ``?``, ``[``; matched against the absolute stored
    path), or a path: that file's row plus every row below it if it names a folder. Paths need not exist."""
    found: dict[str, str] = {}
    for raw in selectors:
        if ROW_ID.match(raw):
            for name in store.collections():
                found.update({i: r["path"] for i, r in store.get(name, [raw], output_fields=["path"]).items()})
            continue
        pattern = os.path.abspath(os.path.expanduser(raw))
        if is_glob(raw):
            regex = glob_regex(pattern)
            found.update(
                {r["id"]: r["path"] for r in _rows_under(store, glob_base(pattern), folder=False) if regex.match(r["path"])}
            )
        else:
            found.update(
                {r["id"]: r["path"] for r in _rows_under(store, pattern, folder=True) if expr.path_under(r["path"], pattern)}
            )
    return found


def delete(store: VectorStore, ids: Iterable[str]) -> dict[str, int]:
    """Delete the given row ids from every imsim collection; returns {collection: rows that were there}."""
    chosen = sorted(set(ids))
    removed: dict[str, int] = {}
    for name in store.collections():
        present = list(store.get(name, chosen, output_fields=["path"])) if chosen else []
        if present:
            store.delete(name, present)
        removed[name] = len(present)
    return removed


def missing(store: VectorStore, roots: Sequence[str]) -> dict[str, str]:
    """Rows stored under ``roots`` whose file no longer exists, as {id: path}."""
    rows = select(store, [os.path.abspath(r) for r in roots])
    return {i: p for i, p in rows.items() if not os.path.lexists(p)}
