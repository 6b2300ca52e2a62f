"""Near-duplicate groups: stored images whose similarity exceeds a threshold, joined into connected components.

Each stored image is searched against its model's collection for its ``neighbours`` nearest images; a
pair at or above the threshold is an edge, and groups are the connected components of those edges (so
A~B and B~C put A, B and C together). ``model="fused"`` scores a pair by the weighted mean of every
model's cosine: since that mean never exceeds the largest cosine, pairs found by any single model at
the threshold are complete candidates, and each is then scored exactly from the stored vectors.

The threshold is, in order: the one given; the one ``imsim eval run`` measured for this model version
(95 % precision by default, :mod:`imsim.eval.calibration`); a per-family default measured on a labelled
set (:data:`DEFAULT_THRESHOLDS`, see docs/duplicates.md); otherwise a clear error, because a similarity
scale without a measurement is a guess (immich users report thousands of false duplicates from one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fusion as fusion_maths
from .errors import ImsimError
from .eval import calibration
from .expr import Where
from .query import Client
from .store import VectorStore

# Defaults, each measured on a labelled copy-detection set (docs/duplicates.md says how and what precision).
# Keyed by model version (name@tag), because a threshold belongs to one exact wiring: weights, preprocessing, decode.
DEFAULT_THRESHOLDS: dict[str, tuple[float, str]] = {}
COPY_ORIENTED = ("sscd", "dinov2")  # preferred when no model is named, in this order


@dataclass
class Group:
    members: list[tuple[str, str]]  # (row id, path), sorted by path
    edges: list[tuple[str, str, float]] = field(default_factory=list)  # (id, id, score) at or above the threshold

    @property
    def best(self) -> float:
        return max((s for _, _, s in self.edges), default=0.0)

    def as_dict(self) -> dict:
        return {
            "size": len(self.members),
            "best_score": round(self.best, 4),
            "members": [{"id": i, "path": p} for i, p in self.members],
            "edges": [{"a": a, "b": b, "score": round(s, 4)} for a, b, s in self.edges],
        }


@dataclass
class Threshold:
    value: float
    source: str  # where the value came from, in words


def components(ids: Iterable[str], edges: Iterable[tuple[str, str, float]]) -> list[list[str]]:
    """Connected components (union-find) of the graph; singletons left out."""
    parent = {i: i for i in ids}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in edges:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for i in parent:
        groups.setdefault(root(i), []).append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def default_model(client: Client) -> str:
    names = client.settings.model_names
    for name in COPY_ORIENTED:
        if name in names:
            return name
    return "fused" if len(names) > 1 else names[0]


def resolve_threshold(
    client: Client,
    model: str,
    given: float | None,
    precision: float = 0.95,
    calibration_file: str | os.PathLike[str] | None = None,
) -> Threshold:
    """The threshold: given; else from ``calibration_file``; else one applied to the data dir (`imsim eval apply`);
    else a default measured for this exact model version (:data:`DEFAULT_THRESHOLDS`); else an error."""
    if given is not None:
        return Threshold(given, "given")
    names = client.settings.model_names if model == "fused" else [model]
    versions = {n: client.store.properties(client.collection(n)).get("version", "") for n in names}
    key = (
        calibration.fused_key("weighted", list(versions.items()), client.settings.weights or None)
        if model == "fused"
        else calibration.version_key(model, versions[model])
    )
    where = Path(calibration_file) if calibration_file is not None else calibration.path(client.settings.data_dir)
    if calibration_file is not None and not where.is_file():
        raise ImsimError(f"no calibration file {where}")
    measured = calibration.threshold(where, key, precision)
    if measured is not None:
        value, record = measured
        return Threshold(
            value,
            f"calibrated: {round(precision * 100)} % precision for `imsim duplicates` on "
            f"{record.get('benchmark', '?')} ({record.get('measured_at', '?')}, {key}, {where})",
        )
    if calibration_file is not None:
        raise ImsimError(f"{where} holds no {round(precision * 100)} %-precision threshold for {key}")
    if key in DEFAULT_THRESHOLDS:
        value, why = DEFAULT_THRESHOLDS[key]
        return Threshold(value, f"default for {key}: {why}")
    raise ImsimError(
        f"no threshold for {key}: measure one on your images with `imsim eval run --bench ...` and apply it "
        f"(`imsim eval apply OUT/calibration.json`, or --calibration OUT/calibration.json), or pass --threshold"
    )


def find_groups(
    client: Client,
    *,
    model: str | None = None,
    threshold: float | None = None,
    precision: float = 0.95,
    neighbours: int = 16,
    where: Where | None = None,
    batch: int = 256,
    calibration_file: str | os.PathLike[str] | None = None,
) -> tuple[list[Group], Threshold, str]:
    """(groups, threshold used, model used), largest group first."""
    model = model or default_model(client)
    names = client.settings.model_names if model == "fused" else [model]
    if model == "fused" and len(names) < 2:
        raise ImsimError("--model fused needs at least two models in IMSIM_MODELS")
    chosen = resolve_threshold(client, model, threshold, precision, calibration_file)
    paths, edges = neighbour_edges(
        client.store,
        {name: client.collection(name) for name in names},
        chosen.value,
        fused=model == "fused",
        weights=client.settings.weights or None,
        neighbours=neighbours,
        where=where,
        batch=batch,
    )
    return groups_of(paths, edges), chosen, model


def neighbour_edges(
    store: VectorStore,
    collections: Mapping[str, str],
    threshold: float,
    *,
    fused: bool = False,
    weights: Mapping[str, float] | None = None,
    neighbours: int = 16,
    where: Where | None = None,
    batch: int = 256,
) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """(id → path of every stored image seen, edges ``(id, id, score)`` at or above ``threshold``): the pairs
    `imsim duplicates` links. Each stored image is searched for its ``neighbours`` nearest in each collection;
    ``fused`` scores each candidate pair by the weighted mean of every collection's exact cosine. The evaluation
    calibrates on exactly these pairs (``threshold=-inf``: every pair this search sees)."""
    expression = where.expression(store.like_dialect) if where else ""
    paths: dict[str, str] = {}
    candidates: dict[tuple[str, str], float] = {}
    for collection in collections.values():
        for rows in store.iter_rows(collection, filter=expression, output_fields=["path", "vector"], batch=batch):
            rows = [r for r in rows if where is None or where.accepts(r["path"])]
            if not rows:
                continue
            paths.update({r["id"]: r["path"] for r in rows})
            vectors = np.stack([np.asarray(r["vector"], np.float32) for r in rows])
            found = store.search(collection, vectors, neighbours + 1, filter=expression)
            for row, hits in zip(rows, found, strict=True):
                for hit in hits:
                    if hit.id != row["id"] and (fused or hit.score >= threshold):
                        pair = (min(row["id"], hit.id), max(row["id"], hit.id))
                        candidates[pair] = max(candidates.get(pair, -1.0), hit.score)
                        paths.setdefault(hit.id, str(hit.fields.get("path", "")))
    if fused:  # the fused mean never exceeds the largest cosine: candidates below the threshold everywhere cannot pass
        candidates = {pair: s for pair, s in candidates.items() if s >= threshold}
        edges = _fused_edges(store, collections, candidates, threshold, weights)
    else:
        edges = [(a, b, s) for (a, b), s in candidates.items()]
    if where is not None:
        edges = [(a, b, s) for a, b, s in edges if where.accepts(paths.get(a, "")) and where.accepts(paths.get(b, ""))]
    return paths, edges


def groups_of(paths: Mapping[str, str], edges: Sequence[tuple[str, str, float]]) -> list[Group]:
    """The connected components of ``edges`` as groups, largest first; each keeps its own edges, best first."""
    by_member: dict[str, list[tuple[str, str, float]]] = {}
    for edge in edges:
        by_member.setdefault(edge[0], []).append(edge)
    groups = []
    for members in components(paths, edges):
        group_edges = sorted({e for m in members for e in by_member.get(m, [])}, key=lambda e: -e[2])
        groups.append(Group(sorted(((m, paths[m]) for m in members), key=lambda mp: mp[1]), group_edges))
    return groups


def _fused_edges(
    store: VectorStore,
    collections: Mapping[str, str],
    candidates: dict[tuple[str, str], float],
    threshold: float,
    weights: Mapping[str, float] | None,
) -> list[tuple[str, str, float]]:
    """Score each candidate pair by the weighted mean of every model's exact cosine (stored vectors)."""
    ids = sorted({i for pair in candidates for i in pair})
    names = list(collections)
    vectors = {n: store.get_vectors(collections[n], ids) for n in names}
    edges = []
    for a, b in candidates:
        scores = {n: {"pair": float(np.dot(vectors[n][a], vectors[n][b]))} for n in names if a in vectors[n] and b in vectors[n]}
        if len(scores) != len(names):
            continue  # a pair some model has not embedded cannot be fused
        fused = fusion_maths.weighted(scores, dict(weights) if weights else None)["pair"]
        if fused >= threshold:
            edges.append((a, b, fused))
    return edges
