"""Near-duplicate groups: stored images whose similarity exceeds a threshold, joined into connected components.

Each stored image is paired with its ``neighbours`` nearest images in its model's collection (a k-NN graph), found in
this process on a server and on Milvus Lite alike (:mod:`imsim.analysis.neighbours`: the collection streamed once into
one array, searched a cell of an inverted file at a time; no search request per row). A pair at or above the
threshold is an edge, and groups are the connected components of those edges (so A~B and B~C put A, B and C
together).
``model="fused"`` scores a pair by the weighted mean of every model's cosine: since that mean never exceeds the
largest cosine, pairs found by any single model at the threshold are complete candidates, and each is then scored
exactly from the stored vectors, a block of pairs at a time.

The threshold is, in order: the one given; the one ``imsim eval run`` measured for this model version
(95 % precision by default, :mod:`imsim.calibration`); a per-family default measured on a labelled
set (:data:`DEFAULT_THRESHOLDS`, see docs/duplicates.md); otherwise a clear error, because a similarity
scale without a measurement is a guess (immich users report thousands of false duplicates from one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibration
from . import fusion as fusion_maths
from .client.local import Client
from .errors import ImsimError, InvalidInput
from .expr import Where
from .store import VectorStore

# Defaults, each measured on a labelled copy-detection set (docs/duplicates.md says how and what precision).
# Keyed by model version (name@tag), because a threshold belongs to one exact wiring: weights, preprocessing, decode.
DEFAULT_THRESHOLDS: dict[str, tuple[float, str]] = {}
COPY_ORIENTED = ("sscd", "dinov2")  # preferred when no model is named, in this order
SEARCH_BATCH = 4_000  # rows read per request while a collection streams into the neighbour index
LINK_SHARE = 0.5  # two groups join only when at least half the pairs between them are links (0: connected components)
Progress = Callable[[int, int], None]  # (rows searched, rows in all)


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


def check_threshold(threshold: float | None, precision: float) -> None:
    """A threshold is a cosine, within [-1, 1] (NaN refused: it compares false with everything, so it linked nothing
    after scanning everything); the calibrated precisions are 0.9 and 0.95."""
    if threshold is not None and not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise InvalidInput(f"threshold {threshold!r}: a cosine similarity lies in [-1, 1]")
    if precision not in calibration.PRECISIONS:
        raise InvalidInput(f"precision {precision!r}: the calibrated ones are {', '.join(map(str, calibration.PRECISIONS))}")


def default_model(client: Client) -> str:
    names = client.settings.model_names
    return copy_model(names) or ("fused" if len(names) > 1 else names[0])


def copy_model(names: Sequence[str]) -> str | None:
    """The copy-oriented model among ``names`` (:data:`COPY_ORIENTED`, in that order), if there is one."""
    return next((name for name in COPY_ORIENTED if name in names), None)


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
    versions = {n: client.store.versions.properties(client.models.collection(n)).get("version", "") for n in names}
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
    if model != "fused":
        found = measured_threshold(client.store, client.models.collection(model), precision)
        if found is not None:
            return found
    raise NoThreshold(
        f"no threshold for {key}: measure one on your images with `imsim eval run --bench ...` and apply it "
        f"(`imsim eval apply OUT/calibration.json`, or --calibration OUT/calibration.json), or pass --threshold"
    )


class NoThreshold(ImsimError):
    """No threshold given, calibrated, defaulted or measured for a model version (:mod:`imsim.review` measures one)."""


def measured_name(collection: str) -> str:
    """The store artifact that keeps the threshold measured on ``collection`` itself (:func:`imsim.review.measure_threshold`)."""
    return f"measured-threshold:{collection}"


def measured_threshold(store: VectorStore, collection: str, precision: float) -> Threshold | None:
    """The threshold measured on ``collection`` itself, if one was, at ``precision``, its source said in words."""
    from .store.artifacts import Artifacts

    artifacts = Artifacts(store)
    found = artifacts.get(measured_name(collection)) if artifacts.exists() else None
    point = found.meta.get(f"p{round(precision * 100)}") if found is not None else None
    if not point:
        return None
    meta = found.meta if found is not None else {}
    reached = (
        f"{round(precision * 100)} % precision"
        if point.get("reached")
        else f"no threshold reached {round(precision * 100)} % precision (random weights?): the best measured, "
        f"{100 * point['precision']:.0f} %"
    )
    return Threshold(
        float(point["threshold"]),
        f"measured on this collection: edited copies of {meta.get('copies', '?')} of your images against their "
        f"originals and their nearest other images, {reached}, recall {100 * point['recall']:.0f} % "
        f"({meta.get('measured_at', '?')}; `imsim eval run` measures with more care)",
    )


@dataclass
class Linked:
    """The pairs `imsim duplicates` links, before groups are made: every image in an edge (id -> path), the edges
    at or above the threshold, the threshold and where it came from, and the model used."""

    paths: dict[str, str]
    edges: list[tuple[str, str, float]]
    threshold: Threshold
    model: str
    link_share: float = LINK_SHARE

    def groups(self, hidden: Iterable[tuple[str, str]] = ()) -> list[Group]:
        """The groups (:func:`linked_groups`), without the pairs in ``hidden`` (marked "not a duplicate")."""
        skip = set(hidden)
        kept = [(a, b, s) for a, b, s in self.edges if (a, b) not in skip]
        return groups_of(self.paths, kept, self.link_share)


def link(
    client: Client,
    *,
    model: str | None = None,
    threshold: float | None = None,
    precision: float = 0.95,
    neighbours: int = 16,
    where: Where | None = None,
    batch: int = SEARCH_BATCH,
    calibration_file: str | os.PathLike[str] | None = None,
    on_progress: Progress | None = None,
) -> Linked:
    """The pairs at or above the threshold (see :class:`Linked`); ``on_progress(done, total)`` is told as rows are
    searched (``total``: the rows of every collection searched)."""
    check_threshold(threshold, precision)
    model = model or default_model(client)
    names = client.settings.model_names if model == "fused" else [model]
    if model == "fused" and len(names) < 2:
        raise ImsimError("--model fused needs at least two models in IMSIM_MODELS")
    existing = set(client.store.versions.collections())
    for name in names:
        if client.models.collection(name) not in existing:
            raise ImsimError(
                f"nothing ingested yet for model {name!r} (no collection {client.models.collection(name)!r}): "
                "ingest images first (`imsim ingest ...`)"
            )
    chosen = resolve_threshold(client, model, threshold, precision, calibration_file)
    paths, edges = neighbour_edges(
        client.store,
        {name: client.models.collection(name) for name in names},
        chosen.value,
        fused=model == "fused",
        weights=client.settings.weights or None,
        neighbours=neighbours,
        where=where,
        batch=batch,
        on_progress=on_progress,
    )
    return Linked(paths, edges, chosen, model, client.settings.duplicate_link_share)


def marked_pairs(store: VectorStore, ids: Iterable[str]) -> set[tuple[str, str]]:
    """The pairs among ``ids`` a person marked "not a duplicate" (:mod:`imsim.store.marks`)."""
    from .store.marks import Marks

    return Marks(store).among(ids)


def find_groups(
    client: Client,
    *,
    model: str | None = None,
    threshold: float | None = None,
    precision: float = 0.95,
    neighbours: int = 16,
    where: Where | None = None,
    batch: int = SEARCH_BATCH,
    calibration_file: str | os.PathLike[str] | None = None,
    on_progress: Progress | None = None,
) -> tuple[list[Group], Threshold, str]:
    """(groups, threshold used, model used), largest group first; pairs marked "not a duplicate" are left out."""
    linked = link(
        client,
        model=model,
        threshold=threshold,
        precision=precision,
        neighbours=neighbours,
        where=where,
        batch=batch,
        calibration_file=calibration_file,
        on_progress=on_progress,
    )
    hidden = marked_pairs(client.store, linked.paths)
    return linked.groups(hidden), linked.threshold, linked.model


Hit = tuple[str, str, float]  # (id, path, cosine)


def neighbour_edges(
    store: VectorStore,
    collections: Mapping[str, str],
    threshold: float,
    *,
    fused: bool = False,
    weights: Mapping[str, float] | None = None,
    neighbours: int = 16,
    where: Where | None = None,
    batch: int = SEARCH_BATCH,
    on_progress: Progress | None = None,
) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """(id → path of every image in an edge, edges ``(id, id, score)`` at or above ``threshold``): the pairs
    `imsim duplicates` links. Each stored image is paired with its ``neighbours`` nearest in each collection, found in
    this process (:mod:`imsim.analysis.neighbours`: the collection read once, streamed, into one array: exact up to
    50k rows, an inverted file searched a cell at a time above), on a Milvus server and on Milvus Lite alike;
    ``fused`` scores each candidate pair by the weighted mean of every collection's exact cosine. Memory: one
    collection's vectors (3.1 GB at 1M x 768) and the edges. The evaluation calibrates on exactly these pairs
    (``threshold=-inf``: every pair this search sees)."""
    from .analysis.neighbours import neighbours as nearest
    from .analysis.neighbours import read

    expression = where.expression(store.connection.like_dialect) if where else ""
    paths: dict[str, str] = {}
    candidates: dict[tuple[str, str], float] = {}
    accept = where.accepts if where is not None else None
    total = sum(store.rows.count(c, expression) for c in collections.values()) if on_progress else 0
    done = 0
    for collection in collections.values():  # one collection's vectors in memory at a time
        found = read(store, collection, expression, accept, batch=min(batch, 4_000))
        report = None if on_progress is None else _offset_progress(on_progress, done, total)
        for rows, scores, positions in nearest(found, neighbours + 1, report):
            keep = (positions >= 0) & (positions != rows[:, None]) & (scores >= threshold)  # the fused mean never exceeds the max
            for r, c in zip(*np.nonzero(keep), strict=True):
                a, b = found.ids[rows[r]], found.ids[positions[r, c]]
                pair = (a, b) if a < b else (b, a)
                score = float(scores[r, c])
                if score > candidates.get(pair, -2.0):
                    candidates[pair] = score
                paths.setdefault(a, found.paths[rows[r]])
                paths.setdefault(b, found.paths[positions[r, c]])
        done += len(found)
        del found
    if fused:
        edges = fused_edges(store, collections, candidates, threshold, weights)
    else:
        edges = [(a, b, s) for (a, b), s in candidates.items()]
    if where is not None:
        edges = [(a, b, s) for a, b, s in edges if where.accepts(paths.get(a, "")) and where.accepts(paths.get(b, ""))]
    return paths, edges


def _offset_progress(on_progress: Progress, before: int, total: int) -> Callable[[int], None]:
    """One collection's progress (rows final) as the whole search's: after the ``before`` rows of earlier ones."""
    return lambda rows: on_progress(before + rows, total)


def exact_groups(store: VectorStore, collection: str, where: Where | None = None) -> list[Group]:
    """Images whose files have the same content (sha256), found without any model: one stream of the collection's
    ids, paths and hashes (memory: one entry per row), largest group first. The exact tier of the review page."""
    expression = where.expression(store.connection.like_dialect) if where else ""
    by_content: dict[str, list[tuple[str, str]]] = {}
    for rows in store.rows.iter_rows(collection, filter=expression, output_fields=["path", "sha256"]):
        for r in rows:
            if r.get("sha256") and (where is None or where.accepts(r["path"])):
                by_content.setdefault(r["sha256"], []).append((r["id"], r["path"]))
    groups = []
    for members in by_content.values():
        if len(members) > 1:
            ordered = sorted(members, key=lambda m: m[1])
            edges = [(min(a[0], b[0]), max(a[0], b[0]), 1.0) for a, b in zip(ordered, ordered[1:], strict=False)]
            groups.append(Group(ordered, edges))
    return sorted(groups, key=lambda g: (-len(g.members), g.members[0][1]))


def linked_groups(ids: Iterable[str], edges: Iterable[tuple[str, str, float]], link_share: float = LINK_SHARE) -> list[list[str]]:
    """Groups that do not chain: the strongest links first (as connected components are built), but two groups join
    only when at least ``link_share`` of the pairs between them are links (at or above the threshold). One weak link,
    or a frame several edited copies share, can no longer put two sets of copies into one group: two linked pairs
    joined by one link share 1 of 4 pairs. ``link_share`` 0 gives the connected components; singletons left out.

    Passes over the links repeat until nothing merges (a join can raise the share between the groups it made and
    another group); each group's links to the others are counted as they merge (the smaller into the larger)."""
    if link_share <= 0:
        return components(ids, edges)
    ordered = sorted(((a, b, s) for a, b, s in edges if a != b), key=lambda e: (-e[2], e[0], e[1]))
    parent: dict[str, str] = {i: i for i in ids}
    size: dict[str, int] = {}
    links: dict[str, dict[str, int]] = {}  # group root -> other group root -> links between them
    for a, b, _ in ordered:
        for x in (a, b):
            parent.setdefault(x, x)
            size.setdefault(x, 1)
            links.setdefault(x, {})
    seen: set[tuple[str, str]] = set()
    for a, b, _ in ordered:
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        links[a][b] = links[a].get(b, 0) + 1
        links[b][a] = links[b].get(a, 0) + 1

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    merged = True
    while merged:
        merged = False
        for a, b, _ in ordered:
            ra, rb = root(a), root(b)
            if ra == rb or links[ra].get(rb, 0) < link_share * size[ra] * size[rb]:
                continue
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
            for other, count in links.pop(rb).items():  # rb's links now belong to ra
                links[other].pop(rb, None)
                if other != ra:
                    links[ra][other] = links[ra].get(other, 0) + count
                    links[other][ra] = links[other].get(ra, 0) + count
            links[ra].pop(rb, None)
            merged = True
    groups: dict[str, list[str]] = {}
    for i in parent:
        groups.setdefault(root(i), []).append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def groups_of(paths: Mapping[str, str], edges: Sequence[tuple[str, str, float]], link_share: float = LINK_SHARE) -> list[Group]:
    """The groups of ``edges`` (:func:`linked_groups`), largest first; each keeps the links among its members, best first."""
    by_member: dict[str, list[tuple[str, str, float]]] = {}
    for edge in edges:
        by_member.setdefault(edge[0], []).append(edge)
    groups = []
    for members in linked_groups(paths, edges, link_share):
        inside = set(members)
        group_edges = sorted(
            {e for m in members for e in by_member.get(m, []) if e[1] in inside}, key=lambda e: (-e[2], e[0], e[1])
        )
        groups.append(Group(sorted(((m, paths[m]) for m in members), key=lambda mp: mp[1]), group_edges))
    return groups


def fused_edges(
    store: VectorStore,
    collections: Mapping[str, str],
    candidates: dict[tuple[str, str], float],
    threshold: float,
    weights: Mapping[str, float] | None,
    block: int = 5_000,
) -> list[tuple[str, str, float]]:
    """Score each candidate pair by the weighted mean of every model's exact cosine (stored vectors, read a block of
    pairs at a time at Bounded consistency: memory bounded by the block, not by the collection)."""
    names = list(collections)
    pairs = list(candidates)
    edges = []
    for start in range(0, len(pairs), block):
        part = pairs[start : start + block]
        ids = sorted({i for pair in part for i in pair})
        vectors = {n: store.rows.get_vectors(collections[n], ids, consistency="Bounded") for n in names}
        for a, b in part:
            scores = {
                n: {"pair": float(np.dot(vectors[n][a], vectors[n][b]))} for n in names if a in vectors[n] and b in vectors[n]
            }
            if len(scores) != len(names):
                continue  # a pair some model has not embedded cannot be fused
            fused = fusion_maths.weighted(scores, dict(weights) if weights else None)["pair"]
            if fused >= threshold:
                edges.append((a, b, fused))
    return edges
