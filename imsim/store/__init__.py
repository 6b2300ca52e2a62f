"""The vector store: one Milvus collection per model version, self-describing, keyed by image identity.

:mod:`~imsim.store.vector_store` is the connection and every operation (a façade over ``connection``,
``versions``, ``rows`` and ``searching``; its settings are the settings' ``StoreSection``), :mod:`~imsim.store.schema` the
schema and rows, :mod:`~imsim.store.failures` how errors are classified. Nothing outside this package
touches pymilvus.
"""

from . import derived
from .connection import SEARCH_CAP, has_iterator_v2
from .failures import is_transient
from .schema import FIELD_NAMES, FIELDS, METADATA_FIELDS, PK, TAGS, VECTOR, make_row
from .searching import StoredHit, cosine
from .vector_store import VectorStore, open_store
from .versions import CollectionSummary

__all__ = [
    "FIELDS",
    "FIELD_NAMES",
    "METADATA_FIELDS",
    "PK",
    "SEARCH_CAP",
    "TAGS",
    "VECTOR",
    "CollectionSummary",
    "StoredHit",
    "VectorStore",
    "cosine",
    "derived",
    "has_iterator_v2",
    "is_transient",
    "make_row",
    "open_store",
]
