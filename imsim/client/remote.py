"""The CLI's way to a running `imsim serve` (``IMSIM_API_URL``): the same searches, comparisons and duplicate groups,
answered by a process whose models are loaded already (a CLI query otherwise loads them first: 8-60 s).

Standard library only (``urllib``): the CLI gains no dependency for it. Errors are the service's one-line JSON,
raised as :class:`~imsim.errors.ImsimError` with the service's words.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from ..errors import ImsimError
from ..fusion import SearchHit
from ..settings import Settings, redact


class Remote:
    def __init__(self, settings: Settings, timeout: float | None = None):
        self.base = settings.api_url.rstrip("/")
        self.token = settings.api_token.get_secret_value()
        self.timeout = timeout or settings.api_timeout + 5

    def _request(self, path: str, data: bytes | None = None, content_type: str = "") -> Any:
        request = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (a URL the user set)
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ImsimError(f"{message} (imsim serve at {redact(self.base)}, HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ImsimError(f"cannot reach imsim serve at {redact(self.base)} ({reason}); check IMSIM_API_URL") from None

    @staticmethod
    def _multipart(files: dict[str, tuple[str, bytes]], fields: dict[str, Any]) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for name, value in fields.items():
            for item in value if isinstance(value, list) else [value]:
                if item is None or item == "":
                    continue
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{item}\r\n'.encode())
        for name, (filename, data) in files.items():
            safe = urllib.parse.quote(filename)
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
            parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return b"".join(parts), f"multipart/form-data; boundary={boundary}"

    @staticmethod
    def _hits(answer: dict[str, Any]) -> list[SearchHit]:
        return [SearchHit(h["id"], h["path"], h["score"], h["scores"], h["ranks"]) for h in answer["hits"]]

    def search(
        self,
        *,
        image: str | None = None,
        text: str | None = None,
        like: str | None = None,
        k: int = 10,
        models: str | None = None,
        fusion: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[SearchHit]:
        fields = {"k": k, "models": models or "", "fusion": fusion or "", **(filters or {})}
        if image is not None:
            with open(image, "rb") as fh:
                body, kind = self._multipart({"image": (os.path.basename(image), fh.read())}, fields)
            return self._hits(self._request("/v1/search/image", body, kind))
        query = [(k, str(v)) for k, v in fields.items() if v not in (None, "") and not isinstance(v, list)]
        query += [(k, str(item)) for k, v in fields.items() if isinstance(v, list) for item in v]
        if text is not None:
            return self._hits(self._request("/v1/search/text?" + urllib.parse.urlencode([("q", text), *query])))
        return self._hits(self._request("/v1/search/like?" + urllib.parse.urlencode([("id", like or ""), *query])))

    def compare(self, a: str, b: str, models: str | None = None) -> dict[str, float]:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            files = {"a": (os.path.basename(a), fa.read()), "b": (os.path.basename(b), fb.read())}
        body, kind = self._multipart(files, {"models": models or ""})
        return dict(self._request("/v1/compare", body, kind))

    def duplicates(self, *, model: str | None, threshold: float | None, precision: float, under: str) -> dict[str, Any]:
        query = {"model": model or "", "precision": precision, "under": under, "limit": 500}
        if threshold is not None:
            query["threshold"] = threshold
        first = self._request("/v1/duplicates?" + urllib.parse.urlencode(query))
        groups = list(first["groups"])
        while len(groups) < first["total"]:
            page = self._request("/v1/duplicates?" + urllib.parse.urlencode({**query, "offset": len(groups)}))
            if not page["groups"]:
                break
            groups += page["groups"]
        return {**first, "groups": groups}
