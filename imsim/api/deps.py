"""What every route of the API depends on: the warm :class:`~imsim.api.service.Service`, and the token (one dependency,
on every router that serves data; the probes, the pages and the schema are open: they hold no data)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..vocabulary import ErrorBody
from .service import Service

bearer = HTTPBearer(auto_error=False, description="IMSIM_API_TOKEN, when it is set")


def service(request: Request) -> Service:
    """The service the app was made over (``app.state.service``)."""
    found: Service = request.app.state.service
    return found


def authorized(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> None:
    """A request carries ``Authorization: Bearer IMSIM_API_TOKEN`` when a token is set (compared in constant time)."""
    token = service(request).settings.api_token.get_secret_value()
    if not token:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong token: send Authorization: Bearer TOKEN")


Warm = Annotated[Service, Depends(service)]
Guarded = [Depends(authorized)]
# what a guarded route may answer besides its own result, each an ErrorBody (one line and its kind)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why}
    for status, why in [
        (401, "No token, or a wrong one (IMSIM_API_TOKEN)."),
        (403, "Refused: outside IMSIM_ALLOWED_ROOTS, or raw filters off."),
        (404, "No such stored image or job."),
        (409, "Well formed, but the store cannot answer it (no collection for a model, a job still running)."),
        (413, "Over a limit: the body, the image's pixels."),
        (422, "A value the request cannot have: the field named in the error."),
        (503, "The store or Redis is unreachable."),
        (504, "Past IMSIM_API_TIMEOUT."),
    ]
}
