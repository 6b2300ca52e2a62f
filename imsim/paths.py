"""Files by name: which names are images, one glob semantics, finding files, and which paths can be stored at all.

Owns the rules that apply before a byte is read: the image extensions (every format this Pillow decodes),
``*`` staying inside a folder and ``**`` crossing folders (the same for ingest, search filters and delete),
folder walks that never follow directory symlinks and count every file they leave out by reason, path lists
kept byte-exact, the image identity (a hash of the absolute path), and paths the store cannot hold losslessly.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageFile

from .errors import BadPath, ImsimError

GLOB_CHARS = frozenset("*?[")
MAX_PATH_BYTES = 4096  # the store's path field holds this many bytes of UTF-8
# Never let Pillow fill a truncated file with grey: a truncated image is an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Every file extension of a format this Pillow can open (AVIF, HEIF where its plugin is installed ...)."""
    Image.init()
    decodable = set()
    for fmt, (factory, _accept) in Image.OPEN.items():
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue  # identified only: a handler (HDF5, GRIB, BUFR, WMF ...) is not installed
        if fmt in NOT_DECODED or (fmt == "EPS" and not _has_ghostscript()):
            continue
        decodable.add(fmt)
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in decodable)


NOT_DECODED = frozenset({"MPEG"})  # Pillow recognises MPEG video files but decodes no frame of them


def _has_ghostscript() -> bool:
    from PIL import EpsImagePlugin

    return bool(EpsImagePlugin.has_ghostscript())


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (trailing whitespace, as in ``"x.jpg "``, is ignored for the test only)."""
    return os.path.splitext(name.rstrip())[1].lower() in image_extensions()


def path_id(path: str | os.PathLike[str]) -> str:
    """The stable identity of an image: a hash of its absolute path (the store's primary key)."""
    return hashlib.sha256(os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def printable(path: str) -> str:
    """``path`` as text that always encodes and prints (a byte that is not UTF-8 shows as ``\\xe9``, a NUL as
    ``\\x00``): how a file is named in messages, job records and failure lists."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def check_path(path: str) -> None:
    """Refuse a path that cannot be stored losslessly: a NUL byte, bytes that are not UTF-8, over 4096 bytes."""
    if "\x00" in path:
        raise BadPath(printable(path), "the path holds a NUL byte")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPath(
            printable(path),
            "the file name is not valid UTF-8 (imsim stores paths as UTF-8 text); "
            "rename it, e.g. with `convmv -f latin1 -t utf8`",
        ) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise BadPath(path, f"the path is {len(encoded):,} bytes of UTF-8, over the {MAX_PATH_BYTES} the store holds")


# --- globs: one semantics everywhere ------------------------------------------------------------
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a path glob: ``*`` and ``?`` stay inside one folder, ``**`` crosses folders (``a/**/b`` also
    matches ``a/b``), ``[...]`` is a character class (``[!...]`` or ``[^...]`` negated, never matching ``/``; ``[[]`` is a literal
    ``[``). Dot files are matched like any other."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:[^/]*/)*")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith(("!", "^"))  # as in bash, [^...] negates like [!...]
                body = body[1:] if negate else body
                # in a regex class "\\" escapes, "]" (first, as in "[]]") closes, "[", "&&", "~~", "||" are (future) set syntax
                body = re.sub(r"([\\\[\]&~|^])", r"\\\1", body)
                out.append("[" + ("^/" if negate else "") + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    return glob_regex(pattern).match(path) is not None


def glob_base(pattern: str) -> str:
    """The folder a glob's matches all lie under: its path up to the last ``/`` before the first wildcard."""
    first = min((pattern.index(c) for c in GLOB_CHARS if c in pattern), default=len(pattern))
    return pattern[: pattern.rfind("/", 0, first) + 1] or "/"


def is_glob(text: str) -> bool:
    return bool(GLOB_CHARS & set(text))


# --- finding files -----------------------------------------------------------------------------
@dataclass
class Discovery:
    """What a set of inputs expanded to: the image files, what was skipped (reason → count) and the inputs that
    matched no image at all."""

    files: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _walk(root: str, found: Discovery) -> Iterator[str]:
    """Image files below ``root``; directory symlinks are not followed (counted), so link loops end."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
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
    """Files and folders matching ``pattern`` (absolute), by :func:`glob_regex`; a matched folder is taken whole."""
    regex = glob_regex(pattern)
    base = glob_base(pattern)
    if not os.path.isdir(base):
        return
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
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


def discover(inputs: Iterable[str | os.PathLike[str]]) -> Discovery:
    """Expand files, folders (recursively) and globs into a sorted, de-duplicated list of absolute paths.

    An explicit path is kept as given (its content decides whether it is an image), so a missing or bad file
    is recorded as a failure instead of vanishing; a folder or glob with no image in it is ``unmatched``."""
    found = Discovery()
    paths: dict[str, None] = {}
    for raw in inputs:
        item = os.path.expanduser(os.fspath(raw))
        if os.path.isdir(item):
            candidates: Iterable[str] = _walk(item, found)
        elif is_glob(item) and not os.path.lexists(item):
            candidates = _glob(os.path.abspath(item), found)
        else:
            candidates = [item]
        matched = False
        for path in candidates:
            paths.setdefault(os.path.abspath(path), None)
            matched = True
        if not matched:
            found.unmatched.append(os.fspath(raw))
    found.files = sorted(paths)
    return found


def read_path_list(list_file: str | os.PathLike[str]) -> list[str]:
    """Paths from a text file, one per line, byte-exact (only the line ending is removed: ``"x.jpg "`` keeps its
    space); blank lines and lines starting with ``#`` are skipped. Bytes that are not UTF-8 are kept as they are."""
    try:
        data = Path(list_file).read_bytes()
    except OSError as exc:
        raise ImsimError(f"cannot read path list {os.fspath(list_file)!r}: {exc.strerror or exc}") from exc
    text = os.fsdecode(data) if b"\0" not in data else data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    return [line.removesuffix("\r") for line in lines if line.strip() and not line.lstrip().startswith("#")]
