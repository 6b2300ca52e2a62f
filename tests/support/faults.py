"""What the fault tests share: waiting for a job, reading a worker's log, and checking the store row by row."""

from __future__ import annotations

import re
import time

from imsim.jobs.records import JobStore
from imsim.store import VectorStore

RECEIVED = re.compile(r"Task imsim\.embed_chunk\[[0-9a-f-]+\] received")
SUCCEEDED = re.compile(r"Task imsim\.embed_chunk\[[0-9a-f-]+\] succeeded")


def wait_until(condition, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_finished(jobs: JobStore, job_id: str, timeout: float = 300):
    return wait_until(lambda: (s := jobs.reads.get(job_id)).finished_at and s, timeout, f"job {job_id} to finish", poll=0.3)


def busy(worker) -> bool:
    """The worker has taken a chunk it has not finished yet (from its log).

    Only the log since the worker's latest start and its pool process's latest death counts: a chunk a SIGKILL
    interrupted earlier is "received" without ever "succeeding" in that worker's log, and would otherwise make the
    worker look busy for ever (a kill "mid-chunk" then lands between chunks and nothing is redelivered).
    """
    text = worker.log_path.read_text()
    for mark in ("ready.", "exited with 'signal"):
        text = text[text.rfind(mark) + 1 :] if mark in text else text
    return len(RECEIVED.findall(text)) > len(SUCCEEDED.findall(text))


def rows_per_image(store: VectorStore) -> dict[str, dict[str, int]]:
    """For each collection: path -> number of rows holding it (read back with a query iterator)."""
    out: dict[str, dict[str, int]] = {}
    for name in store.versions.collections():
        counts: dict[str, int] = {}
        for batch in store.rows.iter_rows(name, output_fields=["path"]):
            for row in batch:
                counts[row["path"]] = counts.get(row["path"], 0) + 1
        out[name] = counts
    return out


def assert_exactly_once(store: VectorStore, files: list[str]) -> None:
    per_collection = rows_per_image(store)
    assert len(per_collection) == 2
    for name, counts in per_collection.items():
        duplicates = {p: n for p, n in counts.items() if n > 1}
        assert not duplicates, f"{name}: duplicate rows {list(duplicates.items())[:5]}"
        assert set(counts) == set(files), f"{name}: {len(set(files) - set(counts))} images missing"
        assert store.rows.count(name) == len(files)
