"""Image sets derived from real photos, for load tests and benchmarks: many distinct, real-looking JPEGs.

Each output is a seeded random crop of a real source photo, resized, possibly mirrored, with
brightness/colour jitter, saved as a JPEG. Deterministic for a given seed and sources, so a
benchmark or a test can be rerun on the same files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from .images import load_image
from .sources.paths import discover


def variant(source: Image.Image, rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """One random crop of ``source`` resized to ``size``, maybe mirrored, with brightness and colour jitter."""
    w, h = source.size
    scale = rng.uniform(0.45, 1.0)
    cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = source.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))


def write_variants(
    sources: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    count: int,
    *,
    size: tuple[int, int] = (96, 96),
    quality: int = 88,
    seed: int = 0,
    per_folder: int = 500,
) -> list[str]:
    """Write ``count`` JPEG variants of the images found in ``sources`` under ``dest`` (sub-folders of ``per_folder``)."""
    paths = discover(sources).files
    if not paths:
        raise ValueError(f"no source images found in {', '.join(map(str, sources))}")
    images = [load_image(p, min_size=max(size)).image for p in paths]
    rng = random.Random(seed)
    root = Path(dest)
    written: list[str] = []
    for i in range(count):
        folder = root / f"{i // per_folder:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"img{i:07d}.jpg"
        variant(images[i % len(images)], rng, size).save(target, "JPEG", quality=quality)
        written.append(str(target))
    return written
