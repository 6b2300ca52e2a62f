"""Images in: decoding one file's bytes into RGB pixels (reading it safely is :mod:`imsim.sources.reading`).

Owns every decision about pixels before a model sees them: the pixel limit and the decode-memory budget, the
header (format, size, EXIF orientation) read without decoding, the decoders (Pillow; libjpeg-turbo through simplejpeg, the same
pixels), the JPEG DCT draft scale, colour-mode conversion (L/LA/P/RGBA/CMYK/I;16/F), and the typed errors
that name the file. Each file is read once; its content hash is taken from the bytes decoded. Which files
there are, and globs, are :mod:`imsim.sources.paths`.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageDecodeError,
    ImageTooLarge,
)
from .sources.files import FileBytes, FileFacts
from .sources.reading import DEFAULT_LIMITS, DEFAULT_MAX_PIXELS, Limits, read_file

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class DecodedImage(FileFacts):
    """One decoded image and the facts about its file."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly draft-downscaled
    width: int  # full-resolution width after orientation
    height: int


# --- decoding ----------------------------------------------------------------------------------
STRIP_PIXELS = 1_000_000  # pixels converted at a time: the temporaries of a conversion never exceed one strip's
STRIP_BYTES = 32  # bytes per pixel of one strip's temporaries (measured up to ~23: crop, RGBA, background, composite, RGB)
_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")
# bytes per pixel Pillow keeps a decoded image in (multi-band and 32-bit modes take 4, "1" takes a byte per pixel)
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_bytes_per_pixel(mode: str, oriented: bool = False) -> int:
    """Bytes per pixel of decoding an image of this Pillow mode to RGB: Pillow's own storage (4 for most modes) plus
    the 3 of the RGB array it becomes (conversions run in strips: :data:`STRIP_PIXELS`); an EXIF orientation is applied
    to that array once Pillow's copy is freed, so it costs a second RGB array (6) where that is more."""
    held = _PILLOW_BYTES.get(mode, 4) + 3
    return max(held, 6) if oriented else held


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow mode as an 8-bit RGB HWC array; transparency is composited over white; 16-bit and float images are
    scaled to 8 bits. Converted a strip of rows at a time, so memory is the image, the RGB array and one strip (a
    13000x13000 16-bit PNG made several full-size float32 copies: 3.1 GB); the result is the same, pixel for pixel,
    as converting the whole image at once."""
    width, height = im.size  # RGB too, by strips: a whole image's tobytes() (np.asarray) joins its chunks, 2 x 3 bytes
    out = np.empty((height, width, 3), np.uint8)
    step = max(1, STRIP_PIXELS // max(1, width))
    convert = _strip_converter(im)
    for top in range(0, height, step):
        out[top : top + step] = convert(im.crop((0, top, width, min(height, top + step))))
    return out


def _strip_converter(im: Image.Image) -> Callable[[Image.Image], np.ndarray]:
    """How one strip of ``im`` becomes RGB (scales that need the whole image, like a float image's range, read first)."""
    if im.mode in _WIDE:
        extrema = im.getextrema()  # one band: (min, max)
        low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        if im.mode == "F":
            lo, hi = min(0.0, low), max(1.0, high)

            def scale(arr: np.ndarray) -> np.ndarray:
                return (arr - lo) / ((hi - lo) or 1.0) * 255.0

        else:
            top = 65535.0 if im.mode.startswith("I;16") or max(0, high) > 255 else 255.0

            def scale(arr: np.ndarray) -> np.ndarray:
                return arr / top * 255.0

        def wide(strip: Image.Image) -> np.ndarray:
            grey = np.clip(scale(np.asarray(strip, dtype=np.float32)) + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)

        return wide
    if im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info):

        def over_white(strip: Image.Image) -> np.ndarray:
            rgba = strip.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)

        return over_white
    return lambda strip: np.asarray(strip.convert("RGB"), dtype=np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB (:func:`to_rgb_array`, as an image)."""
    return im if im.mode == "RGB" else Image.fromarray(to_rgb_array(im), "RGB")


def decode_memory(header: Header, scale: int = 1) -> int:
    """Bytes decoding this image (at this JPEG draft scale) to an RGB array holds at its peak: the decoded pixels in
    Pillow's storage, the RGB array, one strip of the conversion, and (an EXIF-rotated image) the rotated copy. Checked
    against the measured peak of every colour mode in tests/test_images.py."""
    pixels = -(-header.width // scale) * -(-header.height // scale)
    per_pixel = decode_bytes_per_pixel(header.mode or "RGB", oriented=header.orientation in _TRANSPOSE)
    return pixels * per_pixel + min(pixels, STRIP_PIXELS) * STRIP_BYTES


class DecodeBudget:
    """Bytes of decoded pixels a worker process may hold at once, shared by its decode threads: a file waits until its
    estimate fits, and a file whose estimate alone exceeds the budget fails with that reason, so no file (and no set
    of files decoded together) can take more memory than ``IMSIM_DECODE_MEMORY_MB`` states."""

    _process: dict[int, DecodeBudget] = {}
    _process_lock = threading.Lock()

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.used = 0
        self._cond = threading.Condition()

    @classmethod
    def process(cls, limit_bytes: int) -> DecodeBudget:
        """The one budget of this process for this limit: every embedding step (the API holds one per set of models)
        and the thumbnails share it, so two large images admitted by two of them cannot together exceed it."""
        with cls._process_lock:
            if limit_bytes not in cls._process:
                cls._process[limit_bytes] = cls(limit_bytes)
            return cls._process[limit_bytes]

    def reserve(self, path: str, need: int) -> None:
        if need > self.limit:
            raise ImageTooLarge(
                path,
                f"decoding it needs ~{need / 2**20:,.0f} MB (pixels x bytes per pixel of its mode), over "
                f"IMSIM_DECODE_MEMORY_MB={self.limit // 2**20:,}",
            )
        with self._cond:
            while self.used + need > self.limit:
                self._cond.wait()
            self.used += need

    def release(self, need: int) -> None:
        with self._cond:
            self.used -= need
            self._cond.notify_all()


@dataclass(frozen=True)
class Header:
    """What the first bytes of an image say: format, size (as stored, before EXIF orientation), EXIF orientation."""

    format: str
    width: int
    height: int
    orientation: int = 1
    mode: str = ""  # Pillow's mode from the header: RGB, L, CMYK, P ...

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after the EXIF orientation."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a phone's multi-picture JPEG; its first picture decodes like a JPEG
DECODERS = ("pillow", "simplejpeg")
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def jpeg_draft_scale(header: Header, min_size: int) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's ``draft`` picks for a JPEG asked to keep both sides >= ``min_size``;
    1 for other formats. Two models whose scales are equal share one decode, bit for bit."""
    if header.format not in JPEG_FORMATS or min_size <= 0:
        return 1
    scale = min(header.width // min_size, header.height // min_size)
    return next(a for a in (8, 4, 2, 1) if scale >= a or a == 1)


def _exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG from its first APP1 Exif segment (1 when it has none), or None when the
    markers cannot be read (then Pillow reads the header)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no Exif before the pixels
            return 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[i + 10 : i + 2 + length])
        i += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    try:
        (offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
        for k in range(count):
            entry = tiff[offset + 2 + 12 * k : offset + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112:
                return int(struct.unpack(order + "H", entry[8:10])[0]) if kind == 3 else None
    except struct.error:
        return None
    return 1


_TURBO_MODES = {"Gray": "L", "YCbCr": "RGB", "RGB": "RGB", "CMYK": "CMYK", "YCCK": "CMYK"}


def _jpeg_header(data: bytes) -> Header | None:
    """A JPEG's header read by libjpeg-turbo (simplejpeg) and the orientation by :func:`_exif_orientation`: about a
    tenth of Pillow's cost per file; None (Pillow reads it) for anything unusual."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        import simplejpeg

        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ImportError, ValueError, RuntimeError):
        return None
    orientation = _exif_orientation(data)
    if orientation is None or colorspace not in _TURBO_MODES:
        return None
    return Header("JPEG", int(width), int(height), orientation if orientation in _TRANSPOSE else 1, _TURBO_MODES[colorspace])


def read_header(data: bytes, path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Format and size from the header only (no pixels decoded); the pixel limit is checked here."""
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    fast = _jpeg_header(data)
    if fast is not None:
        if fast.width * fast.height > max_pixels:
            raise ImageTooLarge(
                path,
                f"{fast.width}x{fast.height} = {fast.width * fast.height:,} pixels exceeds the limit of "
                f"{max_pixels:,} (IMSIM_MAX_IMAGE_PIXELS)",
            )
        return fast
    return _pillow_header(data, path, max_pixels)


def _pillow_header(data: bytes, path: str, max_pixels: int) -> Header:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height, fmt, mode = im.size[0], im.size[1], im.format or "", im.mode
                orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2 × its MAX_IMAGE_PIXELS) fired first
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise ImageTooLarge(
            path,
            f"{pixels} exceeds the limit of {min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)):,} "
            "(IMSIM_MAX_IMAGE_PIXELS; Pillow refuses more than twice its own MAX_IMAGE_PIXELS)",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageDecodeError(path, f"cannot decode image: {exc}") from exc
    if width * height > max_pixels:
        raise ImageTooLarge(
            path, f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} (IMSIM_MAX_IMAGE_PIXELS)"
        )
    if width < 1 or height < 1:
        raise ImageDecodeError(path, f"degenerate image size {width}x{height}")
    return Header(fmt, width, height, orientation if orientation in _TRANSPOSE else 1, mode)


def resolve_decoder(decoder: str) -> str:
    """``auto``: simplejpeg where it is installed (same pixels as Pillow, less CPU), else Pillow."""
    if decoder not in ("auto", *DECODERS):
        raise ValueError(f"unknown decoder {decoder!r}: use auto, {', '.join(DECODERS)}")
    if decoder != "auto":
        return decoder
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return "pillow"
    return "simplejpeg"


def _decode_simplejpeg(data: bytes, header: Header, min_size: int | None) -> np.ndarray | None:
    """libjpeg-turbo through simplejpeg at exactly Pillow's draft scale (the pixels are the same, tested), or None where
    simplejpeg is not installed or cannot take the file (CMYK, 12-bit ...), so Pillow decodes it."""
    try:
        import simplejpeg
    except ImportError:
        return None
    scale = jpeg_draft_scale(header, min_size) if min_size else 1
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=-(-header.width // scale), min_height=-(-header.height // scale)
        )
    except (ValueError, RuntimeError, OSError):
        return None
    return orient(np.asarray(pixels), header.orientation)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """An HWC array turned as its EXIF orientation says (what ``ImageOps.exif_transpose`` does, pixel for pixel, tested),
    made with numpy views and one contiguous copy: no Pillow image of it (4 bytes per pixel) is ever made."""
    if orientation not in _TRANSPOSE:
        return pixels
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: a.transpose(1, 0, 2)[::-1],
    }[orientation](pixels)
    return np.ascontiguousarray(turned)


def decode_array(
    data: bytes,
    path: str = "<bytes>",
    *,
    min_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decoder: str = "pillow",
    header: Header | None = None,
) -> tuple[np.ndarray, int, int]:
    """Decode image bytes to an RGB HWC uint8 array. Returns (pixels, full width, full height) after orientation.

    ``min_size``: JPEGs are decoded at the smallest DCT scale whose both sides stay >= it (``Image.draft``),
    2-4x faster for large photos; the scale depends on ``min_size`` alone, so pass one model's own size.
    ``decoder``: ``pillow``, or ``simplejpeg`` for JPEGs (the same pixels, less CPU; Pillow for everything else)."""
    header = header or read_header(data, path, max_pixels)
    width, height = header.display_size
    try:
        if decoder == "simplejpeg" and header.format in JPEG_FORMATS and header.mode in ("RGB", "L"):
            fast = _decode_simplejpeg(data, header, min_size)
            if fast is not None:
                return fast, width, height
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data))
            if min_size and im.format in JPEG_FORMATS:
                im.draft("RGB", (min_size, min_size))
            im.seek(0)  # first frame of animations
            im.load()
            # ImageOps.exif_transpose copied the whole image even when there was nothing to turn (+4 bytes a pixel: a
            # 13000x13000 RGBA PNG took 1.8 GB where 1.2 GB was budgeted); the RGB array is turned instead, Pillow's
            # image freed first
            pixels = to_rgb_array(im)
            del im
            return orient(pixels, header.orientation), width, height
    except MemoryError:
        raise ImageTooLarge(
            path, "out of memory while decoding (lower IMSIM_MAX_IMAGE_PIXELS or give the worker more memory)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageDecodeError(path, f"cannot decode image: {exc}") from exc


def decode_bytes(
    data: bytes,
    path: str = "<bytes>",
    *,
    min_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decoder: str = "pillow",
) -> tuple[Image.Image, int, int]:
    """:func:`decode_array` as a PIL image (for display, edits, thumbnails)."""
    pixels, width, height = decode_array(data, path, min_size=min_size, max_pixels=max_pixels, decoder=decoder)
    return Image.fromarray(pixels, "RGB"), width, height


def decode_file(file: FileBytes, *, min_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode bytes already read by :func:`read_file`."""
    image, width, height = decode_bytes(file.data, file.path, min_size=min_size, max_pixels=max_pixels)
    return DecodedImage(
        path=file.path, image=image, sha256=file.sha256, width=width, height=height, file_size=file.file_size, mtime=file.mtime
    )


def load_image(path: str | os.PathLike[str], *, min_size: int | None = None, limits: Limits = DEFAULT_LIMITS) -> DecodedImage:
    """Read and decode one image file. Raises an :class:`~imsim.errors.ImageError` naming the file."""
    return decode_file(read_file(path, limits), min_size=min_size, max_pixels=limits.max_pixels)


def open_image(source: object, *, min_size: int | None = None, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """An RGB image from a path, raw bytes or a PIL image, for display (thumbnails, galleries); the limits apply."""
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source) or source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(source), min_size=min_size, max_pixels=limits.max_pixels)[0]
    if isinstance(source, (str, os.PathLike)):
        return load_image(source, min_size=min_size, limits=limits).image
    raise TypeError(f"an image must be a path, bytes or PIL.Image, not {type(source).__name__}")
