"""Clusterings kept in the store beside the vectors: each image's cluster and its cosine to the centre, one row per
image and clustering in ``clusters_PREFIX`` (visible in Attu), and the clustering itself (collection, k, seed, sample,
centres, fit, labels) as an artifact. A clustering is rerun or removed without touching the vectors; a search filters
by cluster through its members' ids (:attr:`imsim.expr.Where.ids`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import expr
from . import side
from .artifacts import Artifacts

if TYPE_CHECKING:
    from .vector_store import VectorStore

KIND, LABELS = "clustering", "clustering-labels"
FIELDS: list[side.Field] = [
    ("id", "VARCHAR", {"max_length": 256, "is_primary": True}, "CLUSTERING#ROW ID"),
    ("clustering", "VARCHAR", {"max_length": 192}, "The clustering: COLLECTION:kK:sSEED."),
    ("row", "VARCHAR", {"max_length": 64}, "Row id of the image (as in every model's collection)."),
    ("cluster", "INT64", {}, "Its cluster, 0 .. k-1."),
    ("similarity", "FLOAT", {}, "Cosine to the cluster's centre (low: an outlier)."),
]


class Clusterings:
    """The clusterings of one collection prefix (see the module doc)."""

    def __init__(self, store: VectorStore):
        self.store = store
        self.name = f"clusters_{store.config.collection_prefix}"
        self._ready = False

    def exists(self) -> bool:
        return bool(self.store.connection.call("has_collection", self.name))

    def ensure(self) -> None:
        if not self._ready:
            side.ensure(self.store, self.name, "imsim: each image's cluster in each clustering (`imsim clusters`)", FIELDS)
            self._ready = True

    # --- writing ----------------------------------------------------------------------------------------------
    def write(self, clustering: str, ids: Sequence[str], clusters: np.ndarray, similarity: np.ndarray) -> None:
        """One block of assignments."""
        self.ensure()
        rows = [
            side.row({"id": f"{clustering}#{i}", "clustering": clustering, "row": i, "cluster": int(c), "similarity": float(s)})
            for i, c, s in zip(ids, clusters, similarity, strict=True)
        ]
        self.store.connection.call("upsert", self.name, rows)

    def save(self, clustering: str, centres: np.ndarray, meta: dict[str, Any], labels: dict[str, str]) -> None:
        """The clustering itself, as artifacts: its centres (float32 bytes) with what made it, and its labels (JSON:
        a thousand labels would not fit in an artifact's meta)."""
        data = np.ascontiguousarray(centres, np.float32).tobytes()
        artifacts = Artifacts(self.store)
        artifacts.put(f"{KIND}:{clustering}", KIND, data, {**meta, "shape": list(centres.shape)})
        artifacts.put(f"{LABELS}:{clustering}", LABELS, json.dumps(labels).encode(), {})

    def labels(self, clustering: str) -> dict[int, str]:
        artifacts = Artifacts(self.store)
        found = artifacts.get(f"{LABELS}:{clustering}") if artifacts.exists() else None
        return {int(c): str(t) for c, t in json.loads(found.data or b"{}").items()} if found is not None else {}

    def remove(self, clustering: str) -> int:
        """Forget a clustering: its rows and its artifact (the vectors are untouched); returns the rows removed."""
        removed = 0
        if self.exists():
            self.ensure()
            for batch in self._rows(f"clustering == {expr.quote(clustering)}", ["id"]):
                self.store.connection.call("delete", self.name, ids=[r["id"] for r in batch])
                removed += len(batch)
        artifacts = Artifacts(self.store)
        if artifacts.exists():
            artifacts.delete(f"{KIND}:{clustering}")
            artifacts.delete(f"{LABELS}:{clustering}")
        return removed

    # --- reading ----------------------------------------------------------------------------------------------
    def kept(self) -> list[dict[str, Any]]:
        """Every clustering kept, newest first: its meta (name, collection, k, seed, rows, fit, labels, when)."""
        artifacts = Artifacts(self.store)
        if not artifacts.exists():
            return []
        found = [{"name": a.name.split(":", 1)[1], **a.meta} for a in artifacts.list(KIND)]
        return sorted(found, key=lambda m: str(m.get("made_at", "")), reverse=True)

    def centres(self, clustering: str) -> np.ndarray | None:
        artifacts = Artifacts(self.store)
        found = artifacts.get(f"{KIND}:{clustering}") if artifacts.exists() else None
        if found is None:
            return None
        rows, dim = found.meta["shape"]
        return np.frombuffer(found.data, np.float32).reshape(rows, dim)

    def members(self, clustering: str, cluster: int, limit: int | None = None) -> list[str]:
        """The ids in ``cluster`` of ``clustering`` (the first ``limit``)."""
        if not self.exists():
            return []
        self.ensure()
        ids: list[str] = []
        condition = f"clustering == {expr.quote(clustering)} and cluster == {int(cluster)}"
        for batch in self._rows(condition, ["row"]):
            ids += [r["row"] for r in batch]
            if limit is not None and len(ids) >= limit:
                return ids[:limit]
        return ids

    def of(self, clustering: str, ids: Sequence[str]) -> dict[str, tuple[int, float]]:
        """id → (cluster, similarity) for ``ids`` in ``clustering``."""
        if not ids or not self.exists():
            return {}
        self.ensure()
        keys = [f"{clustering}#{i}" for i in ids]
        found: dict[str, tuple[int, float]] = {}
        for start in range(0, len(keys), 1000):
            condition = f"id in [{', '.join(expr.quote(k) for k in keys[start : start + 1000])}]"
            for batch in self._rows(condition, ["row", "cluster", "similarity"]):
                found.update((r["row"], (int(r["cluster"]), float(r["similarity"]))) for r in batch)
        return found

    def assignments(self, clustering: str) -> Iterator[tuple[str, int, float]]:
        """Every (row id, cluster, similarity) of ``clustering``, streamed."""
        if not self.exists():
            return
        self.ensure()
        for batch in self._rows(f"clustering == {expr.quote(clustering)}", ["row", "cluster", "similarity"]):
            for r in batch:
                yield str(r["row"]), int(r["cluster"]), float(r["similarity"])

    def _rows(self, condition: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        yield from self.store.rows.iter_rows(self.name, condition, output_fields=fields, consistency="Bounded")
