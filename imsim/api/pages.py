"""The web pages (no build step, no network): search (``/``), the duplicate review (``/duplicates``), the topics
(``/topics``), the API's own documentation (``/docs``: Swagger UI 5 served from the installed ``fastapi-offline``
package's files, never a CDN, sending the token the pages hold) and a favicon. Open: they hold no data; what they show
comes from the guarded API."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

router = APIRouter(include_in_schema=False)
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js"}  # Swagger UI 5 (OpenAPI 3.1), as PyPI fastapi-offline ships it
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#234"/>'
    '<rect x="5" y="7" width="10" height="10" fill="#6cf"/><rect x="17" y="15" width="10" height="10" fill="#fc6"/></svg>'
)
DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>imsim API</title>
<link rel="icon" href="/favicon.ico"><link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true,
  requestInterceptor: (request) => {  // the token the search page holds (IMSIM_API_TOKEN), if any
    const token = sessionStorage.getItem('imsim-token');
    if (token && !request.headers.Authorization) request.headers.Authorization = `Bearer ${token}`;
    return request;
  },
});
</script></body></html>
"""


def page(name: str) -> HTMLResponse:
    return HTMLResponse(resources.files("imsim.api").joinpath("static", name).read_text(encoding="utf-8"))


@router.get("/")
async def search_page() -> HTMLResponse:
    return page("search.html")


@router.get("/duplicates")
async def duplicates_page() -> HTMLResponse:
    return page("duplicates.html")


@router.get("/topics")
async def topics_page() -> HTMLResponse:
    return page("topics.html")


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(DOCS)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    if name not in SWAGGER_FILES:
        raise HTTPException(404, f"no asset {name[:40]!r}")
    folder = resources.files("fastapi_offline").joinpath("static")
    return FileResponse(Path(str(folder)) / name, headers={"Cache-Control": "public, max-age=86400"})
