"""Derived versions: a whitened version of a model, written from another version's stored vectors (nothing re-embedded).

``imsim models whiten MODEL`` (:func:`whiten`):

1. **learn** the whitening from the base version's stored vectors, streamed at Bounded consistency, the first
   ``sample`` rows in id order (ids are path hashes, so that is a uniform sample), summed into a D x D covariance
   (:class:`~imsim.whitening.Covariance`: memory does not grow with the sample);
2. **register** it: the transform is an artifact of the store (:mod:`imsim.store.artifacts`, named after the derived
   collection), and the derived collection is created with the base's properties plus what it derives from, a
   description for Attu (``sscd +pcaw256 · version 3ab1c2 · 256-d ... · whitened from imsim_sscd_1ce773 on 100,000
   rows``) and a version tag computed from the base tag and the transform's digest;
3. **write** it: every base row streamed in id order, its vector whitened, upserted; a checkpoint (the last id
   written) lets a stopped run resume; a later run over a finished copy is a sync pass (rows missing or changed on
   the derived side are written, rows gone from the base are deleted), so it catches up with ingests made since;
4. **verify** it: equal row counts, and a sample of stored derived vectors equal to the whitened base vectors.

From then on ingest writes every new row to the base and to each derived version that follows it
(:func:`followers`), deletes reach every collection, and the client embeds queries for a derived version with the base
model followed by the same transform (:class:`~imsim.models.whitened.WhitenedEmbedder`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StoreError
from ..models.base import derived_identity, tag_of
from ..whitening import EPS_RATIO, Covariance, Whitening
from .artifacts import Artifacts
from .copy import index_of
from .mirror import Checkpoints, mirror
from .schema import METRIC, PK, PROPERTY_PREFIX, VECTOR

if TYPE_CHECKING:
    from .vector_store import VectorStore

TRANSFORM_KIND = "whitening"
SAMPLE = 1_000_000  # rows a whitening is learned from, at most (memory does not grow with it: a D x D sum)
VERIFY_SAMPLE = 200
READ_BATCH = 2_000
Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in all)


@dataclass
class DerivedReport:
    collection: str
    base: str
    whitening: Whitening
    written: int = 0  # rows upserted by this run
    deleted: int = 0  # rows removed because the base no longer has them
    base_rows: int = 0
    rows: int = 0
    sampled: int = 0
    agreeing: int = 0  # sampled vectors equal to the whitened base vector (within float rounding)

    @property
    def verified(self) -> bool:
        return self.rows == self.base_rows and self.sampled == self.agreeing


def derived_name(store: VectorStore, model: str, base_tag: str, whitening: Whitening) -> tuple[str, str]:
    """(collection, version tag) of the whitening of ``model``'s version ``base_tag``."""
    derived = f"pcaw:{base_tag}:{whitening.digest}"
    tag = tag_of(derived_identity(model, derived, whitening.dim))
    return f"{store.config.collection_prefix}_{model}_{tag}", derived


def base_of(store: VectorStore, collection: str) -> str | None:
    """The collection a derived version was written from (None for an embedded version)."""
    props = store.versions.properties(collection)
    tag = props.get("derived_from_version")
    return f"{store.config.collection_prefix}_{props.get('model', '')}_{tag}" if tag else None


def transform(store: VectorStore, collection: str) -> Whitening:
    """The whitening a derived collection's vectors went through (an artifact of the store)."""
    found = Artifacts(store).get(collection)
    if found is None:
        raise StoreError(f"{collection!r} is a derived version but the store holds no transform for it (artifacts)")
    return Whitening.from_bytes(found.data)


def followers(store: VectorStore, base: str) -> dict[str, Whitening]:
    """Every derived version written from ``base``: collection → its whitening (what ingest writes beside the base)."""
    out: dict[str, Whitening] = {}
    for name in store.versions.collections():
        if name != base and base_of(store, name) == base:
            out[name] = transform(store, name)
    return out


def learn(
    store: VectorStore,
    collection: str,
    *,
    dim: int | None = None,
    sample: int = SAMPLE,
    eps_ratio: float = EPS_RATIO,
    on_progress: Progress | None = None,
) -> Whitening:
    """The whitening of ``collection``'s first ``sample`` rows in id order (a uniform sample), streamed Bounded."""
    total = min(sample, store.rows.count(collection, consistency="Bounded"))
    if total < 2:
        raise StoreError(f"{collection!r} holds {total} rows: a whitening needs at least 2 (ingest images first)")
    covariance = Covariance(store.versions.dimension(collection))
    for rows in store.rows.iter_rows(collection, output_fields=[VECTOR], batch=READ_BATCH, consistency="Bounded"):
        rows = rows[: sample - covariance.count]
        covariance.add(np.asarray([r[VECTOR] for r in rows], np.float32))
        if on_progress is not None:
            on_progress("learn", covariance.count, total)
        if covariance.count >= sample:
            break
    meta = {
        "learned_on": f"stored rows of {collection}",
        "collection": collection,
        "sample": f"first {covariance.count:,} rows in id order",
    }
    return covariance.whitening(dim, eps_ratio, meta)


def register(store: VectorStore, base: str, whitening: Whitening) -> str:
    """Create the derived collection of ``base`` under ``whitening`` (and store the transform); returns its name.
    Registering the same whitening again is harmless (same name, same transform)."""
    props = store.versions.properties(base)
    if props.get("derived_from_version"):
        raise StoreError(f"{base!r} is itself a derived version: whiten an embedded version")
    model, base_tag = props.get("model", ""), props.get("version", "")
    if not model or not base_tag:
        raise StoreError(f"{base!r} does not say which model version it holds (no imsim.model / imsim.version property)")
    if whitening.input_dim != store.versions.dimension(base):
        raise StoreError(f"a {whitening.input_dim}-d whitening cannot apply to {base!r} ({store.versions.dimension(base)}-d)")
    name, derived = derived_name(store, model, base_tag, whitening)
    artifacts = Artifacts(store)
    if artifacts.get(name) is None:  # the transform first: a collection that exists always has one
        artifacts.put(name, TRANSFORM_KIND, whitening.to_bytes(), {"base": base, **whitening.meta, "rows": whitening.rows})
    if name in store.versions.collections():
        return name
    tag = name.rsplit("_", 1)[1]
    variant = f"{props['variant']}+pcaw{whitening.dim}" if props.get("variant") else f"pcaw{whitening.dim}"
    index_type, params = index_of(props)
    index = index_type + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    description = (
        f"{model} {variant} · version {tag} · {whitening.dim}-d {METRIC} {index} · whitened from {base} on "
        f"{whitening.rows:,} rows · rev {props.get('revision', '?')} · {props.get('source', '?')}"
    )
    new_props = {
        **{k: v for k, v in props.items() if k != "created_at"},
        "dim": str(whitening.dim),
        "variant": variant,
        "version": tag,
        "identity": json.dumps(derived_identity(model, derived, whitening.dim), sort_keys=True),
        "derived": derived,
        "derived_from_version": base_tag,
        "derived_from": base,
        "transform": f"pcaw {whitening.input_dim}->{whitening.dim}",
        "transform_sha": whitening.digest,
        "transform_rows": str(whitening.rows),
        "description": description,
        "created_at": str(int(time.time())),
    }
    store.versions.create_version(
        name,
        whitening.dim,
        description=description,
        vector_doc=f"{model} whitened: {whitening.dim}-d, L2-normalised, {METRIC} (from {base}).",
        index=(index_type, params),
        properties={PROPERTY_PREFIX + k: v for k, v in new_props.items()},
    )
    return name


def write(
    store: VectorStore,
    base: str,
    name: str,
    whitening: Whitening,
    checkpoints: Checkpoints,
    *,
    restart: bool = False,
    on_progress: Progress | None = None,
) -> DerivedReport:
    """Write (or bring up to date) the derived collection ``name`` from ``base`` (see the module doc), then verify it."""
    report = DerivedReport(name, base, whitening)

    def whitened(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        vectors = whitening.apply(np.asarray([r[VECTOR] for r in rows], np.float32))
        return [{**r, VECTOR: v.tolist()} for r, v in zip(rows, vectors, strict=True)]

    def progress(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("write", done, total)

    done = mirror(
        store, base, store, name, checkpoints, convert=whitened, restart=restart, batch=READ_BATCH, on_progress=progress
    )
    report.written, report.deleted = done.written, done.deleted
    report.rows = store.rows.count(name)
    report.base_rows = store.rows.count(base)
    report.sampled, report.agreeing = _check_sample(store, base, name, whitening)
    return report


def _check_sample(store: VectorStore, base: str, name: str, whitening: Whitening) -> tuple[int, int]:
    ids: list[str] = []
    seen = 0
    rng = random.Random(0)
    for rows in store.rows.iter_rows(name, output_fields=[PK], batch=4_000):
        for r in rows:
            seen += 1
            if len(ids) < VERIFY_SAMPLE:
                ids.append(r[PK])
            elif (j := rng.randrange(seen)) < VERIFY_SAMPLE:
                ids[j] = r[PK]
    if not ids:
        return 0, 0
    want = store.rows.get_vectors(base, ids)
    got = store.rows.get_vectors(name, ids)
    present = [i for i in ids if i in want and i in got]
    if not present:
        return len(ids), 0
    expected = whitening.apply(np.stack([want[i] for i in present]))
    agreeing = sum(1 for i, e in zip(present, expected, strict=True) if np.allclose(got[i], e, atol=1e-5))
    return len(ids), agreeing


def whiten(
    store: VectorStore,
    base: str,
    data_dir: Path,
    *,
    dim: int | None = None,
    sample: int = SAMPLE,
    restart: bool = False,
    on_progress: Progress | None = None,
) -> DerivedReport:
    """Learn, register, write and verify the whitened version of ``base`` (see the module doc). A run that stopped
    resumes; a run over a finished version catches up (the transform is learned again only with ``restart``: a new
    transform is a new version)."""
    if base not in store.versions.collections():
        raise StoreError(f"no collection {base!r} (see `imsim models`)")
    checkpoints = Checkpoints(data_dir, f"derived:{store.uri}")
    existing = [] if restart else [c for c, w in followers(store, base).items() if dim is None or w.dim == dim]
    if existing:
        name = sorted(existing)[0]
        whitening = transform(store, name)
    else:
        whitening = learn(store, base, dim=dim, sample=sample, on_progress=on_progress)
        name = register(store, base, whitening)
    report = write(store, base, name, whitening, checkpoints, restart=restart, on_progress=on_progress)
    if not report.verified:  # rows ingested while the pass ran, by a worker that did not know the version yet
        report = write(store, base, name, whitening, checkpoints, on_progress=on_progress)
    return report
