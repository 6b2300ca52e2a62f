"""Stored images, by their row id only (never by a path from a request): the file, or a cached JPEG thumbnail made within
the decode limits."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from .deps import ERRORS, Guarded, Warm
from .forms import Thumbnail

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=Guarded, responses=ERRORS)
ROW_ID = re.compile(r"^[0-9a-f]{32}$")
IMAGE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/*": {}}, "description": "The image."}}


def row_id(value: str) -> str:
    if not ROW_ID.match(value):
        raise HTTPException(404, f"not an image id: {value[:40]!r} (images are served by stored id only)")
    return value


@router.get("/{image_id}", response_class=Response, responses=IMAGE)
async def image(service: Warm, image_id: str) -> Response:
    """The stored image's file."""
    data, media = await run_in_threadpool(service.image_bytes, row_id(image_id))
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{image_id}/thumbnail", response_class=Response, responses=IMAGE)
async def thumbnail(service: Warm, image_id: str, query: Annotated[Thumbnail, Query()]) -> Response:
    """A JPEG thumbnail of the stored image, made within the decode limits and cached."""
    wanted = row_id(image_id)
    jpeg = service.cached_thumbnail(wanted, query.size) or await run_in_threadpool(service.thumbnail, wanted, query.size)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
