"""Review decisions on duplicate groups, kept in the store beside the vectors (``decisions_PREFIX``, visible in Attu), so
the page, the CLI and every process see them: a group resolved with a keeper has one row per member, the keeper's
``keep``, each other's ``duplicate`` naming the keeper. Nothing is deleted from disk or from the versions: a decision is
a row, undone by deleting the group's rows. `imsim duplicates` leaves a group out once every member is decided, and the
decisions export as CSV or JSON (path, decision, the keeper's path, content hash, when).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import expr
from . import side

if TYPE_CHECKING:
    from .vector_store import VectorStore

KEEP, DUPLICATE = "keep", "duplicate"
FIELDS: list[side.Field] = [
    ("id", "VARCHAR", {"max_length": 64, "is_primary": True}, "Row id of the image decided (as in every model's collection)."),
    ("decision", "VARCHAR", {"max_length": 16}, "keep, or duplicate (of the keeper)."),
    ("keeper", "VARCHAR", {"max_length": 64}, "Row id of the image kept in its group (itself when kept)."),
    ("path", "VARCHAR", {"max_length": 4096}, "The image's path when decided."),
    ("keeper_path", "VARCHAR", {"max_length": 4096}, "The keeper's path when decided."),
    ("sha256", "VARCHAR", {"max_length": 64}, "sha256 of the image's file when decided."),
    ("decided_at", "INT64", {}, "Decided: Unix seconds, UTC."),
]
NAMES = [name for name, *_ in FIELDS]


@dataclass(frozen=True)
class Decision:
    id: str
    decision: str
    keeper: str
    path: str = ""
    keeper_path: str = ""
    sha256: str = ""
    decided_at: int = 0


class Decisions:
    """The review decisions of one collection prefix (see the module doc)."""

    def __init__(self, store: VectorStore):
        self.store = store
        self.name = f"decisions_{store.config.collection_prefix}"
        self._ready = False

    def exists(self) -> bool:
        return bool(self.store.connection.call("has_collection", self.name))

    def ensure(self) -> None:
        if not self._ready:
            side.ensure(self.store, self.name, "imsim: duplicate groups reviewed (the image kept, the others)", FIELDS)
            self._ready = True

    def resolve(self, keeper: tuple[str, str, str], others: Iterable[tuple[str, str, str]]) -> list[Decision]:
        """Record a group: ``keeper`` and each of ``others`` as (row id, path, sha256). A member decided before in
        another group is decided again here (its last decision stands)."""
        self.ensure()
        now = int(time.time())
        kept_id, kept_path, kept_sha = keeper
        made = [Decision(kept_id, KEEP, kept_id, kept_path, kept_path, kept_sha, now)]
        made += [Decision(i, DUPLICATE, kept_id, p, kept_path, s, now) for i, p, s in others if i != kept_id]
        self.store.connection.call("upsert", self.name, [side.row(d.__dict__) for d in made])
        return made

    def undo(self, keeper: str) -> int:
        """Forget the group kept by ``keeper`` (its rows); returns how many were forgotten."""
        if not self.exists():
            return 0
        self.ensure()
        ids = [d.id for batch in self._query(f"keeper == {expr.quote(keeper)}") for d in batch]
        if ids:
            self.store.connection.call("delete", self.name, ids=ids)
        return len(ids)

    def among(self, ids: Iterable[str]) -> dict[str, Decision]:
        """The decisions on ``ids`` (bounded queries of 1,000 ids each)."""
        chosen = sorted(set(ids))
        if not chosen or not self.exists():
            return {}
        self.ensure()
        found: dict[str, Decision] = {}
        for start in range(0, len(chosen), 1000):
            condition = f"id in [{', '.join(expr.quote(i) for i in chosen[start : start + 1000])}]"
            for batch in self._query(condition):
                found.update((d.id, d) for d in batch)
        return found

    def __iter__(self) -> Iterator[Decision]:
        """Every decision, streamed (an export of a million rows never makes one list)."""
        if not self.exists():
            return
        self.ensure()
        for batch in self._query(""):
            yield from batch

    def _query(self, condition: str) -> Iterator[list[Decision]]:
        for rows in self.store.rows.iter_rows(self.name, condition, output_fields=NAMES):
            yield [Decision(**{f: r[f] for f in NAMES}) for r in rows]
