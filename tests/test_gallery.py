"""The gallery a user looks at: rendered by headless Chromium (and the PNG by Pillow), then read back from pixels."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from imsim.gallery import FUSED_COLOUR, MODEL_COLOURS, THUMB, TRACK, bar_fraction

from .support.servers import settings_env
from .support.settings import make_settings

# Solid colours no part of the page uses (text is grey/black, bars and tracks have their own colours).
COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "orange": (255, 140, 0),
    "purple": (120, 0, 160),
}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def blocks(image: np.ndarray, colour: tuple[int, int, int], min_side: int = 40) -> list[tuple[int, int, int, int]]:
    """Axis-aligned rectangles of ``colour`` (x0, y0, x1, y1), in reading order."""
    mask = np.all(np.abs(image.astype(int) - colour) <= 2, axis=2)
    found = []
    for y0, y1 in runs(mask.sum(axis=1) >= min_side):
        for x0, x1 in runs(mask[y0:y1].sum(axis=0) >= min_side):
            found.append((x0, y0, x1, y1))
    return reading_order(found)


def reading_order(rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Top to bottom by rows (centres less than half a thumbnail apart share a row), then left to right."""
    rows: list[list[tuple[int, int, int, int]]] = []
    for rect in sorted(rects, key=lambda r: (r[1] + r[3]) / 2):
        if rows and abs((rect[1] + rect[3]) / 2 - (rows[-1][0][1] + rows[-1][0][3]) / 2) < THUMB / 2:
            rows[-1].append(rect)
        else:
            rows.append([rect])
    return [rect for row in rows for rect in sorted(row)]


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


def bar_width(image: np.ndarray, block: tuple[int, int, int, int], colour: tuple[int, int, int]) -> int:
    """The longest run of ``colour`` in the card below a thumbnail block (the card's bar of that colour)."""
    x0, _, x1, y1 = block
    centre = (x0 + x1) // 2
    region = image[y1 : y1 + 140, max(0, centre - THUMB // 2 - 12) : centre + THUMB // 2 + 12]
    mask = np.all(np.abs(region.astype(int) - colour) <= 2, axis=2)
    return max((right - left for row in mask for left, right in runs(row)), default=0)


def check_gallery(shot: np.ndarray, hits: list[dict], colour_of: dict[str, tuple], query_colour: tuple, fusion: str) -> None:
    query_blocks = blocks(shot, query_colour)
    first_card_top = min(blocks(shot, colour_of[hits[0]["path"]])[-1][1], query_blocks[-1][1])
    query_block = query_blocks[0]
    assert query_block[1] < first_card_top and max(query_block[2] - query_block[0], query_block[3] - query_block[1]) == THUMB
    placed = []
    for rank, hit in enumerate(hits):
        candidates = [b for b in blocks(shot, colour_of[hit["path"]]) if b != query_block]
        assert len(candidates) == 1, f"hit {rank + 1} ({hit['path']}): {len(candidates)} thumbnails of its colour"
        placed.append(candidates[0])
        block = candidates[0]
        assert max(block[2] - block[0], block[3] - block[1]) == THUMB  # fitted in the thumbnail box
        want = round(bar_fraction(hit["score"], fused=True, fusion=fusion, models=2, rrf_k=60) * TRACK)
        assert abs(bar_width(shot, block, rgb(FUSED_COLOUR)) - want) <= 1, f"fused bar of hit {rank + 1}"
        for model, colour in zip(["clip", "dinov2"], MODEL_COLOURS, strict=False):
            want = round(bar_fraction(hit["scores"][model], fused=False, fusion=fusion, models=2, rrf_k=60) * TRACK)
            assert abs(bar_width(shot, block, rgb(colour)) - want) <= 1, f"{model} bar of hit {rank + 1}"
    assert reading_order(placed) == placed, "thumbnails are not in rank order"


@pytest.fixture()
def colour_folder(tmp_path):
    folder = tmp_path / "colours"
    folder.mkdir()
    for i, (name, colour) in enumerate(COLOURS.items()):
        Image.new("RGB", (300, 200) if i % 2 else (180, 270), colour).save(folder / f"{name}.png")
    return folder


def test_gallery_html_in_chromium_and_png_show_thumbnails_in_rank_order_with_scaled_bars(
    cli, tiny_model_dirs, tmp_path, colour_folder
):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.fail("chromium is not installed: run `bash scripts/install.sh --test`")
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(colour_folder))
    query = str(colour_folder / "red.png")
    page, sheet = tmp_path / "gallery.html", tmp_path / "gallery.png"
    hits = json.loads(cli(env, "search", query, "-k", "6", "--html", str(page), "--png", str(sheet), "--json").stdout)
    assert len(hits) == 6 and hits[0]["path"] == query
    html_text = page.read_text()
    assert "<script" not in html_text and "http" not in html_text.split("<body>", 1)[1]  # self-contained

    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1400,1400",
            f"--screenshot={shot}",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    colour_of = {str(colour_folder / f"{name}.png"): c for name, c in COLOURS.items()}
    check_gallery(np.asarray(Image.open(shot).convert("RGB")), hits, colour_of, COLOURS["red"], "rrf")
    check_gallery(np.asarray(Image.open(sheet).convert("RGB")), hits, colour_of, COLOURS["red"], "rrf")


def test_bar_scales():
    assert bar_fraction(2 / 61, fused=True, fusion="rrf", models=2, rrf_k=60) == 1.0  # first in both lists
    assert bar_fraction(1 / 61, fused=True, fusion="rrf", models=2, rrf_k=60) == pytest.approx(0.5)
    assert bar_fraction(0.25, fused=True, fusion="weighted", models=2, rrf_k=60) == 0.25
    assert bar_fraction(-0.3, fused=False, fusion="rrf", models=2, rrf_k=60) == 0.0
    assert bar_fraction(1.2, fused=False, fusion="rrf", models=2, rrf_k=60) == 1.0


def test_text_query_gallery_names_the_text(cli, tiny_model_dirs, tmp_path, colour_folder):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    cli(env, "ingest", "--local", str(colour_folder))
    page = tmp_path / "text.html"
    cli(env, "search", "--text", "a <red> square", "-k", "3", "--html", str(page))
    text = page.read_text()
    assert "a &lt;red&gt; square" in text and 'alt="query"' not in text and text.count('class="card"') == 3
