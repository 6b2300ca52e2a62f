"""``imsim search``, ``compare``, ``duplicates`` and ``collections``: asking questions of the stored images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from ..client.local import Client
from ..errors import ImsimError
from ..fusion import SearchHit
from ..sources.names import printable
from ..vocabulary import SearchOptions
from ._common import (
    JsonOpt,
    ModelsOpt,
    build,
    client,
    console,
    err,
    flag_of,
    help_of,
    print_json,
    remote_url,
    settings_with,
    warn_random,
    wide,
)

app = typer.Typer()


@app.command()
def compare(a: Path, b: Path, models: ModelsOpt = None, as_json: JsonOpt = False) -> None:
    """Cosine similarity of two images per model, and the 0-1 score (cos+1)/2 (--json: model -> cosine)."""
    for path in (a, b):  # before any model loads
        if not path.is_file():
            raise ImsimError(f"{path}: {'a folder, not an image file' if path.is_dir() else 'no such file'}")
    settings = settings_with(models)
    if remote_url(settings):
        from ..client.remote import RemoteClient

        with RemoteClient.from_settings(settings) as remote:
            compared = remote.compared(a, b, models)
        sims = compared.scores
        warn_random(compared.random_weights)
    else:
        with client(models) as c:
            sims = c.compare(a, b)
            warn_random(c.models.random_weights(list(sims)))
    if as_json:
        print_json(sims)
        return
    table = Table("model", "cosine", "score (cos+1)/2")
    for name, cos in sims.items():
        table.add_row(name, f"{cos:.4f}", f"{(cos + 1) / 2:.4f}")
    console.print(table)


def check_query(query: str | None, text: str | None, like: str | None, options: SearchOptions) -> None:
    """What the vocabulary cannot know (the query file, a text model among these models, the raw filter's fields),
    checked before a model loads (10-30 s): one clear error at once."""
    from .. import expr
    from .. import models as registry
    from ..sources.names import URL, is_uri
    from ..store import FIELD_NAMES, VECTOR

    if sum(x is not None for x in (query, text, like)) != 1:
        raise ImsimError("give exactly one of a query image, --text or --like")
    if query is not None and not is_uri(query):  # an s3:// query image is read (and named if missing) like a stored one
        if URL.match(query):
            raise ImsimError(f"{query}: a URL; imsim searches with local files and s3:// objects only: download it first")
        if not os.path.isfile(query):
            raise ImsimError(f"{query}: {'a folder, not an image file' if os.path.isdir(query) else 'no such file'}")
    names = settings_with(",".join(options.models) or None).model_names
    if text is not None:
        if not text.strip():
            raise ImsimError("the text query is empty: give the words to search for")
        if not any(registry.model_card(n).text for n in names):
            raise registry.no_text_model(names)
    if options.filter.strip():
        expr.check_raw(options.filter, FIELD_NAMES - {VECTOR})


def _opt(field: str, *flags: str, model: type[BaseModel] = SearchOptions) -> Any:
    """A typer option for a vocabulary field: its flag and help are the field's (declared once)."""
    return typer.Option(*(flags or (flag_of(field),)), help=help_of(model, field), show_default=False)


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Query image path.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Search by text (models whose card has a text tower).")] = None,
    like: Annotated[
        str | None, typer.Option("--like", help="A stored image (row id or path): search with its stored vectors.")
    ] = None,
    k: Annotated[int | None, _opt("k")] = None,
    models: Annotated[str | None, _opt("models", "--models", "-m")] = None,
    fusion: Annotated[str | None, _opt("fusion")] = None,
    offset: Annotated[int | None, _opt("offset")] = None,
    tag: Annotated[list[str] | None, _opt("tag")] = None,
    under: Annotated[str | None, _opt("under")] = None,
    glob: Annotated[str | None, _opt("glob")] = None,
    job: Annotated[str | None, _opt("job")] = None,
    min_width: Annotated[int | None, _opt("min_width")] = None,
    min_height: Annotated[int | None, _opt("min_height")] = None,
    after: Annotated[str | None, _opt("after")] = None,
    before: Annotated[str | None, _opt("before")] = None,
    cluster: Annotated[int | None, _opt("cluster")] = None,
    clustering: Annotated[str | None, _opt("clustering")] = None,
    filter: Annotated[str | None, _opt("filter")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a gallery page (thumbnails embedded) to this file.")
    ] = None,
    png_out: Annotated[Path | None, typer.Option("--png", help="Write the gallery as a PNG contact sheet to this file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search by image, text or a stored image across the model collections, with metadata filters, and fuse.

    \b
    Examples:
      imsim search photo.jpg -k 20 --under /photos/2019
      imsim search --text "a red car" --models clip
      imsim search --like /photos/a.jpg --tag kind=flag --json
      imsim search photo.jpg -k 20 --offset 20           (the next page)"""
    given = {"k": k, "models": models, "fusion": fusion, "offset": offset, "tag": tag, "under": under, "glob": glob}
    given |= {"job": job, "min_width": min_width, "min_height": min_height, "after": after, "before": before}
    options = build(SearchOptions, given | {"filter": filter, "cluster": cluster, "clustering": clustering})
    check_query(query, text, like, options)  # everything that needs no model, before any loads
    settings = settings_with(models)
    if not (html_out or png_out) and remote_url(settings):  # a running `imsim serve`: its models are warm
        from ..client.remote import RemoteClient

        with RemoteClient.from_settings(settings) as remote:
            page = remote.answer(query, text=text, like=like, options=options)
        hits = [SearchHit(h.id, h.path, h.score, dict(h.scores), dict(h.ranks)) for h in page.hits]
        warn_random(page.random_weights)
    else:
        with client(models) as c:
            hits = c.search(query, text=text, like=like, options=options)
            warn_random(c.models.random_weights(list(hits[0].scores)) if hits else [])
            if html_out or png_out:
                _write_gallery(c, hits, query=query, text=text, like=like, fusion=fusion, html_out=html_out, png_out=png_out)
    if as_json:
        print_json([h.__dict__ for h in hits])
        return
    names = list(hits[0].scores) if hits else []
    if not hits:
        err.print("no results" if not options.offset else f"no results after the first {options.offset}")
        return
    first = options.offset + 1
    if not wide():  # narrow terminals: the scores on one line, the path whole on the next
        for rank, h in enumerate(hits, first):
            scores = "  ".join(f"{n} {h.scores[n]:.4f} (rank {h.ranks.get(n) or '-'})" for n in names if n in h.scores)
            console.print(f"{rank:>3}. fused {h.score:.4f}  {scores}", highlight=False, soft_wrap=True)
            console.print(f"     {printable(h.path)}", highlight=False, soft_wrap=True)
        return
    table = Table("#", "fused", *[f"{n} cos (rank)" for n in names])
    table.add_column("path", overflow="fold")
    for rank, h in enumerate(hits, first):
        per = [f"{h.scores[n]:.4f} ({h.ranks.get(n) or '-'})" if n in h.scores else "-" for n in names]
        table.add_row(str(rank), f"{h.score:.4f}", *per, printable(h.path))
    console.print(table)


def _write_gallery(
    c: Client,
    hits: list[SearchHit],
    *,
    query: str | None,
    text: str | None,
    like: str | None,
    fusion: str | None,
    html_out: Path | None,
    png_out: Path | None,
) -> None:
    from .. import gallery

    if text is not None:
        q = gallery.Query(label=text)
    else:
        label = query or like or ""  # an image path, or a stored image's path or row id
        from ..sources.names import is_uri

        q = gallery.Query(label=label, image=label if os.path.isfile(label) or is_uri(label) else None)
    from ..models.base import random_weights

    names = list(hits[0].scores) if hits else c.models.names(None)
    method = c.resolve_fusion(fusion or c.settings.fusion, names)
    title = f"imsim: {q.label}"
    rand = [n for n in names if random_weights(c.models.model(n).info.source)]
    note = f"{', '.join(rand)}: random weights (a demo model): these similarities mean nothing" if rand else ""
    if html_out:
        page = gallery.render_html(q, hits, models=names, fusion=method, rrf_k=c.settings.rrf_k, title=title, note=note)
        html_out.write_text(page, encoding="utf-8")
        err.print(f"gallery written to {html_out}")
    if png_out:
        sheet = gallery.render_png(q, hits, models=names, fusion=method, rrf_k=c.settings.rrf_k, title=title, note=note)
        sheet.save(png_out)
        err.print(f"gallery written to {png_out}")


@app.command()
def collections(as_json: JsonOpt = False) -> None:
    """imsim's collections with their model, version, dimension and row count."""
    from ..doctor import lite_envelope_warning

    with client() as c:
        found = c.collections()
        lite = c.store.lite_backend
    if not found:
        err.print("nothing ingested yet: no imsim collection in this store (`imsim ingest ...` creates them)")
    warning = lite_envelope_warning({s.name: s.rows for s in found}, c.settings.lite_warn_rows) if lite else None
    if warning:
        err.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    if as_json:
        print_json([s.__dict__ for s in found])
        return
    if not wide():
        for s in found:
            active = "  active: queries use it" if s.active else ""
            console.print(f"{s.name}  {s.rows:,} rows  {s.dim}-d{active}", highlight=False, soft_wrap=True)
            console.print(
                f"  {s.model} version {s.version}, revision {s.revision}, source {printable(s.source)}",
                highlight=False,
                soft_wrap=True,
            )
        return
    table = Table("collection", "rows", "dim", "model", "version", "active", "revision", "source")
    for s in found:
        table.add_row(s.name, str(s.rows), str(s.dim), s.model, s.version, "yes" if s.active else "", s.revision, s.source)
    for column in table.columns:
        column.overflow = "fold"
    console.print(table)
