"""The public HTTP client of a running `imsim serve`: the same calls as :class:`~imsim.client.Client` (search, compare,
duplicates, jobs), on the same vocabulary (:mod:`imsim.vocabulary`), answered by a process whose models are loaded
already (a local client loads them first: 8-60 s). Like clip-retrieval's ClipClient, or qdrant-client's remote
backend beside its local one: code written for one runs on the other.

>>> with RemoteClient("http://127.0.0.1:8080") as client:                    # doctest: +SKIP
...     hits = client.search("query.jpg", k=5, under="/photos")              # list[SearchHit], as Client.search
...     page = client.answer(text="a red car", options=SearchOptions(k=20))  # Hits: the page, the fusion, random weights

Errors are the service's one-line messages, raised as the :mod:`imsim.errors` type its kind names (``invalid`` →
:class:`~imsim.errors.InvalidInput`, ``not_found`` → :class:`~imsim.errors.NotFound` ...).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from ..errors import ImageTooLarge, ImsimError, InvalidInput, JobRunning, NotFound, QueueError, StoreUnavailable
from ..fusion import SearchHit
from ..settings import Settings, redact
from ..vocabulary import (
    Compared,
    DuplicatesOptions,
    Groups,
    Hits,
    IngestRequest,
    JobStatus,
    Queued,
    Readiness,
    Retried,
    SearchOptions,
    check,
)

KIND_ERRORS: dict[str, type[ImsimError]] = {
    "invalid": InvalidInput,
    "not_found": NotFound,
    "job_running": JobRunning,
    "store_unavailable": StoreUnavailable,
    "queue_unavailable": QueueError,
}


class RemoteClient:
    """A running `imsim serve` at ``url`` (``IMSIM_API_URL``), with its token (``IMSIM_API_TOKEN``)."""

    def __init__(self, url: str, token: str = "", timeout: float = 65.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteClient:
        """The serve ``settings`` name (:attr:`~imsim.settings.Settings.resolved_api_url`), with their token."""
        url = settings.resolved_api_url
        if not url:
            raise ImsimError("no imsim serve to ask: set IMSIM_API_URL, or start `imsim serve` on this data dir")
        return cls(url, settings.api_token.get_secret_value(), settings.api_timeout + 5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the wire -------------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ImsimError(
                f"cannot reach imsim serve at {redact(self.url)} ({type(exc).__name__}); check IMSIM_API_URL"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message, kind = str(body.get("error", response.reason_phrase)), str(body.get("kind", ""))
            except ValueError:
                message, kind = response.reason_phrase, ""
            if kind == "too_large":
                raise ImageTooLarge("the upload", message)
            raise KIND_ERRORS.get(kind, ImsimError)(f"{message} (imsim serve at {redact(self.url)}, HTTP {response.status_code})")
        return response.json()

    @staticmethod
    def _options(options: SearchOptions | None, fields: dict[str, Any]) -> SearchOptions:
        if options is not None and fields:
            raise InvalidInput("give options= or search fields as keywords, not both")
        return options if options is not None else check(SearchOptions, fields)

    @staticmethod
    def _params(options: SearchOptions) -> list[tuple[str, str]]:
        """The options as query or form fields (lists repeated; defaults left out)."""
        out: list[tuple[str, str]] = []
        for name, value in options.model_dump(exclude_defaults=True).items():
            for item in value if isinstance(value, list) else [value]:
                out.append((name, str(item)))
        return out

    @classmethod
    def _form(cls, options: SearchOptions) -> dict[str, list[str]]:
        """The options as multipart form fields (a list repeats its field)."""
        form: dict[str, list[str]] = {}
        for name, value in cls._params(options):
            form.setdefault(name, []).append(value)
        return form

    # --- search ---------------------------------------------------------------------------------------------------
    def answer(
        self,
        image: str | os.PathLike[str] | bytes | None = None,
        *,
        text: str | None = None,
        like: str | None = None,
        options: SearchOptions | None = None,
        **fields: Any,
    ) -> Hits:
        """One page of results (:class:`~imsim.vocabulary.Hits`) for an image (a path or bytes), a text or a stored id."""
        chosen = self._options(options, fields)
        if sum(x is not None for x in (image, text, like)) != 1:
            raise InvalidInput("give exactly one of an image, text, or like= (a stored id or path) to search by")
        if image is not None:
            name, data = ("upload", image) if isinstance(image, bytes) else (Path(image).name, Path(image).read_bytes())
            return Hits.model_validate(
                self._call("POST", "/v1/search/image", data=self._form(chosen), files={"image": (name, data)})
            )
        if text is not None:
            return Hits.model_validate(self._call("GET", "/v1/search/text", params=[("text", text), *self._params(chosen)]))
        return Hits.model_validate(self._call("GET", "/v1/search/like", params=[("like", str(like)), *self._params(chosen)]))

    def search(
        self,
        image: str | os.PathLike[str] | bytes | None = None,
        *,
        text: str | None = None,
        like: str | None = None,
        options: SearchOptions | None = None,
        **fields: Any,
    ) -> list[SearchHit]:
        """As :meth:`imsim.client.Client.search`: the hits of one page, each with every model's score and rank."""
        page = self.answer(image, text=text, like=like, options=options, **fields)
        return [SearchHit(h.id, h.path, h.score, dict(h.scores), dict(h.ranks)) for h in page.hits]

    def compare(self, a: str | os.PathLike[str], b: str | os.PathLike[str], models: str | None = None) -> dict[str, float]:
        return self.compared(a, b, models).scores

    def compared(self, a: str | os.PathLike[str], b: str | os.PathLike[str], models: str | None = None) -> Compared:
        files = {"a": (Path(a).name, Path(a).read_bytes()), "b": (Path(b).name, Path(b).read_bytes())}
        return Compared.model_validate(self._call("POST", "/v1/compare", data={"models": models or ""}, files=files))

    # --- duplicates -----------------------------------------------------------------------------------------------
    def duplicates(self, options: DuplicatesOptions | None = None, **fields: Any) -> Groups:
        """Every near-duplicate group (pages of ``limit`` fetched until ``total``)."""
        chosen = options if options is not None else check(DuplicatesOptions, fields)
        query = chosen.model_dump(exclude_defaults=True, exclude={"offset"})
        first = Groups.model_validate(self._call("GET", "/v1/duplicates", params={**query, "offset": chosen.offset}))
        groups = list(first.groups)
        while len(groups) < first.total - chosen.offset:
            page = Groups.model_validate(
                self._call("GET", "/v1/duplicates", params={**query, "offset": chosen.offset + len(groups)})
            )
            if not page.groups:
                break
            groups += page.groups
        return first.model_copy(update={"groups": groups})

    # --- jobs -----------------------------------------------------------------------------------------------------
    def ingest(self, paths: list[str], **options: Any) -> str:
        """Queue server-side paths (under the server's IMSIM_ALLOWED_ROOTS); returns the job id."""
        request = check(IngestRequest, {"paths": list(paths), **options})
        return Queued.model_validate(self._call("POST", "/v1/jobs", json=request.model_dump())).job

    def job(self, job_id: str, offset: int = 0, limit: int = 20) -> JobStatus:
        return JobStatus.model_validate(self._call("GET", f"/v1/jobs/{job_id}", params={"offset": offset, "limit": limit}))

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id, limit=100)
            if status.finished_at:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise QueueError(f"job {job_id} still {status.state} after {timeout:g}s")
            time.sleep(poll)

    def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def retry(self, job_id: str) -> str | None:
        return Retried.model_validate(self._call("POST", f"/v1/jobs/{job_id}/retry")).job

    # --- the service ----------------------------------------------------------------------------------------------
    def ready(self) -> Readiness:
        try:
            response = self._http.get("/readyz")
        except httpx.HTTPError as exc:
            raise ImsimError(f"cannot reach imsim serve at {redact(self.url)} ({type(exc).__name__})") from None
        return Readiness.model_validate(response.json())

    def collections(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/collections")
        return found
