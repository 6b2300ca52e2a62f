"""The ``imsim`` command as a user runs it: a subprocess with IMSIM_* settings in its environment."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT, make_settings, settings_env


def imsim(env, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "imsim.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"imsim {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_local_ingest_search_compare_collections(tiny_model_dirs, tmp_path, image_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    (image_folder / "zero.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image_folder / 'photos' / 'coffee.jpg'}\n")

    out = json.loads(imsim(env, "ingest", "--local", "--json", str(image_folder / "flags"), str(image_folder / "photos" / "c*.jpg"),
                           str(image_folder / "zero.jpg"), "--from-file", str(listing)).stdout)
    # 24 flags + camera, cell, chelsea, clock_motion, coffee (also listed: counted once), coins + the empty file
    assert (out["total"], out["done"], out["failed"]) == (31, 30, 1)
    assert "empty file" in out["failures"][str(image_folder / "zero.jpg")]

    cols = {c["model"]: c for c in json.loads(imsim(env, "collections", "--json").stdout)}
    assert {m: (c["rows"], c["name"].split("_", 1)[1].rsplit("_", 1)[0], c["active"]) for m, c in cols.items()} == {
        "clip": (30, "clip_tiny_clip", True), "dinov2": (30, "dinov2_tiny_dinov2", True)}
    assert "tiny_clip" in imsim({**env, "COLUMNS": "250"}, "collections").stdout

    query = str(image_folder / "photos" / "chelsea.jpg")
    hits = json.loads(imsim(env, "search", query, "-k", "3", "--json").stdout)
    assert hits[0]["path"] == query and hits[0]["ranks"] == {"clip": 1, "dinov2": 1}
    table = imsim({**env, "COLUMNS": "250"}, "search", query, "-k", "2", "--fusion", "weighted").stdout
    assert "chelsea.jpg" in table

    cmp = imsim(env, "compare", query, query).stdout
    assert "clip" in cmp and "dinov2" in cmp and cmp.count("1.0000") == 4  # cosine and (cos+1)/2 per model


def test_cli_errors_are_plain_and_name_the_input(tiny_model_dirs, tmp_path):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    proc = imsim(env, "ingest", "--local", str(tmp_path / "nothing-*.jpg"), check=False)
    assert proc.returncode == 2 and "no image files found" in proc.stderr and "nothing-*.jpg" in proc.stderr
    proc = imsim(env, "search", "--text", "x", "--models", "dinov2", check=False)
    assert proc.returncode == 2 and "can embed text" in proc.stderr


def test_cli_queue_status_and_jobs(tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder):
    settings = make_settings(tiny_model_dirs, tmp_path / "data", redis_url=redis_url, milvus_uri=milvus_uri, chunk_size=16,
                             queue="cli" + tmp_path.name[-8:])
    env = settings_env(settings)
    start_worker(settings, "cli")
    out = json.loads(imsim(env, "ingest", "--json", str(image_folder / "flags")).stdout)  # waits for the job
    assert (out["total"], out["done"], out["failed"], out["pending"], out["state"]) == (24, 24, 0, 0, "finished")
    status = json.loads(imsim(env, "status", out["id"], "--json").stdout)
    assert status["done"] == 24 and status["chunks_done"] == 2
    assert out["id"] in imsim({**env, "COLUMNS": "200"}, "jobs").stdout
    proc = imsim(env, "status", "no-such-job", check=False)
    assert proc.returncode == 2 and "no job 'no-such-job'" in proc.stderr


def test_cli_tags_filters_and_search_like(tiny_model_dirs, tmp_path, image_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    imsim(env, "ingest", "--local", "--tag", "kind=flag", "--tag", "source=debian", str(image_folder / "flags"))
    imsim(env, "ingest", "--local", "--tag", "kind=photo", str(image_folder / "photos"))
    coffee = str(image_folder / "photos" / "coffee.jpg")
    hits = json.loads(imsim(env, "search", "--like", coffee, "-k", "50", "--tag", "kind=flag", "--json").stdout)
    assert len(hits) == 24 and all("/flags/" in h["path"] for h in hits)
    hits = json.loads(imsim(env, "search", "--like", coffee, "-k", "3", "--under", str(image_folder / "photos"),
                            "--after", "2000-01-01", "--json").stdout)
    assert hits[0]["path"] == coffee and all("/photos/" in h["path"] for h in hits)
    proc = imsim(env, "search", coffee, "--tag", "no-equals-sign", check=False)
    assert proc.returncode == 2 and "not key=value" in proc.stderr
    proc = imsim(env, "search", coffee, "--after", "last tuesday", check=False)
    assert proc.returncode == 2 and "not a date" in proc.stderr
