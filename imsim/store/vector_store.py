"""The vector store imsim works with, the same on a Milvus Lite file, a Milvus Lite server and a real Milvus server:
parts over one connection, each a module of its own, composed here.

- ``store.connection`` (:mod:`~imsim.store.connection`): opening it, errors made typed, what the backend is;
- ``store.versions`` (:mod:`~imsim.store.versions`): a collection per model version, the alias that names the active
  one, descriptions and properties;
- ``store.rows`` (:mod:`~imsim.store.rows`): upserts, counts, deletes, reads by id, every row streamed;
- ``store.searching`` (:mod:`~imsim.store.searching`): checked filters, top-k, exact paging past the cap, exact search.

What the store owns beside the versions (marks, artifacts, derived versions) works on the store as a whole. The schema
is :mod:`imsim.store.schema`; what the store reads from the settings is their store section
(:class:`~imsim.settings.sections.StoreSection`: one declaration of each field, with its default and validation).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

from ..errors import ImsimError, StoreError
from ..settings import redact
from .connection import Connection
from .failures import message
from .rows import Rows
from .searching import Searching
from .versions import Versions

if TYPE_CHECKING:
    from ..settings import Settings
    from ..settings.sections import StoreSection
    from ..whitening import Whitening


class VectorStore:
    """A connection to Milvus and imsim's conventions for its collections, as parts. Use it as a context manager."""

    def __init__(self, config: StoreSection):
        """Open the store ``config`` (the settings' store section: :class:`~imsim.settings.Settings` is one) names."""
        self.connection = Connection(config)
        self.versions = Versions(self.connection)
        self.rows = Rows(self.connection, self.versions)
        self.searching = Searching(self.connection, self.versions, self.rows)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def config(self) -> StoreSection:
        return self.connection.config

    @property
    def uri(self) -> str:
        """The URI as configured (may hold credentials: messages use :attr:`where`)."""
        return self.connection.uri

    @property
    def where(self) -> str:
        return self.connection.where

    @property
    def lite_backend(self) -> bool:
        return self.connection.lite_backend

    def drop(self, name: str) -> None:
        """Drop one of imsim's collections, and the artifact that explains it (a derived version's transform)."""
        from .artifacts import Artifacts

        self.versions.drop(name)
        Artifacts(self).delete(name)

    def followers(self, base: str) -> dict[str, Whitening]:
        """The derived versions written from ``base`` (collection → whitening): ingest writes each new row to them too."""
        from .derived import followers

        return followers(self, base)

    def close(self) -> None:
        self.connection.close()


def open_store(settings: Settings) -> VectorStore:
    """A :class:`VectorStore`, or the reason it cannot be opened as an :class:`~imsim.errors.ImsimError`."""
    try:
        return VectorStore(settings)
    except ImsimError:
        raise
    except Exception as exc:  # a malformed URI and the like, from pymilvus's own checks
        raise StoreError(f"cannot open Milvus at {redact(settings.resolved_milvus_uri)}: {message(exc)}") from None
