"""``imsim models``: the registry, model cards, stored versions, and the version queries use."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import models as registry
from ..errors import ImsimError
from ..settings import get_settings
from ..store import CollectionSummary, open_store
from ._common import JsonOpt, console, err, print_json

app = typer.Typer(help="Models: the registry, model cards, stored versions and the version queries use.")


def _versions() -> list[CollectionSummary]:
    with open_store(get_settings()) as store:
        return store.summaries()


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
        matches = [c for c in store.collections() if c == version or c.endswith("_" + version)]
        if len(matches) != 1:
            raise ImsimError(
                f"{version!r} names {'no' if not matches else 'more than one'} stored collection; see `imsim models`"
            )
        store.activate(model, matches[0])
    err.print(f"queries for {model} now use {matches[0]}")
