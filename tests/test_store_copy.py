"""`imsim store copy`: every collection version from Milvus Lite to a real Milvus server, without re-embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imsim.client.local import Client
from imsim.expr import Where
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.paths import discover
from imsim.store import VectorStore
from imsim.store.copy import Checkpoints, copy_collection, copy_store

from .support.servers import SAMPLES, settings_env
from .support.settings import make_settings


class Interrupted(Exception):
    pass


def test_a_lite_store_is_copied_to_a_server_resumably_and_verified(tiny_model_dirs, tmp_path, models, milvus_server_uri):
    lite = make_settings(tiny_model_dirs, tmp_path / "data")
    source = VectorStore(lite)
    ingestor = Ingestor(lite, embedders=models, store=source)
    files = discover([SAMPLES]).files
    ingest_local(files, lite, ingestor=ingestor, tags={"set": "samples"})
    ingestor.close()
    server = lite.replace(milvus_uri=milvus_server_uri, index_type="IVF_SQ8", expected_rows=40_000)
    target = VectorStore(server)
    names = source.versions.collections()
    assert len(names) == 2

    # Interrupted after its first batch, the copy resumes after the last row it wrote.
    checkpoints = Checkpoints(lite.data_dir, target.uri)

    def stop(name: str, done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        copy_collection(source, target, names[0], checkpoints, batch=10, on_progress=stop)
    assert target.rows.count(names[0]) == 10
    report = copy_store(source, target, lite.data_dir, batch=10)
    first = next(c for c in report.collections if c.name == names[0])
    assert (first.rows, first.copied, first.target_rows) == (38, 28, 38)  # the 10 already there were not sent again
    assert report.verified and all(c.sampled == c.identical == 38 for c in report.collections)
    assert report.aliases == {source.versions.alias_name(m): source.versions.active_collection(m) for m in ("clip", "dinov2")}

    for name in names:  # out of Lite (always HNSW) the server's collection gets the index the server's settings choose
        assert source.versions.describe_index(name)[0] == "HNSW" and target.versions.describe_index(name)[0] == "IVF_SQ8"
        assert target.versions.properties(name)["index"] == "IVF_SQ8 {'nlist': 800}"
        assert "(IVF_SQ8)" in next(f["description"] for f in target.versions.describe(name)["fields"] if f["name"] == "vector")
        same = {"description": "", "index": ""}
        assert target.versions.properties(name) | same == source.versions.properties(name) | same
        description = target.versions.describe(name)["description"]
        assert description.startswith(
            f"{source.versions.properties(name)['model']} · version {source.versions.properties(name)['version']}"
        )
    # the server answers like the Lite store did, from the copied vectors and rows (tags included)
    with Client(server, embedders=models, store=target) as on_server, Client(lite, embedders=models, store=source) as on_lite:
        for path in files[:5]:
            want = on_lite.search(path, k=3)
            got = on_server.search(path, k=3)
            assert [h.path for h in got][:1] == [h.path for h in want][:1] == [path]
            assert np.allclose([h.scores["clip"] for h in got], [h.scores["clip"] for h in want], atol=1e-5)
        tagged = on_server.search(files[0], k=40, where=Where(tags={"set": "samples"}))
        assert len(tagged) == 38
    # a second copy writes nothing again and still verifies
    again = copy_store(source, target, lite.data_dir, batch=10)
    assert again.verified and all(c.copied == 0 for c in again.collections)
    source.close()
    target.close()


def test_a_copy_run_again_brings_the_target_up_to_date_with_everything_the_store_owns(
    tiny_model_dirs, tmp_path, models, milvus_server_uri
):
    """The migration users do: copy while Lite is in use, then again just before switching. Rows added after the first
    copy sort anywhere among its ids (path hashes), rows deleted must go, and the store's own collections (the "not a
    duplicate" marks, a whitened version and its transform) come along; a --restart killed in the first collection and
    then resumed must still bring the second up to date. Before: 0 copied, [NOT VERIFIED], marks left behind."""
    from imsim.maintenance import delete, resolve
    from imsim.store import derived
    from imsim.store.artifacts import Artifacts
    from imsim.store.marks import Mark, Marks

    lite = make_settings(tiny_model_dirs, tmp_path / "data", collection_prefix="mig" + tmp_path.name[-6:].replace("-", ""))
    source = VectorStore(lite)
    ingestor = Ingestor(lite, embedders=models, store=source)
    photos = discover([SAMPLES / "photos"]).files
    flags = discover([SAMPLES / "flags"]).files
    ingest_local(photos, lite, ingestor=ingestor)
    whitened = derived.whiten(source, ingestor.collections["dinov2"], lite.data_dir).collection
    source.versions.activate("dinov2", whitened)
    ids = [r["id"] for rows in source.rows.iter_rows(ingestor.collections["clip"], output_fields=["id"]) for r in rows]
    Marks(source).add(Mark(ids[0], ids[1], path_a="a.jpg", path_b="b.jpg"))
    target = VectorStore(lite.replace(milvus_uri=milvus_server_uri))
    first = copy_store(source, target, lite.data_dir)
    names = {c.name for c in first.collections}
    assert first.verified and {f"marks_{lite.collection_prefix}", f"artifacts_{lite.collection_prefix}", whitened} <= names
    assert Marks(target).pairs() == Marks(source).pairs() and Artifacts(target).get(whitened) is not None

    ingest_local(flags, lite, ingestor=ingestor)  # the store stays in use: 24 more rows per collection, 2 removed
    delete(source, [resolve(source, photos[0]), resolve(source, photos[1])])
    Marks(source).add(Mark(ids[2], ids[3]))
    checkpoints = Checkpoints(lite.data_dir, target.uri)
    order = [c.name for c in first.collections]

    def stop(name: str, done: int, total: int) -> None:
        if name == order[0] and done:
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_store(source, target, lite.data_dir, restart=True, on_progress=stop)
    assert checkpoints.last(order[0]) is not None and checkpoints.completed(order[1])
    second = copy_store(source, target, lite.data_dir)
    assert second.verified, [(c.name, c.rows, c.target_rows) for c in second.collections]
    by_name = {c.name: c for c in second.collections}
    for name in (ingestor.collections["clip"], ingestor.collections["dinov2"], whitened):
        assert by_name[name].rows == by_name[name].target_rows == len(photos) + len(flags) - 2
        assert source.rows.count(name) == target.rows.count(name)
    assert by_name[order[1]].synced and by_name[order[1]].copied > 0  # not skipped on the first run's checkpoint
    assert Marks(target).pairs() == Marks(source).pairs() and len(Marks(target).pairs()) == 2
    # the target answers with the whitened version, as the source does
    server = lite.replace(milvus_uri=milvus_server_uri)
    with Client(server, store=target) as on_server:
        assert on_server.models.collection("dinov2") == whitened
        assert on_server.search(flags[0], k=1, models="dinov2")[0].path == flags[0]
    ingestor.close()
    source.close()
    target.close()


def test_an_unverified_copy_says_why_and_what_to_do():
    from imsim.cli.admin import mismatch
    from imsim.store.copy import CollectionCopy

    assert "added to the source while it copied" in mismatch(CollectionCopy("c", 10, 10, 8, 8, 8))
    assert "deleted from the source" in mismatch(CollectionCopy("c", 8, 8, 10, 8, 8))
    assert "3 of 8 sampled rows differ" in mismatch(CollectionCopy("c", 8, 8, 8, 8, 5))
    assert all(
        "run `imsim store copy` again" in mismatch(CollectionCopy("c", a, 0, b, 8, s)) for a, b, s in [(1, 2, 8), (2, 1, 8)]
    )


def test_the_cli_copies_and_refuses_a_lite_target(cli, tiny_model_dirs, tmp_path, milvus_server_uri):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(SAMPLES / "flags"))
    proc = cli(env, "store", "copy", "--to", str(tmp_path / "other.db"), check=False)
    assert proc.returncode == 2 and "not a Lite file" in proc.stderr
    proc = cli(env, "store", "copy", "--to", milvus_server_uri, "--token-file", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2 and "--token-file" in proc.stderr and "No such file" in proc.stderr
    token = tmp_path / "token"
    token.write_text("")  # the test server takes no token; a token is read from a file, never the command line
    out = json.loads(cli(env, "store", "copy", "--to", milvus_server_uri, "--token-file", str(token), "--json").stdout)
    assert out["verified"] and {c["rows"] for c in out["collections"]} == {24}
