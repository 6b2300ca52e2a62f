"""Paging, against real servers (the integration tier of test_paging.py)."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.client.local import Client
from imsim.expr import Where
from imsim.store import VectorStore


def _clustered_store(settings, info, count: int = 2500, seed: int = 0):
    """``count`` rows of clustered unit vectors (near-ties, like real embeddings: where an approximate index errs), a
    few of them under /data/small, written in five batches (several segments)."""
    from .support.rows import row

    store = VectorStore(settings)
    name = store.versions.ensure_collection(info)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(25, info.dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 25, count)] + 0.35 * rng.normal(size=(count, info.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [row(f"{i:032x}", f"/data/{'small' if i % 97 == 0 else 'big'}/{i}.jpg", v) for i, v in enumerate(vectors)]
    for start in range(0, count, 500):
        store.rows.upsert(name, rows[start : start + 500])
    store.rows.flush(name)
    return store, name, vectors


@pytest.mark.parametrize(
    "backend",
    ["lite", pytest.param("served", marks=pytest.mark.integration), pytest.param("server", marks=pytest.mark.integration)],
)
def test_paging_yields_every_row_once_in_the_brute_force_order(backend, tiny_model_dirs, tmp_path, models, request):
    """Paging 1,025 images gave 1,025 hits but 1,022 distinct paths (a deeper approximate search does not return the
    same first rows: slicing it by position repeated some and dropped others), and `--under DIR -k 10` returned 2-9
    of 10 on Milvus Lite's HNSW. Against an exact numpy ranking of the same vectors: every row once, in order."""
    from .support.settings import make_settings

    uri = {"lite": "", "served": "milvus_uri", "server": "milvus_server_uri"}[backend]
    settings = make_settings(
        tiny_model_dirs, tmp_path / "data", models="clip", **({"milvus_uri": request.getfixturevalue(uri)} if uri else {})
    )
    store, name, vectors = _clustered_store(settings, models["clip"].info)
    client = Client(settings, embedders={"clip": models["clip"]}, store=store)
    rng = np.random.default_rng(1)
    small = np.array([i for i in range(len(vectors)) if i % 97 == 0])
    for _ in range(4):
        query = vectors[rng.integers(0, len(vectors))] + 0.1 * rng.normal(size=vectors.shape[1]).astype(np.float32)
        query /= np.linalg.norm(query)
        exact = vectors @ query
        hits = list(store.searching.search_iter(name, query, batch=1000, consistency="Strong"))
        ids = [int(h.id, 16) for h in hits]
        assert len(ids) == len(set(ids)) == len(vectors)  # every row, once
        np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1], atol=2e-5)  # in the exact order
        under = client.search_batch({"clip": query[None]}, k=10, fusion="none", where=Where(path_prefix="/data/small"))[0]
        assert sorted(int(h.id, 16) for h in under) == sorted(small[np.argsort(-exact[small])[:10]].tolist())
    store.close()
