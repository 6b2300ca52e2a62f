"""Every stored image's nearest neighbours in one collection, in this process: the k-NN graph `imsim duplicates` links.

The collection is read once, streamed (Bounded reads in primary-key order), into one float32 array (unit vectors:
inner product is cosine). Up to :data:`EXACT_ROWS` rows every pair is compared (matrix products, FAISS's top-k).
Above that, an inverted file: :func:`faiss.Kmeans` puts about 4 √N cell centres on the first :data:`TRAIN_ROWS` rows
(ids being hashes, they are a uniform sample), each row is assigned to its :data:`PROBES` nearest cells, and each row
is compared with the rows of those cells, exactly what an IVF-Flat search with ``nprobe = PROBES`` compares.

It is computed a cell at a time, not a query at a time: a cell's rows are compared, in one matrix product (BLAS), with
every row that probes that cell, and each row keeps its best ``k`` over the cells it probes. Scanning a cell once for
all its queries instead of once per query is what makes it fast: at 1M rows x 768 with 16 probes, 137 s against
FAISS's per-query search's ~771 s at the same recall (``benchmarks/neighbours.py``), and `imsim duplicates` of 1M rows
on a server in 6.7 min, reading included (was 22.7; ``benchmarks/scale.py duplicates``, whose ``--check-exact``
measures the graph against brute force); docs/benchmarks.md has the runs.

Memory: the vectors once (N × dim float32, 3.1 GB at 1M × 768), each row's cells (N × PROBES int32) and best ``k``
(N × k float32 + int64), the ids and paths; one cell's rows and queries at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..store import VectorStore

EXACT_ROWS = 50_000  # up to here every pair is compared exactly
TRAIN_ROWS = 100_000  # rows the cell centres are trained on
PROBES = 16  # cells each row is compared with (its own among them)
BLOCK = 4_096  # rows searched per call in the exact case, and per step of assignment


@dataclass
class Collection:
    """A collection's rows as read for the graph: ids, paths, their vectors (row ``i`` of each), and when they are
    many, the inverted file: cell centres and each row's nearest cells (nearest first)."""

    ids: list[str]
    paths: list[str]
    vectors: np.ndarray  # (N, dim) float32, unit length
    centres: np.ndarray | None = None  # (cells, dim): None when every pair is compared
    cells: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.int32))  # (N, probes)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def exact(self) -> bool:
        return self.centres is None


class VectorsBuilder:
    """Vectors added in blocks, into one array; above ``exact_rows`` in all, cell centres are trained once
    :data:`TRAIN_ROWS` rows (or all ``total``) are there, and each row is assigned its ``probes`` nearest cells."""

    def __init__(self, dim: int, total: int, exact_rows: int | None = None, probes: int = PROBES):
        self.dim, self.total, self.probes = dim, total, probes
        self.exact_rows = EXACT_ROWS if exact_rows is None else exact_rows  # read now: a caller may have changed it
        self.vectors = np.empty((max(total, 1), dim), np.float32)
        self.rows = 0
        self.centres: np.ndarray | None = None
        self.quantizer: Any = None  # a faiss.IndexFlatIP over the centres, once trained
        self.cells: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        if self.rows + len(block) > len(self.vectors):  # more rows than counted (inserts meanwhile)
            grown = np.empty((max(2 * len(self.vectors), self.rows + len(block)), self.dim), np.float32)
            grown[: self.rows] = self.vectors[: self.rows]
            self.vectors = grown
        self.vectors[self.rows : self.rows + len(block)] = block
        self.rows += len(block)
        if self.centres is not None:
            self._assign(self.rows - len(block), self.rows)
        elif self.total > self.exact_rows and self.rows >= min(TRAIN_ROWS, self.total):
            self._train()

    def finish(self, ids: list[str], paths: list[str]) -> Collection:
        """The collection. Fewer rows than ``total`` (a filter, deletes meanwhile): trained on what there is, or
        compared exactly when that is few enough."""
        if self.centres is None and self.rows > self.exact_rows:
            self._train()
        vectors = self.vectors[: self.rows]
        if self.centres is None:
            return Collection(ids, paths, vectors)
        return Collection(ids, paths, vectors, self.centres, np.concatenate(self.cells))

    def _train(self) -> None:
        import faiss

        sample = self.vectors[: min(self.rows, TRAIN_ROWS)]
        count = max(16, min(int(4 * np.sqrt(max(self.total, self.rows))), len(sample) // 39))  # ≥ 39 rows a centre
        kmeans = faiss.Kmeans(self.dim, count, niter=10, spherical=True, seed=1234)
        kmeans.train(sample)
        self.centres = np.ascontiguousarray(kmeans.centroids, np.float32)
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.quantizer.add(self.centres)
        self._assign(0, self.rows)

    def _assign(self, start: int, stop: int) -> None:
        probes = min(self.probes, self.quantizer.ntotal)
        for first in range(start, stop, BLOCK):
            _, nearest = self.quantizer.search(self.vectors[first : min(first + BLOCK, stop)], probes)
            self.cells.append(nearest.astype(np.int32))


def build(blocks: Iterable[np.ndarray], dim: int, total: int, exact_rows: int | None = None, probes: int = PROBES) -> Collection:
    """A collection of ``blocks`` of unit vectors (``total`` rows expected), its rows named by position."""
    builder = VectorsBuilder(dim, total, exact_rows, probes)
    for block in blocks:
        builder.add(np.asarray(block, np.float32))
    names = [str(i) for i in range(builder.rows)]
    return builder.finish(names, names)


def read(
    store: VectorStore,
    collection: str,
    expression: str = "",
    accept: Callable[[str], bool] | None = None,
    *,
    exact_rows: int | None = None,
    batch: int = 4_000,
) -> Collection:
    """The rows of ``collection`` matching ``expression`` (and ``accept(path)``), streamed into one array."""
    from ..store import VECTOR

    builder = VectorsBuilder(store.versions.dimension(collection), store.rows.count(collection, expression), exact_rows)
    ids: list[str] = []
    paths: list[str] = []
    for rows in store.rows.iter_rows(
        collection, filter=expression, output_fields=["path", VECTOR], batch=batch, consistency="Bounded"
    ):
        kept = [r for r in rows if accept is None or accept(r["path"])]
        if kept:
            ids += [r["id"] for r in kept]
            paths += [r["path"] for r in kept]
            builder.add(np.asarray([r[VECTOR] for r in kept], np.float32))
    return builder.finish(ids, paths)


def neighbours(
    found: Collection, k: int, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each row's ``k`` nearest (itself among them), best first, :data:`BLOCK` rows at a time: ``(rows, scores,
    positions)`` with ``rows`` the row positions and a line of ``k`` per row (position -1, score -inf: fewer than
    ``k`` rows were compared with it). ``progress(rows)``: how many rows' neighbours are final, as the work goes."""
    import faiss

    k = min(k, len(found))
    if k <= 0:
        return
    if found.exact:
        for start in range(0, len(found), BLOCK):
            stop = min(start + BLOCK, len(found))
            scores, positions = faiss.knn(found.vectors[start:stop], found.vectors, k, faiss.METRIC_INNER_PRODUCT)
            if progress is not None:
                progress(stop)
            yield np.arange(start, stop), scores, positions
        return
    scores, positions = _by_cell(found, k, progress)
    for start in range(0, len(found), BLOCK):
        stop = min(start + BLOCK, len(found))
        yield np.arange(start, stop), scores[start:stop], positions[start:stop]


def _by_cell(found: Collection, k: int, progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's best ``k`` over the cells it probes, a cell at a time (see the module doc)."""
    import faiss

    assert found.centres is not None
    count, probes = len(found.centres), found.cells.shape[1]
    home = found.cells[:, 0]  # the cell a row is in
    members = np.argsort(home, kind="stable")
    member_bounds = np.searchsorted(home[members], np.arange(count + 1))
    probed = found.cells.ravel()  # (row, probe) pairs, row-major: pair i is row i // probes
    probing = np.argsort(probed, kind="stable")  # the pairs by the cell probed
    probing_bounds = np.searchsorted(probed[probing], np.arange(count + 1))
    best_scores = np.full((len(found), k), -np.inf, np.float32)
    best = np.full((len(found), k), -1, np.int64)
    for cell in range(count):
        rows = members[member_bounds[cell] : member_bounds[cell + 1]]
        if len(rows) == 0:
            continue
        queries = probing[probing_bounds[cell] : probing_bounds[cell + 1]] // probes
        scores, found_at = faiss.knn(found.vectors[queries], found.vectors[rows], min(k, len(rows)), faiss.METRIC_INNER_PRODUCT)
        merged_scores = np.concatenate([best_scores[queries], scores], axis=1)
        merged = np.concatenate([best[queries], np.where(found_at >= 0, rows[np.maximum(found_at, 0)], -1)], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores[queries] = np.take_along_axis(merged_scores, keep, 1)
        best[queries] = np.take_along_axis(merged, keep, 1)
        if progress is not None and cell % 64 == 63:
            progress(int(len(found) * (cell + 1) / count))
    if progress is not None:
        progress(len(found))
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, 1), np.take_along_axis(best, order, 1)
