"""Edited copies for copy-detection benchmarks: the transformations of DISC21, seeded and reproducible.

Every edit is a function ``(image, rng) -> (image, description)``. Geometric and photometric edits
(crop, resize, rotation, flip, colour jitter, grayscale, blur, JPEG re-compression, padding) use
Pillow. Overlays use Meta's AugLy where it is installed (its Twemoji emoji, its fonts, its web and
mobile screenshot templates; AugLy 1.0 still works with current Pillow for these, not for
``meme_format`` or ``perspective_transform``), and Pillow-drawn equivalents otherwise. Every
random choice comes from the ``rng`` passed in, so a seed reproduces a benchmark exactly.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Edit = Callable[[Image.Image, random.Random], tuple[Image.Image, str]]


@lru_cache(maxsize=1)
def augly_image() -> tuple[Any, Any] | None:
    """AugLy's image module, or None when it is not installed (or does not import)."""
    try:
        import augly.image as imaugs
        import augly.utils as utils
    except Exception:  # noqa: BLE001 - any import failure means "use Pillow"
        return None
    return imaugs, utils


def _augly() -> tuple[Any, Any]:
    """AugLy's (image, utils) modules, for the edits that are used only when :func:`backend` chose it."""
    modules = augly_image()
    if modules is None:
        raise RuntimeError("AugLy is not installed (pip install augly): the edit set chose it regardless")
    return modules


def backend(prefer_augly: bool = True) -> str:
    return "augly" if prefer_augly and augly_image() is not None else "pillow"


# --- Pillow edits ---------------------------------------------------------------------------
def crop(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    w, h = im.size
    keep = rng.uniform(0.5, 0.9)
    cw, ch = max(16, int(w * keep)), max(16, int(h * rng.uniform(keep * 0.85, min(1.0, keep * 1.15))))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch)), f"crop {cw}x{ch}"


def resize(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    scale = rng.uniform(0.3, 0.8)
    size = (max(16, int(im.width * scale)), max(16, int(im.height * scale * rng.uniform(0.85, 1.15))))
    return im.resize(size, Image.Resampling.BILINEAR), f"resize {size[0]}x{size[1]}"


def rotate(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    if rng.random() < 0.3:
        quarter = rng.choice([90, 180, 270])
        return im.rotate(quarter, expand=True), f"rotate {quarter}"
    angle = rng.uniform(-25, 25)
    return im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0)), f"rotate {angle:.0f}"


def flip(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    if rng.random() < 0.8:
        return ImageOps.mirror(im), "flip horizontal"
    return ImageOps.flip(im), "flip vertical"


def colour_jitter(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    b, c, s = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.3, 1.7)
    im = ImageEnhance.Brightness(im).enhance(b)
    im = ImageEnhance.Contrast(im).enhance(c)
    return ImageEnhance.Color(im).enhance(s), f"jitter b{b:.2f} c{c:.2f} s{s:.2f}"


def grayscale(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    return ImageOps.grayscale(im).convert("RGB"), "grayscale"


def blur(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    radius = rng.uniform(1.0, 4.0) * max(im.size) / 512
    return im.filter(ImageFilter.GaussianBlur(radius)), f"blur {radius:.1f}"


def jpeg(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    quality = rng.randint(8, 40)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), f"jpeg q{quality}"


def pad(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    w, h = im.size
    px, py = int(w * rng.uniform(0.05, 0.4)), int(h * rng.uniform(0.05, 0.4))
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    canvas = Image.new("RGB", (w + 2 * px, h + 2 * py), colour)
    canvas.paste(im, (px, py))
    return canvas, f"pad {px},{py}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(10, size))


def text_pillow(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    im = im.copy()
    words = ["SALE", "lol", "©2024", "repost", "NEW!", "omg", "follow me", "#tbt", "50% off", "meme"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    size = int(min(im.size) * rng.uniform(0.08, 0.2))
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    ImageDraw.Draw(im).text(
        (rng.uniform(0, 0.5) * im.width, rng.uniform(0, 0.85) * im.height), text, fill=colour, font=_font(size)
    )
    return im, f"text '{text}'"


def emoji_pillow(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """A drawn smiley sticker: a yellow face with eyes and a smile, at a random place and size."""
    im = im.copy().convert("RGBA")
    d = int(min(im.size) * rng.uniform(0.15, 0.4))
    sticker = Image.new("RGBA", (d, d), (0, 0, 0, 0))
    g = ImageDraw.Draw(sticker)
    g.ellipse((0, 0, d - 1, d - 1), fill=(255, 204, 77, 255), outline=(200, 140, 20, 255), width=max(1, d // 30))
    e = d // 10
    g.ellipse((d * 0.3 - e, d * 0.35 - e, d * 0.3 + e, d * 0.35 + e), fill=(60, 40, 20, 255))
    g.ellipse((d * 0.7 - e, d * 0.35 - e, d * 0.7 + e, d * 0.35 + e), fill=(60, 40, 20, 255))
    g.arc((d * 0.25, d * 0.4, d * 0.75, d * 0.8), 20, 160, fill=(60, 40, 20, 255), width=max(1, d // 20))
    x, y = rng.randint(0, im.width - d), rng.randint(0, im.height - d)
    im.alpha_composite(sticker, (x, y))
    return im.convert("RGB"), "emoji sticker (drawn)"


def screenshot_pillow(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """The image inside a browser-like window: title bar, address bar, margins and text lines."""
    w, h = im.size
    scale = rng.uniform(0.5, 0.8)
    inner = im.resize((max(16, int(w * scale)), max(16, int(h * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), (245, 245, 245))
    draw = ImageDraw.Draw(canvas)
    bar = max(12, h // 14)
    draw.rectangle((0, 0, w, bar), fill=(60, 60, 70))
    draw.rectangle((w // 8, bar // 4, w - w // 8, bar - bar // 4), fill=(230, 230, 235))
    x, y = rng.randint(0, max(0, w - inner.width)), bar + rng.randint(0, max(0, h - bar - inner.height))
    canvas.paste(inner, (x, min(y, h - inner.height)))
    for i in range(rng.randint(2, 6)):
        ly = bar + 8 + i * max(8, h // 30)
        if not (y <= ly <= y + inner.height):
            draw.rectangle((w // 20, ly, w // 20 + rng.randint(w // 5, w // 2), ly + 3), fill=(150, 150, 160))
    return canvas, "screenshot frame (drawn)"


# --- AugLy overlays -------------------------------------------------------------------------
def emoji_augly(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    imaugs, utils = _augly()
    folder = utils.EMOJI_DIR
    group = rng.choice(sorted(os.listdir(folder)))
    name = rng.choice(sorted(f for f in os.listdir(os.path.join(folder, group)) if f.endswith(".png")))
    out = imaugs.overlay_emoji(
        im.convert("RGB"),
        emoji_path=os.path.join(folder, group, name),
        opacity=rng.uniform(0.7, 1.0),
        emoji_size=rng.uniform(0.15, 0.4),
        x_pos=rng.uniform(0, 0.7),
        y_pos=rng.uniform(0, 0.7),
    )
    return out.convert("RGB"), f"emoji {group}/{name[:-4]} (augly)"


def text_augly(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    imaugs, utils = _augly()
    fonts = sorted(f for f in os.listdir(utils.FONTS_DIR) if f.endswith(".ttf") and "Noto" not in f)
    font = rng.choice(fonts)
    text = [rng.randint(0, 60) for _ in range(rng.randint(4, 12))]
    out = imaugs.overlay_text(
        im.convert("RGB"),
        text=text,
        font_file=os.path.join(utils.FONTS_DIR, font),
        font_size=rng.uniform(0.08, 0.2),
        opacity=rng.uniform(0.7, 1.0),
        color=tuple(rng.randint(0, 255) for _ in range(3)),
        x_pos=rng.uniform(0, 0.4),
        y_pos=rng.uniform(0, 0.8),
    )
    return out.convert("RGB"), f"text {font[:-4]} (augly)"


def screenshot_augly(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    imaugs, utils = _augly()
    template = rng.choice(["web.png", "mobile.png"])
    out = imaugs.overlay_onto_screenshot(
        im.convert("RGB"),
        template_filepath=os.path.join(utils.SCREENSHOT_TEMPLATES_DIR, template),
        crop_src_to_fit=rng.random() < 0.5,
    )
    return out.convert("RGB"), f"screenshot {template[:-4]} (augly)"


PILLOW_EDITS: dict[str, Edit] = {
    "crop": crop,
    "resize": resize,
    "rotate": rotate,
    "flip": flip,
    "jitter": colour_jitter,
    "grayscale": grayscale,
    "blur": blur,
    "jpeg": jpeg,
    "pad": pad,
    "text": text_pillow,
    "emoji": emoji_pillow,
    "screenshot": screenshot_pillow,
}
AUGLY_OVERLAYS: dict[str, Edit] = {"text": text_augly, "emoji": emoji_augly, "screenshot": screenshot_augly}


def edits(prefer_augly: bool = True) -> dict[str, Edit]:
    """Every edit by name; the overlays from AugLy when it is installed and preferred."""
    table = dict(PILLOW_EDITS)
    if backend(prefer_augly) == "augly":
        table.update(AUGLY_OVERLAYS)
    return table


def random_edit(
    im: Image.Image, rng: random.Random, *, max_edits: int = 3, prefer_augly: bool = True
) -> tuple[Image.Image, list[str]]:
    """1 to ``max_edits`` different edits in random order (DISC21 queries combine several); always ends as an RGB image."""
    table = edits(prefer_augly)
    names = rng.sample(sorted(table), rng.randint(1, max_edits))
    done = []
    out = im.convert("RGB")
    for name in names:
        out, description = table[name](out, rng)
        done.append(description)
    return out.convert("RGB"), done
