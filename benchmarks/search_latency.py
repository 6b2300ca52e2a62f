"""Query latency: imsim's fused two-collection search against one raw pymilvus search, and FAISS beside them.

Fills a CLIP-sized (512-d) and a DINOv2-sized (768-d) collection with ``--rows`` rows each, the same ids in both
(as real ingests give). The vectors are **clustered** like real embeddings: each id belongs to one of
``--clusters`` topics, and each model places a topic at its own random centre with per-image spread (uniform random
vectors are the pathological case for any ANN index and no embedding looks like them). Query vectors are stored
rows, so no embedding time is included. In one run it times, per query (p50 / p95 / mean ms):

- ``raw``: one ``MilvusClient.search`` of the CLIP-sized collection (k, the same search params, ``path`` out);
- ``raw_dinov2``: the same raw search of the DINOv2-sized collection (fused needs both: their sum is its floor
  where the store serialises requests, as Milvus Lite does);
- ``store``: the same search through :meth:`imsim.store.VectorStore.search`;
- ``fused``: :meth:`imsim.client.local.Client.search_batch` (one query) over both collections (searched concurrently, missing
  per-model scores fetched, fused);
- FAISS ``IndexFlatIP`` (exact) and ``IndexHNSWFlat`` (M=16) over the same CLIP-sized vectors, in process;

and recall@k of each collection's index against exact top-k, for each ``--ef`` given (HNSW's search breadth).
It prints the targets of issue 20 with PASS/FAIL: fused ≤ 2.5x raw (same run), recall@10 ≥ 0.95, and on a server
fused p50 ≤ 20 ms.

    python benchmarks/search_latency.py --rows 100000 --queries 200                     # Milvus Lite file
    python benchmarks/search_latency.py --rows 100000 --uri http://127.0.0.1:19530      # a Milvus server
    python benchmarks/search_latency.py ... --json out.json                            # the numbers as JSON

FAISS is optional (``pip install imsim[bench]``); without it those rows are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from imsim.client.local import Client
from imsim.models.base import FamilyConfig, ModelInfo, Preprocess
from imsim.settings import load
from imsim.store import VectorStore, make_row
from imsim.store.schema import VECTOR

DIMS = {"clip": 512, "dinov2": 768}


class FixedModel:
    """Stands in for a loaded model: only its identity is used (queries are stored vectors, nothing is embedded)."""

    def __init__(self, name: str, dim: int):
        self.preprocess = Preprocess(224, 224, 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.device = "cpu"
        self.info = ModelInfo(
            name=name,
            source=f"bench-{name}",
            revision="local-000000000000",
            dim=dim,
            supports_text=False,
            config=FamilyConfig(),
            preprocess=self.preprocess,
        )

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the latency benchmark searches stored vectors only")

    def embed_texts(self, texts: Any) -> np.ndarray:
        raise NotImplementedError("the latency benchmark searches stored vectors only")


def clustered(rows: int, dim: int, topics: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """Unit vectors around one random centre per topic: ``normalise(centre[topic] + spread * noise / sqrt(dim))``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(topics.max()) + 1, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, 20_000):
        part = topics[start : start + 20_000]
        v = centres[part] + spread * rng.normal(size=(len(part), dim)).astype(np.float32) / np.sqrt(dim)
        out[start : start + len(part)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def image(row_id: str, i: int) -> SimpleNamespace:
    """The file facts a stored row carries, for a synthetic image."""
    return SimpleNamespace(id=row_id, path=f"/bench/{i}.jpg", sha256="", width=1, height=1, file_size=1, mtime=0.0)


def timed(call: Callable[[int], object], queries: int) -> list[float]:
    out = []
    for i in range(queries):
        t0 = time.perf_counter()
        call(i)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "mean": round(statistics.mean(values), 2),
    }


def wait_indexed(store: VectorStore, collection: str, timeout: float = 1800) -> float:
    """On a server the index is built after the flush, in the background (until then, segments are searched by
    brute force): wait until no row is pending, so the timings are of the index. Returns seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        state = store.versions.index_state(collection)
        pending, indexed, total = (int(state.get(k, 0)) for k in ("pending_index_rows", "indexed_rows", "total_rows"))
        if "pending_index_rows" not in state or (pending == 0 and indexed >= total):
            return time.perf_counter() - t0
        time.sleep(2)
    raise TimeoutError(f"{collection}: index not built after {timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000, help="topics the rows are drawn around")
    parser.add_argument("--spread", type=float, default=1.0, help="per-image spread around its topic's centre")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--uri", default="", help="Milvus URI (default: a new Milvus Lite file)")
    parser.add_argument("--fusion", default="rrf")
    parser.add_argument("--ef", default="64,128", help="HNSW ef values to measure recall (and latency) at")
    parser.add_argument("--json", default="", help="also write the numbers to this file")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="imsim-latency-"))
    efs = [int(e) for e in args.ef.split(",")]
    settings = load(
        {
            "data_dir": tmp,
            "milvus_uri": args.uri or str(tmp / "latency.db"),
            "collection_prefix": "latency",
            "models": "clip,dinov2",
            "env_file": tmp / "no-env-file",
            "hnsw_ef_search": efs[-1],
        }
    )
    store = VectorStore(settings)
    models = {name: FixedModel(name, dim) for name, dim in DIMS.items()}
    topics = np.random.default_rng(0).integers(0, args.clusters, size=args.rows)
    ids = [f"{i:032x}" for i in range(args.rows)]
    vectors = {name: clustered(args.rows, dim, topics, args.spread, seed=1 + i) for i, (name, dim) in enumerate(DIMS.items())}
    collections: dict[str, str] = {}
    for name, model in models.items():
        collection = store.versions.ensure_collection(model.info)
        collections[name] = collection
        reuse = not store.connection.is_lite and store.rows.count(collection) == args.rows  # a server keeps the same seeded rows
        t0 = time.perf_counter()
        if not reuse:
            for start in range(0, args.rows, 5000):
                rows = [
                    make_row(model.info, image(ids[i], i), vectors[name][i], job_id="bench")
                    for i in range(start, min(start + 5000, args.rows))
                ]
                store.rows.upsert(collection, rows, batch=5000)
        store.rows.flush(collection)  # as every finished ingest does: sealed segments are indexed
        waited = wait_indexed(store, collection)
        what = "reused (same seed)" if reuse else f"written in {time.perf_counter() - t0:.1f}s"
        print(f"{name}: {args.rows:,} clustered {model.info.dim}-d rows {what}; index built {waited:.0f}s after the flush")

    rng = np.random.default_rng(7)
    picks = rng.choice(args.rows, size=args.queries, replace=False)
    queries = {n: vectors[n][picks] for n in models}
    exact = {n: np.argsort(-(queries[n] @ vectors[n].T), axis=1)[:, : args.k] for n in models}
    out: dict[str, Any] = {
        "rows": args.rows,
        "queries": args.queries,
        "k": args.k,
        "clusters": args.clusters,
        "backend": "Milvus Lite file" if store.connection.is_lite else f"{args.uri} (Milvus {store.connection.server_version})",
        "index": store.versions.describe_index(collections["clip"])[0],
        "recall": {},
        "latency_ms": {},
    }
    raw_client = store.connection.client  # the pymilvus MilvusClient itself: what one raw search costs
    for ef in efs:
        params = {"metric_type": "COSINE", "params": {"ef": max(ef, args.k)}}
        for n in models:
            found = raw_client.search(
                collections[n], data=queries[n].tolist(), limit=args.k, search_params=params, anns_field=VECTOR
            )
            got = [{str(h["id"]) for h in hits} for hits in found]
            out["recall"][f"{n}@ef{ef}"] = round(
                float(np.mean([len({ids[j] for j in exact[n][i]} & got[i]) / args.k for i in range(args.queries)])), 4
            )
    ef = efs[-1]
    params = {"metric_type": "COSINE", "params": {"ef": max(ef, args.k)}}
    q_clip = queries["clip"]
    client = Client(settings, embedders=models, store=store)
    for i in range(10):  # warm-up: load, caches, first index use
        client.search_batch({n: queries[n][i : i + 1] for n in models}, k=args.k, fusion=args.fusion)
        raw_client.search(collections["clip"], data=[q_clip[i].tolist()], limit=args.k, search_params=params, anns_field=VECTOR)
    level = settings.search_consistency

    def raw_search(name: str, i: int) -> object:
        """One raw MilvusClient search of collection ``name`` with query ``i``: what imsim's paths are compared to."""
        return raw_client.search(
            collections[name],
            data=[queries[name][i].tolist()],
            limit=args.k,
            search_params=params,
            anns_field=VECTOR,
            output_fields=["path"],
            consistency_level=level,
        )

    runs: dict[str, list[float]] = {
        "raw": timed(lambda i: raw_search("clip", i), args.queries),
        "raw_dinov2": timed(lambda i: raw_search("dinov2", i), args.queries),
        "store": timed(
            lambda i: store.searching.search(collections["clip"], q_clip[i : i + 1], args.k, consistency=level), args.queries
        ),
        "fused": timed(
            lambda i: client.search_batch({n: queries[n][i : i + 1] for n in models}, k=args.k, fusion=args.fusion),
            args.queries,
        ),
    }
    try:
        import faiss

        flat = faiss.IndexFlatIP(DIMS["clip"])
        flat.add(vectors["clip"])
        hnsw = faiss.IndexHNSWFlat(DIMS["clip"], 16, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 200
        t0 = time.perf_counter()
        hnsw.add(vectors["clip"])
        out["faiss_hnsw_build_s"] = round(time.perf_counter() - t0, 1)
        hnsw.hnsw.efSearch = max(ef, args.k)
        runs["faiss_flat"] = timed(lambda i: flat.search(q_clip[i : i + 1], args.k), args.queries)
        runs["faiss_hnsw"] = timed(lambda i: hnsw.search(q_clip[i : i + 1], args.k), args.queries)
        _, found = hnsw.search(q_clip, args.k)
        out["recall"][f"faiss_hnsw_clip@ef{ef}"] = round(
            float(np.mean([len(set(exact["clip"][i]) & set(found[i])) / args.k for i in range(args.queries)])), 4
        )
    except ImportError:
        print("(faiss not installed: pip install imsim[bench] for the FAISS rows)")
    client.close()
    store.close()
    out["latency_ms"] = {name: summary(values) for name, values in runs.items()}
    out["fused_over_raw_p50"] = round(out["latency_ms"]["fused"]["p50"] / out["latency_ms"]["raw"]["p50"], 2)
    # the floor of any fused search: one search per collection (run concurrently, a store that serialises them
    # pays their sum); the rest is the fetch of missing per-model scores and the fusion itself
    both = out["latency_ms"]["raw"]["p50"] + out["latency_ms"]["raw_dinov2"]["p50"]
    out["fused_over_both_raw_p50"] = round(out["latency_ms"]["fused"]["p50"] / both, 2)

    print(f"\n{args.rows:,} rows per collection, {args.clusters} topics, {args.queries} queries, k={args.k}, {out['backend']}")
    print(f"index {out['index']}, ef {ef}, consistency {level}, fusion {args.fusion}")
    labels = {
        "raw": "raw pymilvus search, CLIP-sized",
        "raw_dinov2": "raw pymilvus search, DINOv2-sized",
        "store": "VectorStore.search, CLIP-sized",
        "fused": f"Client fused ({args.fusion}), 2 collections",
        "faiss_flat": "FAISS IndexFlatIP (exact), CLIP-sized",
        "faiss_hnsw": "FAISS IndexHNSWFlat M=16, CLIP-sized",
    }
    print(f"{'what':<42} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, s in out["latency_ms"].items():
        print(f"{labels[name]:<42} {s['p50']:8.2f} {s['p95']:8.2f} {s['mean']:8.2f}")
    print(f"fused / (raw CLIP-sized + raw DINOv2-sized) p50: {out['fused_over_both_raw_p50']}x")
    recalls = ", ".join(f"{name} {value:.3f}" for name, value in out["recall"].items())
    print(f"recall@{args.k} vs exact: {recalls}")
    checks = [
        (f"fused p50 <= 2.5x raw p50 ({out['fused_over_raw_p50']}x)", out["fused_over_raw_p50"] <= 2.5),
        (
            f"recall@{args.k} >= 0.95 at ef {ef}",
            all(out["recall"][f"{n}@ef{ef}"] >= 0.95 for n in models),
        ),
    ]
    if not store.connection.is_lite:
        fused_p50 = out["latency_ms"]["fused"]["p50"]
        checks.append((f"server fused p50 <= 20 ms ({fused_p50} ms)", fused_p50 <= 20))
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    out["checks"] = {what: ok for what, ok in checks}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
