"""imsim: image-similarity search. Read → decode → embed → store; query → embed → search → fuse.

Modules: :mod:`settings` (configuration), :mod:`images` (files and decoding), :mod:`models`
(registry and model families), :mod:`store` (Milvus collections), :mod:`ingest` (the pipeline),
:mod:`jobs` and :mod:`queue` (Redis/Celery jobs), :mod:`fusion` and :mod:`query` (search), :mod:`cli`.
"""

from .query import Client, SearchHit
from .settings import Settings, get_settings

__version__ = "0.1.0"
__all__ = ["Client", "SearchHit", "Settings", "get_settings", "__version__"]
