"""Names before bytes: which names are images, the image identity, paths the store can hold, one glob semantics.

Owns the rules that apply to a name alone, for files and ``s3://`` objects alike: the image extensions (every
format this Pillow decodes), the image identity (a hash of the absolute path or the URI), paths the store cannot
hold losslessly, and ``*`` staying inside a folder and ``**`` crossing folders (the same for ingest, search filters
and delete; matched in linear time). Nothing here opens a file or reaches a store.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageFile

from ..errors import BadPath, ImsimError

GLOB_CHARS = frozenset("*?[")
MAX_PATH_BYTES = 4096  # the store's path field holds this many bytes of UTF-8
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # any scheme://, of which imsim reads s3:// only (:func:`is_uri`)
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


MAX_GLOB_STARS = 16


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
        stars = sum(1 for t in self._tokens if t.kind in ("star", "deep", "dirs"))
        if stars > MAX_GLOB_STARS:  # each keeps a state alive: matching costs stars x path length (400 took 17.6 s)
            raise ImsimError(
                f"glob {printable(pattern[:60])}{'...' if len(pattern) > 60 else ''}: {stars} wildcards (* and **), more "
                f"than the {MAX_GLOB_STARS} a path glob may have"
            )

    def prefixes(self, limit: int = 64) -> list[str]:
        """Literal prefixes one of which every match starts with: the pattern's fixed characters up to its first
        wildcard, a character class on the way expanded into its members while that makes at most ``limit`` prefixes
        (``/d[23]/**`` → ``/d2/``, ``/d3/``). A store pre-filters on these instead of on the whole folder above."""
        out = [""]
        for token in self._tokens:
            if token.kind == "lit" and len(token.chars) == 1:
                out = [p + c for p in out for c in token.chars]
            elif token.kind == "class" and not token.negated and 0 < len(out) * len(token.chars) <= limit:
                out = [p + c for p in out for c in sorted(token.chars)]
            else:
                break
        return out

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
