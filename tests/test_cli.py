"""The ``imsim`` command as a user runs it: a subprocess with IMSIM_* settings in its environment."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

from .support.servers import ROOT, SAMPLES, settings_env
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
        "clip": (30, "clip", True, 6),
        "dinov2": (30, "dinov2", True, 6),
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


def test_names_that_look_like_rich_markup_are_printed_as_they_are(cli, tiny_model_dirs, tmp_path):
    """A path is never read as rich markup: "[red]cat.jpg" was printed without its tag, and a file in a folder named
    "odd[" (path ".../odd[/]x.jpg") raised MarkupError while the failures were reported: a traceback, not the report."""
    env = {**settings_env(make_settings(tiny_model_dirs, tmp_path / "data")), "COLUMNS": "400"}
    folder = tmp_path / "odd["
    folder.mkdir()
    shutil.copy(SAMPLES / "photos" / "chelsea.jpg", folder / "[red]cat.jpg")
    (folder / "]x.jpg").write_text("not an image")
    proc = cli(env, "ingest", "--local", str(folder), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"failed {tmp_path}/odd[/]x.jpg: not a recognised image format" in proc.stdout, proc.stdout
    proc = cli(env, "search", "--like", str(folder / "[red]cat.jpg"), "-k", "1")
    assert f"{folder}/[red]cat.jpg" in proc.stdout, proc.stdout
    proc = cli(env, "search", str(folder / "[/]gone.jpg"), check=False)
    assert proc.returncode == 2 and f"{folder}/[/]gone.jpg" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_huge_k_returns_every_row_instead_of_exhausting_memory(cli, tiny_model_dirs, tmp_path):
    """`-k 1000000000` on Milvus Lite asked the store for a billion results: it allocated for them until the kernel
    killed the process. k is capped at the collection's row count (run under an 8 GB address-space limit, so the
    old code fails here instead of taking the machine's memory)."""
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(SAMPLES / "photos"))
    stored = len(list((SAMPLES / "photos").glob("*.jpg")))
    limit = 8 << 30
    proc = subprocess.run(
        [sys.executable, "-m", "imsim.cli", "search", str(SAMPLES / "photos" / "coffee.jpg"), "-k", "1000000000", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    hits = json.loads(proc.stdout)
    assert len(hits) == stored and hits[0]["path"] == str(SAMPLES / "photos" / "coffee.jpg")


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


def test_store_serve_serves_what_ingest_local_wrote_and_a_busy_store_is_one_line(cli, tiny_model_dirs, tmp_path, image_folder):
    import time

    from .support.servers import free_port, stop, wait_for_port

    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(image_folder / "flags"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "imsim.cli", "store", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=60, proc=server)
        served = json.loads(cli({**env, "IMSIM_MILVUS_URI": f"http://127.0.0.1:{port}"}, "collections", "--json").stdout)
        assert sorted(c["rows"] for c in served) == [24, 24]  # the very rows --local stored
        busy = cli(env, "collections", check=False)  # the Lite store itself, while the server holds it
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert busy.stderr.strip().count("\n") == 0 and "open in one process" in busy.stderr
    finally:
        stop(server)
    time.sleep(0.5)
    assert json.loads(cli(env, "collections", "--json").stdout)  # free again once the server stopped


def test_a_filter_on_a_field_that_does_not_exist_is_an_error_naming_it(cli, tiny_model_dirs, tmp_path, image_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(image_folder / "photos"))
    proc = cli(env, "search", str(image_folder / "photos" / "coffee.jpg"), "--filter", 'colour == "red"', check=False)
    assert proc.returncode == 2 and "no field 'colour'" in proc.stderr and "Traceback" not in proc.stderr


def test_from_file_lines_are_files_streamed_without_probing_unless_expand(cli, tiny_model_dirs, tmp_path, image_folder):
    """Each line used to be probed as an input (stat, is-folder, is-glob): 1M lines took 176 s. A line is a file: a
    line naming a folder fails as that one file, a glob-looking line is a file name; --expand reads lines as inputs."""
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    listing = tmp_path / "list.txt"
    photos = sorted(str(p) for p in (image_folder / "photos").glob("*.jpg"))[:3]
    listing.write_text("\n".join([*photos, str(image_folder / "flags"), str(image_folder / "flags" / "f*.png"), ""]))
    out = json.loads(cli(env, "ingest", "--local", "--json", "--from-file", str(listing), check=False).stdout)
    assert (out["total"], out["done"], out["failed"]) == (5, 3, 2)
    assert "not a regular file" in out["failures"][str(image_folder / "flags")]
    assert "no such file" in out["failures"][str(image_folder / "flags" / "f*.png")]
    out = json.loads(cli(env, "ingest", "--local", "--json", "--expand", "--from-file", str(listing)).stdout)
    assert (out["total"], out["done"], out["skipped"], out["failed"]) == (3 + 24, 24, 3, 0)  # the folder walked
