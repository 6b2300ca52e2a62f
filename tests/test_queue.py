"""Redis → Celery worker subprocess → Milvus Lite server → client: the real distributed path."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from pydantic import SecretStr

from imsim.client.local import Client
from imsim.jobs.queue import celery_config, enqueue, queue_length
from imsim.jobs.records import JobStore
from imsim.sources.paths import discover
from imsim.store import VectorStore

from .support.settings import make_settings


def wait_finished(jobs: JobStore, job_id: str, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.reads.get(job_id)
        if status.finished_at:
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not finished: {jobs.reads.get(job_id)}")


def test_celery_config_is_json_only_and_redelivers(settings):
    conf = celery_config(settings)
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == settings.visibility_timeout


def test_a_dead_sweeper_cannot_block_redelivery_for_long(settings, redis_url):
    """kombu sweeps unacked chunks under a Redis lock that, by default, outlives a SIGKILLed holder by 300 s
    (seen in the kill test: a chunk came back exactly 5 minutes late). Our expiry must reach the real channel."""
    from imsim.jobs.queue import make_celery, restore_lock_expiry

    settings = settings.replace(redis_url=SecretStr(redis_url), visibility_timeout=10)
    assert settings.redelivery_interval == 2 and restore_lock_expiry(settings) == 10
    app = make_celery(settings)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert channel.unacked_mutex_expire == 10 and channel.unacked_restore_interval == 2
        assert channel.visibility_timeout == 10
    slow = settings.replace(visibility_timeout=3600)
    assert restore_lock_expiry(slow) == 3 * slow.redelivery_interval == 180 < 300


def test_queued_job_end_to_end(tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder, models):
    (image_folder / "broken.png").write_text("definitely not a png")
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=8,
        queue="q" + tmp_path.name[-8:],
    )
    start_worker(settings, "w1")
    files = discover([image_folder]).files
    jobs = JobStore(redis_url)

    job_id = enqueue(files, settings, inputs=[str(image_folder)])
    status = wait_finished(jobs, job_id)
    assert (status.total, status.done, status.failed, status.pending) == (39, 38, 1, 0)
    assert status.chunks_done == status.chunks == 5 and status.state == "finished_with_failures"
    assert "not a recognised image format" in dict(jobs.reads.failures(job_id))[str(image_folder / "broken.png")]

    store = VectorStore(settings)
    client = Client(settings, embedders=models, store=store)
    names = store.versions.collections()
    assert len(names) == 2 and all(store.rows.count(n) == 38 for n in names)
    for path in files:
        if path.endswith("broken.png"):
            continue
        assert client.search(path, k=1)[0].path == path

    again = wait_finished(jobs, enqueue(files, settings))
    assert (again.done, again.skipped, again.failed) == (0, 38, 1) and all(store.rows.count(n) == 38 for n in names)
    assert [j.id for j in jobs.reads.list(5)][:2] == [again.id, job_id]
    store.close()


def test_redelivered_chunk_counts_once(redis_url):
    jobs = JobStore(redis_url)
    jobs.create("j-once", total=4, chunks=2, inputs=[], models=["clip"])
    assert jobs.record_chunk("j-once", 0, done=2, skipped=0, failures={})
    assert not jobs.record_chunk("j-once", 0, done=2, skipped=0, failures={})
    assert jobs.record_chunk("j-once", 1, done=1, skipped=0, failures={"/x.jpg": "broken"})
    s = jobs.reads.get("j-once")
    assert (s.done, s.failed, s.pending, s.state) == (3, 1, 0, "finished_with_failures")
    with pytest.raises(Exception, match="no job 'missing'"):
        jobs.reads.get("missing")


def test_cancel_takes_the_jobs_queued_chunks_off_the_queue_and_a_running_chunk_stops_at_its_next_slice(
    cli, tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder
):
    from imsim.synth import write_variants

    from .support.servers import SAMPLES, settings_env

    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=4,
        queue="cancel" + tmp_path.name[-8:],
    )
    env = settings_env(settings)
    files = discover([image_folder / "flags"]).files  # 24 files: 6 chunks
    jobs = JobStore(redis_url)
    other = enqueue(files[:8], settings)  # another job's 2 chunks stay queued
    job_id = enqueue(files, settings)
    # No worker: the job's queued chunks are taken off the queue and counted cancelled (they stayed queued for ever,
    # the job "cancelling"), the other job's are left
    assert jobs.redis.llen(settings.queue) == 8
    out = json.loads(cli(env, "cancel", job_id, "--json").stdout)
    assert (out["state"], out["cancelled"], out["done"]) == ("cancelled", 24, 0)
    assert jobs.redis.llen(settings.queue) == 2 and jobs.reads.get(other).pending == 8
    start_worker(settings, "cancel")
    assert wait_finished(jobs, other).done == 8
    final = jobs.reads.get(job_id)
    assert (final.state, final.cancelled, final.done, final.read_bytes) == ("cancelled", 24, 0, 0)  # never read
    assert jobs.redis.llen(settings.queue) == 0

    # One chunk of 300 files in slices of 4: the worker stops at the next slice, not at the end of the chunk.
    corpus = write_variants([SAMPLES / "photos"], tmp_path / "corpus", 300, size=(64, 64), seed=5)
    one = settings.replace(chunk_size=1000, batch_size=4)
    second = enqueue(sorted(map(str, corpus)), one)
    deadline = time.time() + 60
    while jobs.reads.get(second).in_progress < 8:
        assert time.time() < deadline
        time.sleep(0.02)
    status = Client(one).jobs.cancel(second)
    final = wait_finished(jobs, second)
    assert status.cancelled_at and final.state == "cancelled" and final.chunks == 1
    assert final.done + final.cancelled == 300 and final.done >= 8 and final.cancelled >= 150, final


def test_ctrl_c_leaves_the_job_running_and_says_how_to_follow_or_cancel_it(
    tiny_model_dirs, tmp_path, redis_url, milvus_uri, image_folder
):
    import signal
    import subprocess
    import sys

    from .support.servers import ROOT, settings_env

    settings = make_settings(
        tiny_model_dirs, tmp_path / "data", redis_url=redis_url, milvus_uri=milvus_uri, queue="ctrlc" + tmp_path.name[-8:]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "imsim.cli", "ingest", str(image_folder / "flags")],
        cwd=ROOT,
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not JobStore(redis_url).reads.list(50) or not any(
        j.inputs == [str(image_folder / "flags")] for j in JobStore(redis_url).reads.list(50)
    ):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(8.0)  # long enough for the "waiting for a worker" hint
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "imsim cancel" in stderr and "imsim status" in stderr and "Traceback" not in stderr
    assert "none answers on queue" in stderr, stderr  # no worker was running: the display said so
    bars = [line for line in stderr.splitlines() if "img/s" in line]
    assert len(bars) == 2 and all(len(line.rstrip()) <= 80 for line in bars), stderr  # each bar on one 80-column line
    assert "(start one: `imsim worker`)" in " ".join(stderr.split())  # the note under it whole, folded, never cut


def test_redis_down_or_refusing_is_one_line_never_a_traceback(cli, tiny_model_dirs, tmp_path, servers):
    from .support.servers import RedisServer, free_port, settings_env

    down = settings_env(make_settings(tiny_model_dirs, tmp_path / "a", redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    for args in (["jobs"], ["status", "some-job"], ["ingest", str(tmp_path)]):
        proc = cli(down, *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Redis is unreachable" in cli(down, "jobs", check=False).stderr
    redis_server = servers(RedisServer, tmp_path, password="right")
    wrong = settings_env(make_settings(tiny_model_dirs, tmp_path / "b", redis_url=redis_server.url.replace("right", "wrong")))
    proc = cli(wrong, "jobs", check=False)
    assert proc.returncode == 2 and "refused the password" in proc.stderr and "Traceback" not in proc.stderr
    malformed = settings_env(make_settings(tiny_model_dirs, tmp_path / "c", redis_url="redis//no-colon"))
    proc = cli(malformed, "doctor", "--no-models", "--json", check=False)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert proc.returncode == 1 and checks["redis"]["status"] == "fail" and "not a Redis URL" in checks["redis"]["detail"]
    assert "Traceback" not in proc.stderr


def test_the_progress_display_rides_out_a_redis_restart(tiny_model_dirs, tmp_path, milvus_uri, start_worker, servers):
    import subprocess
    import sys

    from imsim.synth import write_variants

    from .support.servers import ROOT, SAMPLES, RedisServer, settings_env

    redis_server = servers(RedisServer, tmp_path, appendonly=True)
    corpus = write_variants([SAMPLES / "photos"], tmp_path / "corpus", 300, size=(64, 64), seed=2)
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_server.url,
        milvus_uri=milvus_uri,
        chunk_size=20,
        visibility_timeout=10,
        queue="follow" + tmp_path.name[-8:],
    )
    start_worker(settings, "follow")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imsim.cli", "ingest", str(tmp_path / "corpus")],
        cwd=ROOT,
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (jobs := JobStore(redis_server.url).reads.list(1)) or jobs[0].chunks_done < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    redis_server.kill()
    time.sleep(3)
    redis_server.start()
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"failed 0 of {len(corpus)}" in stdout


def test_progress_moves_within_a_chunk(tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder):
    """One chunk of 24 images in slices of 4: the job's settled count moves before the chunk is recorded."""
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=24,
        batch_size=4,
        queue="progress" + tmp_path.name[-8:],
    )
    start_worker(settings, "progress")
    jobs = JobStore(redis_url)
    job_id = enqueue(discover([image_folder / "flags"]).files, settings)
    seen = set()
    deadline = time.time() + 120
    while not (status := jobs.reads.get(job_id)).finished_at:
        assert time.time() < deadline
        if status.chunks_done == 0:
            seen.add(status.settled)
        time.sleep(0.005)
    assert any(0 < n < 24 for n in seen), seen
    assert status.settled == 24 and status.in_progress == 0


def test_a_fleet_that_disagrees_on_models_leaves_no_holes_and_says_why(
    cli, tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker
):
    """Worker A embeds clip+dinov2, worker B only clip, one queue: "stored 80, failed 0" left 72 dinov2 rows of 80.
    Chunks now carry the models (and model settings) their job was queued for; B refuses them, A embeds them all.
    A job queued with another DINOv2 pooling than any worker has fails after IMSIM_FLEET_WAIT, saying why."""
    from imsim.synth import write_variants

    from .support.servers import SAMPLES, settings_env

    corpus = write_variants([SAMPLES / "photos"], tmp_path / "corpus", 80, size=(48, 48), seed=8)
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=8,
        fleet_wait=6,
        queue="fleet" + tmp_path.name[-8:],
    )
    start_worker(settings, "both")
    start_worker(settings.replace(models="clip"), "cliponly")
    jobs = JobStore(redis_url)
    status = wait_finished(jobs, enqueue(sorted(map(str, corpus)), settings))
    assert (status.done, status.failed) == (80, 0)
    store = VectorStore(settings)
    assert sorted(store.rows.count(n) for n in store.versions.collections()) == [80, 80]  # no holes in either collection

    checks = {
        c["name"]: c for c in json.loads(cli(settings_env(settings), "doctor", "--no-models", "--json", check=False).stdout)
    }
    split = [c for n, c in checks.items() if n.startswith("worker cliponly")]
    assert split and split[0]["status"] == "fail" and "it lacks dinov2" in split[0]["detail"]
    assert any(n.startswith("worker both") and c["status"] == "ok" for n, c in checks.items())

    mean = settings.replace(dinov2_pooling="mean")
    job = enqueue(sorted(map(str, corpus))[:8], mean)
    status = wait_finished(jobs, job, timeout=120)
    failures = dict(jobs.reads.failures(job))
    assert status.failed == 8 and status.done == 0
    assert all("no worker on queue" in r and "settings for dinov2 differ" in r for r in failures.values()), failures
    assert sorted(store.rows.count(n) for n in store.versions.collections()) == [80, 80]  # nothing written to the default version
    store.close()


def test_redis_filling_up_mid_enqueue_is_one_line_saying_how_much_went_out(cli, tiny_model_dirs, tmp_path, servers):
    """Redis full (maxmemory) mid-enqueue printed a 98-line traceback and left a job "queued" forever with 48 of 79
    chunks, and a full Redis was reported as unreachable."""
    import redis as redis_client

    from .support.servers import RedisServer, settings_env

    server = servers(RedisServer, tmp_path)
    settings = make_settings(tiny_model_dirs, tmp_path / "data", redis_url=server.url, chunk_size=1000, queue="full")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"/data/{i:07d}/{os.urandom(12).hex()}.jpg\n" for i in range(300_000)))  # incompressible
    client = redis_client.Redis.from_url(server.url)
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 2_000_000))
    client.config_set("maxmemory-policy", "noeviction")
    proc = cli(settings_env(settings), "ingest", "--from-file", str(listing), "--no-wait", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "Redis is full (maxmemory reached)" in line and "stopped after" in line and "re-run the same ingest" in line
    stopped = re.search(r"stopped after (\d+) chunks", line)
    assert stopped, line
    sent = int(stopped.group(1))
    assert 0 < sent < 300
    named = re.search(r"queuing job (\S+) stopped", line)
    assert named, line
    job = named.group(1)
    status = JobStore(server.url).reads.get(job)
    # the job ends with the chunks that went out, and the line says how many are on the queue (it said one fewer when
    # the last chunk was sent but its count refused); a full Redis may refuse that last count (said on the line)
    assert queue_length(settings) == sent, line
    assert not status.queuing and (status.chunks == sent or (status.chunks == sent - 1 and "could not count" in line))
    proc = cli(settings_env(settings), "jobs", check=False)  # reachable and full: said as it is
    assert "unreachable" not in proc.stderr
