"""The queue reads its own config (:class:`imsim.jobs.queue.QueueConfig`), not the whole settings: each field comes from its
setting, the password never shows in a repr, and Celery's configuration is the same whether it is made from the
settings or from a config built by hand (no Settings object at all)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import SecretStr

from imsim.errors import QueueError
from imsim.jobs.queue import QueueConfig, celery_config, enqueue, fleet_identity, restore_lock_expiry
from imsim.settings import load


def test_the_config_carries_each_queue_setting_and_the_jobs_models(settings):
    settings = settings.replace(
        redis_url=SecretStr("redis://:pw-5c1e@127.0.0.1:6390/3"),
        queue="gpu-a",
        chunk_size=77,
        visibility_timeout=600,
        task_events=False,
        job_retention="2d",
        models="dinov2,clip",
        dinov2_pooling="mean",
    )
    config = QueueConfig.of(settings)
    assert (config.redis_url, config.queue, config.chunk_size, config.visibility_timeout) == (
        "redis://:pw-5c1e@127.0.0.1:6390/3",
        "gpu-a",
        77,
        600,
    )
    assert (config.redelivery_interval, config.task_events, config.job_retention) == (60, False, 2 * 86400)
    assert list(config.models) == ["dinov2", "clip"] and dict(config.models) == fleet_identity(settings)
    assert config.models["dinov2"] != QueueConfig.of(settings.replace(dinov2_pooling="cls")).models["dinov2"]
    assert "pw-5c1e" not in repr(config) and QueueConfig.of(config) is config


def test_celery_is_configured_alike_from_the_settings_or_a_config_made_by_hand(settings):
    assert celery_config(QueueConfig.of(settings)) == celery_config(settings)
    config = replace(
        QueueConfig.of(settings),
        redis_url="redis://127.0.0.1:6391/0",
        queue="by-hand",
        visibility_timeout=40,
        redelivery_interval=8,
    )
    conf = celery_config(config)
    assert conf["broker_url"] == "redis://127.0.0.1:6391/0" and conf["task_ignore_result"] and "result_backend" not in conf
    assert conf["task_default_queue"] == "by-hand" and conf["broker_transport_options"]["visibility_timeout"] == 40
    assert conf["broker_transport_options"]["unacked_mutex_expire"] == restore_lock_expiry(config) == 24


def test_a_job_cannot_be_queued_for_no_models():
    """Every worker refuses a chunk whose models differ from its own: a hand-made config without models is an error
    before anything reaches Redis (none runs at this address)."""
    config = replace(QueueConfig.of(load({"env_file": "/dev/null"})), redis_url="redis://127.0.0.1:9/0", models={})
    with pytest.raises(QueueError, match="names no models"):
        enqueue(["/a.jpg"], config)


def test_worker_processes_divide_the_cores_for_their_forward_passes(monkeypatch):
    """`imsim worker -c N` without OMP_NUM_THREADS gives each process 1/N of the cores: N processes each spinning
    on every core slowed every forward pass; an OMP_NUM_THREADS the user set, or one process, is left alone."""
    import os

    from imsim.cli import jobs as jobs_cli

    ran: list[tuple[list[str], str | None]] = []

    def execvp(file: str, args: list[str]) -> None:
        ran.append((args, os.environ.get("OMP_NUM_THREADS")))

    monkeypatch.setattr(jobs_cli.os, "execvp", execvp)
    monkeypatch.setattr(jobs_cli.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    jobs_cli.worker(concurrency=1, pool="prefork", name="w", loglevel="INFO")
    assert ran[-1][1] is None and ran[-1][0][ran[-1][0].index("-c") + 1] == "1"
    jobs_cli.worker(concurrency=3, pool="prefork", name="w", loglevel="INFO")
    assert ran[-1][1] == "2" and ran[-1][0][ran[-1][0].index("-c") + 1] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    jobs_cli.worker(concurrency=3, pool="prefork", name="w", loglevel="INFO")
    assert ran[-1][1] == "4"
