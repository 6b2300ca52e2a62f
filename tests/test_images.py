"""Decoding and discovery on real files written by Pillow: modes, orientation, limits, errors naming the file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from imsim.errors import ImageDecodeError, ImageNotFound, ImageTooLarge, ImageUnreadable
from imsim.images import Limits, decode_bytes, load_image
from imsim.paths import discover, path_id, read_path_list


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
