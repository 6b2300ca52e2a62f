"""``imsim clusters``: topics by clustering a model's stored vectors; list, show, draw or remove a clustering."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ImsimError
from ..sources.names import printable
from ..vocabulary import ClusterRequest, Topics
from ._common import JsonOpt, build, client, console, err, help_of, print_json, progress

app = typer.Typer()


def _opt(field: str) -> Any:
    return typer.Option("--" + field.replace("_", "-"), help=help_of(ClusterRequest, field), show_default=False)


@app.command()
def clusters(
    model: Annotated[str | None, _opt("model")] = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help=help_of(ClusterRequest, "k"), show_default=False)] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    sample: Annotated[int | None, _opt("sample")] = None,
    prompts: Annotated[
        list[str] | None, typer.Option("--prompt", help=help_of(ClusterRequest, "prompts") + " Repeatable.")
    ] = None,
    show: Annotated[
        str | None,
        typer.Option("--show", help="Print a kept clustering (a name from --list, or 'latest')."),
    ] = None,
    listed: Annotated[bool, typer.Option("--list", help="List the kept clusterings.")] = False,
    remove: Annotated[str | None, typer.Option("--remove", help="Forget a kept clustering (the vectors are untouched).")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the topics as a page (thumbnails embedded).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Topics: k-means over a model's stored vectors (its whitened version when active), kept in the store.

    Each topic: its size, the images nearest its centre and its outliers, a label guessed from a list of prompts
    when the model has a text tower. The fit of a few k is printed to help choose one. Search a topic with
    `imsim search ... --cluster N`; browse them on the `imsim serve` page /topics.

    \b
    Examples:
      imsim clusters                              k from the collection's size
      imsim clusters --model dinov2 -k 50 --html /tmp/topics.html
      imsim clusters --list
      imsim clusters --show latest --json"""
    from .. import topics

    with client() as c:
        if listed:
            kept = topics.Clusterings(c.store).kept()
            print_json(kept) if as_json else _print_list(kept)
            return
        if remove:
            removed = topics.Clusterings(c.store).remove(remove)
            if not removed:
                raise ImsimError(f"no clustering {remove!r} (`imsim clusters --list`)")
            err.print(f"removed clustering {remove}: {removed:,} rows (the vectors are untouched)")
            return
        if show:
            answer = topics.read(c, None if show == "latest" else show)
        else:
            request = build(ClusterRequest, {"model": model, "k": k, "seed": seed, "sample": sample, "prompts": prompts})
            with progress() as bar:
                task = bar.add_task("clusters", total=None, note="learning the centres")

                def told(stage: str, done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, note="" if stage == "assigned" else "learning the centres")

                answer = topics.run(
                    c,
                    request.model or None,
                    request.k,
                    seed=request.seed,
                    sample=request.sample,
                    prompts=request.prompts or None,
                    on_progress=told,
                )
        if html_out:
            html_out.write_text(page(answer, c), encoding="utf-8")
            err.print(f"topics written to {html_out}")
    if as_json:
        print_json(answer.model_dump())
        return
    _print_topics(answer)


def _print_list(kept: list[dict[str, Any]]) -> None:
    if not kept:
        err.print("no clustering yet: `imsim clusters` makes one")
    for meta in kept:
        console.print(
            f"{meta['name']}  {int(meta.get('rows', 0)):,} images in {meta.get('k')} topics  ({meta.get('made_at', '?')})",
            highlight=False,
        )


def _print_topics(answer: Topics) -> None:
    err.print(
        f"{answer.name}: {answer.rows:,} images in {answer.k} topics (centres from {answer.sample:,}; {answer.seconds:.1f} s)",
        highlight=False,
    )
    if answer.fit:
        fit = ", ".join(f"k={k}: {v:.3f}" for k, v in sorted(answer.fit.items()))
        err.print(f"fit (mean cosine to the centre, on the sample; higher is tighter): {fit}", highlight=False)
    if answer.labelled:
        err.print("labels are guesses: the prompt nearest each centre", highlight=False)
    for topic in answer.topics:
        label = f"  [{topic.label}]" if topic.label else ""
        console.print(f"topic {topic.cluster}: {topic.size:,} images{label}", highlight=False)
        for image in topic.nearest[:3]:
            console.print(f"    {image.similarity:.3f}  {printable(image.path)}", highlight=False, soft_wrap=True)
        if topic.outliers:
            far = topic.outliers[0]
            console.print(f"  outlier {far.similarity:.3f}  {printable(far.path)}", highlight=False, soft_wrap=True)


def page(answer: Topics, c: Any) -> str:
    """The topics as one self-contained page: a map of the centres, then each topic's nearest images and outliers."""
    from ..gallery import thumbnail_uri

    def image(item: Any) -> str:
        return (
            f'<figure><img src="{thumbnail_uri(item.path)}" alt="{html.escape(item.path)}">'
            f"<figcaption>{item.similarity:.3f} {html.escape(Path(item.path).name)}</figcaption></figure>"
        )

    cards = []
    for topic in answer.topics:
        label = f" · {html.escape(topic.label)} (a guess)" if topic.label else ""
        cards.append(
            f'<section><h2>topic {topic.cluster}: {topic.size:,} images{label}</h2><div class="row">'
            + "".join(image(i) for i in topic.nearest)
            + '</div><h3>outliers</h3><div class="row">'
            + "".join(image(i) for i in topic.outliers[:4])
            + "</div></section>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>imsim topics: {html.escape(answer.name)}</title>"
        "<style>body{font:14px system-ui;margin:16px}.row{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:0;width:160px;font-size:11px}img{max-width:160px;max-height:120px}</style></head><body>"
        f"<h1>{answer.k} topics of {answer.rows:,} images</h1><p>{html.escape(answer.name)}</p>"
        + map_svg(answer)
        + "".join(cards)
        + f"<script type='application/json' id='topics'>{html.escape(json.dumps(answer.model_dump()))}</script></body></html>"
    )


def map_svg(answer: Topics, size: int = 420) -> str:
    """The centres in two dimensions as an SVG: one circle per topic, its area the topic's size."""
    if not answer.map:
        return ""
    xs, ys = [p[0] for p in answer.map], [p[1] for p in answer.map]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    sizes = {t.cluster: t.size for t in answer.topics}
    biggest = max(sizes.values() or [1])
    dots = []
    for cluster, (x, y) in enumerate(answer.map):
        cx = 20 + (x - min(xs)) / span_x * (size - 40)
        cy = 20 + (y - min(ys)) / span_y * (size - 40)
        r = 3 + 14 * (sizes.get(cluster, 0) / biggest) ** 0.5
        dots.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="#2e86ab88"><title>topic {cluster}</title></circle>'
            f'<text x="{cx:.1f}" y="{cy:.1f}" font-size="9" text-anchor="middle">{cluster}</text>'
        )
    return f'<svg width="{size}" height="{size}" data-testid="map" viewBox="0 0 {size} {size}">{"".join(dots)}</svg>'
