"""What the store needs from the settings, and nothing else: where Milvus is, how to authenticate, the collection
prefix and the index parameters. :class:`~imsim.store.VectorStore` is made from one (or from the settings, through
:meth:`StoreConfig.from_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..settings import redact

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class StoreConfig:
    uri: str  # a Milvus Lite file, a Lite server or a server (may hold credentials: shown through ``where``)
    token: str = field(default="", repr=False)
    db: str = ""
    collection_prefix: str = "imsim"
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        return cls(
            uri=settings.resolved_milvus_uri,
            token=settings.milvus_token.get_secret_value(),
            db=settings.milvus_db,
            collection_prefix=settings.collection_prefix,
            index_type=settings.index_type,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construction=settings.hnsw_ef_construction,
            hnsw_ef_search=settings.hnsw_ef_search,
        )

    @property
    def is_lite_file(self) -> bool:
        """A Milvus Lite file (opened in this process), not a server."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:", "grpc://"))

    @property
    def where(self) -> str:
        """The URI with any password masked: what messages show."""
        return redact(self.uri)
