"""Whitened versions in production (`imsim models whiten`): learned from stored vectors, written from them, kept up to
date by ingest and deletes, searched like any version; and the artifacts that hold their transforms. Milvus Lite file."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from imsim.client.local import Client
from imsim.errors import StoreError
from imsim.ingest import Ingestor, ingest_local
from imsim.maintenance import delete, resolve
from imsim.sources.paths import discover
from imsim.store import VectorStore, derived
from imsim.store.artifacts import PART_BYTES, Artifacts
from imsim.store.mirror import Checkpoints
from imsim.whitening import learn


@pytest.fixture()
def stored(settings, models, image_folder):
    """The sample photos and flags ingested with the tiny CLIP and DINOv2 into a Lite file."""
    store = VectorStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    files = discover([image_folder]).files
    ingest_local(files, settings, ingestor=ingestor)
    yield settings, store, ingestor, files
    ingestor.close()
    store.close()


def test_a_whitened_version_is_learned_written_verified_and_described(stored):
    settings, store, ingestor, files = stored
    base = ingestor.collections["dinov2"]
    report = derived.whiten(store, base, settings.data_dir, dim=8)
    assert report.verified and report.rows == report.base_rows == len(files) and report.written == len(files)
    assert report.sampled == report.agreeing == len(files)
    name = report.collection
    assert name != base and name.startswith(f"{settings.collection_prefix}_dinov2_") and store.versions.dimension(name) == 8
    props = store.versions.properties(name)
    assert props["derived_from"] == base and props["model"] == "dinov2" and props["variant"] == "pcaw8"
    assert props["transform_sha"] == report.whitening.digest and props["version"] == name.rsplit("_", 1)[1]
    assert "whitened from " + base in props["description"] and props["description"].startswith("dinov2 pcaw8 · version ")
    assert derived.base_of(store, name) == base and derived.base_of(store, base) is None
    assert {c: w.digest for c, w in store.followers(base).items()} == {name: report.whitening.digest}
    # the stored vectors are the base's, whitened by the stored transform (learned on every stored row)
    ids = [r["id"] for rows in store.rows.iter_rows(base, output_fields=["id"]) for r in rows]
    want = store.rows.get_vectors(base, ids)
    got = store.rows.get_vectors(name, ids)
    expected = learn(np.stack([want[i] for i in ids]), dim=8).apply(np.stack([want[i] for i in ids]))
    np.testing.assert_allclose(np.stack([got[i] for i in ids]), expected, atol=1e-5)
    # running it again learns nothing new and writes nothing: the finished version is compared, not rewritten
    again = derived.whiten(store, base, settings.data_dir, dim=8)
    assert again.collection == name and again.written == 0 and again.verified


def test_queries_on_an_active_whitened_version_rank_as_the_whitened_vectors_do(stored, models):
    settings, store, ingestor, files = stored
    base = ingestor.collections["dinov2"]
    report = derived.whiten(store, base, settings.data_dir, dim=8)
    store.versions.activate("dinov2", report.collection)
    with Client(settings, store=store) as client:  # follows the alias: the base model, then the stored transform
        assert client.models.collection("dinov2") == report.collection
        model = client.models.model("dinov2")
        assert model.info.dim == 8 and store.versions.collection_name(model.info) == report.collection
        query = files[2]
        hits = client.search(query, k=5, models="dinov2", fusion="none")
        raw = client.models.embed(query, "dinov2")["dinov2"]
    assert hits[0].path == query and hits[0].score == pytest.approx(1.0, abs=1e-4)
    with Client(settings, embedders={"dinov2": models["dinov2"]}, store=store) as plain:
        unwhitened = plain.models.embed(query, "dinov2")["dinov2"]
    np.testing.assert_allclose(raw, report.whitening.apply(unwhitened[None])[0], atol=1e-5)
    vectors = store.rows.get_vectors(report.collection, [h.id for h in hits])
    for hit in hits:
        assert hit.score == pytest.approx(float(vectors[hit.id] @ raw), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_ingest_and_delete_keep_a_whitened_version_in_step(stored, tmp_path):
    settings, store, ingestor, files = stored
    base = ingestor.collections["clip"]
    name = derived.whiten(store, base, settings.data_dir).collection
    whitening = derived.transform(store, name)
    new = tmp_path / "new.jpg"
    shutil.copyfile(files[0], new)
    fresh = Ingestor(settings, embedders=ingestor.models, store=store)  # a worker that starts after the whitening
    try:
        assert ingest_local([str(new)], settings, ingestor=fresh).done == 1
        assert store.rows.count(name) == store.rows.count(base) == len(files) + 1
        from imsim.sources.names import path_id

        row = path_id(str(new))
        np.testing.assert_allclose(
            store.rows.get_vectors(name, [row])[row],
            whitening.apply(store.rows.get_vectors(base, [row])[row][None])[0],
            atol=1e-6,
        )
        # a touched file is restamped, not re-embedded: the derived row gets the new file facts too
        os.utime(new, (1_600_000_000, 1_600_000_000))
        assert ingest_local([str(new)], settings, ingestor=fresh).updated == 1
        assert store.rows.get(name, [row], ["mtime"])[row]["mtime"] == 1_600_000_000.0
    finally:
        fresh.close()
    removed = delete(store, [resolve(store, str(new))])
    assert removed[name] == 1 and store.rows.count(name) == store.rows.count(base) == len(files)


def test_a_stopped_write_resumes_and_a_later_run_catches_up(stored):
    settings, store, ingestor, files = stored
    base = ingestor.collections["clip"]
    whitening = derived.learn(store, base)
    name = derived.register(store, base, whitening)
    checkpoints = Checkpoints(settings.data_dir, f"derived:{store.uri}")
    calls = []

    def stop_after_first(stage, done, total):
        calls.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        derived.write(store, base, name, whitening, checkpoints, on_progress=stop_after_first)
    first = store.rows.count(name)
    assert 0 < first < len(files) or derived.READ_BATCH >= len(files)
    resumed = derived.write(store, base, name, whitening, checkpoints)
    assert resumed.verified and resumed.written == len(files) - first
    # rows removed from the derived side behind its back (or a worker that never knew it) are found by the next run
    some = [r["id"] for rows in store.rows.iter_rows(name, output_fields=["id"]) for r in rows][:5]
    store.rows.delete(name, some)
    caught_up = derived.whiten(store, base, settings.data_dir)
    assert caught_up.collection == name and caught_up.written == 5 and caught_up.verified


def test_whitening_learns_from_a_bounded_sample_and_refuses_what_it_cannot_do(stored):
    settings, store, ingestor, files = stored
    base = ingestor.collections["clip"]
    assert derived.learn(store, base, sample=10).rows == 10
    name = derived.register(store, base, derived.learn(store, base, sample=10))
    with pytest.raises(StoreError, match="itself a derived version"):
        derived.register(store, name, derived.learn(store, base))
    with pytest.raises(StoreError, match="cannot apply"):
        derived.register(store, ingestor.collections["dinov2"], derived.learn(store, base))
    store.drop(name)  # the transform goes with its collection
    assert Artifacts(store).get(name) is None and name not in store.versions.collections()


def test_artifacts_hold_large_blobs_in_parts_and_check_them(settings):
    with VectorStore(settings) as store:
        artifacts = Artifacts(store)
        assert artifacts.get("nothing") is None
        blob = np.random.default_rng(0).bytes(2 * PART_BYTES + 123)
        stored = artifacts.put("big", "test", blob, {"why": "parts"})
        back = artifacts.get("big")
        assert back is not None and back.data == blob and back.sha256 == stored.sha256 and back.meta == {"why": "parts"}
        artifacts.put("big", "test", b"short")  # a shorter replacement leaves no stale parts behind
        assert artifacts.get("big").data == b"short"  # type: ignore[union-attr]
        assert store.rows.count(artifacts.name, 'name == "big"') == 1
        artifacts.put("other", "note", b"x")
        assert sorted(a.name for a in artifacts.list()) == ["big", "other"] and [a.name for a in artifacts.list("note")] == [
            "other"
        ]
        store.connection.call(
            "upsert", artifacts.name, [{**store.rows.get(artifacts.name, ["other#0"], ["*"])["other#0"], "data": "eQ=="}]
        )
        with pytest.raises(StoreError, match="checksum"):
            artifacts.get("other")
        with pytest.raises(StoreError, match="without '#'"):
            artifacts.put("a#b", "test", b"")
        artifacts.delete("big")
        assert artifacts.get("big") is None
