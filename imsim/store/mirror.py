"""Keeping one collection a copy of another, row for row: what `imsim store copy` (another store) and a derived version
(the same store, vectors whitened) share.

A first pass streams the source in id order and upserts every row (converted), saving the last id written after each
batch, so a pass that stops resumes after it. When a pass finishes, its checkpoint is marked complete; a later run is a
sync pass: it streams the source again but writes only rows missing on the target or whose metadata differ (new rows
of an ingest since, restamps, re-embeds), then deletes the target's rows that the source no longer has. So "copy
while the source is in use, copy again just before switching" leaves the target equal to the source.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import expr
from ..settings import Consistency
from .schema import PK, VECTOR

if TYPE_CHECKING:
    from .vector_store import VectorStore

Convert = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]  # source rows -> target rows (same ids, same order)
Progress = Callable[[int, int], None]  # (source rows passed, source rows in all)


class Checkpoints:
    """Where each collection's copy to one target got to: the last id written and whether the pass finished, in a
    small JSON file per collection (``IMSIM_DATA_DIR/copies/<digest of the target>/``)."""

    def __init__(self, data_dir: Path, target: str):
        digest = hashlib.sha256(target.encode()).hexdigest()[:12]
        self.folder = data_dir / "copies" / digest

    def _file(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def state(self, name: str) -> dict[str, Any] | None:
        try:
            found = json.loads(self._file(name).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def last(self, name: str) -> str | None:
        """The last id a pass that has not finished wrote (None: start from the beginning)."""
        state = self.state(name)
        return str(state["last_id"]) if state and not state.get("complete") and state.get("last_id") else None

    def completed(self, name: str) -> bool:
        state = self.state(name)
        return bool(state and state.get("complete"))

    def _write(self, name: str, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._file(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._file(name))

    def save(self, name: str, last_id: str) -> None:
        self._write(name, {"last_id": last_id, "complete": False})

    def complete(self, name: str) -> None:
        self._write(name, {"last_id": "", "complete": True, "completed_at": int(time.time())})

    def clear(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)


@dataclass
class Mirrored:
    written: int = 0  # rows upserted by this run
    deleted: int = 0  # target rows removed because the source no longer has them
    compared: bool = False  # a sync pass (only differences written)
    resumed_after: str = ""  # the id a resumed pass started after


def _changed(row: dict[str, Any], stored: dict[str, Any] | None, fields: list[str]) -> bool:
    return stored is None or any(stored.get(f) != row.get(f) for f in fields if f in row)


def mirror(
    source: VectorStore,
    name: str,
    target: VectorStore,
    target_name: str,
    checkpoints: Checkpoints,
    *,
    convert: Convert | None = None,
    restart: bool = False,
    batch: int = 1_000,
    consistency: Consistency = "Bounded",
    on_progress: Progress | None = None,
) -> Mirrored:
    """Make ``target_name`` on ``target`` hold ``name``'s rows (converted), as the module doc says."""
    done = Mirrored()
    if restart:
        checkpoints.clear(target_name)
    after = checkpoints.last(target_name)
    done.compared = checkpoints.completed(target_name)
    done.resumed_after = after or ""
    total = source.rows.count(name, consistency=consistency)
    condition = f"{PK} > {expr.quote(after)}" if after else ""
    passed = 0
    fields = sorted(source.versions.fields(name) - {PK, VECTOR})  # what a sync pass compares: every stored field but the vector
    for rows in source.rows.iter_rows(name, condition, output_fields=["*", VECTOR], batch=batch, consistency=consistency):
        passed += len(rows)
        rows = [{k: v for k, v in r.items() if not k.startswith("$")} for r in rows]
        last = str(max(r[PK] for r in rows))
        if done.compared:
            stored = target.rows.get(target_name, [r[PK] for r in rows], fields, consistency)
            rows = [r for r in rows if _changed(r, stored.get(r[PK]), fields)]
        if rows:
            target.rows.upsert(target_name, convert(rows) if convert else rows, batch=batch)
            done.written += len(rows)
        checkpoints.save(target_name, last)
        if on_progress is not None:
            on_progress(passed, total)
    done.deleted = drop_gone(source, name, target, target_name, consistency)
    target.rows.flush(target_name)
    checkpoints.complete(target_name)
    return done


def drop_gone(source: VectorStore, name: str, target: VectorStore, target_name: str, consistency: Consistency) -> int:
    """Delete the target's rows whose id the source no longer holds (deleted since they were copied)."""
    gone: list[str] = []
    for rows in target.rows.iter_rows(target_name, output_fields=[PK], batch=4_000, consistency=consistency):
        ids = [str(r[PK]) for r in rows]
        present = source.rows.get(name, ids, [PK], consistency)
        gone += [i for i in ids if i not in present]
    if gone:
        target.rows.delete(target_name, gone)
    return len(gone)
