"""``imsim worker``, ``jobs`` and ``status``: the queue side."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ImsimError
from ..jobs.queue import job_store
from ..jobs.records import JobStore
from ..settings import get_settings
from ..sources.names import printable
from ._common import FAILURES_SHOWN, SOME_FAILED, JsonOpt, console, csv_cell, err, print_file_report, print_json, stamp, wide

app = typer.Typer()


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Worker processes (one per GPU is usual).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork or solo.")] = "prefork",
    name: Annotated[
        str, typer.Option("--name", "-n", help="The worker's name in Flower and `imsim doctor` (unique per host).")
    ] = "imsim",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a Celery worker that consumes ingest jobs (same as `celery -A workers worker -Q QUEUE -E`).

    \b
    Examples:
      imsim worker                                  one process, the queue IMSIM_QUEUE
      IMSIM_DEVICE=cuda:1 imsim worker -n gpu1      one per GPU, each named for Flower and `imsim doctor`
      imsim worker --pool solo                      in this process (debugging)

    With -c N and no OMP_NUM_THREADS set, each process's CPU forward passes get 1/N of the cores: two workers of
    two threads each on 2 cores ingested 48.9 images/s, of one thread each 138.9 (benchmarks/scale.py workers)."""
    settings = get_settings()
    if concurrency > 1 and not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // concurrency))
    celery = shutil.which("celery") or "celery"
    args = [
        celery,
        "-A",
        "workers",
        "worker",
        "-Q",
        settings.queue,
        "-c",
        str(concurrency),
        "-P",
        pool,
        "-n",
        f"{name}@%h",
        "-E",
        "-l",
        loglevel,
    ]
    os.execvp(args[0], args)


def _jobs() -> JobStore:
    store = job_store(get_settings())
    store.ping()
    return store


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20, as_json: JsonOpt = False) -> None:
    """Recent jobs with done / failed / skipped / pending counts (each job on one line when the terminal is wide
    enough, on two when it is not: ids and counts are never cut)."""
    found = _jobs().reads.list(limit)
    if as_json:
        print_json([s.as_dict() for s in found])
        return
    if not found:
        err.print("no jobs (finished jobs are kept for IMSIM_JOB_RETENTION)")
        return
    if wide():
        table = Table("job", "state", "total", "done", "failed", "skipped", "pending", "created")
        for column in table.columns:
            column.no_wrap, column.overflow = True, "ignore"
        for s in found:
            counts = (s.total, s.done, s.failed, s.skipped, s.pending)
            table.add_row(s.id, s.state, *(f"{x:,}" for x in counts), stamp(s.created_at))
        console.print(table)
        return
    for s in found:  # narrow terminals: the id and state on one line, the counts on the next
        console.print(f"{s.id}  {s.state}  created {stamp(s.created_at)}", highlight=False, soft_wrap=True)
        console.print(
            f"  total {s.total:,}, done {s.done:,}, failed {s.failed:,}, skipped {s.skipped:,}, pending {s.pending:,}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def status(
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show the job's progress until it ends (exit 1 if a file failed).")
    ] = False,
    failures: Annotated[
        str, typer.Option("--failures", help=f"How many failures to print: a number, or all (default {FAILURES_SHOWN}).")
    ] = str(FAILURES_SHOWN),
    csv_file: Annotated[
        str | None, typer.Option("--csv", help="Write every failure (path, reason) to this CSV file, streamed.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One job's counts, times, what its inputs left out, running chunks and its failures with their reasons.

    Reading a job costs the same whatever its size: counts are kept apart from failures, which are read in pages.

    \b
    Examples:
      imsim status JOB --follow
      imsim status JOB --failures all
      imsim status JOB --csv failures.csv"""
    shown = _how_many(failures)
    jobs = _jobs()
    s = jobs.reads.get(job_id)
    if follow and not s.finished_at:
        from .follow import follow as follow_job

        s = follow_job(job_id, get_settings())
    s.failures = {printable(p): reason for p, reason in jobs.reads.failures(job_id, 0, shown)} if shown else {}
    if csv_file:
        written = _write_csv(jobs, job_id, csv_file)
        err.print(f"{written:,} failures written to {printable(csv_file)}", highlight=False)
    if as_json:
        print_json(s.as_dict())
        return
    console.print(
        f"job {s.id}: {s.state}; total {s.total}, done {s.done}, failed {s.failed}, skipped {s.skipped}, "
        f"cancelled {s.cancelled}, pending {s.pending} ({s.in_progress} settled in running chunks); "
        f"chunks {s.chunks_done}/{s.chunks}" + (f", {s.splits} split" if s.splits else ""),
        highlight=False,
    )
    console.print(
        f"created {stamp(s.created_at)}, started {stamp(s.started_at)}, finished {stamp(s.finished_at)}"
        + (f", cancelled {stamp(s.cancelled_at)}" if s.cancelled_at else "")
        + (f"; retry of {s.retry_of}" if s.retry_of else "")
        + (f"; retried by {s.retried_by}" if s.retried_by else "")
        + (f"; record kept until {stamp(s.expires_at)}" if s.expires_at else ""),
        highlight=False,
    )
    if s.enqueue_error:
        console.print(f"  queuing stopped early: {s.enqueue_error}", highlight=False, soft_wrap=True)
    for chunk, info in sorted(s.running.items()):
        console.print(
            f"  running chunk {chunk}: {info.get('files')} files on {info.get('worker')} (pid {info.get('pid')}) "
            f"since {stamp(info.get('started'))}",
            highlight=False,
        )
    print_file_report(
        s.failures,
        s.unmatched,
        s.skipped_files,
        failed=s.failed,
        unmatched_count=s.unmatched_count,
        more=f" (all of them: imsim status {job_id} --failures all, or --csv FILE)",
    )
    if follow and s.failed:
        raise typer.Exit(SOME_FAILED)


def _how_many(text: str) -> int:
    if text.strip().lower() == "all":
        return 1 << 62
    try:
        value = int(text)
    except ValueError:
        raise ImsimError(f"--failures {text!r}: give a number or all") from None
    if value < 0:
        raise ImsimError(f"--failures {text!r}: give a number >= 0 or all")
    return value


def _write_csv(jobs: JobStore, job_id: str, target: str) -> int:
    import csv

    written = 0
    try:
        with open(target, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(["path", "reason"])
            for path, reason in jobs.reads.iter_failures(job_id):
                out.writerow([csv_cell(printable(path)), csv_cell(reason)])
                written += 1
    except OSError as exc:
        raise ImsimError(f"cannot write {target}: {exc.strerror or exc}") from None
    return written
