"""Search results you can look at: a self-contained HTML page and a PNG contact sheet.

Both show the query (its thumbnail, or the text searched for) and every hit with its thumbnail, rank,
path, fused score and each model's score and rank, with bars drawn to scale so a glance compares
them. The HTML embeds its thumbnails as data URIs and uses no script, font or server: it opens from
disk in any browser. The PNG is drawn with Pillow alone.

Bar scales: a cosine (per model, or a weighted fusion of cosines) fills its track at 1.0 and is
empty at or below 0; a reciprocal-rank-fusion score fills it at its maximum, ``models / (k + 1)``
(first in every model's list).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .images import open_image

THUMB = 200  # thumbnails fit in a THUMB x THUMB box
TRACK = 180  # score bar track, pixels
BAR_HEIGHT = 10
FUSED_COLOUR = "#e4572e"
MODEL_COLOURS = ["#2e86ab", "#3bb273", "#7768ae", "#f3a712", "#a23b72", "#1b998b", "#5c6b73", "#c73e1d"]
BACKGROUND = "#ffffff"
TRACK_COLOUR = "#e6e6e6"


@dataclass(frozen=True)
class Query:
    """What was searched for: an image (path, bytes or PIL image), a text, or a stored image's path."""

    label: str
    image: Any = None  # None for a text query


def bar_fraction(score: float, *, fused: bool, fusion: str, models: int, rrf_k: int) -> float:
    """How much of a bar's track a score fills (0-1), per the scales in the module docstring."""
    full = models / (rrf_k + 1) if fused and fusion == "rrf" else 1.0
    return max(0.0, min(1.0, score / full))


def thumbnail(source: Any, size: int = THUMB) -> Image.Image:
    """An RGB thumbnail fitting ``size`` x ``size`` (a grey tile saying why when the image cannot be read)."""
    try:
        image = open_image(source, min_size=size)
    except Exception as exc:  # a gallery shows a placeholder rather than failing on one file
        tile = Image.new("RGB", (size, size), "#bbbbbb")
        ImageDraw.Draw(tile).text((8, size // 2 - 6), f"cannot show: {type(exc).__name__}", fill="#333333")
        return tile
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def thumbnail_uri(source: Any, size: int = THUMB) -> str:
    """A thumbnail of ``source`` as a data URI (a placeholder tile when it cannot be read)."""
    return _data_uri(thumbnail(source, size))


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")  # lossless, so what the page shows is exactly the thumbnail
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bar(fraction: float, colour: str) -> str:
    return f'<div class="track"><div class="bar" style="width:{round(fraction * TRACK)}px;background:{colour}"></div></div>'


def render_html(
    query: Query,
    hits: Sequence[Any],
    *,
    models: Sequence[str],
    fusion: str,
    rrf_k: int = 60,
    title: str = "imsim search",
    note: str = "",
) -> str:
    """The gallery page for ``hits`` (:class:`~imsim.client.local.SearchHit` objects), best first. ``note`` is shown as a
    warning above the results (models with random weights: the similarities mean nothing)."""
    colours = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    esc = html.escape
    if query.image is not None:
        query_html = f'<img src="{_data_uri(thumbnail(query.image))}" alt="query">'
    else:
        query_html = f'<div class="text">“{esc(query.label)}”</div>'
    legend = " ".join(f'<span class="key" style="background:{c}"></span>{esc(m)}' for m, c in colours.items())
    cards = []
    for rank, hit in enumerate(hits, 1):
        rows = [
            f'<div class="score">#{rank} fused {hit.score:.4f} ({esc(fusion)})</div>',
            _bar(bar_fraction(hit.score, fused=True, fusion=fusion, models=len(models), rrf_k=rrf_k), FUSED_COLOUR),
        ]
        for m in models:
            if m in hit.scores:
                model_rank = hit.ranks.get(m)
                rows.append(f'<div class="model">{esc(m)} {hit.scores[m]:.4f} (rank {model_rank or "-"})</div>')
                rows.append(
                    _bar(bar_fraction(hit.scores[m], fused=False, fusion=fusion, models=len(models), rrf_k=rrf_k), colours[m])
                )
        cards.append(
            f'<div class="card"><div class="thumb"><img src="{_data_uri(thumbnail(hit.path))}" '
            f'alt="{esc(os.path.basename(hit.path))}"></div>{"".join(rows)}'
            f'<div class="path" title="{esc(hit.path)}">{esc(hit.path)}</div></div>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ background:{BACKGROUND}; font:13px/1.35 sans-serif; color:#222; margin:16px; }}
h1 {{ font-size:18px; margin:0 0 8px; }}
.query {{ display:flex; gap:16px; align-items:center; margin-bottom:16px; }}
.query img {{ display:block; }}
.text {{ font-size:20px; }}
.grid {{ display:grid; grid-template-columns:repeat(auto-fill, {THUMB + 24}px); gap:12px; }}
.card {{ width:{THUMB + 8}px; padding:4px; border:1px solid #ddd; border-radius:4px; }}
.thumb {{ width:{THUMB}px; height:{THUMB}px; display:flex; align-items:center; justify-content:center; }}
.thumb img {{ display:block; }}
.track {{ width:{TRACK}px; height:{BAR_HEIGHT}px; background:{TRACK_COLOUR}; margin:2px 0 4px; }}
.bar {{ height:{BAR_HEIGHT}px; }}
.path {{ font-size:11px; color:#555; overflow-wrap:anywhere; }}
.key {{ display:inline-block; width:10px; height:10px; margin:0 4px 0 10px; }}
.note {{ background:#fff3cd; border:1px solid #e0b84c; padding:6px 10px; margin-bottom:12px; font-weight:bold; }}
</style></head>
<body>
<h1>{esc(title)}</h1>
{f'<div class="note">{esc(note)}</div>' if note else ""}
<div class="query">{query_html}<div>query: {esc(query.label)}<br>{len(hits)} results, fusion {esc(fusion)}<br>
<span class="key" style="background:{FUSED_COLOUR}"></span>fused {legend}</div></div>
<div class="grid">
{chr(10).join(cards)}
</div>
</body></html>
"""


def render_png(
    query: Query,
    hits: Sequence[Any],
    *,
    models: Sequence[str],
    fusion: str,
    rrf_k: int = 60,
    columns: int = 5,
    title: str = "imsim search",
    note: str = "",
) -> Image.Image:
    """The same gallery as a contact sheet: the query on top with a colour legend (and ``note``, a warning), then the
    hits in reading order, each labelled by its folder and file name."""
    colours = {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}
    font = ImageFont.load_default()
    line = 14
    card_w = THUMB + 24
    card_h = THUMB + 8 + (1 + len(models)) * (line + BAR_HEIGHT + 6) + 2 * line + 4
    top = 28 + (line + 6 if note else 0)
    query_thumb = thumbnail(query.image) if query.image is not None else None
    text_x = THUMB + 32 if query_thumb is not None else 16
    header = top + max(query_thumb.height if query_thumb is not None else 0, 3 * line + 8) + 20
    columns = max(1, min(columns, len(hits) or 1))
    rows = max(1, -(-len(hits) // columns))
    sheet = Image.new("RGB", (16 + max(columns, 3) * (card_w + 12), header + rows * (card_h + 12) + 16), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((16, 8), title, fill="#222222", font=font)
    if note:
        draw.text((16, 28), note, fill="#b00020", font=font)
    if query_thumb is not None:
        sheet.paste(query_thumb, (16, top))
        draw.text((text_x, top), f"query: {query.label}", fill="#222222", font=font)
    else:
        draw.text((text_x, top), f"query: \u201c{query.label}\u201d", fill="#222222", font=font)
    draw.text((text_x, top + line + 2), f"{len(hits)} results, fusion {fusion}", fill="#222222", font=font)
    x = text_x
    for name, colour in [("fused", FUSED_COLOUR), *colours.items()]:  # the legend: which bar is which
        draw.rectangle((x, top + 2 * line + 8, x + 9, top + 2 * line + 17), fill=colour)
        draw.text((x + 14, top + 2 * line + 6), name, fill="#222222", font=font)
        x += 24 + int(draw.textlength(name, font=font))

    def bar(x: int, y: int, fraction: float, colour: str) -> None:
        draw.rectangle((x, y, x + TRACK - 1, y + BAR_HEIGHT - 1), fill=TRACK_COLOUR)
        width = round(fraction * TRACK)
        if width:
            draw.rectangle((x, y, x + width - 1, y + BAR_HEIGHT - 1), fill=colour)

    for i, hit in enumerate(hits):
        x = 16 + (i % columns) * (card_w + 12)
        y = header + (i // columns) * (card_h + 12)
        thumb = thumbnail(hit.path)
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        y += THUMB + 8
        draw.text((x, y), f"#{i + 1} fused {hit.score:.4f}", fill="#222222", font=font)
        bar(x, y + line, bar_fraction(hit.score, fused=True, fusion=fusion, models=len(models), rrf_k=rrf_k), FUSED_COLOUR)
        y += line + BAR_HEIGHT + 6
        for m in models:
            if m in hit.scores:
                draw.text((x, y), f"{m} {hit.scores[m]:.4f} (rank {hit.ranks.get(m) or '-'})", fill="#222222", font=font)
                bar(
                    x,
                    y + line,
                    bar_fraction(hit.scores[m], fused=False, fusion=fusion, models=len(models), rrf_k=rrf_k),
                    colours[m],
                )
            y += line + BAR_HEIGHT + 6
        folder, name = os.path.basename(os.path.dirname(hit.path)), os.path.basename(hit.path)
        for text in (folder + "/", name):  # two files named alike in different folders read apart
            draw.text((x, y), text if len(text) <= 34 else "..." + text[-31:], fill="#555555", font=font)
            y += line
    return sheet
