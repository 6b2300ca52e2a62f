"""``imsim ingest``, ``retry``, ``sync``, ``delete`` and ``cancel``: putting images in, taking them out, following jobs."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import ImsimError
from ..paths import Discovery, discover, printable, read_path_list
from ..settings import Settings, get_settings
from ._common import OK, SOME_FAILED, JsonOpt, console, err, print_json, print_json_or, progress
from .follow import follow, print_outcome

app = typer.Typer()


@app.command()
def ingest(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files, folders (recursive) or globs (* stays in a folder, ** crosses folders).")
    ] = None,
    from_file: Annotated[
        str | None, typer.Option("--from-file", help="A text file with one path per line (kept byte-exact).")
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run in this process: no Redis or workers needed.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow a queued job's progress until it ends.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Re-embed files already stored unchanged.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="key=value stored with every image (repeatable); filter with search --tag.")
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate", help="When done, make the versions just written the ones queries use.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed images with every enabled model and upsert them: queued to Celery workers, or --local.

    Each model version writes to its own collection; the first version of a model becomes the one queries
    use, later ones only with --activate or `imsim models activate`. Exit code 1 when any file failed or an
    input matched no image (the rest are stored), 2 when nothing could be ingested at all."""
    inputs = list(paths or []) + (read_path_list(from_file) if from_file else [])
    if not inputs:
        raise ImsimError("nothing to ingest: give paths, folders, globs or --from-file")
    found = discover(inputs)
    if not found.files:
        raise ImsimError(f"no image files found in {', '.join(printable(i) for i in inputs)}" + _skipped_note(found))
    if activate and not local and not wait:
        raise ImsimError("--activate needs the job to finish first: drop --no-wait, or run `imsim models activate` later")
    code = run_ingest(found, inputs, local=local, wait=wait, force=force, as_json=as_json, tags=_tags(tag), activate=activate)
    raise typer.Exit(code)


def _skipped_note(found: Discovery) -> str:
    if not found.skipped:
        return ""
    return " (skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(found.skipped.items())) + ")"


def _tags(items: list[str] | None) -> dict[str, str] | None:
    from ..expr import parse_tags

    try:
        return parse_tags(items) if items else None
    except ValueError as exc:
        raise ImsimError(str(exc)) from None


def run_ingest(
    found: Discovery,
    inputs: list[str],
    *,
    local: bool,
    wait: bool,
    force: bool,
    as_json: bool,
    retry_of: str = "",
    tags: dict[str, str] | None = None,
    activate: bool = False,
) -> int:
    """Ingest ``found.files`` in this process (``local``) or as a queued job, report the outcome; returns the exit code."""
    settings = get_settings()
    files = found.files
    if local:
        outcome = _ingest_here(files, settings, force=force, tags=tags, activate=activate)
    else:
        from ..queue import enqueue

        job_id = enqueue(
            files,
            settings,
            inputs=inputs,
            force=force,
            retry_of=retry_of,
            tags=tags,
            skipped=found.skipped,
            unmatched=found.unmatched,
        )
        err.print(
            f"queued job [bold]{job_id}[/]: {len(files)} images in chunks of {settings.chunk_size} "
            f"on queue '{escape(settings.queue)}'",
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
        outcome = status.as_dict()
    outcome["unmatched"] = found.unmatched
    outcome["skipped_files"] = found.skipped
    print_outcome(outcome, as_json)
    return SOME_FAILED if outcome["failed"] or found.unmatched else OK


def _ingest_here(
    files: list[str], settings: Settings, *, force: bool, tags: dict[str, str] | None, activate: bool
) -> dict[str, Any]:
    from ..ingest import Ingestor, ingest_local

    with progress() as bar:
        task = bar.add_task("ingest", total=len(files), note=f"loading models ({settings.models})")
        with Ingestor(settings) as ingestor:
            bar.update(task, note="")
            try:
                result = ingest_local(
                    files, settings, ingestor=ingestor, force=force, tags=tags, on_progress=lambda n: bar.advance(task, n)
                )
                if activate:
                    _activate(ingestor.store, ingestor.collections)
            finally:
                ingestor.store.close()
    return {"total": len(files), **result.as_dict()}


def _activate(store: Any, collections: dict[str, str]) -> None:
    for model, collection in collections.items():
        store.activate(model, collection)
        err.print(f"queries for {model} now use {collection}")


@app.command()
def retry(
    job_id: str,
    local: Annotated[bool, typer.Option("--local", help="Run in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the new job's progress.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Re-queue only the files that failed in JOB_ID, as a new job linked to it (nothing to do if none failed).

    Exit code 1 when a file fails again, 2 while JOB_ID is still running."""
    from ..queue import failed_files

    failed = failed_files(job_id, get_settings())
    if not failed:
        err.print(f"job {job_id} has no failed files: nothing to retry")
        raise typer.Exit(OK)
    code = run_ingest(
        Discovery(files=failed),
        [f"failed files of {job_id}"],
        local=local,
        wait=wait,
        force=False,
        as_json=as_json,
        retry_of=job_id,
    )
    raise typer.Exit(code)


@app.command()
def cancel(job_id: str, as_json: JsonOpt = False) -> None:
    """Cancel a queued or running job: chunks still queued are dropped, chunks a worker holds finish."""
    from ..queue import cancel as cancel_job

    status = cancel_job(job_id, get_settings())
    if as_json:
        print_json(status.as_dict())
        return
    console.print(
        f"job {job_id}: {status.state}; {status.cancelled} files dropped, {status.done} stored, "
        f"{len(status.running)} chunk(s) still finishing",
        highlight=False,
    )


@app.command()
def sync(
    paths: Annotated[list[str], typer.Argument(help="Folders (or files) whose stored rows should match the disk.")],
    local: Annotated[bool, typer.Option("--local", help="Re-embed in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed and re-embedded.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove rows for files under PATHS that no longer exist, then ingest PATHS.

    Changed files are re-embedded, unchanged ones skipped."""
    from .. import maintenance
    from ..store import open_store

    with open_store(get_settings()) as store:
        gone = maintenance.missing(store, paths)
        removed = {} if dry_run else maintenance.delete(store, gone)
    err.print(
        f"{len(gone)} stored rows point to files that no longer exist" + ("" if dry_run else "; removed from every collection")
    )
    for path in sorted(gone.values())[:20]:
        err.print(f"  [yellow]gone[/] {escape(path)}", markup=True, highlight=False)
    found = discover([p for p in paths if os.path.exists(p)])
    if dry_run or not found.files:
        print_json_or({"missing": sorted(gone.values()), "removed": removed, "to_ingest": len(found.files)}, as_json)
        return
    raise typer.Exit(run_ingest(found, list(paths), local=local, wait=wait, force=False, as_json=as_json))


@app.command()
def delete(
    selectors: Annotated[
        list[str],
        typer.Argument(
            help="Row ids, paths (a folder means everything below it) or globs (* stays in a folder, ** crosses folders)."
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete rows by id, path, folder or glob from every imsim collection; shows the count and a sample first."""
    from .. import maintenance
    from ..store import open_store

    with open_store(get_settings()) as store:
        rows = maintenance.select(store, selectors)
        if not rows:
            raise ImsimError(f"no stored rows match {', '.join(selectors)}")
        sample = sorted(rows.values())
        err.print(f"{len(rows)} image(s) match {', '.join(selectors)}:", highlight=False)
        for path in sample[:10]:
            err.print(f"  {path}", highlight=False, soft_wrap=True)
        if len(sample) > 10:
            err.print(f"  ... and {len(sample) - 10} more", highlight=False)
        if not yes and not typer.confirm(f"delete these {len(rows)} images from every collection?", err=True):
            raise typer.Exit(SOME_FAILED)
        removed = maintenance.delete(store, rows)
    print_json_or({"matched": len(rows), "removed": removed}, as_json)
