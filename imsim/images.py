"""Images in: finding image files, and decoding one file safely into an RGB ``PIL.Image``.

Owns every decision about pixels before a model sees them: which files count as images,
EXIF orientation, colour-mode conversion (L/LA/P/RGBA/CMYK/I;16/F), JPEG draft downscale,
the pixel and byte limits, and the typed errors that name the file. Each file is read
once; its content hash is taken from the same bytes that are decoded.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, ImageNotFound, ImageTooLarge, ImageUnreadable, ImsimError, PathNotAllowed

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".ico"}
)
GLOB_CHARS = set("*?[")
# Never let Pillow fill a truncated file with grey: a truncated image is an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def path_id(path: str | os.PathLike[str]) -> str:
    """The stable identity of an image: a hash of its absolute path (the store's primary key)."""
    return hashlib.sha256(os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: str) -> Iterator[str]:
    """Image files below ``root``; directory symlinks are not followed, so link loops end."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if is_image_name(name):
                yield os.path.join(dirpath, name)


def read_path_list(list_file: str | os.PathLike[str]) -> list[str]:
    """Paths from a text file, one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = Path(list_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImsimError(f"cannot read path list {os.fspath(list_file)!r}: {exc.strerror or exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def discover(inputs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand files, folders (recursively) and globs into a sorted, de-duplicated list of absolute paths.

    An explicit path that does not exist is kept, so that it is recorded as a failure
    ("no such file") instead of vanishing; a glob that matches nothing contributes nothing.
    """
    found: dict[str, None] = {}
    for raw in inputs:
        item = os.path.expanduser(os.fspath(raw))
        if os.path.isdir(item):
            candidates: Iterable[str] = _walk(item)
        elif GLOB_CHARS & set(item) and not os.path.exists(item):
            matches = sorted(glob.glob(item, recursive=True))
            candidates = [m for p in matches for m in (_walk(p) if os.path.isdir(p) else [p] if is_image_name(p) else [])]
        else:
            candidates = [item]
        for path in candidates:
            found.setdefault(os.path.abspath(path), None)
    return sorted(found)


@dataclass(frozen=True)
class FileFacts:
    """What the store records about an image's file."""

    path: str
    sha256: str
    file_size: int
    mtime: float

    @property
    def id(self) -> str:
        return path_id(self.path)


@dataclass(frozen=True)
class DecodedImage(FileFacts):
    """One decoded image and the facts about its file."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly draft-downscaled
    width: int  # full-resolution width after orientation
    height: int


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        else:
            arr = arr / hi * 255.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode_bytes(
    data: bytes,
    path: str = "<bytes>",
    *,
    min_size: int | None = None,
    max_pixels: int = 178_956_970,
) -> tuple[Image.Image, int, int]:
    """Decode image bytes to RGB. Returns (image, full width, full height) after orientation.

    ``min_size``: JPEGs are decoded at the smallest DCT scale whose both sides stay ≥ it
    (``Image.draft``), which is 2-4× faster for large photos and invisible after a model's
    own resize.
    """
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    path, f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} (IMSIM_MAX_IMAGE_PIXELS)"
                )
            orientation = im.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if min_size and im.format == "JPEG":
                im.draft("RGB", (min_size, min_size))
            im.seek(0)  # first frame of animations
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return _to_rgb(im), width, height
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2 × its MAX_IMAGE_PIXELS) fired first
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise ImageTooLarge(path, f"{pixels} exceeds the limit of {min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)):,} "
                                  "(IMSIM_MAX_IMAGE_PIXELS; Pillow refuses more than twice its own MAX_IMAGE_PIXELS)") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ImageDecodeError(path, f"cannot decode image: {exc}") from exc


@dataclass(frozen=True)
class FileBytes(FileFacts):
    """A file's bytes as read once, with the facts about the file."""

    data: bytes


def check_allowed(path: str, roots: Sequence[str]) -> None:
    """Refuse ``path`` unless its real location (symlinks followed) lies under one of ``roots``; no roots = any path."""
    if not roots:
        return
    real = os.path.realpath(path)
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        where = f" (resolves to {real})" if real != path else ""
        raise PathNotAllowed(path, f"outside the allowed roots{where}; IMSIM_ALLOWED_ROOTS={','.join(roots)}")


def read_file(path: str | os.PathLike[str], *, max_bytes: int = 512 * 1024 * 1024, allowed_roots: Sequence[str] = ()) -> FileBytes:
    """Read one file whole and hash it. Raises an :class:`~imsim.errors.ImageError` naming the file.

    ``allowed_roots`` (real paths) confines reads to those directories (:func:`check_allowed`).
    """
    path = os.path.abspath(os.fspath(path))
    check_allowed(path, allowed_roots)
    try:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise ImageUnreadable(path, "not a regular file")
        if st.st_size > max_bytes:
            raise ImageTooLarge(path, f"file is {st.st_size:,} bytes, over the limit of {max_bytes:,} (IMSIM_MAX_FILE_BYTES)")
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        raise ImageNotFound(path, "no such file") from exc
    except PermissionError as exc:
        raise ImageUnreadable(path, "permission denied") from exc
    except OSError as exc:  # EISDIR, ELOOP, EIO ...
        raise ImageUnreadable(path, exc.strerror or str(exc)) from exc
    return FileBytes(path=path, sha256=hashlib.sha256(data).hexdigest(), file_size=st.st_size, mtime=st.st_mtime, data=data)


def decode_file(file: FileBytes, *, min_size: int | None = None, max_pixels: int = 178_956_970) -> DecodedImage:
    """Decode bytes already read by :func:`read_file`."""
    image, width, height = decode_bytes(file.data, file.path, min_size=min_size, max_pixels=max_pixels)
    return DecodedImage(path=file.path, image=image, sha256=file.sha256, width=width, height=height,
                        file_size=file.file_size, mtime=file.mtime)


def load_image(
    path: str | os.PathLike[str],
    *,
    min_size: int | None = None,
    max_pixels: int = 178_956_970,
    max_bytes: int = 512 * 1024 * 1024,
) -> DecodedImage:
    """Read and decode one image file. Raises an :class:`~imsim.errors.ImageError` naming the file."""
    return decode_file(read_file(path, max_bytes=max_bytes), min_size=min_size, max_pixels=max_pixels)


def open_query_image(query: object, *, min_size: int | None = None, max_pixels: int = 178_956_970) -> Image.Image:
    """Turn a query given as a path, raw bytes or a PIL image into an RGB image."""
    if isinstance(query, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(query) or query)
    if isinstance(query, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(query), min_size=min_size, max_pixels=max_pixels)[0]
    if isinstance(query, (str, os.PathLike)):
        return load_image(query, min_size=min_size, max_pixels=max_pixels).image
    raise TypeError(f"a query image must be a path, bytes or PIL.Image, not {type(query).__name__}")
