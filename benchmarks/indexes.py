"""Index by size: each vector index Milvus 2.3 offers, built by imsim's own parameters, measured. Prints numbers.

For every index type, a fresh Milvus 2.3.5 server (PyPI ``milvus``, started here with the test suite's helper, its
query node allowed to load disk indexes) gets ``--rows`` clustered unit vectors of ``--dim`` dimensions (the same
generator as benchmarks/scale.py: clusters with near copies, like real embeddings), builds the index with the
parameters ``imsim.store.indexes.build`` gives a collection expecting that many rows, is restarted (so the memory
the inserts left in the Go heap is gone), and loads the collection. Printed per type:

- build: seconds from ``create_index`` until every row is indexed;
- memory: the server's RSS after loading minus before (the query node's share of a standalone server), and per
  row per dimension (the figure ``imsim.store.indexes.KINDS`` keeps and the sizing table multiplies out);
- disk: bytes of index files the server wrote;
- recall@10 against exact search (FAISS flat inner product over the same vectors) for ``--queries`` queries drawn
  from the same clusters, searched with ``imsim.store.indexes.search_params``;
- p50 / p99 of one search of k=10 (Bounded consistency, one client), milliseconds.

Segments: Milvus indexes each sealed segment on its own, and compaction merges the small segments inserts leave
(sealed at 23 % of ``dataCoord.segment.maxSize``, 512 MB) into full ones and indexes them again. On this 2-core
machine that second pass ran at ~24k rows/min (a 1M run was still 720k rows from done after 28 min), so by default the
server here seals each segment only when full and runs no automatic compaction: the rows land directly in the
layout compaction converges to, and the figures are those of that steady state. ``--server-defaults`` measures the
template's settings instead (build time then stops at the first pass).

    python benchmarks/indexes.py --rows 100000
    python benchmarks/indexes.py --rows 1000000 --types IVF_SQ8 DISKANN
    python benchmarks/indexes.py --rows 1000000 --types IVF_SQ8 --whiten 256   # a whitened 256-d derived version
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imsim.store import indexes  # noqa: E402
from imsim.whitening import Whitening, learn  # noqa: E402
from tests.support.rows import clustered  # noqa: E402
from tests.support.servers import MilvusServer  # noqa: E402

NAME = "bench_index"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "index_files" in p.parts)


def segment_count(client: Any) -> int:
    """Sealed segments of the benchmark's collection (each got its own index)."""
    return len(client.list_persistent_segments(NAME))


def wait_indexed(client: Any, rows: int, timeout: float, log: Path) -> None:
    """Until every row is indexed. A build the server's index node refuses is retried for ever with the state still
    "InProgress" (SCANN given a Python bool, DISKANN on the PyPI server build): its log names it, so this does too."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        refused = [line for line in text.splitlines() if '"failed to build index"' in line]
        if refused:
            reason = refused[-1].split('[error="', 1)[-1].split("\\n", 1)[0]
            raise RuntimeError(f"the server refuses to build it ({len(refused)} tries): {reason}")
        state = client.describe_index(NAME, "vector")
        if int(state.get("indexed_rows", 0)) >= rows and int(state.get("pending_index_rows", 0)) == 0:
            return
        if state.get("state") == "Failed":
            raise RuntimeError(f"index build failed: {state.get('index_state_fail_reason')}")
        time.sleep(1)
    raise TimeoutError(f"index not built in {timeout:.0f} s")


# let the query node load DISKANN indexes (the index node may build them by default)
DISK_INDEX = (("  enableDisk: false # enable querynode", "  enableDisk: true # enable querynode"),)
FULL_SEGMENTS = (
    ("    sealProportion: 0.23", "    sealProportion: 1.0"),
    ("    enableAutoCompaction: true", "    enableAutoCompaction: false"),
)


def measure(
    kind: str,
    rows: int,
    dim: int,
    queries: np.ndarray,
    truth: np.ndarray,
    timeout: float,
    edits: tuple[tuple[str, str], ...],
    whitening: Whitening | None = None,
) -> dict[str, Any]:
    """One index type over ``rows`` generated rows of ``dim`` dimensions (stored whitened when ``whitening`` is given:
    its output dimension is the stored one)."""
    from pymilvus import DataType, MilvusClient

    source_dim, dim = dim, whitening.dim if whitening is not None else dim

    config = SimpleNamespace(
        expected_rows=rows, index_memory_gb=16.0, hnsw_m=16, hnsw_ef_construction=200, hnsw_ef_search=128, ivf_nprobe=0
    )
    index_type, params = indexes.build(kind, dim, config)
    server = MilvusServer(Path(tempfile.mkdtemp(prefix="imsim-index-")), yaml_edits=DISK_INDEX + edits)
    try:
        client = MilvusClient(server.uri, timeout=600)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection(NAME, schema=schema)
        done = 0
        for vectors in clustered(rows, source_dim, seed=1):
            if whitening is not None:
                vectors = whitening.apply(vectors)
            client.insert(NAME, [{"id": done + i, "vector": v.tolist()} for i, v in enumerate(vectors)])
            done += len(vectors)
        client.flush(NAME)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=params)
        started = time.perf_counter()
        client.create_index(NAME, index_params)
        wait_indexed(client, rows, timeout, server.base / "logs" / "standalone-1.log")
        build_s = time.perf_counter() - started
        segments = segment_count(client)
        client.close()
        server.stop()
        server.start()
        client = MilvusClient(server.uri, timeout=600)
        time.sleep(5)
        before = rss_bytes(server.pid)
        started = time.perf_counter()
        client.load_collection(NAME)
        load_s = time.perf_counter() - started
        time.sleep(5)
        memory = rss_bytes(server.pid) - before
        search = {"metric_type": "IP", "params": indexes.search_params(index_type, params, 10, config)}
        found, walls = [], []
        for q in queries:
            t = time.perf_counter()
            hits = client.search(NAME, [q.tolist()], limit=10, search_params=search, consistency_level="Bounded")
            walls.append((time.perf_counter() - t) * 1000)
            found.append([h["id"] for h in hits[0]])
        recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
        walls.sort()
        return {
            "index": index_type,
            "params": params,
            "search": search["params"],
            "rows": rows,
            "dim": dim,
            "whitened_from": source_dim if whitening is not None else None,
            "segments": segments,
            "build_s": round(build_s, 1),
            "load_s": round(load_s, 1),
            "memory_mb": round(memory / 2**20, 1),
            "bytes_per_row_per_dim": round(memory / rows / dim, 3),
            "index_disk_mb": round(disk_bytes(server.base) / 2**20, 1),
            "recall_at_10": round(recall, 4),
            "p50_ms": round(statistics.median(walls), 2),
            "p99_ms": round(walls[min(len(walls) - 1, int(len(walls) * 0.99))], 2),
        }
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed for one index build")
    parser.add_argument("--types", nargs="+", default=["HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "SCANN", "DISKANN"])
    parser.add_argument("--server-defaults", action="store_true", help="keep the template's sealing and compaction")
    parser.add_argument(
        "--whiten", type=int, metavar="D", help="store a whitened D-d derived version of the --dim rows (imsim.whitening)"
    )
    args = parser.parse_args()
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its reconnect thread shouts while a server restarts
    import faiss

    data = np.concatenate(list(clustered(args.rows, args.dim, seed=1)))
    rng = np.random.default_rng(3)  # queries: stored rows moved a little (an edited copy looks like this)
    picked = data[rng.choice(len(data), args.queries, replace=False)]
    queries = picked + 0.3 * rng.normal(size=picked.shape).astype(np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    whitening = None
    if args.whiten:  # learned as `imsim store whiten` learns it: from the stored rows (here the first 100k)
        whitening = learn(data[:100_000], args.whiten)
        data = np.concatenate([whitening.apply(data[i : i + 50_000]) for i in range(0, len(data), 50_000)])
        queries = whitening.apply(queries)
    exact = faiss.IndexFlatIP(data.shape[1])
    exact.add(data)
    _, truth = exact.search(queries.astype(np.float32), 10)
    del data, exact
    edits = () if args.server_defaults else FULL_SEGMENTS
    layout = "server defaults" if args.server_defaults else "full segments, no auto compaction"
    stored = f"{args.dim}-d whitened to {args.whiten}-d" if whitening else f"{args.dim}-d"
    print(f"{args.rows:,} rows of {stored}, {args.queries} queries, recall@10 against exact; {layout}", flush=True)
    for kind in args.types:
        try:
            print(json.dumps(measure(kind, args.rows, args.dim, queries, truth, args.timeout, edits, whitening)), flush=True)
        except Exception as exc:  # one kind the server refuses does not stop the others
            print(json.dumps({"index": kind, "rows": args.rows, "error": str(exc).splitlines()[0][:300]}), flush=True)


if __name__ == "__main__":
    main()
