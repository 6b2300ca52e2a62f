"""Maintenance, against real servers (the integration tier of test_maintenance.py)."""

from __future__ import annotations

import json
import os
import shutil

from imsim.sources.names import path_id
from imsim.sources.reading import read_file
from imsim.store import VectorStore

from .support.servers import SAMPLES, settings_env
from .support.settings import make_settings


def rows(settings) -> dict[str, set[str]]:
    store = VectorStore(settings)
    out = {
        name: {r["path"] for batch in store.rows.iter_rows(name, output_fields=["path"]) for r in batch}
        for name in store.versions.collections()
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
    for name in store.versions.collections():
        sha = store.rows.get(name, [path_id(changed)], output_fields=["sha256"])[path_id(changed)]["sha256"]
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
