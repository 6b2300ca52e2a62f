"""Stale rows and deletion (``imsim sync``, ``imsim delete``), safe filter expressions, the read allow-list."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imsim import expr
from imsim.client import Client
from imsim.errors import PathNotAllowed
from imsim.names import path_id
from imsim.reading import Limits, read_file
from imsim.store import VectorStore

from .support.rows import row as make_row
from .support.servers import SAMPLES, settings_env
from .support.settings import make_settings


def rows(settings) -> dict[str, set[str]]:
    store = VectorStore(settings)
    out = {
        name: {r["path"] for batch in store.iter_rows(name, output_fields=["path"]) for r in batch}
        for name in store.collections()
    }
    store.close()
    return out


def test_sync_removes_rows_of_deleted_files_and_re_embeds_changed_ones(cli, tiny_model_dirs, tmp_path, image_folder, milvus_uri):
    settings = make_settings(tiny_model_dirs, tmp_path / "data", milvus_uri=milvus_uri)  # the test reads while the CLI writes
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(image_folder))
    before = rows(settings)
    assert len(before) == 2 and all(len(paths) == 38 for paths in before.values())

    gone = [image_folder / "flags" / "fr.png", image_folder / "photos" / "coffee.jpg"]
    for path in gone:
        path.unlink()
    changed = image_folder / "photos" / "chelsea.jpg"
    shutil.copy(SAMPLES / "photos" / "astronaut.jpg", changed)
    plan = json.loads(cli(env, "sync", "--dry-run", "--json", str(image_folder)).stdout)
    assert plan["missing"] == 2 and sorted(plan["missing_sample"]) == sorted(map(str, gone))
    assert set(plan["would_remove"].values()) == {2}
    assert rows(settings) == before  # a dry run changes nothing

    out = json.loads(cli(env, "sync", "--local", "--json", str(image_folder)).stdout)
    assert (out["done"], out["skipped"], out["failed"]) == (1, 35, 0)  # only the changed file is embedded again
    assert out["read_bytes"] == changed.stat().st_size  # the unchanged ones were not even read
    after = rows(settings)
    assert all(paths == before[name] - set(map(str, gone)) for name, paths in after.items())
    store = VectorStore(settings)
    for name in store.collections():
        sha = store.get(name, [path_id(changed)], output_fields=["sha256"])[path_id(changed)]["sha256"]
        assert sha == read_file(changed).sha256
    store.close()


def test_delete_by_id_path_folder_and_glob_from_every_collection(cli, tiny_model_dirs, tmp_path, image_folder, milvus_uri):
    settings = make_settings(tiny_model_dirs, tmp_path / "data", milvus_uri=milvus_uri)
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(image_folder))
    coffee = str(image_folder / "photos" / "coffee.jpg")
    chelsea = str(image_folder / "photos" / "chelsea.jpg")

    out = json.loads(cli(env, "delete", "--yes", "--json", path_id(coffee), chelsea).stdout)
    assert out["matched"] == 2 and set(out["removed"].values()) == {2}
    out = json.loads(cli(env, "delete", "--yes", "--json", str(image_folder / "flags" / "[a-d]*.png")).stdout)
    deleted_flags = {p for p in os.listdir(image_folder / "flags") if p[0] in "abcd"}
    assert out["matched"] == len(deleted_flags) > 0
    out = json.loads(cli(env, "delete", "--yes", "--json", str(image_folder / "photos")).stdout)
    assert out["matched"] == 12  # the folder's 14 photos less the 2 already deleted

    left = rows(settings)
    expected = {str(image_folder / "flags" / p) for p in os.listdir(image_folder / "flags")} - {
        str(image_folder / "flags" / p) for p in deleted_flags
    }
    assert all(paths == expected for paths in left.values())
    proc = cli(env, "delete", "--yes", str(image_folder / "photos"), check=False)
    assert proc.returncode == 2 and "no stored rows match" in proc.stderr


def test_selection_never_crosses_into_a_sibling_folder(tiny_model_dirs, tmp_path, models):
    """LIKE 'root%' also matches 'root_2/...'; selection re-checks the path exactly."""
    from imsim.ingest import Ingestor, ingest_local
    from imsim.maintenance import select

    for folder in ("set", "set_2", "set%x"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLES / "photos" / "coffee.jpg", tmp_path / folder / "a.jpg")
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    store = VectorStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    ingest_local([str(tmp_path / f / "a.jpg") for f in ("set", "set_2", "set%x")], settings, ingestor=ingestor)
    assert set(select(store, [str(tmp_path / "set")]).values()) == {str(tmp_path / "set" / "a.jpg")}
    assert set(select(store, [str(tmp_path / "set%x")]).values()) == {str(tmp_path / "set%x" / "a.jpg")}
    # The client takes one selector as a plain string: it must not become one selector per character ("/" = all).
    client = Client(settings, embedders=models, store=store)
    assert client.delete(str(tmp_path / "set" / "a.jpg")) == {c: 1 for c in ingestor.collections.values()}
    assert all(store.count(c) == 2 for c in ingestor.collections.values())
    ingestor.close()
    store.close()


def test_expressions_quote_user_values():
    hostile = '/x" or id != "'
    assert expr.eq("path", hostile) == r'path == "/x\" or id != \""'
    assert expr.like_prefix("path", 'a\\b"_%') == r'path like "a\\\\b\"\\_\\%%"'  # LIKE wildcards escaped too
    assert expr.like_prefix("path", "a_b%c", "prefix") == 'path like "a_b%"'  # Milvus 2.3: a literal prefix only
    assert expr.both(expr.eq("width", 3), "", expr.eq("job_id", "j")) == '(width == 3) and (job_id == "j")'
    with pytest.raises(ValueError):
        expr.eq("path or 1", "x")
    with pytest.raises(ValueError):
        expr.number(float("nan"))
    assert expr.path_under("/a/b/c.jpg", "/a/b") and not expr.path_under("/a/bc/d.jpg", "/a/b")


def test_hostile_path_is_one_string_to_milvus(settings, models):
    from imsim.ingest import Ingestor

    store = VectorStore(settings)
    name = Ingestor(settings, embedders={"clip": models["clip"]}, store=store).collections["clip"]
    row = make_row("x" * 32, '/x" or id != "', [1.0] + [0.0] * (models["clip"].info.dim - 1))
    store.upsert(name, [row])
    other = dict(row, id="y" * 32, path="/y.jpg")
    store.upsert(name, [other])
    found = [r for batch in store.iter_rows(name, expr.eq("path", row["path"]), ["path"]) for r in batch]
    assert [r["path"] for r in found] == [row["path"]]
    store.close()


def test_allowed_roots_follow_symlinks(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    shutil.copy(SAMPLES / "photos" / "coffee.jpg", inside / "ok.jpg")
    shutil.copy(SAMPLES / "photos" / "coffee.jpg", outside / "secret.jpg")
    os.symlink(outside / "secret.jpg", inside / "link.jpg")
    roots = [os.path.realpath(inside)]
    limits = Limits(allowed_roots=tuple(roots))
    assert read_file(inside / "ok.jpg", limits).file_size > 0
    for path in (inside / "link.jpg", outside / "secret.jpg", inside / ".." / "out" / "secret.jpg"):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
            read_file(path, limits)
    assert read_file(outside / "secret.jpg").file_size > 0  # no roots: any path


class RecordingStore(VectorStore):
    """The real store on a real Milvus Lite file, recording how rows are read and deleted."""

    def __init__(self, settings):
        super().__init__(settings)
        self.calls: list[str] = []

    def iter_rows(self, *args, **kwargs):
        self.calls.append("iter_rows")
        return super().iter_rows(*args, **kwargs)

    def get(self, *args, **kwargs):
        self.calls.append("get")
        return super().get(*args, **kwargs)

    def delete(self, name, ids):
        self.calls.append(f"delete {len(ids)} ids")
        return super().delete(name, ids)

    def delete_where(self, name, filter):
        self.calls.append("delete_where")
        return super().delete_where(name, filter)


def test_a_folder_is_counted_sampled_and_deleted_server_side_and_a_glob_streams(tiny_model_dirs, tmp_path, models):
    """Deleting a folder held every matching row of every collection in one dict, sorted them all for a 10-line
    sample and read every id again before deleting (100k rows: 155 s). Now a folder is one delete by expression per
    collection, nothing streamed to the client; a glob streams ids in batches."""
    from imsim import maintenance
    from imsim.ingest import Ingestor

    from .support.rows import random_rows

    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    store = RecordingStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    for model, collection in ingestor.collections.items():
        store.upsert(collection, random_rows(3000, models[model].info.dim)[0])
    store.calls.clear()
    folder = [maintenance.resolve(store, "/corpus/d3")]
    assert maintenance.count(store, folder) == {c: 300 for c in ingestor.collections.values()}
    assert len(maintenance.sample(store, folder)) == maintenance.SAMPLE
    assert maintenance.delete(store, folder) == {c: 300 for c in ingestor.collections.values()}
    assert "iter_rows" not in store.calls and "get" not in store.calls
    assert store.calls.count("delete_where") == 2
    store.calls.clear()
    glob = [maintenance.resolve(store, "/corpus/d[45]/1*.jpg")]
    assert maintenance.delete(store, glob) == {c: 222 for c in ingestor.collections.values()}
    assert all(c == "iter_rows" or c.startswith("delete ") for c in store.calls)
    assert all(store.count(c) == 3000 - 300 - 222 for c in ingestor.collections.values())
    ingestor.close()
    store.close()


def test_a_path_that_exists_or_is_stored_is_literal_brackets_and_all(cli, tiny_model_dirs, tmp_path):
    """`imsim delete 'del/photo[1].jpg'` removed photo1.jpg's rows and kept photo[1].jpg's; `del/[2019] trip` matched
    nothing. An existing (or stored) path is literal for every command; a glob is a glob only otherwise."""
    folder = tmp_path / "del"
    (folder / "[2019] trip").mkdir(parents=True)
    for name in ("photo[1].jpg", "photo1.jpg", "[2019] trip/a.jpg", "[2019] trip/b.jpg"):
        shutil.copy(SAMPLES / "photos" / "coffee.jpg", folder / name)
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(folder / "photo[1].jpg"), str(folder / "photo1.jpg"), str(folder / "[2019] trip"))
    out = json.loads(cli(env, "delete", "--yes", "--json", str(folder / "photo[1].jpg")).stdout)
    assert out["matched"] == 1
    out = json.loads(cli(env, "delete", "--yes", "--json", str(folder / "[2019] trip")).stdout)
    assert out["matched"] == 2
    left = json.loads(cli(env, "delete", "--yes", "--json", str(folder)).stdout)
    assert left["matched"] == 1  # photo1.jpg survived both
    cli(env, "ingest", "--local", str(folder / "photo[1].jpg"), str(folder / "photo1.jpg"))
    (folder / "photo[1].jpg").unlink()  # gone from disk but stored: still literal
    out = json.loads(cli(env, "delete", "--yes", "--json", str(folder / "photo[1].jpg")).stdout)
    assert out["matched"] == 1
    out = json.loads(cli(env, "delete", "--yes", "--json", str(folder / "photo1.jpg")).stdout)
    assert out["matched"] == 1  # photo1.jpg survived
