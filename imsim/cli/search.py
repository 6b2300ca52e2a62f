"""``imsim search``, ``compare``, ``duplicates`` and ``collections``: asking questions of the stored images."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..client.local import Client
from ..errors import ImsimError
from ..fusion import SearchHit
from ..sources.names import printable
from ._common import (
    JsonOpt,
    ModelsOpt,
    client,
    console,
    csv_cell,
    err,
    parse_tag_options,
    print_json,
    progress,
    random_among,
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
    if settings.api_url:
        from ..client.remote import Remote

        sims = Remote(settings).compare(str(a), str(b), models)
        warn_random(random_among(settings, list(sims)))
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


def _when(value: str | None) -> float | None:
    """An ISO date or date-time (or Unix seconds) → Unix seconds."""
    if not value:
        return None
    from datetime import datetime

    try:
        return float(value) if value.replace(".", "", 1).isdigit() else datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ImsimError(f"not a date: {value!r} (use YYYY-MM-DD, YYYY-MM-DDTHH:MM or Unix seconds)") from None


def check_search(
    query: str | None, text: str | None, like: str | None, k: int, models: str | None, fusion: str | None, filter: str
) -> None:
    """The search's arguments, checked before a model loads (which takes 10-30 s): one clear error at once."""
    from .. import expr
    from .. import models as registry
    from ..fusion import FUSIONS
    from ..sources.names import URL, is_uri
    from ..store import FIELD_NAMES, VECTOR

    if sum(x is not None for x in (query, text, like)) != 1:
        raise ImsimError("give exactly one of a query image, --text or --like")
    if k < 1:
        raise ImsimError(f"-k must be at least 1, got {k}")
    if fusion is not None and fusion not in FUSIONS:
        raise ImsimError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
    if query is not None and not is_uri(query):  # an s3:// query image is read (and named if missing) like a stored one
        if URL.match(query):
            raise ImsimError(f"{query}: a URL; imsim searches with local files and s3:// objects only: download it first")
        if not os.path.isfile(query):
            raise ImsimError(f"{query}: {'a folder, not an image file' if os.path.isdir(query) else 'no such file'}")
    names = settings_with(models).model_names
    if text is not None:
        if not text.strip():
            raise ImsimError("the text query is empty: give the words to search for")
        if not any(registry.model_card(n).text for n in names):
            raise registry.no_text_model(names)
    if filter.strip():
        expr.check_raw(filter, FIELD_NAMES - {VECTOR})


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Query image path.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Search by text (models with a text tower: clip, siglip2).")] = None,
    like: Annotated[
        str | None, typer.Option("--like", help="A stored image (row id or path): search with its stored vectors.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    models: ModelsOpt = None,
    fusion: Annotated[str | None, typer.Option(help="rrf, weighted, calibrated or none (default: IMSIM_FUSION).")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only images ingested with this key=value tag (repeatable).")
    ] = None,
    path_prefix: Annotated[str, typer.Option("--under", help="Only images at or below this folder.")] = "",
    glob: Annotated[
        str, typer.Option("--glob", help="Only images whose path matches this glob (* stays in a folder, ** crosses).")
    ] = "",
    job: Annotated[str, typer.Option("--job", help="Only images written by this ingest job.")] = "",
    min_width: Annotated[int | None, typer.Option("--min-width", help="Only images at least this many pixels wide.")] = None,
    min_height: Annotated[int | None, typer.Option("--min-height", help="Only images at least this many pixels high.")] = None,
    after: Annotated[str | None, typer.Option("--after", help="Ingested at or after (YYYY-MM-DD[THH:MM]).")] = None,
    before: Annotated[str | None, typer.Option("--before", help="Ingested before (YYYY-MM-DD[THH:MM]).")] = None,
    filter: Annotated[
        str, typer.Option("--filter", help="A raw Milvus expression over the stored fields, ANDed with the options above.")
    ] = "",
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
      imsim search --like /photos/a.jpg --tag kind=flag --json"""
    from ..expr import Where

    check_search(query, text, like, k, models, fusion, filter)  # everything that needs no model, before any loads
    where = Where(
        path_prefix=path_prefix,
        path_glob=glob,
        job=job,
        tags=parse_tag_options(tag) or {},
        min_width=min_width,
        min_height=min_height,
        ingested_after=_when(after),
        ingested_before=_when(before),
    )
    remote = settings_with(models)
    if remote.api_url and not (html_out or png_out):  # a running `imsim serve`: its models are warm
        from ..client.remote import Remote

        filters = {
            "under": path_prefix,
            "glob": glob,
            "job": job,
            "tag": tag or [],
            "min_width": min_width,
            "min_height": min_height,
            "after": where.ingested_after,
            "before": where.ingested_before,
            "filter": filter,
        }
        hits = Remote(remote).search(image=query, text=text, like=like, k=k, models=models, fusion=fusion, filters=filters)
        warn_random(random_among(remote, list(hits[0].scores) if hits else []))
    else:
        with client(models) as c:
            hits = c.search(query, text=text, like=like, k=k, fusion=fusion, where=where, filter=filter)
            warn_random(c.models.random_weights(list(hits[0].scores)) if hits else [])
            if html_out or png_out:
                _write_gallery(c, hits, query=query, text=text, like=like, fusion=fusion, html_out=html_out, png_out=png_out)
    if as_json:
        print_json([h.__dict__ for h in hits])
        return
    names = list(hits[0].scores) if hits else []
    if not hits:
        err.print("no results")
        return
    if not wide():  # narrow terminals: the scores on one line, the path whole on the next
        for rank, h in enumerate(hits, 1):
            scores = "  ".join(f"{n} {h.scores[n]:.4f} (rank {h.ranks.get(n) or '-'})" for n in names if n in h.scores)
            console.print(f"{rank:>3}. fused {h.score:.4f}  {scores}", highlight=False, soft_wrap=True)
            console.print(f"     {printable(h.path)}", highlight=False, soft_wrap=True)
        return
    table = Table("#", "fused", *[f"{n} cos (rank)" for n in names])
    table.add_column("path", overflow="fold")
    for rank, h in enumerate(hits, 1):
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
def duplicates(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A model, or 'fused' (weighted mean of every model's cosine). "
            "Default: the copy-oriented model (sscd, else dinov2).",
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Similarity at or above which two images are duplicates.")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration", help="A calibration.json written by `imsim eval run`: its threshold for this model version."
        ),
    ] = None,
    precision: Annotated[float, typer.Option(help="Which calibrated threshold to use: 0.9 or 0.95.")] = 0.95,
    neighbours: Annotated[int, typer.Option(help="Nearest images checked per image.")] = 16,
    path_prefix: Annotated[str, typer.Option("--under", help="Only images under this folder.")] = "",
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write group,id,path,best_score rows to this file.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the groups (members and edges) as JSON to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
) -> None:
    """Groups of near-duplicate stored images (connected components of pairs at or above the threshold).

    The threshold: --threshold; else --calibration FILE; else one applied with `imsim eval apply`; else a
    default measured for this exact model wiring (see `imsim models --info`); else an error.

    \b
    Examples:
      imsim duplicates --model dinov2 --threshold 0.98 --csv dups.csv
      imsim duplicates --calibration report/calibration.json --under /photos"""
    from ..duplicates import find_groups
    from ..expr import Where

    if precision not in (0.9, 0.95):
        raise ImsimError("--precision must be 0.9 or 0.95 (the thresholds imsim eval run measures)")
    remote = settings_with(None)
    if remote.api_url and calibration is None:  # a running `imsim serve` computes (and caches) the groups
        from ..client.remote import Remote

        answer = Remote(remote).duplicates(model=model, threshold=threshold, precision=precision, under=path_prefix)
        _print_groups(answer, csv_out, json_out, as_json)
        answered = str(answer.get("model", ""))
        warn_random(random_among(remote, remote.model_names if answered == "fused" else [answered] if answered else []))
        return
    with client() as c, progress() as bar:
        task = bar.add_task("duplicates", total=None, note="")
        groups, used, model_used = find_groups(
            c,
            model=model,
            threshold=threshold,
            precision=precision,
            neighbours=neighbours,
            where=Where(path_prefix=path_prefix) if path_prefix else None,
            calibration_file=calibration,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        rand = c.models.random_weights(c.settings.model_names if model_used == "fused" else [model_used])
    payload = {
        "model": model_used,
        "threshold": used.value,
        "threshold_source": used.source,
        "groups": [g.as_dict() for g in groups],
    }
    _print_groups(payload, csv_out, json_out, as_json)
    warn_random(rand)


def _print_groups(payload: dict[str, Any], csv_out: Path | None, json_out: Path | None, as_json: bool) -> None:
    """Groups as `imsim duplicates` prints and writes them (from this process, or from `imsim serve`)."""
    groups = payload["groups"]
    err.print(
        f"model {payload['model']}, threshold {payload['threshold']:.4f} ({payload['threshold_source']}): "
        f"{len(groups)} groups, {sum(len(g['members']) for g in groups)} images",
        highlight=False,
    )
    if csv_out:
        with open(csv_out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["group", "id", "path", "best_score"])
            for n, g in enumerate(groups, 1):
                for member in g["members"]:
                    best = max((e["score"] for e in g["edges"] if member["id"] in (e["a"], e["b"])), default=0.0)
                    writer.writerow([n, member["id"], csv_cell(printable(member["path"])), f"{best:.4f}"])
    if json_out:
        json_out.write_text(json.dumps(payload, indent=2))
    if as_json:
        print_json(payload)
        return
    for n, g in enumerate(groups, 1):
        console.print(f"[bold]group {n}[/]: {g['size']} images, best {g['best_score']:.4f}", markup=True, highlight=False)
        for member in g["members"]:
            console.print(f"  {printable(member['path'])}", highlight=False, soft_wrap=True)


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
