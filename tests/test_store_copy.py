"""`imsim store copy`: every collection version from Milvus Lite to a real Milvus server, without re-embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imsim.client import Client
from imsim.expr import Where
from imsim.ingest import Ingestor, ingest_local
from imsim.paths import discover
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
    server = lite.replace(milvus_uri=milvus_server_uri)
    target = VectorStore(server)
    names = source.collections()
    assert len(names) == 2

    # Interrupted after its first batch, the copy resumes after the last row it wrote.
    checkpoints = Checkpoints(lite.data_dir, target.uri)

    def stop(name: str, done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        copy_collection(source, target, names[0], checkpoints, batch=10, on_progress=stop)
    assert target.count(names[0]) == 10
    report = copy_store(source, target, lite.data_dir, batch=10)
    first = next(c for c in report.collections if c.name == names[0])
    assert (first.rows, first.copied, first.target_rows) == (38, 28, 38)  # the 10 already there were not sent again
    assert report.verified and all(c.sampled == c.identical == 38 for c in report.collections)
    assert report.aliases == {source.alias_name(m): source.active_collection(m) for m in ("clip", "dinov2")}

    for name in names:
        assert target.properties(name) | {"description": ""} == source.properties(name) | {"description": ""}
        description = target.describe(name)["description"]
        assert description.startswith(f"{source.properties(name)['model']} · version {source.properties(name)['version']}")
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


def test_the_cli_copies_and_refuses_a_lite_target(cli, tiny_model_dirs, tmp_path, milvus_server_uri):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(SAMPLES / "flags"))
    proc = cli(env, "store", "copy", "--to", str(tmp_path / "other.db"), check=False)
    assert proc.returncode == 2 and "not a Lite file" in proc.stderr
    out = json.loads(cli(env, "store", "copy", "--to", milvus_server_uri, "--json").stdout)
    assert out["verified"] and {c["rows"] for c in out["collections"]} == {24}
