"""The ``imsim`` command as a user runs it: a subprocess with IMSIM_* settings in its environment."""

from __future__ import annotations

import json

from .support.servers import settings_env
from .support.settings import make_settings


def test_cli_local_ingest_search_compare_collections(cli, tiny_model_dirs, tmp_path, image_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    (image_folder / "zero.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image_folder / 'photos' / 'coffee.jpg'}\n")

    proc = cli(
        env,
        "ingest",
        "--local",
        "--json",
        str(image_folder / "flags"),
        str(image_folder / "photos" / "c*.jpg"),
        str(image_folder / "zero.jpg"),
        "--from-file",
        str(listing),
        check=False,
    )
    assert proc.returncode == 1  # one file failed: the rest are stored, and the exit code says something went wrong
    out = json.loads(proc.stdout)
    # 24 flags + camera, cell, chelsea, clock_motion, coffee (also listed: counted once), coins + the empty file
    assert (out["total"], out["done"], out["failed"], out["unmatched"]) == (31, 30, 1, [])
    assert "empty file" in out["failures"][str(image_folder / "zero.jpg")]

    cols = {c["model"]: c for c in json.loads(cli(env, "collections", "--json").stdout)}
    assert {m: (c["rows"], c["name"].rsplit("_", 2)[1], c["active"], len(c["version"])) for m, c in cols.items()} == {
        "clip": (30, "clip", True, 8),
        "dinov2": (30, "dinov2", True, 8),
    }
    assert "tiny-clip" in cli({**env, "COLUMNS": "250"}, "collections").stdout

    query = str(image_folder / "photos" / "chelsea.jpg")
    hits = json.loads(cli(env, "search", query, "-k", "3", "--json").stdout)
    assert hits[0]["path"] == query and hits[0]["ranks"] == {"clip": 1, "dinov2": 1}
    table = cli({**env, "COLUMNS": "250"}, "search", query, "-k", "2", "--fusion", "weighted").stdout
    assert "chelsea.jpg" in table

    cmp = cli(env, "compare", query, query).stdout
    assert "clip" in cmp and "dinov2" in cmp and cmp.count("1.0000") == 4  # cosine and (cos+1)/2 per model


def test_cli_errors_are_plain_and_name_the_input(cli, tiny_model_dirs, tmp_path):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    proc = cli(env, "ingest", "--local", str(tmp_path / "nothing-*.jpg"), check=False)
    assert proc.returncode == 2 and "no image files found" in proc.stderr and "nothing-*.jpg" in proc.stderr
    proc = cli(env, "search", "--text", "x", "--models", "dinov2", check=False)
    assert proc.returncode == 2 and "can embed text" in proc.stderr


def test_cli_queue_status_and_jobs(cli, tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder):
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=16,
        queue="cli" + tmp_path.name[-8:],
    )
    env = settings_env(settings)
    start_worker(settings, "cli")
    out = json.loads(cli(env, "ingest", "--json", str(image_folder / "flags")).stdout)  # waits for the job
    assert (out["total"], out["done"], out["failed"], out["pending"], out["state"]) == (24, 24, 0, 0, "finished")
    status = json.loads(cli(env, "status", out["id"], "--json").stdout)
    assert status["done"] == 24 and status["chunks_done"] == 2
    assert out["id"] in cli({**env, "COLUMNS": "200"}, "jobs").stdout
    proc = cli(env, "status", "no-such-job", check=False)
    assert proc.returncode == 2 and "no job 'no-such-job'" in proc.stderr


def test_cli_tags_filters_and_search_like(cli, tiny_model_dirs, tmp_path, image_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", "--tag", "kind=flag", "--tag", "source=debian", str(image_folder / "flags"))
    cli(env, "ingest", "--local", "--tag", "kind=photo", str(image_folder / "photos"))
    coffee = str(image_folder / "photos" / "coffee.jpg")
    hits = json.loads(cli(env, "search", "--like", coffee, "-k", "50", "--tag", "kind=flag", "--json").stdout)
    assert len(hits) == 24 and all("/flags/" in h["path"] for h in hits)
    hits = json.loads(
        cli(
            env, "search", "--like", coffee, "-k", "3", "--under", str(image_folder / "photos"), "--after", "2000-01-01", "--json"
        ).stdout
    )
    assert hits[0]["path"] == coffee and all("/photos/" in h["path"] for h in hits)
    proc = cli(env, "search", coffee, "--tag", "no-equals-sign", check=False)
    assert proc.returncode == 2 and "not key=value" in proc.stderr
    proc = cli(env, "search", coffee, "--after", "last tuesday", check=False)
    assert proc.returncode == 2 and "not a date" in proc.stderr
