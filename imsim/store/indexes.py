"""Which vector index a model version's collection gets, and how it is searched.

Owns the index types imsim builds (Milvus 2.3's HNSW, IVF_FLAT, IVF_SQ8, IVF_PQ, SCANN, DISKANN, and FLAT), their
build and search parameters, and ``IMSIM_INDEX_TYPE=auto``'s choice: the most accurate kind whose query-node memory
at the expected row count fits the memory budget. The memory per row and recall of each kind come from
``benchmarks/indexes.py`` (docs/benchmarks.md, "Index by size"); docs/operations.md's sizing table is this table
multiplied out. The index is chosen when a version's collection is created; its kind is recorded on the collection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

# Measured by `python benchmarks/indexes.py --rows 100000` on a Milvus 2.3.5 server (2026-12-07, 768-d clustered unit
# vectors, recall@10 against exact search over 200 queries, each kind searched with `search_params` below): the query
# node's RSS after loading, per row per dimension, and the recall; IVF_SQ8, the kind large collections get, again at
# 1M rows (`--rows 1000000 --types IVF_SQ8`: 1.171 bytes against 0.920 at 100k, and that larger figure is the one kept).
# docs/benchmarks.md ("Index by size") holds those runs.


@dataclass(frozen=True)
class IndexKind:
    """One index type: its memory per row per dimension on a query node (bytes), its recall@10, whether Milvus Lite
    builds it, whether it needs the query node's local disk (``queryNode.enableDisk``), and whether those figures
    were measured here (an unmeasured kind is never auto's choice) and at how many rows."""

    name: str
    bytes_per_dim: float
    recall_at_10: float
    lite: bool = True
    disk: bool = False
    measured: bool = True
    measured_rows: int = 100_000  # the collection size the figures come from

    def memory_bytes(self, rows: int, dim: int) -> float:
        return rows * dim * self.bytes_per_dim


# In auto's order of preference (best answers and latency first); FLAT is exact and never chosen by auto.
KINDS: dict[str, IndexKind] = {
    kind.name: kind
    for kind in (
        IndexKind("HNSW", 3.851, 0.9975),
        IndexKind("IVF_FLAT", 4.122, 1.0),
        IndexKind("SCANN", 4.403, 1.0, lite=False),
        IndexKind("IVF_SQ8", 1.171, 0.9685, measured_rows=1_000_000),
        # Not measured: the PyPI server build's index node refuses DISKANN ("bad_function_call"). Memory: Milvus's
        # default PQ budget (pq_code_budget_gb_ratio 0.125 of the raw float32 vectors); the graph lives on disk.
        IndexKind("DISKANN", 0.5, 0.0, lite=False, disk=True, measured=False),
        IndexKind("IVF_PQ", 0.440, 0.392, lite=False),  # m = dim/8 sub-quantizers of 8 bits: too coarse for copies
        IndexKind("FLAT", 4.0, 1.0, measured=False),  # the raw float32 vectors, searched exhaustively
    )
}
AUTO_MIN_RECALL = 0.95  # auto never picks a kind measured below this recall@10
# Milvus builds an index per sealed segment, and compaction merges segments up to dataCoord.segment.maxSize (512 MB
# by default): an IVF index's lists are sized by the rows of one full segment, not of the collection (Milvus's
# performance FAQ: nlist ~ 4·sqrt(n), n the rows of a segment). 4·sqrt(1M) lists on 175k-row segments of 768-d would
# leave ~40 rows a list and 12 MB of centroids in every segment.
SEGMENT_MAX_BYTES = 512 * 2**20


class IndexConfig(Protocol):
    """The settings an index is built and searched by (the store section of the settings has them)."""

    @property
    def index_type(self) -> str: ...
    @property
    def expected_rows(self) -> int: ...
    @property
    def index_memory_gb(self) -> float: ...
    @property
    def hnsw_m(self) -> int: ...
    @property
    def hnsw_ef_construction(self) -> int: ...
    @property
    def hnsw_ef_search(self) -> int: ...
    @property
    def ivf_nprobe(self) -> int: ...


def choose(rows: int, dim: int, memory_gb: float, *, lite: bool = False) -> str:
    """``auto``'s choice for ``rows`` rows of ``dim``-d vectors within ``memory_gb`` of query-node memory per
    collection: the first kind of :data:`KINDS` that fits at recall >= :data:`AUTO_MIN_RECALL`; if none fits, the
    smallest such kind (the budget is then a cluster's, spread over query nodes: docs/operations.md)."""
    if lite:
        return "HNSW"  # Lite's envelope (~100k rows) is far below any memory budget
    good = [k for k in KINDS.values() if k.measured and k.recall_at_10 >= AUTO_MIN_RECALL and not k.disk and k.name != "FLAT"]
    for kind in good:
        if kind.memory_bytes(rows, dim) <= memory_gb * 2**30:
            return kind.name
    return min(good, key=lambda k: k.bytes_per_dim).name


def segment_rows(rows: int, dim: int) -> int:
    """Rows of ``dim``-d float32 vectors in one full segment of a collection expected to reach ``rows``."""
    return max(1, min(rows, SEGMENT_MAX_BYTES // (4 * dim)))


def nlist(rows: int) -> int:
    """Inverted-file lists for an index over ``rows`` rows: ~4·√rows (Milvus's and FAISS's rule of thumb), 128 to
    65,536. A collection's IVF index is built per segment: pass :func:`segment_rows`."""
    return int(min(65_536, max(128, 4 * math.isqrt(max(1, rows)))))


def nprobe(lists: int, configured: int = 0) -> int:
    """Lists probed per search: ``configured`` if set, else 1/32 of the lists and at least 16."""
    return configured if configured > 0 else max(16, lists // 32)


def build(index_type: str, dim: int, config: IndexConfig) -> tuple[str, dict[str, Any]]:
    """``(index_type, params)`` to build for a new collection of ``dim``-d vectors under ``config``."""
    kind = choose(config.expected_rows, dim, config.index_memory_gb) if index_type == "auto" else index_type
    lists = nlist(segment_rows(config.expected_rows, dim))
    if kind == "HNSW":
        return kind, {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction}
    if kind in ("IVF_FLAT", "IVF_SQ8", "SCANN"):  # SCANN keeps the raw vectors by default (its reorder_k needs them)
        return kind, {"nlist": lists}
    if kind == "IVF_PQ":
        m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m and dim % m == 0)
        return kind, {"nlist": lists, "m": m, "nbits": 8}
    return kind, {}


def search_params(
    index_type: str, build_params: dict[str, Any], k: int, config: IndexConfig, ef: int | None = None
) -> dict[str, Any]:
    """The ``params`` of a search of ``k`` hits on an index built with ``build_params``."""
    if index_type == "HNSW":
        return {"ef": max(ef or config.hnsw_ef_search, k)}
    if index_type in ("IVF_FLAT", "IVF_SQ8", "IVF_PQ", "SCANN"):
        lists = int(build_params.get("nlist", 1024))
        params: dict[str, Any] = {"nprobe": min(lists, nprobe(lists, config.ivf_nprobe))}
        if index_type == "SCANN":
            params["reorder_k"] = max(k, 100)
        return params
    if index_type == "DISKANN":
        return {"search_list": max(k, 100)}
    return {}
