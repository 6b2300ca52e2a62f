"""The per-model Milvus collections on a real Milvus Lite file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imsim.errors import DimensionMismatch
from imsim.store import METADATA_FIELDS, VectorStore


def test_collection_is_self_describing(settings, models):
    store = VectorStore(settings)
    name = store.ensure_collection(models["clip"].info)
    assert name == f"{settings.collection_prefix}_tiny_clip"
    desc = store.describe(name)
    fields = {f["name"] for f in desc["fields"]}
    assert {"id", "vector", *METADATA_FIELDS} <= fields
    props = store.properties(name)
    assert props["model"] == "clip" and props["source"] == models["clip"].info.source
    assert props["revision"] == models["clip"].info.revision and props["dim"] == "32" and props["metric"] == "COSINE"
    assert props["index"].startswith("HNSW")
    assert store.collections() == [name]
    store.close()


def test_dimension_mismatch_never_touches_existing_data(settings, models):
    store = VectorStore(settings)
    info = models["clip"].info
    name = store.ensure_collection(info)
    store.upsert(name, [{"id": "a", "path": "/a", "sha256": "", "width": 1, "height": 1, "file_size": 1, "mtime": 0.0,
                         "model_id": "m", "model_revision": "r", "ingested_at": 0, "job_id": "", "vector": [1.0] + [0.0] * 31}])
    wider = dataclasses.replace(info, dim=64)
    with pytest.raises(DimensionMismatch, match="holds 32-d vectors but the model produces 64-d"):
        store.ensure_collection(wider)
    assert store.count(name) == 1 and store.dimension(name) == 32
    store.close()


def test_upsert_is_idempotent_and_search_finds_itself(settings, models):
    store = VectorStore(settings)
    name = store.ensure_collection(models["clip"].info)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{"id": f"id{i}", "path": f"/img/{i}.jpg", "sha256": "", "width": 1, "height": 1, "file_size": 1, "mtime": 0.0,
             "model_id": "m", "model_revision": "r", "ingested_at": 0, "job_id": "j", "vector": v.tolist()} for i, v in enumerate(vecs)]
    store.upsert(name, rows)
    store.upsert(name, rows)
    assert store.count(name) == 20
    hits = store.search(name, vecs[[3, 7]], k=3)
    assert [h[0].id for h in hits] == ["id3", "id7"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5) and hits[0][0].fields["path"] == "/img/3.jpg"
    got = store.get_vectors(name, ["id5", "nope"])
    assert list(got) == ["id5"] and np.allclose(got["id5"], vecs[5], atol=1e-6)
    assert store.search(name, vecs[:1], k=5, filter='path like "/img/1%"')[0][0].fields["path"].startswith("/img/1")
    store.close()
