"""Following a queued job and reporting an ingest's outcome: the progress display, its hints, and Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.markup import escape

from ..jobs.status import JobStatus
from ..settings import Settings, redact
from ..sources.names import printable
from ._common import INTERRUPTED, console, err, print_file_report, print_json, progress

WAIT_HINT_AFTER = 5.0  # seconds a queued job may sit unstarted before the display checks for workers


def follow(job_id: str, settings: Settings) -> JobStatus:
    """Show a queued job's progress until it ends. Redis going away for a while is waited out; with no worker on
    the queue the display says so; Ctrl-C leaves the job running and says how to follow or cancel it."""
    from ..jobs.health import redis_problem
    from ..jobs.queue import job_store

    jobs = job_store(settings)
    status = jobs.reads.get(job_id)
    since, workers_checked, no_worker = time.monotonic(), False, ""
    try:
        with progress() as bar, _interruptible() as interrupted:
            task = bar.add_task(f"job {job_id}", total=status.total, note="queued")
            while True:
                if interrupted.is_set():  # a Ctrl-C that a library call in progress swallowed
                    raise KeyboardInterrupt
                try:
                    status = jobs.reads.get(job_id)
                except Exception as exc:
                    if redis_problem(exc) is None:
                        raise
                    bar.update(
                        task,
                        note=f"[yellow]Redis at {escape(redact(settings.redis_url.get_secret_value()))} unreachable "
                        f"({type(exc).__name__}); retrying[/]",
                    )
                    time.sleep(1.0)
                    continue
                if not status.started_at and not workers_checked and time.monotonic() - since > WAIT_HINT_AFTER:
                    workers_checked = True
                    if not _workers_answer(settings):
                        no_worker = (
                            f"[yellow]waiting for a worker: none answers on queue '{escape(settings.queue)}' "
                            "(start one: `imsim worker`)[/]"
                        )
                # the hint stays until a worker starts the job
                note = no_worker if no_worker and not status.started_at else _note(status)
                bar.update(task, completed=status.settled, note=note)
                if status.finished_at:
                    return status
                time.sleep(0.5)
    except KeyboardInterrupt:
        err.print(
            f"\njob {job_id} goes on in the workers: follow it with `imsim status {job_id} --follow`, "
            f"stop it with `imsim cancel {job_id}`"
        )
        raise typer.Exit(INTERRUPTED) from None


@contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """Ctrl-C is honoured even where a broker or Redis call in progress catches KeyboardInterrupt: the signal is
    recorded, and the display's loop raises it again at its next turn (the main thread only; elsewhere, as is)."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _note(status: JobStatus) -> str:
    parts = []
    if status.failed:
        parts.append(f"[red]{status.failed} failed[/]")
    if status.skipped:
        parts.append(f"{status.skipped} unchanged")
    if status.cancelled_at:
        parts.append("cancelling")
    elif not status.started_at:
        parts.append("queued")
    return ", ".join(parts)


def _workers_answer(settings: Settings) -> bool:
    from ..jobs.queue import workers_on_queue

    return bool(workers_on_queue(settings))


def print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:  # paths as they print (a byte that is not UTF-8 as \xe9): JSON text is UTF-8
        print_json(outcome | {"failures": {printable(p): r for p, r in (outcome.get("failures") or {}).items()}})
        return
    cancelled = f", cancelled {outcome['cancelled']}" if outcome.get("cancelled") else ""
    updated = f" ({outcome['updated']} of them re-tagged or restamped)" if outcome.get("updated") else ""
    console.print(
        f"stored {outcome['done']}, skipped {outcome['skipped']} already stored unchanged{updated}, "
        f"failed {outcome['failed']}{cancelled} of {outcome['total']}",
        highlight=False,
    )
    failures = outcome.get("failures") or {}
    more = f" (all of them: imsim status {outcome['id']} --failures all)" if outcome.get("id") else ""
    print_file_report(
        failures, outcome.get("unmatched") or [], outcome.get("skipped_files") or {}, failed=outcome["failed"], more=more
    )
