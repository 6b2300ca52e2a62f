"""What Celery's Flower dashboard shows of imsim's queue, from the real Flower (PyPI ``flower``) run as deployed
(``celery -A workers flower``, basic auth) against the test Redis and a real worker: the ``imsim`` queue's length,
and every chunk task, waiting and running (a bare Flower with a broker URL only listed the default ``celery``
queue at 0, and no waiting chunk ever appeared)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis

from imsim.jobs.queue import enqueue
from imsim.sources.paths import discover

from .support.servers import ROOT, free_port, settings_env, stop, wait_for_port
from .support.settings import make_settings

pytestmark = pytest.mark.integration
AUTH = "imsim:flower-pw"


def api(port: int, path: str, auth: str | None = AUTH) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Labels(dict):
    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


def metrics(port: int) -> dict[tuple[str, Labels], float]:
    """Flower's /metrics as Prometheus parses it: (sample name, labels) -> value."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    out: dict[tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = Labels(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        out[(name, labels)] = float(value)
    return out


def test_flower_shows_the_backlog_and_the_running_chunks(
    tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, image_folder
):
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=4,
        queue="flower" + tmp_path.name[-8:],
    )
    port = free_port()
    log = open(tmp_path / "flower.log", "w")  # noqa: SIM115 - closed below
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "flower", f"--port={port}", "--address=127.0.0.1"],
        cwd=ROOT,
        env={**settings_env(settings), "FLOWER_BASIC_AUTH": AUTH},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60, proc=flower)
        with pytest.raises(urllib.error.HTTPError) as refused:
            api(port, "/api/queues/length", auth=None)
        assert refused.value.code == 401  # basic auth, as deployed
        time.sleep(2)  # Flower subscribes to task events
        files = discover([image_folder / "flags"]).files  # 24 images: 6 chunks
        job_id = enqueue(files, settings)
        queues = {q["name"]: q["messages"] for q in api(port, "/api/queues/length")["active_queues"]}
        assert queues.get(settings.queue) == 6, queues
        deadline = time.time() + 30
        while len(waiting := api(port, "/api/tasks")) < 6:  # task-sent events: the chunks show before a worker takes them
            assert time.time() < deadline, waiting
            time.sleep(0.5)
        assert {t["name"] for t in waiting.values()} == {"imsim.embed_chunk"} and job_id in next(iter(waiting.values()))["args"]
        assert {t["state"] for t in waiting.values()} == {"PENDING"}

        start_worker(settings, "flowerw")
        states: set[str] = set()
        deadline = time.time() + 120
        while True:
            tasks = api(port, "/api/tasks")
            states |= {t["state"] for t in tasks.values()}
            if len(tasks) >= 6 and all(t["state"] == "SUCCESS" for t in tasks.values()):
                break
            assert time.time() < deadline, states
            time.sleep(0.1)
        # every chunk went through the running states too (task-received, task-started events; they pass in ms here)
        assert all(t["received"] and t["started"] and t["worker"] for t in tasks.values()), tasks
        # ... shown from task events alone: no chunk left a Celery result key in Redis (nothing reads one; the job
        # record counts progress), where 1M files would otherwise keep 3,907 of them for the retention
        assert redis.Redis.from_url(redis_url).exists(*(f"celery-task-meta-{task_id}" for task_id in tasks)) == 0
        workers = api(port, "/api/workers?refresh=1")
        assert any(name.startswith("flowerw-1@") for name in workers), list(workers)
        queues = {q["name"]: q["messages"] for q in api(port, "/api/queues/length")["active_queues"]}
        assert queues.get(settings.queue) == 0

        # Prometheus scrapes the workers through Flower (and the API through `imsim serve`'s /metrics)
        samples = metrics(port)
        succeeded = sum(
            v
            for (name, labels), v in samples.items()
            if name == "flower_events_total"
            and labels.get("task") == "imsim.embed_chunk"
            and labels.get("type") == "task-succeeded"
        )
        assert succeeded == 6, sorted(k for k in samples if k[0] == "flower_events_total")
        by_worker = {labels.get("worker", "") for (name, labels), _ in samples.items() if name == "flower_events_total"}
        assert any(w.startswith("flowerw-1@") for w in by_worker), by_worker  # per worker, as Flower names it
        runtime = [v for (name, labels), v in samples.items() if name == "flower_task_runtime_seconds_count"]
        assert sum(runtime) == 6
    finally:
        stop(flower)
        log.close()
