"""The ``imsim`` command line: a thin layer over :mod:`imsim.query`, :mod:`imsim.ingest` and :mod:`imsim.queue`."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from .errors import ImsimError
from .images import discover, read_path_list
from .settings import get_settings

app = typer.Typer(help="imsim: image-similarity search over CLIP and DINOv2 embeddings in Milvus.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
store_app = typer.Typer(help="The embedded Milvus Lite store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
bench_app = typer.Typer(help="Benchmarks that print numbers.", no_args_is_help=True)
models_app = typer.Typer(help="Models: the registry, model cards, stored versions and the version queries use.")
eval_app = typer.Typer(help="Evaluation: build a copy-detection benchmark from your images; compare models and fusions.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
console = Console()
err = Console(stderr=True)

ModelsOpt = Annotated[Optional[str], typer.Option("--models", "-m", help="Comma-separated model names (default: IMSIM_MODELS).")]


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)


def _client(models: str | None = None):
    from .query import Client

    settings = get_settings()
    return Client(settings.model_copy(update={"models": models}) if models else settings)


@app.command()
def compare(a: Path, b: Path, models: ModelsOpt = None) -> None:
    """Cosine similarity of two images per model, and the 0-1 score (cos+1)/2."""
    sims = _client(models).compare(a, b)
    table = Table("model", "cosine", "score (cos+1)/2")
    for name, cos in sims.items():
        table.add_row(name, f"{cos:.4f}", f"{(cos + 1) / 2:.4f}")
    console.print(table)


@app.command()
def ingest(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Files, folders (recursive) or globs.")] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from-file", help="A text file with one path per line.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run in this process: no Redis or workers needed.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow a queued job's progress until it ends.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Re-embed files already stored unchanged.")] = False,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="key=value stored with every image (repeatable); filter with search --tag.")] = None,
    activate: Annotated[bool, typer.Option("--activate", help="When done, make the versions just written the ones queries use.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Embed images with every enabled model and upsert them: queued to Celery workers, or --local.

    Each model version writes to its own collection; the first version of a model becomes the one queries
    use, later ones only with --activate or `imsim models activate`."""
    inputs = list(paths or []) + (read_path_list(from_file) if from_file else [])
    if not inputs:
        raise ImsimError("nothing to ingest: give paths, folders, globs or --from-file")
    files = discover(inputs)
    if not files:
        raise ImsimError(f"no image files found in {', '.join(inputs)}")
    if activate and not local and not wait:
        raise ImsimError("--activate needs the job to finish first: drop --no-wait, or run `imsim models activate` later")
    _run_ingest(files, inputs, local=local, wait=wait, force=force, as_json=as_json, tags=_tags(tag), activate=activate)


def _tags(items: list[str] | None) -> dict[str, str] | None:
    from .expr import parse_tags

    try:
        return parse_tags(items) if items else None
    except ValueError as exc:
        raise ImsimError(str(exc)) from None


def _run_ingest(files: list[str], inputs: list[str], *, local: bool, wait: bool, force: bool, as_json: bool,
                retry_of: str = "", tags: dict[str, str] | None = None, activate: bool = False) -> None:
    """Ingest ``files`` in this process (``local``) or as a queued job, and report the outcome."""
    settings = get_settings()
    if local:
        from .ingest import Ingestor, ingest_local

        with _progress() as progress:
            task = progress.add_task("ingest", total=len(files), note="loading models")
            ingestor = Ingestor(settings)

            def on_chunk(part, n):  # noqa: ANN001
                progress.update(task, advance=n, note=f"{len(part.failures)} failed in last chunk" if part.failures else "")

            try:
                result = ingest_local(files, settings, ingestor=ingestor, force=force, tags=tags, on_chunk=on_chunk)
                if activate:
                    _activate(ingestor.store, ingestor.collections)
            finally:
                ingestor.close()
                ingestor.store.close()
        _print_outcome({"total": len(files), **result.as_dict()}, as_json)
        return
    from .queue import enqueue

    job_id = enqueue(files, settings, inputs=inputs, force=force, retry_of=retry_of, tags=tags)
    err.print(f"queued job [bold]{job_id}[/]: {len(files)} images in chunks of {settings.chunk_size} on queue '{settings.queue}'")
    if not wait:
        console.print(job_id)
        return
    status = _follow(job_id)
    if activate:
        from .store import VectorStore

        store = VectorStore(settings)
        _activate(store, status.collections)
        store.close()
    _print_outcome(status.as_dict(), as_json)


def _activate(store, collections: dict[str, str]) -> None:  # noqa: ANN001 - a VectorStore
    for model, collection in collections.items():
        store.activate(model, collection)
        err.print(f"queries for {model} now use {collection}")


@app.command()
def retry(
    job_id: str,
    local: Annotated[bool, typer.Option("--local", help="Run in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the new job's progress.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-queue only the files that failed in JOB_ID, as a new job linked to it."""
    from .queue import failed_files

    failed = failed_files(job_id, get_settings())
    _run_ingest(failed, [f"failed files of {job_id}"], local=local, wait=wait, force=False, as_json=as_json, retry_of=job_id)


@app.command()
def sync(
    paths: Annotated[list[str], typer.Argument(help="Folders (or files) whose stored rows should match the disk.")],
    local: Annotated[bool, typer.Option("--local", help="Re-embed in this process instead of queueing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed and re-embedded.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Remove rows for files under PATHS that no longer exist, then ingest PATHS (changed files re-embedded, unchanged skipped)."""
    from . import maintenance
    from .store import VectorStore

    store = VectorStore(get_settings())
    gone = maintenance.missing(store, paths)
    removed = {} if dry_run else maintenance.delete(store, gone)
    store.close()
    err.print(f"{len(gone)} stored rows point to files that no longer exist" + ("" if dry_run else "; removed from every collection"))
    for path in sorted(gone.values())[:20]:
        err.print(f"  [yellow]gone[/] {path}")
    files = discover([p for p in paths if os.path.exists(p)])
    if dry_run or not files:
        _print_json_or({"missing": sorted(gone.values()), "removed": removed, "to_ingest": len(files)}, as_json)
        return
    _run_ingest(files, list(paths), local=local, wait=wait, force=False, as_json=as_json)


@app.command()
def delete(
    selectors: Annotated[list[str], typer.Argument(help="Row ids, paths (a folder means everything below it) or globs.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Delete rows by id, path, folder or glob from every imsim collection."""
    from . import maintenance
    from .store import VectorStore

    store = VectorStore(get_settings())
    rows = maintenance.select(store, selectors)
    if not rows:
        store.close()
        raise ImsimError(f"no stored rows match {', '.join(selectors)}")
    if not yes and not typer.confirm(f"delete {len(rows)} images from every collection?", err=True):
        store.close()
        raise typer.Exit(1)
    removed = maintenance.delete(store, rows)
    store.close()
    _print_json_or({"matched": len(rows), "removed": removed}, as_json)


def _print_json_or(outcome: dict, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(outcome, default=str))
    else:
        for key, value in outcome.items():
            console.print(f"{key}: {len(value) if isinstance(value, list) else value}")


def _follow(job_id: str):
    from .jobs import JobStore

    jobs = JobStore(get_settings().redis_url.get_secret_value())
    status = jobs.get(job_id)
    with _progress() as progress:
        task = progress.add_task(f"job {job_id}", total=status.total, note="")
        while True:
            status = jobs.get(job_id)
            progress.update(task, completed=status.done + status.failed + status.skipped,
                            note=f"failed {status.failed}" if status.failed else "")
            if status.finished_at:
                return status
            time.sleep(0.5)


def _print_outcome(outcome: dict, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(outcome, default=str))
        return
    console.print(f"stored {outcome['done']}, skipped {outcome['skipped']} already stored unchanged, failed {outcome['failed']} of {outcome['total']}")
    for path, reason in (outcome.get("failures") or {}).items():
        console.print(f"  [red]failed[/] {path}: {reason}")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Worker processes (one per GPU is usual).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork or solo.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a Celery worker that consumes ingest jobs (same as `celery -A workers worker`)."""
    settings = get_settings()
    celery = shutil.which("celery") or "celery"
    args = [celery, "-A", "workers", "worker", "-Q", settings.queue, "-c", str(concurrency), "-P", pool, "-l", loglevel]
    os.execvp(args[0], args)


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20) -> None:
    """Recent jobs with done / failed / pending counts."""
    from .jobs import JobStore

    table = Table("state", "total", "done", "failed", "skipped", "pending", "created")
    table.columns.insert(0, Column("job", no_wrap=True))
    for s in JobStore(get_settings().redis_url.get_secret_value()).list(limit):
        table.add_row(s.id, s.state, *(str(x) for x in (s.total, s.done, s.failed, s.skipped, s.pending)),
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created_at)))
    console.print(table)


@app.command()
def status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One job's counts, times and failures."""
    from .jobs import JobStore

    s = JobStore(get_settings().redis_url.get_secret_value()).get(job_id)
    if as_json:
        console.print_json(json.dumps(s.as_dict(), default=str))
        return
    console.print(f"job {s.id}: {s.state}; total {s.total}, done {s.done}, failed {s.failed}, skipped {s.skipped}, "
                  f"pending {s.pending}; chunks {s.chunks_done}/{s.chunks}")
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"  # noqa: E731
    console.print(f"created {stamp(s.created_at)}, started {stamp(s.started_at)}, finished {stamp(s.finished_at)}"
                  + (f"; retry of {s.retry_of}" if s.retry_of else "") + (f"; retried by {s.retried_by}" if s.retried_by else ""))
    for path, reason in s.failures.items():
        console.print(f"  [red]failed[/] {path}: {reason}")


def _when(value: str | None) -> float | None:
    """An ISO date or date-time (or Unix seconds) → Unix seconds."""
    if not value:
        return None
    from datetime import datetime

    try:
        return float(value) if value.replace(".", "", 1).isdigit() else datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ImsimError(f"not a date: {value!r} (use YYYY-MM-DD, YYYY-MM-DDTHH:MM or Unix seconds)") from None


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(help="Query image path.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Search by text (CLIP models only).")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="A stored image (row id or path): search with its stored vectors.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    models: ModelsOpt = None,
    fusion: Annotated[Optional[str], typer.Option(help="rrf, weighted or none (default: IMSIM_FUSION).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only images ingested with this key=value tag (repeatable).")] = None,
    path_prefix: Annotated[str, typer.Option("--under", help="Only images under this folder.")] = "",
    glob: Annotated[str, typer.Option("--glob", help="Only images whose path matches this glob.")] = "",
    job: Annotated[str, typer.Option("--job", help="Only images written by this ingest job.")] = "",
    min_width: Annotated[Optional[int], typer.Option("--min-width")] = None,
    min_height: Annotated[Optional[int], typer.Option("--min-height")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="Ingested at or after (YYYY-MM-DD[THH:MM]).")] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="Ingested before (YYYY-MM-DD[THH:MM]).")] = None,
    filter: Annotated[str, typer.Option("--filter", help="A raw Milvus filter expression, ANDed with the options above.")] = "",
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a gallery page (thumbnails embedded) to this file.")] = None,
    png_out: Annotated[Optional[Path], typer.Option("--png", help="Write the gallery as a PNG contact sheet to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search by image, text or a stored image across the model collections, with metadata filters, and fuse."""
    from .expr import Where

    where = Where(path_prefix=path_prefix, path_glob=glob, job=job, tags=_tags(tag) or {}, min_width=min_width,
                  min_height=min_height, ingested_after=_when(after), ingested_before=_when(before))
    client = _client(models)
    hits = client.search(query, text=text, like=like, k=k, fusion=fusion, where=where, filter=filter)
    if html_out or png_out:
        _write_gallery(client, hits, query=query, text=text, like=like, fusion=fusion, html_out=html_out, png_out=png_out)
    if as_json:
        console.print_json(json.dumps([h.__dict__ for h in hits]))
        return
    names = list(hits[0].scores) if hits else []
    table = Table("#", "fused", *[f"{n} cos (rank)" for n in names])
    table.add_column("path", overflow="fold")
    for rank, h in enumerate(hits, 1):
        per = [f"{h.scores[n]:.4f} ({h.ranks.get(n) or '-'})" if n in h.scores else "-" for n in names]
        table.add_row(str(rank), f"{h.score:.4f}", *per, h.path)
    console.print(table)


def _write_gallery(client, hits, *, query, text, like, fusion, html_out, png_out) -> None:  # noqa: ANN001
    from . import gallery

    if text is not None:
        q = gallery.Query(label=text)
    else:
        label = query or like or ""  # an image path, or a stored image's path or row id
        q = gallery.Query(label=label, image=label if os.path.isfile(label) else None)
    names = list(hits[0].scores) if hits else client._names(None)
    method = fusion or client.settings.fusion
    options = dict(models=names, fusion=method, rrf_k=client.settings.rrf_k, title=f"imsim: {q.label}")
    if html_out:
        html_out.write_text(gallery.render_html(q, hits, **options), encoding="utf-8")
        err.print(f"gallery written to {html_out}")
    if png_out:
        gallery.render_png(q, hits, **options).save(png_out)
        err.print(f"gallery written to {png_out}")


@app.command()
def duplicates(
    model: Annotated[Optional[str], typer.Option("--model", help="A model, or 'fused' (weighted mean of every model's cosine). "
                                                 "Default: the copy-oriented model (sscd, else dinov2).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Similarity at or above which two images are duplicates "
                                                       "(default: the calibrated 95 %-precision threshold).")] = None,
    precision: Annotated[float, typer.Option(help="Which calibrated threshold to use: 0.9 or 0.95.")] = 0.95,
    neighbours: Annotated[int, typer.Option(help="Nearest images checked per image.")] = 16,
    path_prefix: Annotated[str, typer.Option("--under", help="Only images under this folder.")] = "",
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write group,id,path,best_score rows to this file.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json-out", help="Write the groups (members and edges) as JSON to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
) -> None:
    """Groups of near-duplicate stored images (connected components of pairs above the threshold)."""
    from .duplicates import find_groups
    from .expr import Where

    if precision not in (0.9, 0.95):
        raise ImsimError("--precision must be 0.9 or 0.95 (the thresholds imsim eval run stores)")
    client = _client()
    groups, used, model_used = find_groups(client, model=model, threshold=threshold, precision=precision, neighbours=neighbours,
                                           where=Where(path_prefix=path_prefix) if path_prefix else None)
    err.print(f"model {model_used}, threshold {used.value:.4f} ({used.source}): {len(groups)} groups, "
              f"{sum(len(g.members) for g in groups)} images")
    if csv_out:
        import csv

        with open(csv_out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["group", "id", "path", "best_score"])
            for n, g in enumerate(groups, 1):
                for member_id, path in g.members:
                    best = max((sc for a, b, sc in g.edges if member_id in (a, b)), default=0.0)
                    writer.writerow([n, member_id, path, f"{best:.4f}"])
    payload = {"model": model_used, "threshold": used.value, "threshold_source": used.source,
               "groups": [g.as_dict() for g in groups]}
    if json_out:
        json_out.write_text(json.dumps(payload, indent=2))
    if as_json:
        console.print_json(json.dumps(payload))
        return
    for n, g in enumerate(groups, 1):
        console.print(f"[bold]group {n}[/]: {len(g.members)} images, best {g.best:.4f}", highlight=False)
        for _, path in g.members:
            console.print(f"  {path}", highlight=False, soft_wrap=True)


@app.command()
def collections(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """imsim's collections with their model, dimension and row count."""
    found = _client().collections()
    if as_json:
        console.print_json(json.dumps([c.__dict__ for c in found]))
        return
    table = Table("collection", "rows", "dim", "model", "active", "revision", "source")
    for c in found:
        table.add_row(c.name, str(c.rows), str(c.dim), c.model, "yes" if c.active else "", c.revision, c.source)
    for column in table.columns:
        column.overflow = "fold"
    console.print(table)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    info: Annotated[Optional[str], typer.Option("--info", help="Show one model's card: dimension, source, licence, what it is good for.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Registered models and every stored version (collection) with its row count; * marks the version queries use."""
    if ctx.invoked_subcommand:
        return
    from . import models as registry

    settings = get_settings()
    if info is not None:
        card = registry.model_card(info)
        configured = {k: v for k, v in settings.model_dump().items() if k.startswith(info + "_")}
        versions = [v.__dict__ for v in _versions() if v.model == info]
        if as_json:
            console.print_json(json.dumps({"name": info, **card.__dict__, "configured": configured, "versions": versions}))
            return
        console.print(f"[bold]{info}[/]: {card.title}", highlight=False)
        for label, value in [("dimension", card.dim), ("default source", card.default_source), ("licence", card.licence),
                             ("embedding", card.embedding), ("good for", card.good_for), ("text queries", "yes" if card.text else "no"),
                             ("paper", card.paper or "-")]:
            console.print(f"  {label:<15} {value}", highlight=False, soft_wrap=True)
        for key, value in configured.items():
            console.print(f"  {'IMSIM_' + key.upper():<15} {value}", highlight=False, soft_wrap=True)
        for v in versions:
            console.print(f"  {'*' if v['active'] else ' '} {v['name']}: {v['rows']:,} rows, {v['dim']}-d, revision {v['revision']}",
                          highlight=False, soft_wrap=True)
        return
    versions = _versions()
    enabled = set(settings.model_names)
    if as_json:
        console.print_json(json.dumps({"registry": [{"name": n, "enabled": n in enabled, **registry.model_card(n).__dict__}
                                                    for n in registry.REGISTRY], "versions": [v.__dict__ for v in versions]}))
        return
    table = Table("model", "enabled", "dimension", "text", "what it is")
    for name in registry.REGISTRY:
        card = registry.model_card(name)
        table.add_row(name, "yes" if name in enabled else "", card.dim, "yes" if card.text else "", card.title)
    console.print(table)
    stored = Table("", "model", "collection", "rows", "dim", "variant", "revision", "source", title="stored versions (* = queries use it)")
    for v in versions:
        stored.add_row("*" if v.active else "", v.model, v.name, f"{v.rows:,}", str(v.dim), v.variant or "-", v.revision, v.source)
    for column in stored.columns:
        column.overflow = "fold"
    console.print(stored)


def _versions():
    from .store import VectorStore

    store = VectorStore(get_settings())
    try:
        return store.summaries()
    finally:
        store.close()


@models_app.command("activate")
def models_activate(
    model: Annotated[str, typer.Argument(help="Registry name, e.g. clip.")],
    version: Annotated[str, typer.Argument(help="The collection, or its 8-hex version tag (see `imsim models`).")],
) -> None:
    """Make VERSION the collection (and model version) queries for MODEL use; nothing is re-ingested or deleted."""
    from .store import VectorStore

    store = VectorStore(get_settings())
    try:
        matches = [c for c in store.collections() if c == version or c.endswith("_" + version)]
        if len(matches) != 1:
            raise ImsimError(f"{version!r} names {'no' if not matches else 'more than one'} stored collection; see `imsim models`")
        store.activate(model, matches[0])
    finally:
        store.close()
    err.print(f"queries for {model} now use {matches[0]}")


@app.command()
def doctor(
    queue: Annotated[bool, typer.Option("--queue/--no-queue", help="Check Redis and the workers.")] = True,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Load each model and compare it with its collection.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check that Redis, Milvus and the models are reachable and consistent; exit 1 if anything failed."""
    from .doctor import run_checks

    checks = run_checks(get_settings(), queue=queue, models=models)
    if as_json:
        console.print_json(json.dumps([c.as_dict() for c in checks]))
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            console.print(f"[{colour[c.status]}]{c.status:>4}[/] {c.name}: {c.detail}", highlight=False, soft_wrap=True)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command()
def config(
    env: Annotated[bool, typer.Option("--env", help="Print every setting as IMSIM_*=default lines (.env.example).")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the configuration reference as Markdown.")] = False,
) -> None:
    """The effective settings (secrets masked), or the generated reference with --env / --markdown."""
    from .settings import env_example, markdown_reference

    if env or markdown:
        sys.stdout.write(env_example() if env else markdown_reference())
        return
    for name, value in get_settings().model_dump().items():
        shown = "**" if hasattr(value, "get_secret_value") and value.get_secret_value() else value
        console.print(f"IMSIM_{name.upper()}={shown}", highlight=False, soft_wrap=True)


@bench_app.command("ingest")
def bench_ingest(
    images: Annotated[Optional[str], typer.Option(help="A folder of images (default: generate JPEGs from the bundled photos).")] = None,
    generate: Annotated[int, typer.Option(help="How many JPEGs to generate when --images is not given.")] = 256,
    size: Annotated[str, typer.Option(help="Size of generated JPEGs, WxH.")] = "1024x768",
    baseline: Annotated[int, typer.Option(help="Images for the seed-style per-image loop (same models, same files).")] = 32,
    store: Annotated[str, typer.Option(help="lite: a Milvus Lite file (or IMSIM_MILVUS_URI); none: a no-op sink.")] = "lite",
    random_weights: Annotated[bool, typer.Option("--random-weights", help="CLIP B/32 + DINOv2 B/14 architectures with random weights (no hub needed).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """End-to-end ingest throughput and per-stage split, beside the one-image-per-call baseline."""
    import tempfile

    from . import bench

    settings = get_settings()
    if random_weights:
        from .models.testing import build_random_models

        cache = settings.data_dir / "bench-models"
        dirs = {"clip": cache / "random-clip-vit-b32", "dinov2": cache / "random-dinov2-base"}
        if not all((d / "config.json").exists() for d in dirs.values()):
            dirs = build_random_models(cache)
        settings = settings.model_copy(update={"clip_model": str(dirs["clip"]), "dinov2_model": str(dirs["dinov2"])})
    width, height = (int(v) for v in size.lower().split("x"))
    files = bench.corpus(images, generate, (width, height), Path(tempfile.mkdtemp(prefix="imsim-bench-images-")))
    result = bench.run(files, settings, baseline_images=min(baseline, len(files)), sink=store)
    if as_json:
        console.print_json(json.dumps(result.as_dict()))
        return
    console.print(f"models {settings.models} on {result.device}, batch {settings.batch_size}, decode threads "
                  f"{settings.decode_workers or os.cpu_count()}, store: {result.store}; model load {result.model_load_seconds:.1f}s")
    console.print(f"imsim:    {result.images} images in {result.seconds:.2f}s = [bold]{result.images_per_s:.2f} images/s[/]")
    console.print(f"baseline: {result.baseline_images} images in {result.baseline_seconds:.2f}s = "
                  f"{result.baseline_images_per_s:.2f} images/s (one image per call, HF processor + model, one row per write)")
    console.print(f"speed-up: [bold]{result.speedup:.2f}x[/]")
    total = sum(result.stages.values()) or 1.0
    for stage, seconds in result.stages.items():
        console.print(f"  {stage:<14} {seconds:8.2f}s  {100 * seconds / total:5.1f}%")
    console.print("min cosine(imsim, baseline) per model: " + ", ".join(f"{k} {v:.4f}" for k, v in result.min_cosine.items()))


@eval_app.command("build-copydetect")
def eval_build(
    refs: Annotated[Path, typer.Option("--refs", help="A folder of real images (the pool the benchmark is drawn from).")],
    out: Annotated[Path, typer.Option("--out", help="A new folder for the benchmark.")],
    queries: Annotated[int, typer.Option(help="Queries that are edited copies of a reference.")] = 200,
    negatives: Annotated[int, typer.Option(help="Queries that are edited copies of held-out images (no copy among the references).")] = 100,
    references: Annotated[int, typer.Option(help="Cap on the reference set (0: every image left in the pool).")] = 0,
    distractors: Annotated[Optional[Path], typer.Option(help="Another folder whose images join the references, never queried.")] = None,
    background: Annotated[int, typer.Option(help="Images set aside (neither queried nor referenced) for score normalisation.")] = 0,
    max_edits: Annotated[int, typer.Option(help="Edits combined per query: 1 to this many.")] = 3,
    seed: Annotated[int, typer.Option(help="Everything random comes from this seed.")] = 0,
    augly: Annotated[bool, typer.Option("--augly/--no-augly", help="Overlays from Meta's AugLy when installed (else Pillow).")] = True,
) -> None:
    """Build a DISC21-style copy-detection benchmark (references, edited-copy queries, no-copy queries, ground truth)."""
    from .eval.build import build_copydetect

    manifest = build_copydetect(refs, out, queries=queries, negatives=negatives, references=references, distractors=distractors,
                                background=background, max_edits=max_edits, seed=seed, prefer_augly=augly)
    console.print_json(json.dumps(manifest))


@eval_app.command("run")
def eval_run(
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, report.json, plots and the eval store.")],
    bench: Annotated[Optional[Path], typer.Option("--bench", help="A benchmark folder from build-copydetect.")] = None,
    groups: Annotated[Optional[Path], typer.Option("--groups", help="A path,group CSV of images that belong together.")] = None,
    models: Annotated[str, typer.Option("--models", "-m", help="Model specs: clip,dinov2,dinov2@dinov2_pooling=cls+gem ...")] = "clip,dinov2",
    fusion: Annotated[str, typer.Option("--fusion", help="Fusions to score besides each model: rrf,weighted.")] = "rrf,weighted",
    whiten: Annotated[bool, typer.Option("--pca-whiten", help="Also score each model with PCA-whitening learned on the references.")] = False,
    score_norm: Annotated[bool, typer.Option("--score-norm", help="Also score each model minus each query's nearest background similarity.")] = False,
    milvus_uri: Annotated[str, typer.Option(help="Run in this Milvus (prefix imsimeval) instead of a Lite file in --out.")] = "",
    save_calibration: Annotated[bool, typer.Option("--save-calibration/--no-save-calibration", help="Store the thresholds for `imsim duplicates`.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score models and fusions: recall@1/3/10, µAP, recall at 90% precision, thresholds, images/s; writes a report."""
    from .eval import report as eval_report
    from .eval.build import Benchmark, Groups
    from .eval.runner import Evaluation, parse_models

    if bench is None and groups is None:
        raise ImsimError("give --bench (a copy-detection benchmark) and/or --groups (a path,group CSV)")
    fusions = [f.strip() for f in fusion.split(",") if f.strip()]
    for f in fusions:
        if f not in ("rrf", "weighted"):
            raise ImsimError(f"unknown fusion {f!r}: use rrf and/or weighted")
    evaluation = Evaluation(parse_models(models), get_settings(), out, milvus_uri=milvus_uri, progress=err.print)
    if bench is not None:
        evaluation.copydetect(Benchmark.load(bench), fusions, whiten=whiten, score_norm=score_norm)
        if save_calibration:
            evaluation.save_calibration()
    if groups is not None:
        evaluation.groups(Groups.load(groups), fusions)
    command = "imsim eval run " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else ""
    files = eval_report.write(evaluation.report, out, command=command)
    if as_json:
        console.print_json(json.dumps(evaluation.report.as_dict()))
    else:
        console.print(eval_report.markdown(evaluation.report), highlight=False, soft_wrap=True)
    err.print("wrote " + ", ".join(str(f) for f in files))


@store_app.command("serve")
def store_serve(
    port: Annotated[int, typer.Option(help="Port of the gRPC server.")] = 19530,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (default: IMSIM_DATA_DIR/milvus-lite).")] = None,
) -> None:
    """Serve the embedded store to several processes (workers + CLI): then IMSIM_MILVUS_URI=http://HOST:PORT."""
    directory = data_dir or (get_settings().data_dir / "milvus-lite")
    exe = shutil.which("milvus-lite") or "milvus-lite"
    err.print(f"Milvus Lite server on {host}:{port}, data in {directory}; set IMSIM_MILVUS_URI=http://{host}:{port}")
    os.execvp(exe, [exe, "server", "--data-dir", str(directory), "--host", host, "--port", str(port)])


def main() -> None:
    try:
        app()
    except ImsimError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
