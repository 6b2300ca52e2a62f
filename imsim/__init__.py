"""imsim: image-similarity search. Read → decode → embed → store; query → embed → search → fuse.

Modules: :mod:`settings` (configuration), :mod:`images` (files and decoding), :mod:`models`
(registry and model families), :mod:`embedding` (the one embedding step), :mod:`store` (Milvus
collections), :mod:`ingest` (the pipeline), :mod:`jobs` and :mod:`queue` (Redis/Celery jobs),
:mod:`expr` (safe filters), :mod:`fusion` and :mod:`query` (search), :mod:`gallery` (result pages),
:mod:`duplicates`, :mod:`eval` (benchmarks and metrics), :mod:`cli`.

``imsim.Client``, ``imsim.Where`` and ``imsim.Settings`` import lazily, so ``import imsim.settings``
(as a Celery parent does) never loads pymilvus or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Client",
    "RemoteClient",
    "ImsimError",
    "ModelError",
    "SearchHit",
    "SearchOptions",
    "Where",
    "Settings",
    "get_settings",
    "__version__",
]

if TYPE_CHECKING:
    from .client.local import Client
    from .client.remote import RemoteClient
    from .errors import ImsimError, ModelError
    from .expr import Where
    from .fusion import SearchHit
    from .settings import Settings, get_settings
    from .vocabulary import SearchOptions


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client.local import Client

        return Client
    if name == "RemoteClient":
        from .client.remote import RemoteClient

        return RemoteClient
    if name == "SearchOptions":
        from .vocabulary import SearchOptions

        return SearchOptions
    if name in ("ImsimError", "ModelError"):
        from . import errors

        return getattr(errors, name)
    if name == "SearchHit":
        from .fusion import SearchHit

        return SearchHit
    if name == "Where":
        from .expr import Where

        return Where
    if name in ("Settings", "get_settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'imsim' has no attribute {name!r}")
