"""What only a real Milvus server shows (Milvus Lite cannot): the embedded default's code path unchanged on a
server URI, descriptions kept for Attu, upsert without duplicates where ``insert`` would duplicate, server-side
aliases and deletes, and the search consistency level reaching Milvus."""

from __future__ import annotations

import time

import numpy as np
import pytest

from imsim import maintenance
from imsim.client.local import Client
from imsim.errors import StoreError
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.names import path_id
from imsim.sources.paths import discover
from imsim.store import SEARCH_CAP, VectorStore, has_iterator_v2

from .support.faults import wait_until
from .support.rows import random_rows
from .support.rows import row as make_row
from .support.settings import make_settings


@pytest.fixture()
def server_settings(tiny_model_dirs, tmp_path, milvus_server_uri):
    return make_settings(tiny_model_dirs, tmp_path / "data", milvus_uri=milvus_server_uri)


def test_ingest_search_reingest_and_delete_on_a_milvus_server(server_settings, models, image_folder):
    store = VectorStore(server_settings)
    assert not store.connection.is_lite and not store.lite_backend
    ingestor = Ingestor(server_settings, embedders=models, store=store)
    files = discover([image_folder]).files
    result = ingest_local(files, server_settings, ingestor=ingestor, job_id="server-1", seal=False)
    assert result.done == 38 and not result.failures
    collections = dict(ingestor.collections)
    assert all(store.rows.count(c) == 38 for c in collections.values())
    # the job's end seals what it wrote, without waiting for the binlogs: until then the rows sit in growing
    # segments (searched by brute force, sealed by the server only after 10 idle minutes), then the sealed segments
    # are written out and handed to the index node while the job has already ended
    assert all(rows < 38 for rows in persisted_rows(store, collections.values()).values())
    started = time.perf_counter()
    ingestor.seal()
    sealing = time.perf_counter() - started
    wait_until(lambda: set(persisted_rows(store, collections.values()).values()) == {38}, 60, "the sealed rows written")
    print(f"\nseal returned in {sealing:.3f} s; the rows were written out {time.perf_counter() - started:.1f} s after it began")

    # Self-describing in Attu: a server keeps what Lite drops.
    described = store.versions.describe(collections["dinov2"])
    info = models["dinov2"].info
    assert described["description"].startswith(
        f"dinov2 · version {info.version_tag} · 48-d COSINE HNSW(M=16, efConstruction=200) · rev {info.revision} · {info.source}"
    )
    fields = {f["name"]: f.get("description", "") for f in described["fields"]}
    assert fields["path"] and fields["vector"] and fields["sha256"]
    assert store.versions.active_collection("clip") == collections["clip"]  # the alias exists on the server

    client = Client(server_settings, embedders=models, store=store)
    for path in files[:: len(files) // 6]:
        hits = client.search(path, k=3, fusion="rrf")
        assert hits[0].path == path and hits[0].ranks == {"clip": 1, "dinov2": 1}, (path, hits[:2])

    # A server's insert would keep a second row per id; the re-ingest must leave exactly one.
    again = ingest_local(files, server_settings, ingestor=ingestor, job_id="server-2", force=True)
    assert again.done == 38
    assert all(store.rows.count(c) == 38 for c in collections.values())
    rows = store.rows.get(collections["clip"], [path_id(files[0])], output_fields=["job_id"])
    assert rows[path_id(files[0])]["job_id"] == "server-2"

    assert client.delete(files[0]) == {c: 1 for c in collections.values()}
    assert all(store.rows.count(c) == 37 for c in collections.values())

    # A bracket glob is pre-filtered on the server by one LIKE prefix per class member (its prefix-only LIKE), then
    # matched exactly: ca, ch, cn, de, dk.
    selector = maintenance.resolve(store, str(image_folder / "flags" / "[cd]*.png"))
    assert selector.filter.count(" like ") == 2
    assert maintenance.delete(store, [selector]) == {c: 5 for c in collections.values()}
    assert all(store.rows.count(c) == 32 for c in collections.values())
    ingestor.close()
    store.close()


def persisted_rows(store: VectorStore, names) -> dict[str, int]:
    """Each collection's rows in segments the server lists as persistent (sealed and written out)."""
    client = store.connection.client
    return {name: sum(s.num_rows for s in client.list_persistent_segments(name)) for name in names}


def _rows(model, vectors: np.ndarray, tag: str) -> list[dict]:
    return [
        dict(make_row(f"{tag}{i:029d}"[:32], f"/consistency/{tag}/{i}.jpg", v), model_id=model.info.source)
        for i, v in enumerate(vectors)
    ]


def test_search_consistency_reaches_the_server(server_settings, models):
    """Strong reads its own writes; Bounded (the interactive default) answers without waiting for the next time tick,
    so a row written a moment ago can be missing for ~0.2 s: only possible if the level is passed through."""
    store = VectorStore(server_settings)
    clip = models["clip"]
    collection = store.versions.ensure_collection(clip.info)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(20, clip.info.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def first_hit(client: Client, vector: np.ndarray) -> str:
        hits = client.search_batch({"clip": vector[None]}, k=1, fusion="none")[0]
        return hits[0].path if hits else ""

    strong = Client(server_settings.replace(search_consistency="Strong"), embedders=models, store=store)
    for i, row in enumerate(_rows(clip, vectors[:10], "strong")):
        store.rows.upsert(collection, [row])
        assert first_hit(strong, vectors[i]) == row["path"], f"Strong search missed the row written just before ({i})"

    bounded = Client(server_settings.replace(search_consistency="Bounded"), embedders=models, store=store)
    assert server_settings.search_consistency == "Bounded"  # the default
    missed = 0
    for i, row in enumerate(_rows(clip, vectors[10:], "bounded"), start=10):
        store.rows.upsert(collection, [row])
        missed += first_hit(bounded, vectors[i]) != row["path"]
    assert missed > 0, "every Bounded search saw a write made microseconds before: the level did not reach Milvus"
    deadline = time.time() + 10
    while first_hit(bounded, vectors[19]) != "/consistency/bounded/9.jpg" and time.time() < deadline:
        time.sleep(0.1)
    assert first_hit(bounded, vectors[19]) == "/consistency/bounded/9.jpg"
    store.close()


def test_results_past_the_cap_on_a_server_without_iterator_v2_fail_clearly(server_settings, models):
    """Milvus < 2.5.2 has only the client-side v1 search iterator, which returned 2,718 of 17,000 hits on HNSW
    (measured on this 2.3.5 server): a short list passed off as complete would lose results silently."""
    store = VectorStore(server_settings)
    collection = store.versions.ensure_collection(models["clip"].info)
    assert store.connection.server_version.startswith("v2.3.5") and not store.connection.has_search_iterator
    query = np.ones((1, models["clip"].info.dim), np.float32)
    assert store.searching.search(collection, query, SEARCH_CAP) == [[]]  # at the cap: one plain search (empty collection)
    # past the cap, but the collection holds fewer rows than the cap: one plain search returns them all, nothing lost
    assert store.searching.search(collection, query, SEARCH_CAP + 616) == [[]]
    rows, _ = random_rows(SEARCH_CAP + 616, models["clip"].info.dim)
    store.rows.upsert(collection, rows, batch=5000)
    with pytest.raises(
        StoreError, match=r"17,000 results asked for, past Milvus's top-k cap of 16,384: this server \(v2\.3\.5.*2\.5\.2"
    ):
        store.searching.search(collection, query, SEARCH_CAP + 616)
    assert [has_iterator_v2(v) for v in ("v2.5.2", "v2.6.0", "2.5.10", "v2.5.1", "v2.4.15", "Zilliz Cloud")] == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]
    store.close()


@pytest.mark.parametrize("kind", ["IVF_SQ8", "SCANN"])
def test_an_index_kind_is_built_as_configured_and_searched_with_its_parameters(server_settings, models, kind):
    """IMSIM_INDEX_TYPE reaches the server with the inverted lists sized for IMSIM_EXPECTED_ROWS, Attu's description
    names it, and searches with the kind's own parameters (nprobe, reorder_k) find each stored row first."""
    settings = server_settings.replace(index_type=kind, expected_rows=40_000, collection_prefix=f"idx_{kind.lower()}")
    store = VectorStore(settings)
    clip = models["clip"]
    collection = store.versions.ensure_collection(clip.info)
    index_type, built = store.versions.describe_index(collection)
    assert index_type == kind and int(built["nlist"]) == 800
    assert f"{kind}(nlist=800" in store.versions.properties(collection)["description"]
    rows, vectors = random_rows(3000, clip.info.dim, seed=11)
    store.rows.upsert(collection, [dict(r, model_id=clip.info.source) for r in rows], batch=1000)
    store.rows.flush(collection)
    deadline = time.monotonic() + 120  # the server really builds it (a parameter it refuses fails only here, retried for ever)
    while (state := store.versions.index_state(collection)).get("indexed_rows", 0) < 3000:
        assert state.get("state") != "Failed" and time.monotonic() < deadline, state
        time.sleep(0.5)
    client = Client(settings.replace(search_consistency="Strong"), embedders=models, store=store)
    found = client.search_batch({"clip": vectors[:20]}, k=3, fusion="none")
    assert [hits[0].path for hits in found] == [r["path"] for r in rows[:20]]
    store.close()
