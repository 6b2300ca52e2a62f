"""Reading one image file safely, before any pixel is decoded: the limits a worker refuses to read past, the
allowed-roots check made on the file actually opened (through its descriptor: no symlink-swap race), its stat
(size, mtime, inode) known before a byte is read, then its bytes read once and hashed. ``s3://`` paths are opened
through :mod:`imsim.sources.s3` with the same limits."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ImageError, ImageNotFound, ImageTooLarge, ImageUnreadable, PathNotAllowed
from .files import FileBytes, FileStat
from .names import check_path, is_uri
from .s3 import OpenedObject, S3Config, canonical
from .s3 import allowed as s3_allowed

if TYPE_CHECKING:
    from ..settings import Settings

DEFAULT_MAX_PIXELS = 178_956_970
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


# --- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What a worker refuses to read or decode: made once from the settings, used by every read and decode."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = 32.0
    allowed_roots: tuple[str, ...] = ()  # real paths and s3:// prefixes; empty = any path
    decode_bytes: int = 2048 * 2**20  # decoded pixels one process holds at once (DecodeBudget)
    s3: Any = None  # how s3:// paths are reached (imsim.sources.s3.S3Config); None: from the process's settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_bytes=settings.max_file_bytes,
            max_pixels=settings.max_image_pixels,
            max_aspect_ratio=settings.max_aspect_ratio,
            allowed_roots=tuple(settings.allowed_root_paths),
            decode_bytes=settings.decode_memory_mb * 2**20,
            s3=S3Config.from_settings(settings),
        )


DEFAULT_LIMITS = Limits()


def _under(real: str, roots: Iterable[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _opened_path(fd: int, path: str, st: os.stat_result) -> str:
    """The real path of the file open on ``fd`` (Linux: /proc/self/fd; elsewhere: the real path of ``path``, accepted
    only if it is the very inode that was opened)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
        try:
            again = os.stat(real)
        except OSError:
            return "(unknown)"
        return real if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino) else "(changed while opening)"


def check_allowed(path: str, roots: Iterable[str]) -> None:
    """A first check by name (for a clear message), of a file, a folder or an ``s3://`` URI: the one check the readers,
    ``imsim serve`` and the workers share; :func:`read_file` checks the file it actually opened."""
    roots = list(roots)
    if not roots:
        return
    if is_uri(path):
        if not s3_allowed(canonical(path), tuple(roots)):
            raise PathNotAllowed(path, f"outside the allowed roots; IMSIM_ALLOWED_ROOTS={','.join(roots)}")
        return
    real = os.path.realpath(path)
    if not _under(real, roots):
        where = f" (resolves to {real})" if real != path else ""
        raise PathNotAllowed(path, f"outside the allowed roots{where}; IMSIM_ALLOWED_ROOTS={','.join(roots)}")


class OpenedFile:
    """One file opened for reading and checked on its descriptor (a regular file, within the allowed roots and the byte
    limit); :attr:`stat` says what it is before a byte is read, :meth:`read` reads and hashes it. Close it (``with``)."""

    def __init__(self, path: str, fd: int, st: os.stat_result, limits: Limits):
        self.path, self._fd, self._st, self._limits = path, fd, st, limits
        self.stat = FileStat(path, st.st_size, st.st_mtime, f"ino:{st.st_ino}")

    def read(self) -> FileBytes:
        limits, path = self._limits, self.path
        chunks, size = [], 0
        try:
            while True:
                block = os.read(self._fd, max(1 << 20, self._st.st_size - size + 1))
                if not block:
                    break
                chunks.append(block)
                size += len(block)
                if size > limits.max_bytes:
                    raise ImageTooLarge(
                        path, f"file grew past the limit of {limits.max_bytes:,} bytes while read (IMSIM_MAX_FILE_BYTES)"
                    )
        except OSError as exc:  # EISDIR, EIO ...
            raise ImageUnreadable(path, exc.strerror or str(exc)) from exc
        data = b"".join(chunks)
        return FileBytes(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            file_size=len(data),
            mtime=self._st.st_mtime,
            data=data,
            file_version=self.stat.file_version,
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> OpenedFile | OpenedObject:
    """Open one file for reading; raises an :class:`~imsim.errors.ImageError` naming the file.

    The file is opened once (non-blocking, so a FIFO cannot hang the worker) and everything is checked on the
    open descriptor: a regular file, its size, and, with ``allowed_roots``, the real path of what was opened, so a
    symlink swapped between a check and the open can never make imsim read a file outside the roots. A hard link
    inside a root is a file inside the root (see docs/operations.md, Security). Any ``OSError`` becomes this
    file's error: a name check racing a rename fails the file, never its chunk."""
    if is_uri(path):  # an object in a store: its listing facts, then one conditional GET (imsim.sources.s3)
        from ..settings import get_settings
        from .s3 import open_object

        return open_object(os.fspath(path), limits, limits.s3 or S3Config.from_settings(get_settings()))
    path = os.path.abspath(os.fspath(path))
    check_path(path)
    try:
        check_allowed(path, limits.allowed_roots)
    except OSError as exc:  # realpath raises EINVAL when a component stops being a symlink mid-call
        raise ImageUnreadable(path, f"cannot resolve the path: {exc.strerror or exc}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as exc:
        raise ImageNotFound(path, "no such file") from exc
    except PermissionError as exc:
        raise ImageUnreadable(path, "permission denied") from exc
    except OSError as exc:  # ELOOP, EIO, ENAMETOOLONG ...
        raise ImageUnreadable(path, exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageUnreadable(path, "not a regular file")
        if limits.allowed_roots:
            opened = _opened_path(fd, path, st)
            if not _under(opened, limits.allowed_roots):
                raise PathNotAllowed(
                    path,
                    f"outside the allowed roots (the file opened is {opened}); "
                    f"IMSIM_ALLOWED_ROOTS={','.join(limits.allowed_roots)}",
                )
        if st.st_size > limits.max_bytes:
            raise ImageTooLarge(
                path, f"file is {st.st_size:,} bytes, over the limit of {limits.max_bytes:,} (IMSIM_MAX_FILE_BYTES)"
            )
    except ImageError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise ImageUnreadable(path, exc.strerror or str(exc)) from exc
    return OpenedFile(path, fd, st, limits)


def read_file(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> FileBytes:
    """Read one file whole and hash it (:func:`open_file`, then :meth:`OpenedFile.read`)."""
    with open_file(path, limits) as opened:
        return opened.read()
