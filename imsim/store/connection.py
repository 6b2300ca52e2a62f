"""The connection to Milvus: opening it (Lite file, Lite server or server; token auth), one place where every
pymilvus and gRPC error becomes a typed one (:mod:`imsim.store.failures`), loading collections, and what the
backend is (Lite or a server, its version, its filter dialect, its top-k cap)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .. import expr
from ..errors import StoreError, StoreUnavailable
from ..settings import redact
from .failures import is_released, is_transient, message, quiet_clients

if TYPE_CHECKING:
    from ..settings.sections import StoreSection

# gRPC's C core prints keepalive notices ("GOAWAY ... too_many_pings") from Milvus Lite's server to stderr;
# failed calls still raise, so they are silenced unless the user asks for gRPC logs.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

log = logging.getLogger(__name__)
SEARCH_CAP = 16_384  # Milvus's top-k limit per search; deeper result lists page with a search iterator
ITERATOR_BATCH = 4_000  # hits per iterator page (larger pages were slower on Milvus Lite)
ITERATOR_V2 = (2, 5, 2)  # first Milvus with the server-side search iterator; v1 (client-side range searches)
# stopped early on HNSW: 2,718 of 17,000 hits on Milvus 2.3.5, measured


class Connection:
    """A connection to Milvus (see the module doc). Use the store as a context manager."""

    def __init__(self, config: StoreSection):
        """Open the store the store section of the settings names (:class:`~imsim.settings.Settings` is one)."""
        from pymilvus import MilvusClient

        quiet_clients()
        self.config = config
        self.uri = config.resolved_milvus_uri  # resolved once (a served store is looked up); may hold credentials
        self.where = redact(self.uri)  # what messages show
        self.is_lite = not self.uri.startswith(("http://", "https://", "tcp://", "unix:", "grpc://"))
        kwargs: dict[str, Any] = {}
        if config.milvus_token.get_secret_value():
            kwargs["token"] = config.milvus_token.get_secret_value()
        if config.milvus_db:
            kwargs["db_name"] = config.milvus_db
        if self.is_lite:
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A server's channel can be refused for a moment (restart, gRPC GOAWAY): three short retries, then give up.
        for delay in (0.5, 1.0, 2.0, None):
            try:
                self.client = MilvusClient(self.uri, **kwargs)
                break
            except Exception as exc:  # pymilvus raises several unrelated types here
                if self.is_lite:
                    raise StoreError(
                        f"cannot open the Milvus Lite store {self.where}: {message(exc)}. A Milvus Lite store "
                        "can be open in one process only: is another imsim (a worker, `imsim store serve`) using "
                        "it? Then point IMSIM_MILVUS_URI at that server."
                    ) from None
                if delay is None or not is_transient(exc):
                    kind = StoreUnavailable if is_transient(exc) else StoreError
                    raise kind(f"cannot open Milvus at {self.where}: {message(exc)}") from None
                time.sleep(delay)
        self.loaded: set[str] = set()
        self._fields: dict[str, frozenset[str]] = {}
        self._version: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def call(self, operation: str, *args: Any, _reload: bool = True, **kwargs: Any) -> Any:
        """Run one MilvusClient call; its errors become :class:`StoreError` (or :class:`StoreUnavailable`)."""
        try:
            return getattr(self.client, operation)(*args, **kwargs)
        except Exception as exc:  # pymilvus and grpc errors; everything else is a bug and is re-raised below
            import grpc
            from pymilvus.exceptions import MilvusException

            if not isinstance(exc, (MilvusException, grpc.RpcError)):
                raise
            if _reload and is_released(exc) and args and operation != "load_collection":
                # A restarted Milvus (Lite especially) comes back with collections released: load, try once more.
                self.loaded.discard(args[0])
                self.load(args[0])
                return self.call(operation, *args, _reload=False, **kwargs)
            if is_transient(exc):
                raise StoreUnavailable(
                    f"Milvus at {self.where} is unreachable or restarting during {operation}: {message(exc)}"
                ) from None
            raise StoreError(f"Milvus refused {operation}: {message(exc)}") from None

    def load(self, name: str) -> None:
        if name not in self.loaded:
            self.call("load_collection", name)  # a reopened Lite file starts unloaded
            self.loaded.add(name)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection is not an error worth raising
            log.debug("closing the Milvus client failed", exc_info=True)

    @property
    def lite_backend(self) -> bool:
        """Whether the other end is Milvus Lite (a file or its server): no top-k cap there, but its search
        iterator (v1) stops early on HNSW, so imsim pages with plain searches on Lite. Milvus Lite 3 reports
        ``milvus_lite-3.x``; the PyPI ``milvus`` package's embedded standalone server reports ``v2.3.5-lite``
        but is a real Milvus server in every way that matters here (top-k cap, time ticks, duplicating insert)."""
        return self.server_version.lower().startswith("milvus_lite")

    @property
    def server_version(self) -> str:
        """What the other end reports: ``milvus_lite-3.2.2``, ``v2.5.4``, ``v2.3.5-lite`` (PyPI ``milvus``) ..."""
        if self._version is None:
            self._version = str(self.call("get_server_version"))
        return self._version

    @property
    def like_dialect(self) -> expr.LikeDialect:
        """How this backend reads LIKE: Milvus Lite and Milvus >= 2.4 take ``%``/``_`` wildcards with ``\\`` escapes;
        Milvus 2.3 only a trailing ``%`` (prefix match), ``_`` literal, no escapes."""
        if self.lite_backend:
            return "escape"
        found = re.match(r"v?(\d+)\.(\d+)", self.server_version)
        return "prefix" if found and (int(found.group(1)), int(found.group(2))) < (2, 4) else "escape"

    @property
    def search_cap(self) -> int | None:
        """The largest k one search may ask for (None: no cap, Milvus Lite)."""
        return None if self.lite_backend else SEARCH_CAP

    @property
    def has_search_iterator(self) -> bool:
        """Whether the server pages past the top-k cap with a server-side search iterator (Milvus >= 2.5.2)."""
        return not self.lite_backend and has_iterator_v2(self.server_version)


def has_iterator_v2(version: str) -> bool:
    """Whether a Milvus server reporting ``version`` has the server-side search iterator (>= 2.5.2); a version
    that does not parse (a managed service's own string) is taken to be current."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    return found is None or tuple(int(g) for g in found.groups()) >= ITERATOR_V2


def pages_of(iterator: Any, what: str) -> Iterator[list[Any]]:
    """The pages of a pymilvus search or query iterator until it runs dry; its errors become StoreError; always closed."""
    from pymilvus.exceptions import MilvusException

    try:
        while True:
            try:
                page = iterator.next()
            except MilvusException as exc:
                kind = StoreUnavailable if is_transient(exc) else StoreError
                raise kind(f"{what} failed: {exc.message}") from None
            if not page:
                return
            yield page
    finally:
        iterator.close()
