"""The ``imsim`` command as a user runs it: a subprocess with IMSIM_* settings in its environment."""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .support.servers import ROOT, SAMPLES, settings_env
from .support.settings import make_settings


@contextlib.contextmanager
def holding(store: Path) -> Iterator[None]:
    """Another process with the Milvus Lite file ``store`` open (not serving it), until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pymilvus import MilvusClient; import time; MilvusClient({str(store)!r}); "
            "print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()


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
    assert proc.returncode == 2 and "has a text tower" in proc.stderr and "clip, siglip2" in proc.stderr


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


def test_a_huge_k_is_one_clear_error_and_a_page_larger_than_the_store_returns_every_row(cli, tiny_model_dirs, tmp_path):
    """`-k 1000000000` on Milvus Lite asked the store for a billion results: it allocated for them until the kernel
    killed the process. A page is at most 1,000 results now (the same rule at every door: the vocabulary's), refused
    in one line that says how to get more; a page of 1,000 over a smaller store returns every row (run under an 8 GB
    address-space limit, so a version that asked the store for the page as given fails here, not the machine)."""
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(SAMPLES / "photos"))
    stored = len(list((SAMPLES / "photos").glob("*.jpg")))
    huge = cli(env, "search", str(SAMPLES / "photos" / "coffee.jpg"), "-k", "1000000000", check=False)
    assert huge.returncode == 2 and "-k: at most 1000 results a page: page on with offset" in huge.stderr
    limit = 8 << 30
    proc = subprocess.run(
        [sys.executable, "-m", "imsim.cli", "search", str(SAMPLES / "photos" / "coffee.jpg"), "-k", "1000", "--json"],
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


def test_store_serve_is_found_by_every_command_of_its_data_dir_and_a_busy_store_is_one_line(
    cli, tiny_model_dirs, tmp_path, image_folder
):
    """While `imsim store serve` held the Lite store, every new shell without IMSIM_MILVUS_URI got exit 2 (the file's
    lock). The server records its address in the data dir; commands of that data dir use it, and say so."""
    import time

    from .support.servers import free_port, stop, wait_for_port

    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
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
        found = cli(env, "collections", "--json")  # no URI exported: the served store, found in the data dir
        assert sorted(c["rows"] for c in json.loads(found.stdout)) == [24, 24]
        assert f"using the store served by `imsim store serve` (pid {server.pid}) at http://127.0.0.1:{port}" in found.stderr
        again = cli(env, "ingest", "--local", "--json", str(image_folder / "flags"))  # the quickstart run again
        assert json.loads(again.stdout)["skipped"] == 24
    finally:
        stop(server)
    time.sleep(0.5)
    listed = cli(env, "collections", "--json")  # free again once the server stopped; the stale record is ignored
    assert json.loads(listed.stdout) and "using the store served" not in listed.stderr
    with holding(settings.lite_store):  # another process holding the Lite file (not serving it)
        busy = cli(env, "collections", check=False)
        assert busy.returncode == 2 and "Traceback" not in busy.stderr
        assert busy.stderr.strip().count("\n") == 0 and "open in one process" in busy.stderr


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


def test_the_cli_at_80_columns_cuts_nothing_a_user_needs_and_prints_no_control_byte(cli, tiny_model_dirs, tmp_path, image_folder):
    """At 80 columns `imsim jobs` cut every column (`tot…`), paths wrapped in table cells, and names with ESC
    sequences were printed raw (`\\x1b[2J` clears the screen). Each listing now prints an item per line (or two) at
    that width, and every path is printed with control characters escaped."""
    import re

    deep = image_folder / ("a-folder-with-a-long-name-" * 3) / "and-another-one-below-it"
    deep.mkdir(parents=True)
    hostile = deep / "clear\x1b[2Jscreen\x1b[8mhidden\x07.jpg"
    shutil.copy(image_folder / "photos" / "coffee.jpg", hostile)
    (deep / "broken\x1b[31m.jpg").write_text("not an image")
    env = {**settings_env(make_settings(tiny_model_dirs, tmp_path / "data")), "COLUMNS": "80"}
    outputs = [cli(env, "ingest", "--local", str(image_folder), check=False)]
    escaped = str(hostile).replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    outputs.append(cli(env, "search", str(image_folder / "photos" / "coffee.jpg"), "-k", "40"))
    outputs.append(cli(env, "collections"))
    outputs.append(cli(env, "delete", str(deep), "--yes"))
    for command in ("ingest", "search", "status", "delete", "sync", "duplicates", "collections", "jobs", "config"):
        outputs.append(cli(env, command, "--help"))
    text = "".join(p.stdout + p.stderr for p in outputs)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text), "a control character reached the terminal"
    assert escaped in outputs[1].stdout  # the search result: the whole path, escaped, on one line
    assert "broken\\x1b[31m.jpg" in outputs[0].stdout and "not a recognised image format" in outputs[0].stdout
    assert "…" not in text and "<bool>" not in text
    for listing in outputs[1:3]:
        assert all(len(line) <= 80 or "/" in line for line in listing.stdout.splitlines())  # only paths run longer
    assert re.search(r"_clip_[0-9a-f]{6}  39 rows", outputs[2].stdout)  # the collection's name and count whole


def test_small_things_that_used_to_be_tracebacks_or_lies(cli, tiny_model_dirs, tmp_path):
    """Each line of issue 26's list that needs no server: a non-UTF-8 byte in the env file, passwords in the URL forms
    redis-py accepts, an empty store, a URL given as a query."""
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    bad_env = tmp_path / "bad.env"
    bad_env.write_bytes(b"IMSIM_QUEUE=ok\nIMSIM_COLLECTION_PREFIX=caf\xe9\n")
    for command in (["config"], ["doctor", "--no-queue", "--no-models"], ["collections"]):
        proc = cli({**env, "IMSIM_ENV_FILE": str(bad_env)}, *command, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"{bad_env}:2: byte 0xe9 is not UTF-8" in proc.stderr
    secrets = {
        "IMSIM_REDIS_URL": "redis://:p@ss@127.0.0.1:1/0?password=hunter2",
        "IMSIM_MILVUS_URI": "http://127.0.0.1:1?token=t0ken",
    }
    shown = cli({**env, **secrets}, "config").stdout
    assert "p@ss" not in shown and "ss@127" not in shown and "hunter2" not in shown and "t0ken" not in shown
    assert "redis://:**@127.0.0.1:1/0?password=**" in shown and "token=**" in shown
    empty = cli(env, "collections")
    assert empty.returncode == 0 and "nothing ingested yet" in empty.stderr
    proc = cli(env, "duplicates", "--model", "dinov2", "--threshold", "0.9", check=False)
    assert proc.returncode == 2 and "nothing ingested yet for model 'dinov2'" in proc.stderr
    proc = cli(env, "search", "https://example.org/cat.jpg", check=False)
    assert proc.returncode == 2 and "a URL; imsim searches with local files and s3:// objects only" in proc.stderr
    shown = cli({k: v for k, v in env.items() if k != "IMSIM_MILVUS_URI"}, "config").stdout
    assert f"IMSIM_MILVUS_URI=  # empty: the Milvus Lite store {settings.lite_store}" in shown


def test_a_second_local_ingest_on_an_open_store_fails_before_any_model_loads(cli, tiny_model_dirs, tmp_path, image_folder):
    import time

    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    settings.lite_store.parent.mkdir(parents=True, exist_ok=True)
    with holding(settings.lite_store):
        started = time.perf_counter()
        proc = cli(settings_env(settings), "ingest", "--local", str(image_folder / "flags"), check=False)
        took = time.perf_counter() - started
        assert proc.returncode == 2 and "open in one process" in proc.stderr and "loading models" not in proc.stderr
        print(f"\nsecond `ingest --local` on an open store: error after {took:.2f} s")
