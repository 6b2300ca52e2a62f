"""Typed errors. Each names the input it is about, so a user can act on the message alone."""

from __future__ import annotations


class ImsimError(Exception):
    """Base class of every error imsim raises on purpose (the CLI prints its message, exit code 2)."""


class InvalidInput(ImsimError, ValueError):
    """A value given to imsim (an option, a request field, a tag) that it cannot take; the message names it. The same
    rule answers every door: the CLI (exit 2), the Client (this error) and the API (422, kind ``invalid``)."""


class ConfigError(ImsimError):
    """A setting is unknown or has a value it cannot take; the message names the ``IMSIM_*`` variable."""


class ImageError(ImsimError):
    """An image could not be read or decoded. ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageNotFound(ImageError):
    pass


class ImageUnreadable(ImageError):
    pass


class ImageDecodeError(ImageError):
    pass


class ImageTooLarge(ImageError):
    pass


class BadPath(ImageError):
    """The path itself cannot be stored (not UTF-8, a NUL byte, too long); the file is refused before it is read."""


class PathNotAllowed(ImageError):
    """The file lies outside ``IMSIM_ALLOWED_ROOTS``; the worker refuses to read it."""


class NotFound(ImsimError, LookupError):
    """A stored image, a job or another thing named by id that does not exist (the API answers 404)."""


class SourceUnavailable(ImsimError):
    """The place images are read from (an S3 endpoint) cannot be reached or keeps failing. Transient: a worker retries
    the chunk with backoff instead of failing its files."""


class ModelError(ImsimError):
    """A model name, source or configuration is wrong."""


class StoreError(ImsimError):
    """The vector store refused an operation or does not match the models."""


class StoreUnavailable(StoreError):
    """Milvus could not be reached, or is starting or stopping. Transient: queued chunks retry with backoff."""


class FilterError(StoreError):
    """A filter expression is malformed or names a field that does not exist."""


class DimensionMismatch(StoreError):
    def __init__(self, collection: str, stored: int, wanted: int):
        self.collection, self.stored, self.wanted = collection, stored, wanted
        super().__init__(
            f"collection {collection!r} holds {stored}-d vectors but the model produces {wanted}-d vectors; "
            "refusing to touch it. Use another IMSIM_COLLECTION_PREFIX or another model."
        )


class QueueError(ImsimError):
    """Redis or Celery is unreachable or a job is unknown."""


class JobRunning(QueueError):
    """The job is still queued or running, so the operation (e.g. a retry of its failures) must wait."""


class JobNotFound(QueueError, NotFound):
    """No job with that id in Redis: unknown, or older than its retention."""
