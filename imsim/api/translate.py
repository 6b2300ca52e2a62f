"""What the routes translate, in both directions: an error to its HTTP status and one-line JSON, an upload to a
safe name, a hit to JSON, query parameters to a checked :class:`~imsim.expr.Where`."""

from __future__ import annotations

from typing import Any

from fastapi import UploadFile

from ..errors import (
    ConfigError,
    FilterError,
    ImageError,
    ImageTooLarge,
    ImsimError,
    InvalidInput,
    JobRunning,
    ModelError,
    NotFound,
    QueueError,
    StoreError,
    StoreUnavailable,
)
from ..expr import Where, parse_tags
from ..fusion import SearchHit


def error_status(error: BaseException) -> tuple[int, str]:
    if isinstance(error, InvalidInput):
        return 422, "invalid"
    if isinstance(error, NotFound):
        return 404, "not_found"
    if isinstance(error, ImageTooLarge):
        return 413, "too_large"
    if isinstance(error, ImageError):
        return 422, "bad_image"
    if isinstance(error, FilterError):
        return 400, "bad_filter"
    if isinstance(error, StoreUnavailable):
        return 503, "store_unavailable"
    if isinstance(error, JobRunning):
        return 409, "job_running"
    if isinstance(error, QueueError):
        return 503, "queue_unavailable"
    if isinstance(error, StoreError | ModelError | ConfigError):
        return 400, "bad_request"
    if isinstance(error, LookupError):
        return 404, "not_found"
    if isinstance(error, PermissionError):
        return 403, "forbidden"
    if isinstance(error, ImsimError | ValueError):
        return 400, "bad_request"
    return 500, "internal"


def upload_name(file: UploadFile) -> str:
    """How errors name an upload: its file name, printable and short (it is the client's to choose)."""
    from ..sources.names import printable

    name = printable(file.filename or "")[:200]
    return f"upload {name!r}" if name else "the upload"


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "id": hit.id,
        "path": hit.path,
        "score": hit.score,
        "scores": hit.scores,
        "ranks": hit.ranks,
        "image": f"/v1/images/{hit.id}",
        "thumbnail": f"/v1/images/{hit.id}/thumbnail",
    }


def where_of(
    under: str,
    glob: str,
    job: str,
    tag: list[str] | None,
    min_width: int | None,
    min_height: int | None,
    after: float | None,
    before: float | None,
) -> Where | None:
    where = Where(
        path_prefix=under,
        path_glob=glob,
        job=job,
        tags=parse_tags(tag) if tag else {},
        min_width=min_width,
        min_height=min_height,
        ingested_after=after,
        ingested_before=before,
    )
    return None if where == Where() else where
