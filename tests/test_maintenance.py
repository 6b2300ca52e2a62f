"""Stale rows and deletion (``imsim sync``, ``imsim delete``), safe filter expressions, the read allow-list."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from imsim import expr
from imsim.errors import PathNotAllowed
from imsim.images import Limits, read_file
from imsim.paths import path_id
from imsim.query import Client
from imsim.store import VectorStore

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
    assert sorted(plan["missing"]) == sorted(map(str, gone)) and plan["removed"] == {}
    assert rows(settings) == before  # a dry run changes nothing

    out = json.loads(cli(env, "sync", "--local", "--json", str(image_folder)).stdout)
    assert (out["done"], out["skipped"], out["failed"]) == (1, 35, 0)  # only the changed file is embedded again
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
    row = {
        "id": "x" * 32,
        "path": '/x" or id != "',
        "sha256": "",
        "width": 1,
        "height": 1,
        "file_size": 1,
        "mtime": 0.0,
        "model_id": "",
        "model_revision": "",
        "ingested_at": 0,
        "job_id": "",
        "tags": {},
        "vector": [1.0] + [0.0] * (models["clip"].info.dim - 1),
    }
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
