"""``imsim models``: the registry, model cards, stored versions, and the version queries use."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import models as registry
from ..errors import ImsimError
from ..settings import get_settings
from ..store import CollectionSummary, VectorStore, open_store
from ._common import JsonOpt, console, err, print_json

app = typer.Typer(help="Models: the registry, model cards, stored versions and the version queries use.")


def _versions() -> list[CollectionSummary]:
    with open_store(get_settings()) as store:
        return store.rows.summaries()


@app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    info: Annotated[
        str | None, typer.Option("--info", help="Show one model's card: dimension, source, licence, what it is good for.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered models and every stored version (collection) with its row count; * marks the version queries use."""
    if ctx.invoked_subcommand:
        return
    settings = get_settings()
    if info is not None:
        card = registry.model_card(info)
        configured = {f"IMSIM_{info.upper()}_{k.upper()}": v for k, v in settings.family(info).model_dump(mode="json").items()}
        mine = [v.__dict__ for v in _versions() if v.model == info]
        if as_json:
            print_json({"name": info, **card.__dict__, "configured": configured, "versions": mine})
            return
        console.print(f"[bold]{escape(str(info))}[/]: {escape(card.title)}", markup=True, highlight=False)
        for label, value in [
            ("dimension", card.dim),
            ("default source", card.default_source),
            ("licence", card.licence),
            ("embedding", card.embedding),
            ("good for", card.good_for),
            ("text queries", "yes" if card.text else "no"),
            ("duplicates", card.duplicate_threshold),
            ("paper", card.paper or "-"),
        ]:
            console.print(f"  {label:<15} {value}", highlight=False, soft_wrap=True)
        for key, value in configured.items():
            console.print(f"  {key} = {value}", highlight=False, soft_wrap=True)
        for v in mine:
            console.print(
                f"  {'*' if v['active'] else ' '} {v['name']}: {v['rows']:,} rows, {v['dim']}-d, revision {v['revision']}",
                highlight=False,
                soft_wrap=True,
            )
        return
    versions = _versions()
    enabled = set(settings.model_names)
    if as_json:
        print_json(
            {
                "registry": [{"name": n, "enabled": n in enabled, **registry.model_card(n).__dict__} for n in registry.names()],
                "versions": [v.__dict__ for v in versions],
            }
        )
        return
    table = Table("model", "enabled", "dimension", "text", "what it is")
    for name in registry.names():
        card = registry.model_card(name)
        table.add_row(name, "yes" if name in enabled else "", card.dim, "yes" if card.text else "", card.title)
    console.print(table)
    stored = Table(
        "", "model", "collection", "rows", "dim", "variant", "revision", "source", title="stored versions (* = queries use it)"
    )
    for s in versions:
        stored.add_row(
            "*" if s.active else "", s.model, s.name, f"{s.rows:,}", str(s.dim), s.variant or "-", s.revision, s.source
        )
    for column in stored.columns:
        column.overflow = "fold"
    console.print(stored)


@app.command("activate")
def activate(
    model: Annotated[str, typer.Argument(help="Registry name, e.g. clip.")],
    version: Annotated[str, typer.Argument(help="The collection, or its 6-hex version tag (see `imsim models`).")],
) -> None:
    """Make VERSION the collection (and model version) queries for MODEL use; nothing is re-ingested or deleted."""
    with open_store(get_settings()) as store:
        matches = [c for c in store.versions.collections() if c == version or c.endswith("_" + version)]
        if len(matches) != 1:
            raise ImsimError(
                f"{version!r} names {'no' if not matches else 'more than one'} stored collection; see `imsim models`"
            )
        store.versions.activate(model, matches[0])
    err.print(f"queries for {model} now use {matches[0]}")


@app.command("whiten")
def whiten(
    model: Annotated[
        str | None, typer.Argument(help="Registry name (default: the copy model configured: sscd, else dinov2, else the first).")
    ] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", min=2, help="Dimensions to keep (default: all the data supports), e.g. 256.")
    ] = None,
    sample: Annotated[
        int, typer.Option("--sample", min=2, help="Stored rows to learn from, at most (the first in id order: uniform).")
    ] = 1_000_000,
    version: Annotated[
        str | None, typer.Option("--from", help="The version to whiten: collection or 6-hex tag (default: the active one).")
    ] = None,
    activate_it: Annotated[bool, typer.Option("--activate", help="Make the whitened version the one queries use.")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Learn the whitening again and rewrite every row (a new version if it differs).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a PCA-whitened version of MODEL, learned from its stored vectors and written from them (nothing re-embedded):
    the biggest copy-detection gain the evaluation measures (docs/evaluation.md). Ingest keeps it up to date; run it
    again to catch up or resume; `imsim models activate MODEL TAG` (or --activate) makes searches and duplicates use it."""
    import time

    from rich.progress import TaskID

    from ..duplicates import copy_model
    from ..store import derived
    from ._common import progress

    settings = get_settings()
    model = model or copy_model(settings.model_names) or settings.model_names[0]
    registry.family(model)  # an unknown name is a clear error
    with open_store(settings) as store:
        base = _resolve(store, model, version) if version else store.versions.active_collection(model)
        if base is None:
            raise ImsimError(f"nothing stored for model {model!r} yet: ingest images first (`imsim ingest ...`)")
        base = derived.base_of(store, base) or base  # whitening a whitened version whitens its base again
        started = time.perf_counter()
        with progress() as bar:
            tasks: dict[str, TaskID] = {}

            def show(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{stage} {base}", total=total, note="")
                bar.update(tasks[stage], completed=done, total=total)

            report = derived.whiten(store, base, settings.data_dir, dim=dim, sample=sample, restart=restart, on_progress=show)
        if activate_it and report.verified:
            store.versions.activate(model, report.collection)
    _print_whitened(report, model, time.perf_counter() - started, activate_it and report.verified, as_json)
    if not report.verified:
        raise typer.Exit(1)


def _print_whitened(report: Any, model: str, seconds: float, active: bool, as_json: bool) -> None:
    """`imsim models whiten`'s outcome: the version written, its rows and their check, what to run next."""
    w = report.whitening
    outcome = {
        "collection": report.collection,
        "base": report.base,
        "dim": f"{w.input_dim}->{w.dim}",
        "learned_from_rows": w.rows,
        "written": report.written,
        "deleted": report.deleted,
        "rows": report.rows,
        "base_rows": report.base_rows,
        "sampled": report.sampled,
        "agreeing": report.agreeing,
        "verified": report.verified,
        "active": active,
        "seconds": round(seconds, 1),
    }
    if as_json:
        print_json(outcome)
    else:
        console.print(
            f"{report.collection}: PCA-whitening of {report.base} ({w.input_dim} -> {w.dim} dims, learned on {w.rows:,} rows); "
            f"{report.rows:,} rows ({report.written:,} written now, {report.deleted:,} removed), "
            f"{report.agreeing}/{report.sampled} sampled vectors agree; {seconds:.1f}s"
            + ("" if report.verified else f"  [NOT VERIFIED: the base holds {report.base_rows:,} rows]"),
            highlight=False,
        )
        if not report.verified:
            err.print("rows were ingested or deleted while it ran: run it again to catch up", highlight=False)
        elif active:
            err.print(f"queries for {model} now use {report.collection}", highlight=False)
        else:
            tag = report.collection.rsplit("_", 1)[1]
            err.print(f"to search with it: imsim models activate {model} {tag}", highlight=False)


def _resolve(store: VectorStore, model: str, version: str) -> str:
    """A collection of ``model`` named by itself or by its 6-hex version tag."""
    matches = [
        c for c in store.versions.collections() if c == version or c == f"{store.config.collection_prefix}_{model}_{version}"
    ]
    if len(matches) != 1:
        raise ImsimError(f"{version!r} names no stored version of {model!r}; see `imsim models`")
    return matches[0]
