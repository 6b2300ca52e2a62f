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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

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


def is_uri(path: object) -> bool:
    """Whether ``path`` names an object in a store (``s3://bucket/key``) rather than a local file."""
    return isinstance(path, str) and path[:5].lower() == "s3://"


def absolute(path: str | os.PathLike[str]) -> str:
    """How a path is stored and compared: a local path made absolute (``~`` expanded); an ``s3://`` URI as given,
    the scheme in lower case (its key is never normalised: ``a//b`` and ``a/./b`` are other objects)."""
    text = os.fspath(path)
    if is_uri(text):
        return "s3://" + text[5:]
    return os.path.abspath(os.path.expanduser(text))


def path_id(path: str | os.PathLike[str]) -> str:
    """The stable identity of an image: a hash of its absolute path or its URI (the store's primary key)."""
    text = os.fspath(path)
    canonical = "s3://" + text[5:] if is_uri(text) else os.path.abspath(text)
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(path: str) -> str:
    """``path`` as text that always encodes and prints safely: a byte that is not UTF-8 shows as ``\\xe9``, and every
    control character (C0, DEL, C1: a file named with ``ESC[2J`` would clear the terminal, ``ESC[8m`` hide what
    follows, a newline forge a line) as ``\\x1b``. How a file is named in messages, job records and failure lists."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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
MAX_GLOB_BYTES = MAX_PATH_BYTES  # a longer pattern cannot match any storable path: refused, never matched


@dataclass(frozen=True)
class _Token:
    kind: str  # "lit", "any" (?), "star" (* within a folder), "deep" (** anywhere), "dirs" (**/: whole folders), "class"
    chars: frozenset[str] = frozenset()
    negated: bool = False


def _tokens(pattern: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append(_Token("dirs"))
                    i += 1
                else:
                    out.append(_Token("deep"))
                continue
            if not out or out[-1].kind not in ("star", "deep"):  # "**"-free runs of "*" are one star
                out.append(_Token("star"))
        elif c == "?":
            out.append(_Token("any"))
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(_Token("lit", frozenset(c)))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith(("!", "^"))  # as in bash, [^...] negates like [!...]
                body = body[1:] if negate else body
                members: set[str] = set()
                k = 0
                while k < len(body):  # ranges a-z; a "-" first or last is itself
                    if k + 2 < len(body) and body[k + 1] == "-":
                        members |= {chr(x) for x in range(ord(body[k]), ord(body[k + 2]) + 1)}
                        k += 3
                    else:
                        members.add(body[k])
                        k += 1
                out.append(_Token("class", frozenset(members), negate))
                i = j
        else:
            out.append(_Token("lit", frozenset(c)))
        i += 1
    return out


class Glob:
    """A compiled path glob: ``*`` and ``?`` stay inside one folder, ``**`` crosses folders (``a/**/b`` also matches
    ``a/b``), ``[...]`` is a character class (``[!...]`` or ``[^...]`` negated, never matching ``/``; ``[[]`` is a
    literal ``[``; ``a-z`` ranges). Dot files are matched like any other.

    Matching simulates the pattern as an automaton over the path, one character at a time: time linear in the path
    for a given pattern (a backtracking regex took 74 s for ``*a*a*a*a*a*a*a*a*b.jpg`` against one long name)."""

    def __init__(self, pattern: str):
        if len(pattern.encode("utf-8", "surrogateescape")) > MAX_GLOB_BYTES:
            raise ImsimError(f"glob {printable(pattern[:60])}...: longer than {MAX_GLOB_BYTES} bytes, the longest stored path")
        self.pattern = pattern
        self._tokens = _tokens(pattern)

    def _closure(self, states: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
        """Add the states reachable without reading: a star may match nothing."""
        todo = list(states)
        while todo:
            i, inner = todo.pop()
            if i < len(self._tokens) and not inner and self._tokens[i].kind in ("star", "deep", "dirs"):
                if (i + 1, False) not in states:
                    states.add((i + 1, False))
                    todo.append((i + 1, False))
        return states

    def match(self, path: str) -> bool:
        tokens, end = self._tokens, len(self._tokens)
        states = self._closure({(0, False)})
        for c in path:
            following: set[tuple[int, bool]] = set()
            for i, _inner in states:
                if i == end:
                    continue
                token = tokens[i]
                kind = token.kind
                if kind == "lit":
                    if c in token.chars:
                        following.add((i + 1, False))
                elif kind == "any":
                    if c != "/":
                        following.add((i + 1, False))
                elif kind == "class":
                    if (c in token.chars) != token.negated and not (token.negated and c == "/"):
                        following.add((i + 1, False))
                elif kind == "star":
                    if c != "/":
                        following.add((i, False))
                elif kind == "deep":
                    following.add((i, False))
                else:  # "dirs": whole folders "name/" repeated; (i, True) is inside one of them
                    following.add((i, False) if c == "/" else (i, True))
            if not following:
                return False
            states = self._closure(following)
        return (end, False) in states


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Glob:
    return Glob(pattern)


def glob_match(pattern: str, path: str) -> bool:
    return compile_glob(pattern).match(path)


def glob_base(pattern: str) -> str:
    """The folder a glob's matches all lie under: its path up to the last ``/`` before the first wildcard."""
    first = min((pattern.index(c) for c in GLOB_CHARS if c in pattern), default=len(pattern))
    return pattern[: pattern.rfind("/", 0, first) + 1] or "/"


def is_glob(text: str) -> bool:
    return bool(GLOB_CHARS & set(text))


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
    """Paths already yielded, as 16-byte digests (about a third of the memory of the paths themselves)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def first(self, path: str) -> bool:
        digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).digest()
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True


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
    yielded (a walk never repeats a path). ``s3://`` inputs are listed page by page (:func:`imsim.s3.iter_objects`,
    reached with ``settings``, default the process's) and yield :class:`imsim.s3.Listed` URIs."""
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
        from .settings import get_settings

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
