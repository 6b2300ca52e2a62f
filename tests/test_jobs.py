"""Job records on a real Redis: O(1) to read whatever a job's size, failures paged, bounded per job, expiring."""

from __future__ import annotations

import time
import uuid

import pytest

from imsim.errors import QueueError
from imsim.jobs.reads import JOBS_INDEX, decode_path, encode_path
from imsim.jobs.records import JobStore
from imsim.jobs.scripts import job_key


def _job(jobs: JobStore, chunks: int, **kwargs) -> str:
    job_id = "t-" + uuid.uuid4().hex[:8]
    jobs.create(job_id, total=chunks * 1000, chunks=chunks, inputs=["/in"], models=["clip"], **kwargs)
    return job_id


def test_reading_a_job_never_reads_its_failures_and_failures_come_in_pages(redis_url):
    jobs = JobStore(redis_url)
    job_id = _job(jobs, chunks=3)
    for chunk in range(2):  # 2,000 failures, one reason each chunk (an outage fails a chunk with one reason)
        failures = {f"/data/{chunk}/{i:04d}.jpg": f"chunk failed: StoreUnavailable ({chunk})" for i in range(1000)}
        assert jobs.record_chunk(job_id, chunk, 0, 0, failures)
    status = jobs.reads.get(job_id)
    assert (status.failed, status.failures, status.state) == (2000, {}, "running")
    page = jobs.reads.failures(job_id, 999, 3)
    assert page == [
        ("/data/0/0999.jpg", "chunk failed: StoreUnavailable (0)"),
        ("/data/1/0000.jpg", "chunk failed: StoreUnavailable (1)"),
        ("/data/1/0001.jpg", "chunk failed: StoreUnavailable (1)"),
    ]
    assert sum(1 for _ in jobs.reads.iter_failures(job_id, page=300)) == 2000
    assert list(jobs.reads.get(job_id, failures=2).failures) == ["/data/0/0000.jpg", "/data/0/0001.jpg"]
    # the reasons are kept once each: the failure list holds ids and paths
    assert jobs.redis.hlen(job_key(job_id) + ":reasons") == 1 + 2 * 2
    assert jobs.redis.lindex(job_key(job_id) + ":failures", 0) == "1\tu/data/0/0000.jpg"


def test_distinct_reasons_are_kept_to_a_cap_then_by_their_kind_and_counted(redis_url, monkeypatch):
    """1M failures whose reasons each name their file took 411 MB of Redis (345 MB in ':reasons'), 9x the one-reason
    case. A job keeps MAX_REASONS distinct texts; past them a failure keeps its kind (the reason without its path and
    numbers), and the job counts how many were folded. Reasons longer than MAX_REASON_CHARS are cut."""
    from imsim.jobs import records

    monkeypatch.setattr(records, "MAX_REASONS", 50)
    jobs = JobStore(redis_url)
    job_id = _job(jobs, chunks=2)
    failures = {f"/data/{i:04d}.jpg": f"cannot decode /data/{i:04d}.jpg: broken stream at byte {i * 7}" for i in range(300)}
    assert jobs.record_chunk(job_id, 0, 0, 0, failures)
    assert jobs.record_chunk(job_id, 1, 0, 0, {"/x/long.jpg": "y" * 5000})
    status = jobs.reads.get(job_id)
    assert status.failed == 301 and status.reasons_folded == 251  # 50 kept whole, then the kind; the long one too
    read = dict(jobs.reads.iter_failures(job_id))
    assert read["/data/0000.jpg"] == "cannot decode /data/0000.jpg: broken stream at byte 0"
    assert read["/data/0299.jpg"] == "(kind) cannot decode …: broken stream at byte #"
    assert read["/x/long.jpg"].startswith("(kind) yyy") and len(read["/x/long.jpg"]) <= 200
    assert jobs.redis.hlen(job_key(job_id) + ":reasons") == 1 + 2 * 52  # 50 texts and 2 kinds, each both ways


def test_a_finished_job_keeps_its_counts_and_failures_sheds_its_chunk_bookkeeping_and_expires(redis_url):
    jobs = JobStore(redis_url, retention=1)
    job_id = _job(jobs, chunks=2)
    jobs.begin_attempt(job_id, "0", {"worker": "w"})
    jobs.progress(job_id, "0", 5)
    jobs.record_chunk(job_id, "0", 999, 0, {"/x.jpg": "broken"})
    jobs.end_attempt(job_id, "0")
    jobs.begin_attempt(job_id, "1", {"worker": "w"})
    assert jobs.redis.exists(*(f"{job_key(job_id)}:{s}" for s in ("chunks", "attempts", "ends", "progress", "running")))
    jobs.record_chunk(job_id, "1", 1000, 0, {})
    jobs.end_attempt(job_id, "1")  # after the finish: must not bring the bookkeeping back
    status = jobs.reads.get(job_id, failures=10)
    assert (status.state, status.done, status.failed) == ("finished_with_failures", 1999, 1)
    assert status.failures == {"/x.jpg": "broken"}
    assert status.expires_at is not None
    keys = set(jobs.redis.scan_iter(job_key(job_id) + "*"))
    assert keys == {job_key(job_id), *(f"{job_key(job_id)}:{s}" for s in ("failures", "reasons", "about"))}
    assert all(0 < jobs.redis.ttl(k) <= 1 for k in keys)
    # a late duplicate of a chunk of a finished job is neither counted nor started
    assert not jobs.record_chunk(job_id, "1", 1000, 0, {})
    assert jobs.begin_attempt(job_id, "1", {"worker": "w"}) == -1
    time.sleep(2.2)
    assert not jobs.redis.exists(*keys)
    assert job_id not in [j.id for j in jobs.reads.list(50)] and jobs.redis.zscore(JOBS_INDEX, job_id) is None
    with pytest.raises(QueueError, match="older than IMSIM_JOB_RETENTION"):
        jobs.reads.get(job_id)


def test_a_queuing_job_cannot_finish_before_its_last_chunk_is_sent(redis_url):
    jobs = JobStore(redis_url)
    job_id = "t-" + uuid.uuid4().hex[:8]
    jobs.create(job_id, inputs=["/in"], models=["clip"], queuing=True)
    jobs.add_chunks(job_id, 10)
    assert jobs.record_chunk(job_id, "0", 10, 0, {})  # the workers are faster than the sender
    assert jobs.reads.get(job_id).state == "queuing" and not jobs.is_finished(job_id)
    jobs.add_chunks(job_id, 5)
    jobs.record_chunk(job_id, "1", 5, 0, {})
    jobs.seal(job_id, skipped={"not an image type (.txt)": 2}, unmatched=["/nothing"], path_list={"lines": 15})
    status = jobs.reads.get(job_id)
    assert (status.state, status.total, status.done, status.chunks) == ("finished", 15, 15, 2)
    assert status.skipped_files == {"not an image type (.txt)": 2} and status.unmatched == ["/nothing"]
    assert status.path_list == {"lines": 15}


def test_failed_paths_are_kept_byte_exact_for_retry(redis_url):
    odd = ["/a/caf\udce9.jpg", "/a/nul\x00.jpg", "/a/tab\tand space .jpg", "/a/ünïcödé.jpg"]
    assert [decode_path(encode_path(p)) for p in odd] == odd
    jobs = JobStore(redis_url)
    job_id = _job(jobs, chunks=1)
    jobs.record_chunk(job_id, "0", 0, 0, {p: "no such file" for p in odd})
    assert [p for p, _ in jobs.reads.iter_failures(job_id)] == odd


def test_a_record_is_bounded_whatever_the_jobs_size(redis_url):
    """Counts only in the job hash; inputs and unmatched inputs summarised: the record of a million-input job is as
    small as a one-input job's (failures aside)."""
    jobs = JobStore(redis_url)
    inputs = [f"/data/folder-{i:07d}" for i in range(100_000)]
    job_id = "t-" + uuid.uuid4().hex[:8]
    jobs.create(job_id, inputs=inputs, models=["clip", "dinov2"], queuing=True)
    for chunk in range(50):
        jobs.add_chunks(job_id, 256)
        jobs.begin_attempt(job_id, str(chunk), {"worker": "w", "pid": 1, "started": 0, "files": 256})
        jobs.record_chunk(job_id, str(chunk), 256, 0, {})
        jobs.end_attempt(job_id, str(chunk))
    jobs.seal(job_id, unmatched=inputs)
    status = jobs.reads.get(job_id)
    assert status.state == "finished" and status.inputs_count == 100_000 and status.inputs == inputs[: len(status.inputs)]
    assert 5 <= len(status.inputs) < 20  # the first inputs that fit in the summary
    assert status.unmatched_count == 100_000 and status.unmatched == status.inputs
    used = sum(int(jobs.redis.memory_usage(k) or 0) for k in jobs.redis.scan_iter(job_key(job_id) + "*"))
    assert used <= 2048, used
