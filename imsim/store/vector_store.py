"""The connection to Milvus and the operations imsim needs, the same on a Milvus Lite file, a Milvus Lite server
and a real Milvus server: one façade over four parts, each a module of its own.

- :mod:`~imsim.store.connection`: opening it, errors made typed, what the backend is;
- :mod:`~imsim.store.versions`: a collection per model version, the alias that names the active one, descriptions;
- :mod:`~imsim.store.rows`: upserts, counts, deletes, reads by id, every row streamed;
- :mod:`~imsim.store.searching`: checked filters, top-k, exact paging past the cap, exact search.

The schema is :mod:`imsim.store.schema`; what the store reads from the settings is :class:`~imsim.store.config.StoreConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ImsimError, StoreError
from ..settings import redact
from .failures import message
from .searching import Searching

if TYPE_CHECKING:
    from ..settings import Settings
    from ..whitening import Whitening


class VectorStore(Searching):
    """A connection to Milvus plus imsim's conventions for its collections. Use it as a context manager."""

    def drop(self, name: str) -> None:
        """Drop one of imsim's collections, and the artifact that explains it (a derived version's transform)."""
        from .artifacts import Artifacts

        super().drop(name)
        Artifacts(self).delete(name)

    def followers(self, base: str) -> dict[str, Whitening]:
        """The derived versions written from ``base`` (collection → whitening): ingest writes each new row to them too."""
        from .derived import followers

        return followers(self, base)


def open_store(settings: Settings) -> VectorStore:
    """A :class:`VectorStore`, or the reason it cannot be opened as an :class:`~imsim.errors.ImsimError`."""
    try:
        return VectorStore(settings)
    except ImsimError:
        raise
    except Exception as exc:  # a malformed URI and the like, from pymilvus's own checks
        raise StoreError(f"cannot open Milvus at {redact(settings.resolved_milvus_uri)}: {message(exc)}") from None
