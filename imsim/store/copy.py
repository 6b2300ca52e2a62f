"""Copy every collection version from one store to another (Milvus Lite → a Milvus server) without re-embedding.

The way out of Milvus Lite's envelope (docs/operations.md): each imsim collection is created on the target with
the current schema, its description (rebuilt from the version's properties where Lite dropped it), the same
properties (the config that reloads its model) and the same index; its rows stream across in primary-key order
(one batch in memory) and are upserted, so a copy that stops can resume after the last batch it wrote (a
checkpoint per collection beside the target's name in ``IMSIM_DATA_DIR/copies/``), and a copy run again after it
finished brings the target up to date (rows added, changed or deleted since: :mod:`imsim.store.mirror`). Each
model's alias is pointed at the same version as on the source. The copy is verified by row counts and by a sample of
vectors compared bit for bit.

Duplicate-threshold calibrations (``IMSIM_DATA_DIR/calibration.json``) are keyed by model version, which the copy
keeps: they apply to the target unchanged.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError
from .artifacts import Artifacts
from .decisions import Decisions
from .marks import Marks
from .mirror import Checkpoints, mirror
from .schema import FIELDS, METRIC, PK, PROPERTY_PREFIX, VECTOR

if TYPE_CHECKING:
    from .vector_store import VectorStore

SAMPLE = 200  # vectors compared bit for bit per collection
_DEFAULTS = {"VARCHAR": "", "INT32": 0, "INT64": 0, "DOUBLE": 0.0, "JSON": {}}  # for fields an older collection lacks
Progress = Callable[[str, int, int], None]  # (collection, rows copied, rows in it)


@dataclass
class CollectionCopy:
    name: str
    rows: int  # rows on the source
    copied: int  # rows upserted by this run (a resumed run copies only what is left)
    target_rows: int
    sampled: int
    identical: int  # sampled vectors equal bit for bit
    deleted: int = 0  # target rows removed because the source no longer has them
    synced: bool = False  # a finished copy brought up to date (only differences written)

    @property
    def verified(self) -> bool:
        return self.rows == self.target_rows and self.sampled == self.identical


@dataclass
class CopyReport:
    collections: list[CollectionCopy] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # model alias -> collection, as set on the target

    @property
    def verified(self) -> bool:
        return all(c.verified for c in self.collections)


def description_of(props: dict[str, str]) -> str:
    """A collection's description from its ``imsim.*`` properties (Milvus Lite drops descriptions; the properties
    hold what the description says)."""
    if props.get("description"):
        return props["description"]
    variant = f" {props['variant']}" if props.get("variant") else ""
    index_type, params = index_of(props)
    index = index_type + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    return (
        f"{props.get('model', '?')}{variant} · version {props.get('version', '?')} · {props.get('dim', '?')}-d {METRIC} "
        f"{index} · rev {props.get('revision', '?')} · {props.get('source', '?')}"
    )


def index_of(props: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(index type, params) a version was created with, from its ``index`` property (``"HNSW {'M': 16, ...}"``)."""
    index_type, _, params = props.get("index", "HNSW {}").partition(" ")
    try:
        parsed = ast.literal_eval(params) if params.strip() else {}
    except (ValueError, SyntaxError):
        parsed = {}
    return index_type or "HNSW", parsed if isinstance(parsed, dict) else {}


def _create_like(source: VectorStore, target: VectorStore, name: str) -> None:
    props = source.versions.properties(name)
    dim = source.versions.dimension(name)
    vector_doc = next((f.get("description") for f in source.versions.describe(name)["fields"] if f["name"] == VECTOR), "")
    index = index_of(props)
    if source.connection.lite_backend and not target.connection.lite_backend:
        # Lite always builds HNSW (its envelope is ~100k rows): out of it, the server gets the index its settings choose
        index = target.versions.index_for(dim)
        props = {k: v for k, v in props.items() if k != "description"} | {"index": f"{index[0]} {index[1]}"}
    target.versions.create_version(
        name,
        dim,
        description=description_of(props),
        vector_doc=re.sub(  # names the index the copy has (Lite keeps no field descriptions)
            r"\([A-Z_0-9]+\)\.$",
            f"({index[0]}).",
            vector_doc or f"{props.get('model', '?')} embedding: {dim}-d, L2-normalised, {METRIC} ({index[0]}).",
        ),
        index=index,
        properties={PROPERTY_PREFIX + k: v for k, v in {**props, "description": description_of(props)}.items()},
    )


def _normalised(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the target's schema wants it: every declared field present (an older collection may lack one)."""
    out = {k: v for k, v in row.items() if not k.startswith("$")}
    for field_name, dtype, _, _ in FIELDS:
        out.setdefault(field_name, _DEFAULTS[dtype])
    return out


def copy_collection(
    source: VectorStore,
    target: VectorStore,
    name: str,
    checkpoints: Checkpoints,
    *,
    batch: int = 1000,
    restart: bool = False,
    on_progress: Progress | None = None,
) -> CollectionCopy:
    """Copy one collection (create it on the target if needed; resume after its checkpoint, or bring a finished copy up
    to date: :func:`~imsim.store.mirror.mirror`), then verify it."""
    if name not in target.versions.collections():
        _create_like(source, target, name)
    elif target.versions.dimension(name) != source.versions.dimension(name):
        raise StoreError(f"{name!r} exists on the target with another dimension; refusing to mix vectors")

    def normalised(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_normalised(r) for r in rows]

    def progress(done: int, rows: int) -> None:
        if on_progress is not None:
            on_progress(name, done, rows)

    done = mirror(source, name, target, name, checkpoints, convert=normalised, restart=restart, batch=batch, on_progress=progress)
    target_rows = target.rows.count(name)
    sampled, identical = _compare_sample(source, target, name)
    return CollectionCopy(
        name, source.rows.count(name), done.written, target_rows, sampled, identical, done.deleted, done.compared
    )


def copy_rows(
    source: VectorStore,
    target: VectorStore,
    name: str,
    checkpoints: Checkpoints,
    *,
    batch: int = 1000,
    restart: bool = False,
    on_progress: Progress | None = None,
) -> CollectionCopy:
    """Copy the rows of one of the store's own collections (marks, artifacts: made on the target by their owners),
    resumably, then verify it by counts and a sample compared field for field."""

    def progress(done: int, rows: int) -> None:
        if on_progress is not None:
            on_progress(name, done, rows)

    done = mirror(source, name, target, name, checkpoints, restart=restart, batch=batch, on_progress=progress)
    sampled, identical = _compare_sample(source, target, name, whole_rows=True)
    return CollectionCopy(
        name, source.rows.count(name), done.written, target.rows.count(name), sampled, identical, done.deleted, done.compared
    )


def _compare_sample(source: VectorStore, target: VectorStore, name: str, whole_rows: bool = False) -> tuple[int, int]:
    """A sample of ids (a reservoir over the first ids streamed) whose vectors must be equal bit for bit (``rows``: whose
    every field must be equal with ``whole_rows``: the store's own collections, whose vector field is a placeholder)."""
    ids: list[str] = []
    seen = 0
    rng = random.Random(0)
    for rows in source.rows.iter_rows(name, "", output_fields=[PK], batch=4000):
        for r in rows:
            seen += 1
            if len(ids) < SAMPLE:
                ids.append(r[PK])
            elif (j := rng.randrange(seen)) < SAMPLE:
                ids[j] = r[PK]
    if not ids:
        return 0, 0
    if whole_rows:
        fields = sorted(source.versions.fields(name) - {PK, VECTOR, "vector"})
        before, after = source.rows.get(name, ids, fields), target.rows.get(name, ids, fields)
        return len(ids), sum(1 for i in ids if i in after and all(before[i].get(f) == after[i].get(f) for f in fields))
    want = source.rows.get_vectors(name, ids)
    got = target.rows.get_vectors(name, ids)
    same = sum(1 for i in ids if i in got and np.array_equal(want[i].view(np.uint32), got[i].view(np.uint32)))
    return len(ids), same


def copy_store(
    source: VectorStore,
    target: VectorStore,
    data_dir: Path,
    *,
    batch: int = 1000,
    restart: bool = False,
    on_progress: Progress | None = None,
) -> CopyReport:
    """Copy every imsim collection of ``source`` to ``target``, then point each model's alias at the same version."""
    if source.uri == target.uri:
        raise StoreError("the source and the target are the same store")
    checkpoints = Checkpoints(data_dir, target.uri)
    report = CopyReport()
    models: set[str] = set()
    for name in source.versions.collections():
        report.collections.append(
            copy_collection(source, target, name, checkpoints, batch=batch, restart=restart, on_progress=on_progress)
        )
        models.add(source.versions.properties(name).get("model", ""))
    for kind in (Marks, Artifacts, Decisions):  # beside the vectors: "not a duplicate" marks, transforms, reviews
        source_side, target_side = kind(source), kind(target)
        if not source_side.exists():
            continue
        target_side.ensure()
        report.collections.append(
            copy_rows(source, target, source_side.name, checkpoints, batch=batch, restart=restart, on_progress=on_progress)
        )
    for model in sorted(m for m in models if m):
        active = source.versions.active_collection(model)
        if active is None:
            continue
        target.versions.activate(model, active)
        report.aliases[target.versions.alias_name(model)] = active
    return report
