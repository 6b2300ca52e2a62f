"""Finding images: folders, globs, path lists and ``s3://`` prefixes expanded to a stream of image paths.

Owns discovery: folder walks that never follow directory symlinks and count every file they leave out by reason,
globs expanded from their literal head, path lists read byte-exact as a stream, object listings (through
:mod:`imsim.sources.s3`); a million inputs are never one list. The rules for a single name are :mod:`imsim.sources.names`'.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImsimError
from .names import absolute, compile_glob, glob_base, is_glob, is_image_name, is_uri


# --- finding files -----------------------------------------------------------------------------
@dataclass
class Discovery:
    """What a set of inputs expanded to: the image files (filled by :func:`discover`; a streamed expansion,
    :func:`iter_files`, yields them instead), what was skipped (reason → count) and the inputs that matched no image."""

    files: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _walk_error(found: Discovery) -> Callable[[OSError], None]:
    """``os.walk``'s onerror: a folder it cannot list (permission, a path over the system's length limit) is counted,
    never silently dropped."""

    def report(error: OSError) -> None:
        found.skip(f"folder not listed ({error.strerror or type(error).__name__})")

    return report


def _walk(root: str, found: Discovery) -> Iterator[str]:
    """Image files below ``root``; directory symlinks are not followed (counted), so link loops end."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_walk_error(found)):
        dirnames.sort()
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                found.skip("folder symlink (not followed)")
        for name in sorted(filenames):
            if is_image_name(name):
                yield os.path.join(dirpath, name)
            else:
                ext = os.path.splitext(name.rstrip())[1].lower()
                found.skip(f"not an image type ({ext or 'no extension'})")


def _glob(pattern: str, found: Discovery) -> Iterator[str]:
    """Files and folders matching ``pattern`` (absolute), by :class:`Glob`; a matched folder is taken whole."""
    regex = compile_glob(pattern)
    base = glob_base(pattern)
    if not os.path.isdir(base):
        return
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False, onerror=_walk_error(found)):
        dirnames.sort()
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if regex.match(full) and not os.path.islink(full):
                dirnames.remove(name)  # taken whole below: not walked twice
                yield from _walk(full, found)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if regex.match(full):
                if is_image_name(name):
                    yield full
                else:
                    found.skip(f"not an image type ({os.path.splitext(name.rstrip())[1].lower() or 'no extension'})")


def _expand(raw: str | os.PathLike[str], found: Discovery) -> Iterator[str]:
    """One input: a folder (walked), a glob (expanded: a path that exists as named is literal, brackets and all), or a
    file kept as given, so that a missing or bad file is recorded as a failure instead of vanishing."""
    item = os.path.expanduser(os.fspath(raw))
    if os.path.isdir(item):
        yield from _walk(item, found)
    elif is_glob(item) and not os.path.lexists(item):
        yield from _glob(os.path.abspath(item), found)
    else:
        yield item


class Seen:
    """Paths already yielded, exactly, in about 12 bytes a path: a 96-bit digest of each (a collision among 10M paths
    has a chance of about 1e-15), recent ones in a set, older ones in 256 sorted arrays by first byte (one binary search
    each). A ``--from-file`` list of 10M lines is de-duplicated in ~120 MB, where a set of digests took ~96 bytes a path
    (1 GB projected at 10M). A line repeated anywhere in the list is still yielded once. A 16 MB bitmap of the merged
    digests lets a line never listed before skip the binary search (a false hit on 0.7 % of new lines at 1M, 7 % at
    10M: those are searched)."""

    BUFFER = 1 << 16  # recent digests held in a set before they are merged into the sorted arrays
    FILTER_BITS = 1 << 27

    def __init__(self) -> None:
        import numpy as np

        self._recent: set[bytes] = set()
        self._old: list[np.ndarray] = [np.empty(0, "S12") for _ in range(256)]
        self._filter = bytearray(self.FILTER_BITS >> 3)

    @staticmethod
    def _digest(path: str) -> bytes:
        raw = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=12).digest()
        return raw[:-1] + bytes([raw[-1] | 1])  # never a trailing NUL: numpy's bytes arrays would strip it

    def first(self, path: str) -> bool:
        digest = self._digest(path)
        if digest in self._recent:
            return False
        slot = int.from_bytes(digest[1:5], "little") & (self.FILTER_BITS - 1)
        if self._filter[slot >> 3] & (1 << (slot & 7)):  # perhaps merged before: search its sorted array
            import numpy as np

            old = self._old[digest[0]]
            at = int(np.searchsorted(old, digest))
            if at < len(old) and old[at] == digest:
                return False
        self._recent.add(digest)
        if len(self._recent) >= self.BUFFER:
            self._merge()
        return True

    def _merge(self) -> None:
        import numpy as np

        fresh = np.sort(np.array(list(self._recent), "S12"))
        self._recent.clear()
        raw = np.frombuffer(fresh.tobytes(), np.uint8).reshape(-1, 12)
        slots = raw[:, 1:5].copy().view("<u4").ravel() & np.uint32(self.FILTER_BITS - 1)
        np.bitwise_or.at(np.frombuffer(self._filter, np.uint8), slots >> 3, (1 << (slots & 7)).astype(np.uint8))
        firsts = raw[:, 0]
        for byte in np.unique(firsts):
            part = fresh[firsts == byte]
            old = self._old[byte]
            self._old[byte] = np.insert(old, np.searchsorted(old, part), part)


class _NeverSeen(Seen):
    def first(self, path: str) -> bool:
        return True


def iter_files(
    inputs: Iterable[str | os.PathLike[str]],
    found: Discovery,
    *,
    literal: bool = False,
    seen: Seen | None = None,
    settings: Any = None,
) -> Iterator[str]:
    """Absolute image paths from inputs, streamed (a folder of a million files is never one list), each once.

    ``literal``: every input is a file (the lines of a path list): no folder walk or glob expansion, nothing probed
    on disk (a million listed paths cost what reading the list costs). What was left out is counted in ``found``;
    an input that yields nothing is appended to ``found.unmatched``. ``seen`` is shared by streams that must not
    repeat each other's paths; without it, one folder or glob given alone is walked without remembering what it
    yielded (a walk never repeats a path). ``s3://`` inputs are listed page by page (:func:`imsim.sources.s3.iter_objects`,
    reached with ``settings``, default the process's) and yield :class:`imsim.sources.s3.Listed` URIs."""
    if seen is None and isinstance(inputs, (list, tuple)) and len(inputs) == 1 and not literal:
        seen = _NeverSeen()
    seen = seen if seen is not None else Seen()
    for raw in inputs:
        matched = False
        text = os.fspath(raw)
        if is_uri(text):
            expanded: Iterable[str] = [absolute(text)] if literal else _objects(text, found, settings)
        else:
            expanded = [text] if literal else _expand(raw, found)
        for path in expanded:
            if type(path) is str:  # (a Listed URI is absolute already and keeps its listing facts)
                path = absolute(path) if not literal else (absolute(path) if is_uri(path) else os.path.abspath(path))
            matched = True
            if seen.first(path):
                yield path
        if not matched:
            found.unmatched.append(os.fspath(raw))


def _objects(uri: str, found: Discovery, settings: Any) -> Iterator[str]:
    from . import s3

    if settings is None:
        from ..settings import get_settings

        settings = get_settings()
    return s3.iter_objects(uri, s3.S3Config.from_settings(settings), skip=found.skip)


def discover(inputs: Iterable[str | os.PathLike[str]]) -> Discovery:
    """Expand files, folders (recursively) and globs into a sorted, de-duplicated list of absolute paths (for a few
    inputs; large ones stream through :func:`iter_files`)."""
    found = Discovery()
    found.files = sorted(iter_files(inputs, found))
    return found


@dataclass
class PathList:
    """A file of paths, one per line, read as a stream: byte-exact (only the line ending is removed: ``"x.jpg "``
    keeps its space; bytes that are not UTF-8 are kept), blank lines and ``#`` comments skipped. Once read through,
    ``lines`` and ``sha256`` describe it (what a job records instead of every path)."""

    file: str
    lines: int = 0
    sha256: str = ""

    def __iter__(self) -> Iterator[str]:
        digest = hashlib.sha256()
        self.lines = 0
        try:
            handle = open(self.file, "rb")  # noqa: SIM115 (closed below; the generator may stop early)
        except OSError as exc:
            raise ImsimError(f"cannot read path list {self.file!r}: {exc.strerror or exc}") from exc
        with handle:
            for raw in handle:
                digest.update(raw)
                line = raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                self.lines += 1
                yield line
        self.sha256 = digest.hexdigest()

    def summary(self) -> dict[str, str | int]:
        return {"file": os.path.abspath(self.file), "lines": self.lines, "sha256": self.sha256}


def read_path_list(list_file: str | os.PathLike[str]) -> list[str]:
    """Every path of a path list (:class:`PathList`) as a list."""
    return list(PathList(os.fspath(list_file)))
