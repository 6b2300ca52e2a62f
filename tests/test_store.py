"""The per-model Milvus collections on a real Milvus Lite file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imsim.errors import DimensionMismatch
from imsim.store import FIELDS, METADATA_FIELDS, VectorStore

from .support.rows import row


def test_collection_is_self_describing(settings, models):
    store = VectorStore(settings)
    info = models["clip"].info
    name = store.versions.ensure_collection(info)
    assert name == f"{settings.collection_prefix}_clip_{info.version_tag}"  # the version tag within Attu's ~20 characters
    desc = store.versions.describe(name)
    fields = {f["name"] for f in desc["fields"]}
    assert {"id", "vector", *METADATA_FIELDS} <= fields
    props = store.versions.properties(name)
    assert props["model"] == "clip" and props["source"] == info.source and props["version"] == info.version_tag
    assert props["revision"] == info.revision and props["dim"] == "32" and props["metric"] == "COSINE"
    assert props["index"].startswith("HNSW")
    config = store.versions.model_config(name, type(info.config))
    assert config is not None and config == info.config
    assert config.model_dump()["model"] == info.source and config.model_dump()["revision"] == "main"
    assert store.versions.collections() == [name]
    assert store.versions.active_collection("clip") == name  # a model's first version becomes the active one
    store.close()


def _row(i: int, dim: int) -> dict:
    return row(f"id{i}", f"/img/{i}.jpg", [1.0] + [0.0] * (dim - 1))


def test_a_new_dimension_is_a_new_version_and_the_old_collection_is_untouched(settings, models):
    store = VectorStore(settings)
    info = models["clip"].info
    name = store.versions.ensure_collection(info)
    store.rows.upsert(name, [_row(0, 32)])
    wider = dataclasses.replace(info, dim=64)
    other = store.versions.ensure_collection(wider)
    assert other != name and store.versions.dimension(other) == 64
    assert (
        store.rows.count(name) == 1 and store.versions.dimension(name) == 32 and store.versions.active_collection("clip") == name
    )
    store.close()


def test_a_foreign_collection_under_our_name_is_refused_and_kept(settings, models):
    """A collection imsim did not make (another tool, an older layout) with another dimension is never altered."""
    from pymilvus import DataType, MilvusClient

    store = VectorStore(settings)
    info = models["clip"].info
    name = store.versions.collection_name(info)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    for field, dtype, kwargs, _ in FIELDS:
        schema.add_field(field, getattr(DataType, dtype), **kwargs)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=64)
    index = store.connection.client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="COSINE")
    store.connection.client.create_collection(name, schema=schema, index_params=index)
    store.connection.client.load_collection(name)
    store.rows.upsert(name, [_row(0, 64)])
    with pytest.raises(DimensionMismatch, match="holds 64-d vectors but the model produces 32-d"):
        store.versions.ensure_collection(info)
    assert store.rows.count(name) == 1 and store.versions.dimension(name) == 64
    store.close()


def test_upsert_is_idempotent_and_search_finds_itself(settings, models):
    store = VectorStore(settings)
    name = store.versions.ensure_collection(models["clip"].info)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [row(f"id{i}", f"/img/{i}.jpg", v, job_id="j") for i, v in enumerate(vecs)]
    store.rows.upsert(name, rows)
    store.rows.upsert(name, rows)
    assert store.rows.count(name) == 20
    hits = store.searching.search(name, vecs[[3, 7]], k=3)
    assert [h[0].id for h in hits] == ["id3", "id7"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5) and hits[0][0].fields["path"] == "/img/3.jpg"
    got = store.rows.get_vectors(name, ["id5", "nope"])
    assert list(got) == ["id5"] and np.allclose(got["id5"], vecs[5], atol=1e-6)
    assert store.searching.search(name, vecs[:1], k=5, filter='path like "/img/1%"')[0][0].fields["path"].startswith("/img/1")
    store.close()
