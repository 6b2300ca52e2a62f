"""``imsim ingest``, ``retry``, ``sync``, ``delete`` and ``cancel``: putting images in, taking them out, following jobs."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import ImsimError
from ..jobs.queue import job_store
from ..jobs.status import JobStatus
from ..settings import Settings, get_settings
from ..sources.names import is_uri, printable
from ..sources.paths import Discovery, PathList, Seen, iter_files
from ..util import peeked
from ..vocabulary import IngestOptions
from ._common import (
    FAILURES_SHOWN,
    INTERRUPTED,
    OK,
    SOME_FAILED,
    JsonOpt,
    build,
    console,
    err,
    help_of,
    parse_tag_options,
    print_json,
    print_json_or,
    progress,
)
from .follow import follow, print_outcome

app = typer.Typer()


@app.command()
def ingest(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files, folders (recursive) or globs (* stays in a folder, ** crosses folders).")
    ] = None,
    from_file: Annotated[
        str | None,
        typer.Option(
            "--from-file",
            help="A text file with one file path per line (byte-exact; # comments and blank lines skipped), streamed.",
        ),
    ] = None,
    expand: Annotated[
        bool, typer.Option("--expand", help="Read each --from-file line as an input: folders walked, globs expanded.")
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="Run in this process: no Redis or workers needed.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow a queued job's progress until it ends.")] = True,
    force: Annotated[bool, typer.Option("--force", help=help_of(IngestOptions, "force"))] = False,
    checksum: Annotated[bool, typer.Option("--checksum", help=help_of(IngestOptions, "checksum"))] = False,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", help=help_of(IngestOptions, "tags") + " As key=value, repeatable.")
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate", help="When done, make the versions just written the ones queries use.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed images with every enabled model and upsert them: queued to Celery workers, or --local.

    Files already stored unchanged (same size, mtime and inode, or the same content) are skipped without
    being embedded again. Each model version writes to its own collection; the first version of a model
    becomes the one queries use, later ones only with --activate or `imsim models activate`. Exit code 1
    when any file failed or an input matched no image (the rest are stored), 2 when nothing could be
    ingested at all.

    \b
    Examples:
      imsim ingest /photos                      queued to the workers, progress until done
      imsim ingest --local ~/Pictures '*.png'   in this process
      imsim ingest --from-file list.txt --no-wait --tag source=nas"""
    inputs = list(paths or [])
    listed = PathList(from_file) if from_file else None
    if not inputs and listed is None:
        raise ImsimError("nothing to ingest: give paths, folders, globs or --from-file")
    if activate and not local and not wait:
        raise ImsimError("--activate needs the job to finish first: drop --no-wait, or run `imsim models activate` later")
    options = build(IngestOptions, {"force": force, "checksum": checksum, "tags": parse_tag_options(tags)})
    found, seen = Discovery(), Seen() if listed is not None else None
    stream = iter_files(inputs, found, seen=seen)
    if listed is not None:
        stream = itertools.chain(stream, iter_files(listed, found, literal=not expand, seen=seen))
    files = peeked(stream)
    if files is None:
        described = [*map(printable, inputs)] + ([f"--from-file {printable(listed.file)}"] if listed is not None else [])
        raise ImsimError(f"no image files found in {', '.join(described)}" + _skipped_note(found))
    code = run_ingest(
        files,
        found,
        inputs + ([f"--from-file {listed.file}"] if listed is not None else []),
        options,
        local=local,
        wait=wait,
        as_json=as_json,
        activate=activate,
        path_list=listed,
    )
    raise typer.Exit(code)


def _skipped_note(found: Discovery) -> str:
    if not found.skipped:
        return ""
    return " (skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(found.skipped.items())) + ")"


def run_ingest(
    files: Iterable[str],
    found: Discovery,
    inputs: list[str],
    options: IngestOptions,
    *,
    local: bool,
    wait: bool,
    as_json: bool,
    retry_of: str = "",
    activate: bool = False,
    path_list: PathList | None = None,
) -> int:
    """Ingest ``files`` (a stream) in this process (``local``) or as a queued job, report the outcome; returns the
    exit code."""
    settings = get_settings()
    if local:
        outcome = _ingest_here(files, settings, options, activate=activate)
    else:
        from ..jobs.queue import enqueue

        with progress() as bar:
            task = bar.add_task("queuing", total=None, note="")
            job_id = enqueue(
                files,
                settings,
                options,
                inputs=inputs,
                retry_of=retry_of,
                found=found,
                path_list=path_list,
                on_sent=lambda n: bar.advance(task, n),
            )
            sent = int(bar.tasks[0].completed)
            bar.update(task, total=sent)
        err.print(
            f"queued job [bold]{job_id}[/]: {sent} images in chunks of {settings.chunk_size} on queue '{escape(settings.queue)}'",
            markup=True,
            highlight=False,
        )
        if not wait:
            console.print(job_id)
            return OK
        status = follow(job_id, settings)
        if activate:
            from ..store import VectorStore

            with VectorStore(settings) as store:
                _activate(store, status.collections)
        outcome = status_outcome(status, settings)
    outcome["unmatched"] = found.unmatched
    outcome["skipped_files"] = found.skipped
    print_outcome(outcome, as_json)
    return SOME_FAILED if outcome["failed"] or found.unmatched else OK


def _ingest_here(files: Iterable[str], settings: Settings, options: IngestOptions, *, activate: bool) -> dict[str, Any]:
    from ..ingest import ChunkResult, Ingestor, ingest_local
    from ..store import open_store

    store = open_store(settings)  # a store another process holds fails here, before the models load
    counted = ChunkResult()
    with progress() as bar:
        task = bar.add_task("ingest", total=None, note=f"loading models ({settings.models})")

        def announced(stream: Iterable[str]) -> Iterator[str]:
            """The files, growing the bar's total as they are found (the bar knows the total once they all are)."""
            for n, path in enumerate(stream, 1):
                bar.update(task, total=n)
                yield path

        with Ingestor(settings, store=store) as ingestor:
            bar.update(task, note="")
            try:
                result = ingest_local(
                    announced(files),
                    settings,
                    ingestor=ingestor,
                    force=options.force,
                    checksum=options.checksum,
                    tags=options.tags or None,
                    on_progress=lambda n: bar.advance(task, n),
                    on_chunk=counted.merge,
                )
                if activate:
                    _activate(ingestor.store, ingestor.collections)
            except KeyboardInterrupt:
                bar.stop()
                err.print(
                    f"interrupted: {counted.done} stored, {counted.skipped} unchanged, {len(counted.failures)} failed "
                    "before the last complete chunk; run the same command again to resume (stored files are skipped)"
                )
                raise typer.Exit(INTERRUPTED) from None
            finally:
                ingestor.store.close()
        total = int(bar.tasks[0].total or 0)
    return {"total": total, **result.as_dict()}


def _activate(store: Any, collections: dict[str, str]) -> None:
    for model, collection in collections.items():
        store.versions.activate(model, collection)
        err.print(f"queries for {model} now use {collection}")


def status_outcome(status: JobStatus, settings: Settings) -> dict[str, Any]:
    """A finished job as an ingest outcome: its counts and its first failures (every failure: `imsim status JOB`)."""
    return status.as_dict() | {"failures": dict(job_store(settings).reads.failures(status.id, 0, FAILURES_SHOWN))}


@app.command()
def retry(
    job_id: str,
    local: Annotated[bool, typer.Option("--local", help="Run in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the new job's progress.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Re-queue only the files that failed in JOB_ID, as a new job linked to it (nothing to do if none failed).

    Exit code 1 when a file fails again, 2 while JOB_ID is still running.

    \b
    Example:
      imsim retry 20261206-081222-abcdef12"""
    from ..jobs.queue import failed_files

    settings = get_settings()
    failed = peeked(failed_files(job_id, settings))
    if failed is None:
        err.print(f"job {job_id} has no failed files: nothing to retry")
        raise typer.Exit(OK)
    code = run_ingest(
        failed,
        Discovery(),
        [f"failed files of {job_id}"],
        IngestOptions(),
        local=local,
        wait=wait,
        as_json=as_json,
        retry_of=job_id,
    )
    raise typer.Exit(code)


@app.command()
def cancel(job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a queued or running job at once: workers drop its queued chunks unread as they reach them, and running
    chunks stop at their next slice (what they stored stays stored).

    \b
    Example:
      imsim cancel 20261206-081222-abcdef12"""
    from ..jobs.queue import cancel as cancel_job

    status = cancel_job(job_id, get_settings())
    if as_json:
        print_json(status.as_dict())
        return
    console.print(
        f"job {job_id}: {status.state}; {status.cancelled} files dropped and {status.done} stored so far; "
        f"{len(status.running)} chunk(s) running stop at their next slice, queued chunks are dropped as workers reach them",
        highlight=False,
    )


@app.command()
def sync(
    paths: Annotated[list[str], typer.Argument(help="Folders (or files) whose stored rows should match the disk.")],
    local: Annotated[bool, typer.Option("--local", help="Re-embed in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the queued job's progress until it ends.")] = True,
    checksum: Annotated[
        bool, typer.Option("--checksum", help="Hash every file to find changes, instead of trusting size, mtime and inode.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed; ingest nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove rows for files under PATHS that no longer exist, then ingest PATHS.

    Changed files are re-embedded; unchanged ones (same size, mtime and inode) are skipped without reading them.

    \b
    Examples:
      imsim sync /photos --dry-run
      imsim sync /photos --local"""
    from .. import maintenance
    from ..store import open_store

    with open_store(get_settings()) as store:
        gone = maintenance.remove_missing(store, paths, dry_run=dry_run)
    err.print(
        f"{gone.total} stored rows point to files that no longer exist"
        + (" (dry run: nothing removed)" if dry_run else "; removed from every collection"),
        highlight=False,
    )
    for path in gone.sample:
        err.print(f"  [yellow]gone[/] {escape(printable(path))}", markup=True, highlight=False)
    if gone.total > len(gone.sample):
        err.print(f"  ... and {gone.total - len(gone.sample)} more", highlight=False)
    existing = [p for p in paths if os.path.exists(p) or is_uri(p)]
    found = Discovery()
    files = peeked(iter_files(existing, found))
    if dry_run or files is None:
        outcome: dict[str, Any] = {"missing": gone.total, "missing_sample": gone.sample}
        outcome["removed" if not dry_run else "would_remove"] = gone.rows
        print_json_or(outcome, as_json)
        return
    raise typer.Exit(
        run_ingest(files, found, list(paths), IngestOptions(checksum=checksum), local=local, wait=wait, as_json=as_json)
    )


@app.command()
def delete(
    selectors: Annotated[
        list[str],
        typer.Argument(
            help="Row ids, paths (a folder means everything below it) or globs (* stays in a folder, ** crosses folders). "
            "A path that exists, or has stored rows, is taken literally even if it holds * ? or [."
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete rows by id, path, folder or glob from every imsim collection; shows the count and a sample first.

    \b
    Examples:
      imsim delete /photos/2019 --yes              a folder (everything below it)
      imsim delete '/photos/**/*.tmp.jpg'         a glob
      imsim delete '/photos/photo[1].jpg'         a file that exists is literal"""
    from .. import maintenance
    from ..store import open_store

    with open_store(get_settings()) as store:
        chosen = [maintenance.resolve(store, s) for s in selectors]
        counts = maintenance.count(store, chosen)
        matched = max(counts.values(), default=0)
        named = ", ".join(printable(s) for s in selectors)
        if not matched:
            raise ImsimError(f"no stored rows match {named}")
        err.print(
            f"{matched} image(s) match {named} (" + ", ".join(f"{n:,} in {name}" for name, n in counts.items()) + "):",
            highlight=False,
        )
        for path in maintenance.sample(store, chosen):
            err.print(f"  {printable(path)}", highlight=False, soft_wrap=True)
        if matched > maintenance.SAMPLE:
            err.print(f"  ... and {matched - maintenance.SAMPLE} more", highlight=False)
        if not yes and not typer.confirm(f"delete these {matched} images from every collection?", err=True):
            raise typer.Exit(SOME_FAILED)
        removed = maintenance.delete(store, chosen)
    print_json_or({"matched": matched, "removed": removed}, as_json)
