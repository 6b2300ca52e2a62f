"""Decoding and discovery on real files written by Pillow: modes, orientation, limits, errors naming the file."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imsim import images
from imsim.errors import ImageDecodeError, ImageNotFound, ImageTooLarge, ImageUnreadable
from imsim.images import decode_bytes, load_image
from imsim.sources.names import path_id
from imsim.sources.paths import discover, read_path_list
from imsim.sources.reading import Limits


def photo(w=320, h=200) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.uint8))


def test_jpeg_reads_with_hash_size_and_metadata(tmp_path):
    path = tmp_path / "a.jpg"
    photo().save(path, quality=90)
    d = load_image(path)
    assert d.image.mode == "RGB" and d.image.size == (320, 200)
    assert (d.width, d.height, d.file_size) == (320, 200, path.stat().st_size)
    import hashlib

    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.id == path_id(path) and len(d.id) == 32


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    photo(320, 200).save(path, exif=exif)
    d = load_image(path)
    assert d.image.size == (200, 320) and (d.width, d.height) == (200, 320)


def test_draft_downscales_large_jpeg_but_keeps_min_size(tmp_path):
    path = tmp_path / "big.jpg"
    photo(2000, 1500).save(path)
    d = load_image(path, min_size=256)
    assert min(d.image.size) >= 256 and d.image.size[0] < 2000
    assert (d.width, d.height) == (2000, 1500)  # the record keeps full resolution


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = photo()
    if mode == "I;16":
        im = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype("<u2"))
        assert im.mode == "I;16"
    else:
        im = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "P" else "GIF"
    path = tmp_path / f"img.{fmt.lower()}"
    im.save(path, fmt)
    out = load_image(path).image
    assert out.mode == "RGB" and out.size == (320, 200)
    if mode == "I;16":  # 16-bit values scaled, not clipped to white
        assert 60 < np.asarray(out).mean() < 200


def test_transparency_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_image(path).image).min() == 255


def test_animated_gif_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(load_image(path).image)[10, 10]
    assert r > 200 and b < 50


def test_bad_files_raise_typed_errors_naming_the_file(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    buf = io.BytesIO()
    photo().save(buf, "JPEG")
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cases = {
        truncated: ImageDecodeError,
        empty: ImageDecodeError,
        text: ImageDecodeError,
        tmp_path / "missing.jpg": ImageNotFound,
        tmp_path: ImageUnreadable,
    }
    for path, error in cases.items():
        with pytest.raises(error) as info:
            load_image(path)
        assert str(path) in str(info.value) and info.value.reason


def test_pixel_limit_refuses_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 4000)).save(path)
    with pytest.raises(ImageTooLarge, match="16,000,000 pixels"):
        load_image(path, limits=Limits(max_pixels=1_000_000))
    with pytest.raises(ImageTooLarge):
        load_image(path, limits=Limits(max_bytes=10))
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        decode_bytes(b"")


def test_unreadable_file(tmp_path):
    """Permission denied is a per-file failure. As root (CI), drop to 'nobody' for the read: root reads any file."""
    folder = tmp_path / "shared"
    folder.mkdir()
    for p in (tmp_path, folder):
        p.chmod(0o755)
    path = folder / "secret.jpg"
    photo().save(path)
    path.chmod(0)
    as_nobody = os.geteuid() == 0
    if as_nobody:
        os.setegid(65534)
        os.seteuid(65534)
    try:
        with pytest.raises(ImageUnreadable, match="permission denied") as info:
            load_image(path)
    finally:
        if as_nobody:
            os.seteuid(0)
            os.setegid(0)
    assert info.value.path == str(path)


def test_discover_folders_globs_lists_and_symlink_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ["a/1.jpg", "a/b/2.PNG", "a/b/readme.txt", "c.gif"]:
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a directory loop
    found = discover([tmp_path / "a"])
    assert found.files == [str(tmp_path / "a/1.jpg"), str(tmp_path / "a/b/2.PNG")]
    assert found.skipped == {"not an image type (.txt)": 1, "folder symlink (not followed)": 1}
    both = discover([str(tmp_path / "*.gif"), str(tmp_path / "a" / "1.jpg")])
    assert both.files == [str(tmp_path / "a/1.jpg"), str(tmp_path / "c.gif")] and both.unmatched == []
    nothing = discover([str(tmp_path / "nothing*.jpg")])
    assert nothing.files == [] and nothing.unmatched == [str(tmp_path / "nothing*.jpg")]
    assert discover([tmp_path / "gone.jpg"]).files == [str(tmp_path / "gone.jpg")]  # kept: it fails visibly later
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{tmp_path / 'c.gif'}\n\n")
    assert read_path_list(listing) == [str(tmp_path / "c.gif")]


def _whole_image_rgb(im: Image.Image) -> np.ndarray:
    """The conversion as it was before it ran in strips (whole-image float32 copies): the reference it must equal."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        else:
            arr = arr / hi * 255.0
        return np.asarray(Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB"))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "RGBA", "LA", "P", "CMYK", "1", "L", "YCbCr"])
def test_strip_conversion_equals_the_whole_image_conversion(mode, monkeypatch):
    import imsim.images as images

    monkeypatch.setattr(images, "STRIP_PIXELS", 997)  # many strips, one of them short
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I", "F"):
        scale = {"I;16": 65535, "I": 5000, "F": 3.5}[mode]
        values = rng.uniform(-0.2 if mode == "F" else 0, 1, size=(61, 83)) * scale
        dtypes: dict[str, Any] = {"I;16": "<u2", "I": np.int32, "F": np.float32}
        im = Image.fromarray(values.astype(dtypes[mode]))
        assert im.mode == mode
    else:
        im = Image.fromarray(rng.integers(0, 256, size=(61, 83, 4), dtype=np.uint8), "RGBA").convert(mode)
        if mode == "P":
            im.info["transparency"] = 5
    assert np.array_equal(images.to_rgb_array(im), _whole_image_rgb(im))


@pytest.mark.parametrize("kind", ["16-bit", "RGBA"])
def test_a_huge_16_bit_or_rgba_png_decodes_within_a_bounded_peak(kind, tmp_path):
    """A 0.34 MB 13000x13000 16-bit PNG peaked at 3.1 GB RSS, an RGBA one at 3.8-4.3 GB: several full-size float32
    copies, and a full-size background to composite on. Converted in strips, each stays near its two own arrays."""
    import json
    import subprocess
    import sys

    from .support.servers import ROOT

    path = tmp_path / f"{kind}.png"
    make = (
        "import numpy as np, sys; from PIL import Image; n = 13000\n"
        "if sys.argv[2] == '16-bit':\n"
        "    a = np.zeros((n, n), np.uint16); a[::97, :] = 40000; Image.fromarray(a.astype('<u2')).save(sys.argv[1])\n"
        "else:\n"
        "    a = np.zeros((n, n, 4), np.uint8); a[::89, :, 3] = 255; a[..., 0] = 200\n"
        "    Image.fromarray(a, 'RGBA').save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", make, str(path), kind], check=True, cwd=ROOT)
    measure = (
        "import json, resource, sys; from imsim.images import decode_array, read_header\n"
        "data = open(sys.argv[1], 'rb').read(); header = read_header(data, sys.argv[1])\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixels, w, h = decode_array(data, sys.argv[1])\n"
        "print(json.dumps({'mb': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, 'shape': pixels.shape,"
        " 'mode': header.mode, 'corner': pixels[0, 0].tolist()}))"
    )
    out = json.loads(
        subprocess.run([sys.executable, "-c", measure, str(path)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    )
    decoded, rgb = (2 if kind == "16-bit" else 4) * 13000**2 / 2**20, 3 * 13000**2 / 2**20
    print(f"\n{kind} 13000x13000 PNG ({path.stat().st_size / 1e6:.2f} MB): peak RSS above the start {out['mb']:.0f} MB")
    assert out["shape"] == [13000, 13000, 3] and out["mode"] == ("I;16" if kind == "16-bit" else "RGBA")
    assert out["corner"] == ([156, 156, 156] if kind == "16-bit" else [200, 0, 0])  # 40000/65535 scaled; an opaque row
    assert out["mb"] < decoded + rgb + 200, out  # the decoded image, the RGB array, one strip; not float32 copies


_PEAK = """
import json, sys
from imsim.images import decode_array, decode_memory, read_header
def rss(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) * 1024
data = open(sys.argv[1], "rb").read()
header = read_header(data, sys.argv[1])
open("/proc/self/clear_refs", "w").write("5")  # the peak RSS (VmHWM) starts again from here
before = rss("VmRSS:")
pixels, w, h = decode_array(data, sys.argv[1], decoder=sys.argv[2])
print(json.dumps({"peak": rss("VmHWM:") - before, "estimate": decode_memory(header), "mode": header.mode,
                  "shape": list(pixels.shape)}))
"""
_MAKE = """
import sys
import numpy as np
from PIL import Image
n, mode, path = 4000, sys.argv[1], sys.argv[2]
y, x = np.mgrid[0:n, 0:n]
band = ((x // 7 + y // 11) % 256).astype(np.uint8)
exif = Image.Exif()
if mode == "RGB-rotated":
    exif[0x0112] = 6
    Image.fromarray(np.stack([band, band[::-1], band.T], axis=2), "RGB").save(path, quality=90, exif=exif)
elif mode == "I;16":
    Image.fromarray((band.astype(np.uint16) * 250).astype("<u2")).save(path)
elif mode == "P-transparent":
    im = Image.fromarray(band, "L").convert("P")
    im.save(path, transparency=5)
elif mode == "CMYK":
    Image.fromarray(np.stack([band, band.T, band[::-1], band[:, ::-1]], axis=2), "CMYK").save(path, quality=90)
elif mode == "1":
    Image.fromarray(band > 127).save(path)
elif mode == "LA":
    Image.fromarray(np.stack([band, band.T], axis=2), "LA").save(path)
else:
    Image.fromarray(np.stack([band, band.T, band[::-1], (band > 60).astype(np.uint8) * 255], axis=2), "RGBA").save(path)
"""


@pytest.mark.parametrize(
    "mode, decoder",
    [
        ("RGBA", "pillow"),
        ("LA", "pillow"),
        ("I;16", "pillow"),
        ("P-transparent", "pillow"),
        ("CMYK", "pillow"),
        ("1", "pillow"),
        ("RGB-rotated", "pillow"),
        ("RGB-rotated", "simplejpeg"),
    ],
)
def test_the_decode_estimate_holds_the_measured_peak_of_every_mode(mode, decoder, tmp_path):
    """A 16-megapixel image of each colour mode decoded in a process of its own: the peak RSS the decode adds (VmHWM,
    reset just before) never exceeds what the budget reserves for it, and the reservation is not a wild overestimate
    (at most the strip allowance above 1.5 x the peak). Before: ImageOps.exif_transpose copied every image."""
    import json
    import subprocess
    import sys

    from .support.servers import ROOT

    suffix = ".jpg" if mode in ("CMYK", "RGB-rotated") else ".png"
    path = tmp_path / f"image{suffix}"
    subprocess.run([sys.executable, "-c", _MAKE, mode, str(path)], check=True, cwd=ROOT)
    run = subprocess.run([sys.executable, "-c", _PEAK, str(path), decoder], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    mb = 2**20
    print(f"\n{mode} ({decoder}): peak {out['peak'] / mb:.0f} MB, reserved {out['estimate'] / mb:.0f} MB")
    assert out["shape"] == [4000, 4000, 3]
    assert out["peak"] <= out["estimate"], out
    assert out["estimate"] <= 1.5 * out["peak"] + images.STRIP_PIXELS * images.STRIP_BYTES, out


def test_the_decode_budget_fails_an_image_too_big_for_it_alone_and_bounds_what_decodes_at_once():
    import threading

    from imsim.images import DecodeBudget, Header, decode_memory

    budget = DecodeBudget(100 * 2**20)
    with pytest.raises(ImageTooLarge, match="needs ~.* MB .*IMSIM_DECODE_MEMORY_MB=100"):
        budget.reserve("/x.png", 101 * 2**20)
    assert decode_memory(Header("PNG", 1000, 1000, 1, "RGBA")) == 1000 * 1000 * 7 + 1000 * 1000 * images.STRIP_BYTES
    assert decode_memory(Header("JPEG", 4000, 3000, 1, "RGB"), scale=4) == 1000 * 750 * 7 + 1000 * 750 * images.STRIP_BYTES
    assert (
        decode_memory(Header("PNG", 1000, 1000, 6, "L")) == 1000 * 1000 * 6 + 1000 * 1000 * images.STRIP_BYTES
    )  # the turned copy
    budget.reserve("/a.png", 60 * 2**20)
    waited = threading.Event()

    def second() -> None:
        budget.reserve("/b.png", 60 * 2**20)  # does not fit beside the first: waits for it
        waited.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not waited.wait(0.3)
    budget.release(60 * 2**20)
    assert waited.wait(5) and budget.used == 60 * 2**20
    thread.join()
