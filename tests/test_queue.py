"""Redis → Celery worker subprocess → Milvus Lite server → client: the real distributed path."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from imsim.jobs import JobStore
from imsim.paths import discover
from imsim.query import Client
from imsim.queue import celery_config, enqueue
from imsim.store import VectorStore

from .support.settings import make_settings


def wait_finished(jobs: JobStore, job_id: str, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.get(job_id)
        if status.finished_at:
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not finished: {jobs.get(job_id)}")


def test_celery_config_is_json_only_and_redelivers(settings):
    conf = celery_config(settings)
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == settings.visibility_timeout


def test_a_dead_sweeper_cannot_block_redelivery_for_long(settings, redis_url):
    """kombu sweeps unacked chunks under a Redis lock that, by default, outlives a SIGKILLed holder by 300 s
    (seen in the kill test: a chunk came back exactly 5 minutes late). Our expiry must reach the real channel."""
    from imsim.queue import make_celery, restore_lock_expiry

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
    assert "not a recognised image format" in status.failures[str(image_folder / "broken.png")]

    store = VectorStore(settings)
    client = Client(settings, embedders=models, store=store)
    names = store.collections()
    assert len(names) == 2 and all(store.count(n) == 38 for n in names)
    for path in files:
        if path.endswith("broken.png"):
            continue
        assert client.search(path, k=1)[0].path == path

    again = wait_finished(jobs, enqueue(files, settings))
    assert (again.done, again.skipped, again.failed) == (0, 38, 1) and all(store.count(n) == 38 for n in names)
    assert [j.id for j in jobs.list(5)][:2] == [again.id, job_id]
    store.close()


def test_redelivered_chunk_counts_once(redis_url):
    jobs = JobStore(redis_url)
    jobs.create("j-once", total=4, chunks=2, inputs=[], models=["clip"])
    assert jobs.record_chunk("j-once", 0, done=2, skipped=0, failures={})
    assert not jobs.record_chunk("j-once", 0, done=2, skipped=0, failures={})
    assert jobs.record_chunk("j-once", 1, done=1, skipped=0, failures={"/x.jpg": "broken"})
    s = jobs.get("j-once")
    assert (s.done, s.failed, s.pending, s.state) == (3, 1, 0, "finished_with_failures")
    with pytest.raises(Exception, match="no job 'missing'"):
        jobs.get("missing")
