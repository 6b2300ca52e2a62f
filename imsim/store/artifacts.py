"""Named artifacts kept in the store beside the vectors: a derived version's whitening, an applied calibration.

What a collection's vectors mean sometimes needs more than its properties can hold (a 768 x 256 projection is ~0.8 MB;
a Milvus server keeps properties in etcd, whose requests stop near 1.5 MB). Such things live in one small collection
per prefix, ``artifacts_PREFIX`` (beside ``marks_PREFIX``, outside the namespace of model versions, visible in Attu):
each artifact is a name, a kind, a JSON ``meta`` and its bytes, base64 in parts of at most :data:`PART_BYTES`, with the
SHA-256 of the whole checked on every read. Every process that opens the store (workers, the CLI, `imsim serve`) reads
the same artifact, and `imsim store copy` copies it with the vectors it explains.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import expr
from ..errors import StoreError

if TYPE_CHECKING:
    from .vector_store import VectorStore

PART_BYTES = 48_000  # raw bytes per row: 64,000 characters of base64, within Milvus's VARCHAR limit of 65,535
ARTIFACT_VECTOR_DIM = 2  # Milvus requires a vector field; an artifact has nothing to search by
FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("id", "VARCHAR", {"max_length": 300, "is_primary": True}, "NAME#PART"),
    ("name", "VARCHAR", {"max_length": 256}, "Artifact name (a derived version: its collection)."),
    ("kind", "VARCHAR", {"max_length": 64}, "What it is: whitening, calibration ..."),
    ("part", "INT32", {}, "Part number, from 0."),
    ("parts", "INT32", {}, "Parts in all."),
    ("sha256", "VARCHAR", {"max_length": 64}, "SHA-256 of the whole artifact's bytes."),
    ("size", "INT64", {}, "Bytes of the whole artifact."),
    ("meta", "VARCHAR", {"max_length": 8192}, "JSON: where it came from."),
    ("data", "VARCHAR", {"max_length": 65_535}, "This part's bytes, base64."),
    ("created_at", "INT64", {}, "Written: Unix seconds, UTC."),
]


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    data: bytes
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0


def collection_name(prefix: str) -> str:
    return f"artifacts_{prefix}"


class Artifacts:
    """The artifacts of one collection prefix (see the module doc)."""

    def __init__(self, store: VectorStore):
        self.store = store
        self.name = collection_name(store.config.collection_prefix)
        self._ready = False

    def exists(self) -> bool:
        return bool(self.store.connection.call("has_collection", self.name))

    def ensure(self) -> None:
        """Create the artifacts collection (if needed) and load it."""
        self._ensure()

    def _ensure(self) -> None:
        if self._ready:
            return
        from pymilvus import DataType, MilvusClient

        if not self.exists():
            schema = MilvusClient.create_schema(
                auto_id=False,
                enable_dynamic_field=False,
                description="imsim: artifacts that explain stored vectors (derived versions' whitening, calibration)",
            )
            for name, kind, kwargs, doc in FIELDS:
                schema.add_field(name, getattr(DataType, kind), description=doc, **kwargs)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=ARTIFACT_VECTOR_DIM, description="unused (Milvus needs one)")
            index = self.store.connection.client.prepare_index_params()
            index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
            try:
                self.store.connection.call(
                    "create_collection", self.name, schema=schema, index_params=index, consistency_level="Strong"
                )
            except StoreError:
                if not self.exists():  # not another process creating it at the same moment
                    raise
        self.store.connection.call("load_collection", self.name)
        self._ready = True

    def put(self, name: str, kind: str, data: bytes, meta: dict[str, Any] | None = None) -> Artifact:
        """Store ``data`` as ``name`` (replacing an artifact of that name); returns what was stored."""
        if not name or "#" in name or len(name) > 256:
            raise StoreError(f"artifact name {name!r} must be 1-256 characters without '#'")
        self._ensure()
        digest = hashlib.sha256(data).hexdigest()
        parts = max(1, -(-len(data) // PART_BYTES))
        now = int(time.time())
        text_meta = json.dumps(meta or {}, sort_keys=True)
        if len(text_meta) > 8192:
            raise StoreError(f"artifact {name!r}: its meta is {len(text_meta):,} characters of JSON, more than 8,192")
        rows = [
            {
                "id": f"{name}#{part}",
                "name": name,
                "kind": kind,
                "part": part,
                "parts": parts,
                "sha256": digest,
                "size": len(data),
                "meta": text_meta,
                "data": base64.b64encode(data[part * PART_BYTES : (part + 1) * PART_BYTES]).decode(),
                "created_at": now,
                "vector": [0.0] * ARTIFACT_VECTOR_DIM,
            }
            for part in range(parts)
        ]
        for start in range(0, len(rows), 16):  # ~1 MB per request
            self.store.connection.call("upsert", self.name, rows[start : start + 16])
        stale = f"name == {expr.quote(name)} and part >= {parts}"
        if self.store.rows.count(self.name, stale):
            self.store.connection.call("delete", self.name, filter=stale)
        return Artifact(name, kind, data, digest, meta or {}, now)

    def get(self, name: str) -> Artifact | None:
        """The artifact ``name``, or None; a damaged or half-written one is a :class:`StoreError` naming it."""
        if not self.exists():
            return None
        self._ensure()
        rows: list[dict[str, Any]] = []
        for batch in self.store.rows.iter_rows(
            self.name, f"name == {expr.quote(name)}", output_fields=[f for f, *_ in FIELDS if f != "id"], batch=64
        ):
            rows += batch
        if not rows:
            return None
        rows.sort(key=lambda r: int(r["part"]))
        first = rows[0]
        if [int(r["part"]) for r in rows] != list(range(int(first["parts"]))) or len({r["sha256"] for r in rows}) != 1:
            raise StoreError(f"artifact {name!r} in {self.name} is incomplete ({len(rows)} of {first['parts']} parts)")
        data = b"".join(base64.b64decode(r["data"]) for r in rows)
        if hashlib.sha256(data).hexdigest() != first["sha256"]:
            raise StoreError(f"artifact {name!r} in {self.name} does not match its checksum: write it again")
        return Artifact(
            name, str(first["kind"]), data, str(first["sha256"]), json.loads(first["meta"] or "{}"), int(first["created_at"])
        )

    def list(self, kind: str = "") -> Iterator[Artifact]:
        """Every artifact (of ``kind``), without its bytes."""
        if not self.exists():
            return
        self._ensure()
        condition = "part == 0" + (f" and kind == {expr.quote(kind)}" if kind else "")
        fields = ["name", "kind", "sha256", "meta", "created_at"]
        for batch in self.store.rows.iter_rows(self.name, condition, output_fields=fields, batch=256):
            for r in batch:
                yield Artifact(
                    str(r["name"]), str(r["kind"]), b"", str(r["sha256"]), json.loads(r["meta"] or "{}"), int(r["created_at"])
                )

    def delete(self, name: str) -> None:
        if self.exists():
            self._ensure()
            self.store.connection.call("delete", self.name, filter=f"name == {expr.quote(name)}")
