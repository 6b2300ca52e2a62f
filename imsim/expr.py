"""Milvus filter expressions: built from user values without pasting them in raw, and raw ones checked.

Every user-supplied value becomes a quoted string or a number literal here, never expression text: a path
such as ``/a/x" or id != "`` stays one string. Milvus Lite does not support expression templates
(``filter_params``), so quoting is done once, in this module. LIKE differs by backend (:data:`LikeDialect`):
Milvus Lite and Milvus >= 2.4 read ``%``/``_`` as wildcards and take ``\\`` escapes, Milvus 2.3 matches a
literal prefix only; either way the pattern here matches a superset at most, and :meth:`Where.accepts`
makes the exact check (folder boundaries, glob classes). A raw expression from a user (``--filter``) must
be one balanced expression over known fields (:func:`check_raw`) before it is ANDed with anything.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal

from .errors import FilterError, InvalidInput
from .sources.names import GLOB_CHARS, absolute, check_path, compile_glob, glob_match

LikeDialect = Literal["escape", "prefix"]


def quote(value: str) -> str:
    """A Milvus string literal holding exactly ``value`` (quotes, backslashes and newlines escaped)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return json.dumps(value, ensure_ascii=False)


def number(value: float | int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(value)


def eq(field: str, value: str | int | float) -> str:
    return f"{_field(field)} == {quote(value) if isinstance(value, str) else number(value)}"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_prefix(field: str, value: str, dialect: LikeDialect = "escape") -> str:
    """Rows whose ``field`` starts with ``value``: exact with escapes; on a prefix-only backend, the literal part
    before any ``%`` (a superset when ``value`` holds one)."""
    if dialect == "escape":
        pattern = _escape_like(value) + "%"
    else:
        pattern = value.split("%", 1)[0] + "%"
    return f"{_field(field)} like {quote(pattern)}"


def any_prefix(field: str, prefixes: Sequence[str], dialect: LikeDialect = "escape") -> str:
    """Rows whose ``field`` starts with one of ``prefixes`` (each as :func:`like_prefix` makes it)."""
    parts = sorted({like_prefix(field, p, dialect) for p in prefixes})
    return parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)


def path_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` itself or lies below it (exact, unlike LIKE)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def folder_filter(folder: str, dialect: LikeDialect = "escape") -> str:
    """Rows at or below ``folder`` (an absolute path): ``FOLDER/`` as a prefix, so a sibling ``FOLDER_x`` never matches."""
    root = folder.rstrip(os.sep) or os.sep
    inside = like_prefix("path", root if root.endswith(os.sep) else root + os.sep, dialect)
    return f"{inside} or {eq('path', root)}"


def glob_to_like(pattern: str, dialect: LikeDialect = "escape") -> str:
    """A LIKE pattern matching at least what the glob matches (``*``/``**`` → ``%``, ``?`` and ``[...]`` → ``_``);
    a prefix-only backend gets the literal part before the first wildcard."""
    if dialect == "prefix":
        first = min((pattern.index(c) for c in GLOB_CHARS if c in pattern), default=len(pattern))
        return pattern[:first].split("%", 1)[0] + "%"
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("%")
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append("_")
        elif c == "[" and "]" in pattern[i + 2 :]:
            out.append("_")
            i = pattern.index("]", i + 2)
        else:
            out.append(_escape_like(c))
        i += 1
    return "".join(out)


def both(*parts: str) -> str:
    """AND of the non-empty parts, each parenthesised."""
    kept = [p for p in parts if p]
    return " and ".join(f"({p})" for p in kept)


def _field(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a field name: {name!r}")
    return name


TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def tag(key: str, value: str) -> str:
    """Rows whose ingest-time tag ``key`` equals ``value`` (the JSON field ``tags``)."""
    if not TAG_KEY.match(key):
        raise ValueError(f"tag key {key!r} must be letters, digits, '_', '.', '-' (and start with a letter or '_')")
    return f"tags[{quote(key)}] == {quote(value)}"


TAG_VALUE_MAX = 1024  # characters of one tag value


def check_tags(tags: object, what: str = "tags") -> dict[str, str]:
    """Tags as every door takes them (``--tag``, ``Client.ingest(tags=)``, the API's ``tags``): an object of keys
    (:data:`TAG_KEY`: what a filter can select) to string values; anything else is an :class:`InvalidInput` naming the
    part that is wrong, before a job is queued (a job of 10,000 files failing one by one is what it replaces)."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"{what}: give an object of key: value strings, not {type(tags).__name__} {str(tags)[:40]!r}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY.match(key):
            raise InvalidInput(
                f"{what}: key {str(key)[:70]!r} must be letters, digits, '_', '.', '-', start with a letter or '_', "
                "at most 64 characters (what a filter can select)"
            )
        if not isinstance(value, str):
            raise InvalidInput(f"{what}: the value of {key!r} must be a string, not {type(value).__name__}")
        if len(value) > TAG_VALUE_MAX or "\x00" in value:
            raise InvalidInput(f"{what}: the value of {key!r} must be at most {TAG_VALUE_MAX} characters, without NUL")
        out[key] = value
    return out


def parse_tags(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["k=v", ...]`` from the command line → ``{"k": "v"}``; a clear error naming a malformed item."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not TAG_KEY.match(key.strip()):
            raise InvalidInput(f"tag {item!r} is not key=value (key: letters, digits, '_', '.', '-')")
        tags[key.strip()] = value
    return check_tags(tags, "--tag")


# --- raw expressions from users ------------------------------------------------------------------------
_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "true", "false", "is", "null", "exists"})
_TOKEN = re.compile(
    r"""\s+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[A-Za-z_$][A-Za-z0-9_$]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|
                        ==|!=|<=|>=|&&|\|\||\*\*|[-+*/%<>!()\[\],]""",
    re.X,
)


def check_raw(expression: str, fields: frozenset[str] | set[str]) -> str:
    """``expression`` as one balanced, parenthesised expression over ``fields``, safe to AND with others.

    Refused with a :class:`FilterError`: unbalanced parentheses or brackets (``1==1) or (1==1`` would break out
    of the AND), an unterminated string, a character Milvus's grammar has no use for, and a name that is no field
    of the collection (Milvus reads an unknown name as a dynamic field and silently matches nothing)."""
    text = expression.strip()
    if not text:
        return ""
    depth: list[str] = []
    pos, tokens = 0, []
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if not found:
            hint = " (an unterminated string?)" if text[pos] in "\"'" else ""
            raise FilterError(f"filter {expression!r}: cannot read {text[pos : pos + 12]!r} at column {pos + 1}{hint}")
        token = found.group(0)
        pos = found.end()
        if token.isspace():
            continue
        tokens.append(token)
        if token in "([":
            depth.append(token)
        elif token in ")]":
            if not depth or depth.pop() != {")": "(", "]": "["}[token]:
                raise FilterError(
                    f"filter {expression!r}: unbalanced {token!r} at column {pos}: a filter must be one "
                    "expression (it is ANDed with the other conditions)"
                )
    if depth:
        raise FilterError(f"filter {expression!r}: {len(depth)} unclosed {depth[-1]!r}: a filter must be one expression")
    for i, token in enumerate(tokens):
        if not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", token) or token.lower() in _KEYWORDS:
            continue
        if i + 1 < len(tokens) and tokens[i + 1] == "(":
            continue  # a function: json_contains(...), array_length(...)
        if token not in fields:
            raise FilterError(
                f"filter {expression!r}: no field {token!r} in the collection (fields: {', '.join(sorted(fields))})"
            )
    return f"({text})"


@dataclass(frozen=True)
class Where:
    """Metadata conditions a search must meet, ANDed; every value is quoted, never pasted.

    ``path_prefix`` is a folder (images at or below it); ``path_glob`` a glob over the absolute path (``*``
    stays inside a folder, ``**`` crosses folders), matched exactly on the results after Milvus's LIKE
    pre-filter. ``ingested_after`` / ``ingested_before`` are Unix seconds."""

    path_prefix: str = ""
    path_glob: str = ""
    job: str = ""
    tags: dict[str, str] = dc_field(default_factory=dict)
    min_width: int | None = None
    min_height: int | None = None
    max_file_size: int | None = None
    min_file_size: int | None = None
    ingested_after: float | None = None
    ingested_before: float | None = None
    ids: tuple[str, ...] | None = None  # only these rows (a topic's members): None, no condition; empty, nothing

    def __post_init__(self) -> None:
        from .errors import ImsimError

        for text in (self.path_prefix, self.path_glob):  # what a stored path cannot hold, no filter can ask for
            if text:
                try:
                    check_path(text)
                except ImsimError as exc:
                    raise FilterError(str(exc)) from None
        if self.path_glob:  # a bad glob is an error at once, not a search that matches nothing
            try:
                compile_glob(self._glob())
            except ImsimError as exc:
                raise FilterError(str(exc)) from None

    def _folder(self) -> str:
        return absolute(self.path_prefix)

    def _glob(self) -> str:
        return absolute(self.path_glob)

    def expression(self, dialect: LikeDialect = "escape") -> str:
        parts = []
        if self.path_prefix:
            parts.append(folder_filter(self._folder(), dialect))
        if self.path_glob:
            parts.append(f"path like {quote(glob_to_like(self._glob(), dialect))}")
        if self.job:
            parts.append(eq("job_id", self.job))
        parts += [tag(k, v) for k, v in sorted(self.tags.items())]
        bounds = [
            ("width", ">=", self.min_width),
            ("height", ">=", self.min_height),
            ("file_size", "<=", self.max_file_size),
            ("file_size", ">=", self.min_file_size),
            ("ingested_at", ">=", self.ingested_after),
            ("ingested_at", "<", self.ingested_before),
        ]
        parts += [f"{_field(f)} {op} {number(v)}" for f, op, v in bounds if v is not None]
        if self.ids is not None:
            parts.append(f"id in [{', '.join(quote(i) for i in self.ids)}]" if self.ids else 'id == ""')
        return both(*parts)

    @property
    def needs_exact_check(self) -> bool:
        """Whether LIKE may return more than this matches (so results are re-checked with :meth:`accepts`)."""
        return bool(self.path_prefix or self.path_glob)

    def accepts(self, path: str) -> bool:
        """The exact checks LIKE cannot make on every backend (folder boundaries, glob classes and folders)."""
        if self.path_prefix and not path_under(path, self._folder()):
            return False
        return not self.path_glob or glob_match(self._glob(), path)
