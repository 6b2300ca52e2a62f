"""Query latency of a fused two-collection search on the embedded store, excluding query embedding.

Fills a CLIP-sized (512-d) and a DINOv2-sized (768-d) collection with ``--rows`` rows each (random unit
vectors; the same ids in both, as real ingests give), then times ``Client.search_vectors`` (both
collections searched, missing per-model scores filled in, fused) for ``--queries`` stored vectors, and
prints p50 / p95 / mean in milliseconds, with each collection's single search beside it and its
recall@k against exact brute-force top-k (random vectors are the hardest case for an ANN index).

    python benchmarks/search_latency.py --rows 100000 --queries 300 [--uri http://127.0.0.1:19530] [--consistency Strong]

Default store: a Milvus Lite file in a temp folder (the embedded default); ``--uri`` measures another.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from imsim.models.base import ModelInfo
from imsim.query import Client
from imsim.settings import Settings
from imsim.store import VectorStore


class FixedModel:
    """Stands in for a loaded model: only its identity is used (queries are stored vectors, nothing is embedded)."""

    def __init__(self, name: str, dim: int):
        self.info = ModelInfo(name=name, source=f"bench-{name}", revision="local-000000000000", dim=dim, supports_text=False)
        self.dim = dim


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--uri", default="", help="Milvus URI (default: a new Milvus Lite file)")
    parser.add_argument("--index", default="auto", help="IMSIM_INDEX_TYPE for the collections")
    parser.add_argument("--fusion", default="rrf")
    parser.add_argument("--ef", type=int, default=0, help="IMSIM_HNSW_EF_SEARCH (default: the setting's default)")
    parser.add_argument(
        "--consistency",
        default="",
        help="comma-separated IMSIM_SEARCH_CONSISTENCY levels to time (default: the setting's default)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="imsim-latency-"))
    settings = Settings(
        data_dir=tmp,
        milvus_uri=args.uri or str(tmp / "latency.db"),
        collection_prefix="latency",
        index_type=args.index,
        models="clip,dinov2",
        **({"hnsw_ef_search": args.ef} if args.ef else {}),
    )
    levels = args.consistency.split(",") if args.consistency else [settings.search_consistency]
    store = VectorStore(settings)
    models = {"clip": FixedModel("clip", 512), "dinov2": FixedModel("dinov2", 768)}
    rng = np.random.default_rng(0)
    ids = [f"{i:032x}" for i in range(args.rows)]
    collections, samples, stored = {}, {}, {}
    for name, model in models.items():
        collection = store.ensure_collection(model.info)
        collections[name] = collection
        t0 = time.perf_counter()
        parts = []
        # A server keeps the collections between runs: the same seeded rows are already there, reuse them.
        reuse = not store.is_lite and store.count(collection) == args.rows
        for start in range(0, args.rows, 5000):
            vectors = rng.normal(size=(min(5000, args.rows - start), model.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            parts.append(vectors)
            rows = [
                {
                    "id": ids[start + i],
                    "path": f"/bench/{start + i}.jpg",
                    "sha256": "",
                    "width": 1,
                    "height": 1,
                    "file_size": 1,
                    "mtime": 0.0,
                    "model_id": model.info.source,
                    "model_revision": model.info.revision,
                    "ingested_at": 0,
                    "job_id": "",
                    "vector": v.tolist(),
                }
                for i, v in enumerate(vectors)
            ]
            if not reuse:
                store.upsert(collection, rows, batch=5000)
            if start == 0:
                samples[name] = vectors[: args.queries]
        stored[name] = np.concatenate(parts)
        store.flush(collection)  # as every finished ingest does: sealed segments are indexed
        what = "reused (same seed)" if reuse else f"in {time.perf_counter() - t0:.1f}s"
        print(f"{name}: {args.rows:,} rows of {model.dim}-d {what}; index {store.describe_index_type(collection)}")
    for name, collection in collections.items():
        waited = wait_indexed(store, collection)
        if waited >= 1:
            print(f"{name}: index built {waited:.0f}s after the flush")

    def timed(fn) -> list[float]:  # noqa: ANN001
        out = []
        for i in range(args.queries):
            t0 = time.perf_counter()
            fn(i)
            out.append(1000 * (time.perf_counter() - t0))
        return out

    # Recall@k of each collection's index against exact (brute-force) top-k over the same vectors.
    recall = {}
    for n in models:
        exact = np.argsort(-(samples[n] @ stored[n].T), axis=1)[:, : args.k]
        found = store.search(collections[n], samples[n], args.k)
        recall[n] = float(
            np.mean([len({ids[j] for j in exact[i]} & {h.id for h in found[i]}) / args.k for i in range(len(found))])
        )
    backend = "Milvus Lite file" if store.is_lite else f"{args.uri} ({store.server_version})"
    print(
        f"\n{args.rows:,} rows per collection, {args.queries} queries, k={args.k}, {backend}, "
        f"index {store.describe_index_type(collections['clip'])}"
    )
    print(f"{'what':<34} {'consistency':<11} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'recall@k':>9}")
    for level in levels:
        client = Client(settings.model_copy(update={"search_consistency": level}), models=models, store=store)  # type: ignore[arg-type]
        for _ in range(20):  # warm-up: load, caches, first index use
            client.search_vectors({n: samples[n][0] for n in models}, k=args.k, fusion=args.fusion)
        fused = timed(
            lambda i, client=client: client.search_vectors({n: samples[n][i] for n in models}, k=args.k, fusion=args.fusion)
        )
        single = {
            n: timed(lambda i, n=n, level=level: store.search(collections[n], samples[n][i : i + 1], args.k, consistency=level))
            for n in models
        }
        rows = [(f"fused search ({args.fusion}, 2 collections)", fused, "")]
        rows += [(f"{n} search alone", v, f"{recall[n]:.3f}") for n, v in single.items()]
        for label, values, r in rows:
            print(
                f"{label:<34} {level:<11} {percentile(values, 50):8.1f} {percentile(values, 95):8.1f} "
                f"{statistics.mean(values):8.1f} {r:>9}"
            )
    store.close()


def wait_indexed(store: VectorStore, collection: str, timeout: float = 1800) -> float:
    """On a server the index is built after the flush, in the background (until then, segments are searched by
    brute force): wait until no row is pending, so the timings are of the index. Returns seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        state = store.client.describe_index(collection, "vector")
        if "pending_index_rows" not in state or (
            int(state.get("pending_index_rows", 0)) == 0 and int(state.get("indexed_rows", 0)) >= int(state.get("total_rows", 0))
        ):
            return time.perf_counter() - t0
        time.sleep(2)
    raise TimeoutError(f"{collection}: index not built after {timeout:.0f}s")


if __name__ == "__main__":
    main()
