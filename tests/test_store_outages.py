"""Ingestion waits out a store that goes away: Milvus Lite's server stopped for 30 s, and a real Milvus 2.3.5 server
stopped (SIGTERM) and killed (SIGKILL) mid-job, each restarted on the same data.

Everything is real (redis-server, Milvus Lite's gRPC server, PyPI ``milvus==2.3.5``, ``celery -A workers worker``
subprocesses), and "exactly once" is checked on the store itself: one row per image per collection, none missing.
"""

from __future__ import annotations

import time

from imsim.jobs.queue import enqueue
from imsim.jobs.records import JobStore
from imsim.store import VectorStore
from imsim.synth import write_variants

from .support.faults import assert_exactly_once, wait_finished, wait_until
from .support.servers import SAMPLES, MilvusLiteServer
from .support.settings import make_settings


def test_milvus_outage_of_30s_is_retried_with_backoff_and_loses_nothing(
    tiny_model_dirs, tmp_path, redis_url, start_worker, servers
):
    milvus = servers(MilvusLiteServer, tmp_path)
    files = write_variants([SAMPLES / "photos"], tmp_path / "corpus", 600, size=(64, 64), seed=11)
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus.uri,
        chunk_size=20,
        visibility_timeout=120,
        queue="milvus" + tmp_path.name[-8:],
    )
    worker = start_worker(settings, "m")
    jobs = JobStore(redis_url)
    job_id = enqueue(files, settings)
    wait_until(lambda: jobs.reads.get(job_id).chunks_done >= 5, 120, "5 chunks done")
    milvus.stop()  # unreachable from here on
    down_at = time.time()
    wait_until(lambda: "Retry in" in worker.log_path.read_text(), 30, "a Celery retry")
    time.sleep(max(0.0, 30 - (time.time() - down_at)))
    during = jobs.reads.get(job_id)
    milvus.start()
    up_at = time.time()
    status = wait_finished(jobs, job_id, timeout=240)
    finished_at = time.time()

    assert during.finished_at is None and during.failed == 0
    # The chunk in flight when Milvus went down may have stored a slice before the next write failed: its retry finds
    # those rows stored with this job's id and counts them done (seen once in CI as 584 done + 16 "unchanged").
    assert (status.done, status.skipped, status.failed, status.chunks_done) == (600, 0, 0, 30)
    retries = worker.log_path.read_text().count("Retry in")
    assert retries >= 2 and "StoreUnavailable" in worker.log_path.read_text()
    store = VectorStore(settings)
    assert_exactly_once(store, files)
    store.close()
    print(
        f"\nMilvus outage: down {up_at - down_at:.1f}s, {retries} Celery retries, job finished {finished_at - up_at:.1f}s "
        f"after Milvus came back; 600/600 stored once"
    )


def test_a_real_milvus_server_stopped_and_killed_mid_job_is_waited_for(
    tiny_model_dirs, tmp_path, redis_url, start_worker, servers
):
    """A Milvus 2.3.5 server stopped (SIGTERM) and later killed (SIGKILL) mid-job, each time restarted on the same
    data: while it stops and starts it answers "find no available rootcoord" (legacy code 65535), which is an
    outage to wait out, not a permanent error (a job of 38 once failed 38/38 in ~30 s). Rows == files, no duplicates."""
    from .support.servers import MilvusServer

    server = servers(MilvusServer, tmp_path)
    files = write_variants([SAMPLES / "photos"], tmp_path / "corpus", 200, size=(64, 64), seed=21)
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=server.uri,
        chunk_size=10,
        visibility_timeout=300,
        queue="restart" + tmp_path.name[-8:],
    )
    worker = start_worker(settings, "restart")
    jobs = JobStore(redis_url)
    job_id = enqueue(files, settings)
    downtime = {}
    for after, how in ((4, "stop"), (10, "kill")):
        wait_until(lambda after=after: jobs.reads.get(job_id).chunks_done >= after, 180, f"{after} chunks done")
        down = time.time()
        server.stop() if how == "stop" else server.kill()
        time.sleep(3)
        server.start()
        downtime[how] = round(time.time() - down, 1)
    status = wait_finished(jobs, job_id, timeout=300)
    log = worker.log_path.read_text()
    retries = log.count("Retry in")
    assert (status.done, status.skipped, status.failed, status.chunks_done) == (200, 0, 0, 20), status.failures
    assert retries >= 1 and worker.proc.poll() is None
    store = VectorStore(settings)
    assert_exactly_once(store, files)
    store.close()
    print(
        f"\nMilvus server restarts: down {downtime} s, {retries} Celery retries, 200/200 stored once, 0 duplicates, "
        f"{status.skipped} unchanged"
    )
