"""What the routes translate: an upload into checked bytes (refused before decoding when empty, not an image, over the
pixel limit, or too large to decode for a query), and the client's hits into the vocabulary's :class:`~imsim.vocabulary.Hit`
with what the store says of each image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import UploadFile

from ..errors import ImageError, ImageTooLarge
from ..fusion import SearchHit
from ..images import JPEG_FORMATS, read_header
from ..settings import Settings
from ..vocabulary import Hit

JPEG_DRAFT = 64  # a JPEG decodes at 1/8 scale per side at most: 1/64 of its pixels


def upload_name(file: UploadFile) -> str:
    """How errors name an upload: its file name, printable and short (it is the client's to choose)."""
    from ..sources.names import printable

    name = printable(file.filename or "")[:200]
    return f"upload {name!r}" if name else "the upload"


async def upload(file: UploadFile, settings: Settings) -> bytes:
    """The upload's bytes, refused before any decoding when over the byte cap, empty, not an image, over the pixel limit
    by its header (a decompression bomb costs its header's bytes, never its pixels), or over the megapixels a query
    decode may cost (``IMSIM_API_MAX_QUERY_MEGAPIXELS``; a JPEG counts at its smallest draft scale)."""
    name = upload_name(file)
    limit = settings.api_max_upload_mb * 2**20
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(name, f"over {settings.api_max_upload_mb} MB (IMSIM_API_MAX_UPLOAD_MB)")
    if not data:
        raise ImageError(name, "empty upload (0 bytes)")
    header = read_header(data, name, settings.max_image_pixels)
    pixels = header.width * header.height / (JPEG_DRAFT if header.format in JPEG_FORMATS else 1)
    if pixels > settings.api_max_query_megapixels * 1e6:
        raise ImageTooLarge(
            name,
            f"{header.width}x{header.height} is more than a query may decode ({settings.api_max_query_megapixels} "
            "megapixels, IMSIM_API_MAX_QUERY_MEGAPIXELS): send a smaller copy (a query is resized to the model's input)",
        )
    return data


def hits_of(hits: Sequence[SearchHit], facts: Mapping[str, Mapping[str, Any]]) -> list[Hit]:
    """The client's hits as the vocabulary's, each with the stored facts of its image (size, file size, mtime, tags)."""
    out = []
    for h in hits:
        row = facts.get(h.id, {})
        out.append(
            Hit(
                id=h.id,
                path=h.path,
                score=h.score,
                scores=dict(h.scores),
                ranks=dict(h.ranks),
                width=row.get("width"),
                height=row.get("height"),
                file_size=row.get("file_size"),
                mtime=row.get("mtime"),
                tags=dict(row.get("tags") or {}),
            )
        )
    return out
