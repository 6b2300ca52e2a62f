"""Pairs a person marked "not a duplicate", kept in the store beside the vectors (one small collection, visible in
Attu), so every process that reads the store sees them: `imsim duplicates` (CLI and web page) hides them, and
`imsim eval run` counts them as negatives when it calibrates thresholds on images with the same contents.

A mark names both images by row id and by content hash (sha256 of the file): ids make it cheap to hide a pair from
groups of the same store, hashes let a benchmark built from copies of those files recognise the pair.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import expr

if TYPE_CHECKING:
    from .vector_store import VectorStore

MARKS_VECTOR_DIM = 2  # Milvus requires a vector field; a mark has nothing to search by


@dataclass(frozen=True)
class Mark:
    a: str  # row id (the smaller of the two)
    b: str
    sha_a: str = ""
    sha_b: str = ""
    path_a: str = ""
    path_b: str = ""
    created_at: int = 0

    @property
    def key(self) -> str:
        return f"{self.a}:{self.b}"

    @property
    def shas(self) -> frozenset[str]:
        return frozenset({self.sha_a, self.sha_b})


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class Marks:
    """The marks of one collection prefix: collection ``marks_PREFIX`` (outside the prefix's namespace of model
    versions, so listings of versions never see it)."""

    def __init__(self, store: VectorStore):
        self.store = store
        self.name = f"marks_{store.config.collection_prefix}"
        self._ready = False

    def exists(self) -> bool:
        return bool(self.store.connection.call("has_collection", self.name))

    def ensure(self) -> None:
        """Create the marks collection (if needed) and load it."""
        self._ensure()

    def _ensure(self) -> None:
        if self._ready:
            return
        from pymilvus import DataType, MilvusClient

        if not self.store.connection.call("has_collection", self.name):
            schema = MilvusClient.create_schema(
                auto_id=False,
                enable_dynamic_field=False,
                description="imsim: image pairs a person marked 'not a duplicate' (hidden from `imsim duplicates`)",
            )
            for name, kind, kwargs, doc in (
                ("id", "VARCHAR", {"max_length": 80, "is_primary": True}, "row id a:row id b (sorted)"),
                ("a", "VARCHAR", {"max_length": 64}, "Row id of one image (same id in every model's collection)."),
                ("b", "VARCHAR", {"max_length": 64}, "Row id of the other image."),
                ("sha_a", "VARCHAR", {"max_length": 64}, "sha256 of a's file when marked."),
                ("sha_b", "VARCHAR", {"max_length": 64}, "sha256 of b's file when marked."),
                ("path_a", "VARCHAR", {"max_length": 4096}, "a's path when marked."),
                ("path_b", "VARCHAR", {"max_length": 4096}, "b's path when marked."),
                ("created_at", "INT64", {}, "Marked: Unix seconds, UTC."),
            ):
                schema.add_field(name, getattr(DataType, kind), description=doc, **kwargs)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=MARKS_VECTOR_DIM, description="unused (Milvus needs one)")
            index = self.store.connection.client.prepare_index_params()
            index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
            self.store.connection.call(
                "create_collection", self.name, schema=schema, index_params=index, consistency_level="Strong"
            )
        self.store.connection.call("load_collection", self.name)
        self._ready = True

    def add(self, mark: Mark) -> Mark:
        self._ensure()
        a, b = pair(mark.a, mark.b)
        flip = (a, b) != (mark.a, mark.b)
        stored = Mark(
            a,
            b,
            mark.sha_b if flip else mark.sha_a,
            mark.sha_a if flip else mark.sha_b,
            mark.path_b if flip else mark.path_a,
            mark.path_a if flip else mark.path_b,
            mark.created_at or int(time.time()),
        )
        row = {**stored.__dict__, "id": stored.key, "vector": [0.0] * MARKS_VECTOR_DIM}
        self.store.connection.call("upsert", self.name, [row])
        return stored

    def remove(self, a: str, b: str) -> None:
        self._ensure()
        a, b = pair(a, b)
        self.store.connection.call("delete", self.name, ids=[f"{a}:{b}"])

    def __iter__(self) -> Iterator[Mark]:
        if not self.store.connection.call("has_collection", self.name):
            return
        self._ensure()
        fields = ["a", "b", "sha_a", "sha_b", "path_a", "path_b", "created_at"]
        for rows in self.store.rows.iter_rows(self.name, "", output_fields=fields):
            for r in rows:
                yield Mark(**{f: r[f] for f in fields})

    def pairs(self) -> set[tuple[str, str]]:
        """Every marked pair of row ids (sorted), for hiding from groups."""
        return {(m.a, m.b) for m in self}

    def among(self, ids: Iterable[str]) -> set[tuple[str, str]]:
        """The marked pairs whose two images are both in ``ids`` (bounded queries of 1,000 ids each)."""
        chosen = sorted(set(ids))
        if not chosen or not self.store.connection.call("has_collection", self.name):
            return set()
        self._ensure()
        members = set(chosen)
        found: set[tuple[str, str]] = set()
        for start in range(0, len(chosen), 1000):
            condition = f"a in [{', '.join(expr.quote(i) for i in chosen[start : start + 1000])}]"
            for rows in self.store.rows.iter_rows(self.name, condition, output_fields=["a", "b"]):
                found |= {(r["a"], r["b"]) for r in rows if r["b"] in members}
        return found
