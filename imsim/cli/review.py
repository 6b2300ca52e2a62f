"""``imsim duplicates`` and ``imsim review``: near-duplicate groups, and what a person decides about them (the same
actions as the review page: resolve a group with a keeper, "not a duplicate", undo, export)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ImsimError
from ..sources.names import printable
from ..vocabulary import DuplicatesOptions, Groups
from ._common import (
    JsonOpt,
    build,
    client,
    console,
    csv_cell,
    err,
    help_of,
    print_json,
    progress,
    random_among,
    remote_url,
    settings_with,
    warn_random,
)

app = typer.Typer()
review_app = typer.Typer(help="Decide about duplicate groups: keep one, not a duplicate, undo, export.", no_args_is_help=True)


def _opt(field: str) -> Any:
    return typer.Option("--" + field.replace("_", "-"), help=help_of(DuplicatesOptions, field), show_default=False)


@app.command()
def duplicates(
    model: Annotated[str | None, _opt("model")] = None,
    threshold: Annotated[float | None, _opt("threshold")] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration", help="A calibration.json written by `imsim eval run`: its threshold for this model version."
        ),
    ] = None,
    precision: Annotated[float | None, _opt("precision")] = None,
    neighbours: Annotated[int | None, _opt("neighbours")] = None,
    under: Annotated[str | None, _opt("under")] = None,
    show: Annotated[str | None, _opt("show")] = None,
    order: Annotated[str | None, _opt("order")] = None,
    keep: Annotated[str | None, _opt("keep")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write group,id,path,best_score rows to this file.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the groups (members and edges) as JSON to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
) -> None:
    """Groups of near-duplicate stored images, each with a suggested keeper (marked *), open ones by default.

    The threshold: --threshold; else --calibration FILE; else one applied with `imsim eval apply`; else a
    default measured for this exact model wiring; else one measured on this collection itself (once, kept in the
    store: edited copies of some of your images against their originals). Decide with `imsim review` or the
    review page of `imsim serve` (/duplicates).

    \b
    Examples:
      imsim duplicates --model dinov2 --threshold 0.98 --csv dups.csv
      imsim duplicates --calibration report/calibration.json --under /photos
      imsim duplicates --show decided --json"""
    given = {"model": model, "threshold": threshold, "precision": precision, "neighbours": neighbours, "under": under}
    options = build(DuplicatesOptions, given | {"show": show, "order": order, "keep": keep, "limit": 500})
    settings = settings_with(None)
    if calibration is None and remote_url(settings):  # a running `imsim serve` computes (and caches) the groups
        from ..client.remote import RemoteClient

        with RemoteClient.from_settings(settings) as remote:
            answer = remote.duplicates(options)
        _print_groups(answer, csv_out, json_out, as_json)
        warn_random(random_among(settings, settings.model_names if answer.model == "fused" else [answer.model]))
        return
    answer, rand = _local_groups(options, calibration)
    _print_groups(answer, csv_out, json_out, as_json)
    warn_random(rand)


def _local_groups(options: DuplicatesOptions, calibration: Path | None) -> tuple[Groups, list[str]]:
    from ..duplicates import default_model, link, marked_pairs
    from ..expr import Where
    from ..review import ensure_threshold, review_page, to_group

    with client() as c, progress() as bar:
        model = options.model or default_model(c)
        if options.threshold is None and calibration is None:
            ensure_threshold(c, model, options.precision, on_progress=lambda line: bar.console.print(line))
        task = bar.add_task("duplicates", total=None, note="")
        linked = link(
            c,
            model=model,
            threshold=options.threshold,
            precision=options.precision,
            neighbours=options.neighbours,
            where=Where(path_prefix=options.under) if options.under else None,
            calibration_file=calibration,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        page = review_page(
            c,
            linked,
            marked_pairs(c.store, linked.paths),
            show=options.show,
            order=options.order,
            keep=options.keep,
            limit=sys.maxsize,
        )
        rand = c.models.random_weights(c.settings.model_names if linked.model == "fused" else [linked.model])
    groups = [to_group(g, keeper, decided, page.facts, page.decided) for g, keeper, decided in page.groups]
    answer = Groups(
        model=linked.model,
        threshold=linked.threshold.value,
        threshold_source=linked.threshold.source,
        total=page.total,
        groups=groups,
        random_weights=rand,
    )
    return answer, rand


def _print_groups(answer: Groups, csv_out: Path | None, json_out: Path | None, as_json: bool) -> None:
    """Groups as `imsim duplicates` prints and writes them (from this process, or from `imsim serve`)."""
    payload = answer.model_dump()
    groups = payload["groups"]
    err.print(
        f"model {answer.model}, threshold {answer.threshold:.4f} ({answer.threshold_source}): "
        f"{len(groups)} groups, {sum(len(g['members']) for g in groups)} images",
        highlight=False,
    )
    if csv_out:
        with open(csv_out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["group", "id", "path", "best_score", "suggested_keeper"])
            for n, g in enumerate(groups, 1):
                for member in g["members"]:
                    best = max((e["score"] for e in g["edges"] if member["id"] in (e["a"], e["b"])), default=0.0)
                    kept = "yes" if member["id"] == g["suggested"] else ""
                    writer.writerow([n, member["id"], csv_cell(printable(member["path"])), f"{best:.4f}", kept])
    if json_out:
        json_out.write_text(json.dumps(payload, indent=2))
    if as_json:
        print_json(payload)
        return
    for n, g in enumerate(groups, 1):
        state = "  (decided)" if g["decided"] else ""
        console.print(f"[bold]group {n}[/]: {g['size']} images, best {g['best_score']:.4f}{state}", markup=True, highlight=False)
        for member in g["members"]:
            mark = "*" if member["id"] == g["suggested"] else " "
            size = f"{member['width']}x{member['height']}" if member.get("width") else "?"
            decision = f"  [{member['decision']}]" if member.get("decision") else ""
            line = f" {mark} {member['id'][:8]}  {size:>11}  {printable(member['path'])}{decision}"
            console.print(line, highlight=False, soft_wrap=True)


def _row_id(item: str) -> str:
    """A stored image named by its row id or its path."""
    from ..maintenance import ROW_ID
    from ..sources.names import path_id

    return item if ROW_ID.match(item) else path_id(item)


@review_app.command("keep")
def review_keep(
    keeper: Annotated[str, typer.Argument(help="The image kept: a row id or a path.")],
    others: Annotated[list[str], typer.Argument(help="The group's other members (ids or paths): recorded as duplicates.")],
    as_json: JsonOpt = False,
) -> None:
    """Resolve a group: KEEPER is kept, each OTHER recorded as its duplicate (no file is moved or deleted).

    \b
    Example:
      imsim review keep /photos/a.jpg /photos/a-copy.jpg /photos/a-small.jpg"""
    from ..review import member_facts, resolve

    ids = [_row_id(keeper), *map(_row_id, others)]
    with client() as c:
        made = resolve(c.store, ids[0], ids, member_facts(c, c.settings.model_names[0], ids))
    if as_json:
        print_json([d.__dict__ for d in made])
        return
    err.print(f"kept {printable(made[0].path)}; {len(made) - 1} recorded as its duplicates (undo: imsim review undo {ids[0]})")


@review_app.command("not-duplicate")
def review_not_duplicate(
    a: Annotated[str, typer.Argument(help="One image: a row id or a path.")],
    b: Annotated[str, typer.Argument(help="The other image.")],
) -> None:
    """Mark two images "not a duplicate": hidden from `imsim duplicates` and the page from now on."""
    from ..store.marks import Mark, Marks

    first, second = _row_id(a), _row_id(b)
    if first == second:
        raise ImsimError("a and b are the same image: a mark is between two")
    with client() as c:
        collection = c.models.collection(c.settings.model_names[0])
        rows = c.store.rows.get(collection, [first, second], ["path", "sha256"], consistency="Bounded")
        missing = [i for i in (first, second) if i not in rows]
        if missing:
            raise ImsimError(f"no stored image {missing[0]}")
        r1, r2 = rows[first], rows[second]
        Marks(c.store).add(Mark(first, second, r1["sha256"], r2["sha256"], r1["path"], r2["path"]))
    err.print(f"marked: {printable(r1['path'])} and {printable(r2['path'])} are not duplicates")


@review_app.command("undo")
def review_undo(keeper: Annotated[str, typer.Argument(help="The keeper of the group to reopen (id or path).")]) -> None:
    """Reopen a resolved group: its decisions are forgotten."""
    from ..store.decisions import Decisions

    with client() as c:
        forgotten = Decisions(c.store).undo(_row_id(keeper))
    if not forgotten:
        raise ImsimError(f"no group kept by {keeper}")
    err.print(f"reopened: {forgotten} decisions forgotten")


@review_app.command("export")
def review_export(
    form: Annotated[str, typer.Option("--format", help="csv (a header, one row per image) or json (JSON lines).")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file (default: standard output).")] = None,
) -> None:
    """Every decision (path, decision, the keeper's path, ids, sha256, when), streamed."""
    from ..review import export
    from ..store.decisions import Decisions

    if form not in ("csv", "json"):
        raise ImsimError(f"--format {form!r}: use csv or json")
    with client() as c:
        lines = export(iter(Decisions(c.store)), form)
        if out is None:
            for chunk in lines:
                sys.stdout.write(chunk)
            return
        with open(out, "w", newline="") as fh:
            for chunk in lines:
                fh.write(chunk)
    err.print(f"decisions written to {out}")
