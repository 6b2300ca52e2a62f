"""A chunk's life on a worker (imsim.jobs.runner), without Celery or Redis: job records kept in memory with the promises
the runner relies on (tests/support/records.py; the Redis store keeps them with Lua scripts, tests/test_jobs.py), models
that cost nothing and an in-memory sink, so each branch (stored, sealed, cancelled, refused then failed, split, poison
file, duplicate delivery) is checked in the unit tier, on the job status a user reads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from imsim.bench import NullStore, null_models
from imsim.ingest import Ingestor
from imsim.jobs.queue import Chunk, fleet_identity
from imsim.jobs.records import new_job_id
from imsim.jobs.runner import ChunkRunner
from imsim.sources.s3 import Listed

from .support.records import MemoryJobRecords
from .support.servers import SAMPLES


class CountingSink(NullStore):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self, name: str, *, wait: bool = True) -> None:
        self.flushes += 1


@pytest.fixture
def parts(settings):
    settings = settings.replace(max_deliveries=2, fleet_wait=0.0)
    sink = CountingSink()
    ingestor = Ingestor(settings, embedders=null_models(), store=sink)
    jobs = MemoryJobRecords()
    sent: list[Chunk] = []
    pauses: list[float] = []
    runner = ChunkRunner(settings, jobs, lambda: ingestor, sent.append, "worker-a", pause=pauses.append)
    yield settings, runner, jobs, sink, sent, pauses
    ingestor.close()


def photos(n: int) -> list[str]:
    return sorted(str(p) for p in (SAMPLES / "photos").glob("*.jpg"))[:n]


def new_job(jobs: MemoryJobRecords, files: list[str], chunks: int = 1) -> str:
    job_id = new_job_id()
    jobs.create(job_id, total=len(files), chunks=chunks)
    return job_id


def test_a_chunk_is_stored_counted_once_and_the_last_one_seals(parts, tmp_path):
    settings, runner, jobs, sink, _, _ = parts
    files = photos(4) + [str(tmp_path / "missing.jpg")]
    job_id = new_job(jobs, files, chunks=2)
    first = Chunk(job_id, "0", files[:3], models=fleet_identity(settings))
    outcome = runner.run(first)
    assert outcome.kind == "stored" and outcome.counts["done"] == 3 and sink.flushes == 0  # not the last chunk yet
    assert runner.run(first).kind == "dropped"  # a redelivery of a counted chunk
    last = runner.run(Chunk(job_id, "1", files[3:], models=fleet_identity(settings)))
    assert last.kind == "stored" and sink.flushes == 2  # the job's last chunk seals both collections
    status = jobs.status(job_id)
    assert (status.done, status.failed, status.chunks_done, status.running) == (4, 1, 2, {})
    assert "no such file" in status.failures[files[4]]
    assert {len(rows) for rows in sink.kept.values()} == {4}


def test_a_cancelled_job_is_counted_unread(parts):
    _, runner, jobs, sink, _, _ = parts
    files = photos(3)
    job_id = new_job(jobs, files)
    jobs.mark_cancelled(job_id)
    outcome = runner.run(Chunk(job_id, "0", files))
    assert outcome.kind == "cancelled" and outcome.counts == {"cancelled": 3}
    assert jobs.status(job_id).cancelled == 3 and not any(sink.kept.values())


def test_a_worker_with_other_models_refuses_then_the_files_fail_saying_why(parts):
    settings, runner, jobs, sink, _, pauses = parts
    files = photos(2)
    job_id = new_job(jobs, files)
    queued_for = {**fleet_identity(settings), "dinov2": "another-digest"}
    runner.settings = settings.replace(fleet_wait=3600.0)
    refused = runner.run(Chunk(job_id, "0", files, models=queued_for))
    assert refused.kind == "refused" and "settings for dinov2 differ" in refused.reason and pauses == [runner.refuse_pause]
    assert jobs.status(job_id).chunks_done == 0  # handed back, not counted
    runner.settings = settings  # IMSIM_FLEET_WAIT=0: no right worker came
    failed = runner.run(Chunk(job_id, "0", files, models=queued_for))
    assert failed.kind == "failed"
    status = jobs.status(job_id)
    assert status.failed == 2 and all("no worker on queue" in r and "IMSIM_FLEET_WAIT" in r for r in status.failures.values())
    assert not any(sink.kept.values())


def test_a_chunk_that_killed_its_worker_is_split_keeping_listed_facts_and_a_poison_file_fails_alone(parts):
    settings, runner, jobs, _, sent, _ = parts
    files = photos(3)
    uri = Listed("s3://bucket/a.jpg", (10, 1.0, "etag:abc"))
    job_id = new_job(jobs, [*files, uri])
    chunk = Chunk.of(job_id, "0", [*files, uri], models=fleet_identity(settings))
    for _ in range(settings.max_deliveries):  # attempts that started and never ended: their worker died
        assert jobs.begin_attempt(job_id, "0", {"worker": "gone"}) >= 0
    outcome = runner.run(chunk)
    assert outcome.kind == "split" and outcome.counts == {"split": ["0.0", "0.1"]}
    assert [(c.key, c.paths) for c in sent] == [("0.0", files[:2]), ("0.1", [files[2], str(uri)])]
    assert sent[1].listed == {str(uri): [10, 1.0, "etag:abc"]} and sent[0].listed is None
    assert jobs.status(job_id).splits == 1

    poison = Chunk(job_id, "0.0.0", [files[0]], models=fleet_identity(settings))
    for _ in range(settings.max_deliveries):
        jobs.begin_attempt(job_id, "0.0.0", {"worker": "gone"})
    failed = runner.run(poison)
    assert failed.kind == "failed" and "worker died 2 times" in failed.reason
    assert "IMSIM_MAX_DELIVERIES=2" in jobs.status(job_id).failures[files[0]]


def test_a_job_written_by_another_model_version_is_refused(parts):
    settings, runner, jobs, sink, _, _ = parts
    files = photos(1)
    job_id = new_job(jobs, files)
    jobs.mark_started(job_id, {"clip": "imsim_clip_000000", "dinov2": "imsim_dinov2_000000"})
    runner.settings = settings.replace(fleet_wait=3600.0)
    outcome = runner.run(Chunk(job_id, "0", files, models=fleet_identity(settings)))
    assert outcome.kind == "refused" and "another model revision or weights" in outcome.reason
    assert jobs.status(job_id).running == {} and not any(sink.kept.values())  # the attempt ended


def test_a_chunk_crosses_the_queue_as_one_named_message_and_older_positional_messages_still_read():
    from imsim.jobs.queue import MESSAGE_VERSION

    chunk = Chunk("job-1", "3.1", ["/a.jpg", "s3://b/c.png"], force=True, tags={"t": "v"}, models={"clip": "abc"})
    chunk = replace(chunk, listed={"s3://b/c.png": [10, 1.5, "etag:x"]})
    message = chunk.to_message()
    assert message["v"] == MESSAGE_VERSION and message["key"] == "3.1"
    assert json.loads(json.dumps(message)) == message  # what the broker carries
    assert Chunk.from_message([message]) == chunk
    legacy = Chunk.from_message(["job-1", 3, ["/a.jpg"]], {"force": True, "tags": None, "checksum": False})
    assert legacy == Chunk("job-1", "3", ["/a.jpg"], force=True)
    assert Chunk.from_message([], {}) is None
    with pytest.raises(ValueError, match="newer"):
        Chunk.from_message([message | {"v": MESSAGE_VERSION + 1}])
