"""imsim: image-similarity search. Read → decode → embed → store; query → embed → search → fuse.

Modules: :mod:`settings` (configuration), :mod:`images` (files and decoding), :mod:`models`
(registry and model families), :mod:`store` (Milvus collections), :mod:`ingest` (the pipeline),
:mod:`jobs` and :mod:`queue` (Redis/Celery jobs), :mod:`expr` (safe filters), :mod:`fusion` and
:mod:`query` (search), :mod:`gallery` (result pages), :mod:`duplicates`, :mod:`eval` (benchmarks and
metrics), :mod:`cli`.
"""

from .expr import Where
from .query import Client, SearchHit
from .settings import Settings, get_settings

__version__ = "0.1.0"
__all__ = ["Client", "SearchHit", "Where", "Settings", "get_settings", "__version__"]
