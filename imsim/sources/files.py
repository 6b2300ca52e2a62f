"""What imsim knows of one file or object before decoding it: its facts, its stat as opened, its bytes as read.

Plain records shared by the readers (:mod:`imsim.images` for files, :mod:`imsim.sources.s3` for objects), the skip rule
and the store's rows; nothing here opens or reads anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .names import path_id


@dataclass(frozen=True)
class FileFacts:
    """What the store records about an image's file. ``file_version`` is how the source names this version of the
    file beyond size and mtime (``ino:N`` for a local file): with them it lets a re-ingest skip the file unread."""

    path: str
    sha256: str
    file_size: int
    mtime: float
    file_version: str = field(default="", kw_only=True)

    @cached_property
    def id(self) -> str:
        return path_id(self.path)


@dataclass(frozen=True)
class FileStat:
    """A file as opened, before a byte of it is read: enough to tell that it is the file already stored."""

    path: str
    file_size: int
    mtime: float
    file_version: str

    @cached_property
    def id(self) -> str:
        return path_id(self.path)


@dataclass(frozen=True)
class FileBytes(FileFacts):
    """A file's bytes as read once, with the facts about the file."""

    data: bytes
