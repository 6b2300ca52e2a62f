"""Milvus filter expressions built from user values without pasting them in raw.

Every user-supplied value becomes a quoted string or a number literal here, never expression
text: a path such as ``/a/x" or id != "`` stays one string. Milvus Lite does not support
expression templates (``filter_params``), so quoting is done once, in this module.
``LIKE`` has no escape for ``%`` and ``_`` on every backend, so prefix matches may return a
superset; callers that need exactness re-check in Python (see :func:`path_under`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from dataclasses import dataclass
from dataclasses import field as dc_field


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


def one_of(field: str, values: list[str]) -> str:
    return f"{_field(field)} in [{', '.join(quote(v) for v in values)}]"


def prefix(field: str, value: str) -> str:
    """Rows whose ``field`` starts with ``value`` (a superset when ``value`` holds ``%`` or ``_``)."""
    return f"{_field(field)} like {quote(value + '%')}"


def path_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` itself or lies below it (exact, unlike LIKE)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def both(*parts: str) -> str:
    """AND of the non-empty parts, each parenthesised."""
    kept = [p for p in parts if p]
    return " and ".join(f"({p})" for p in kept)


def _field(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a field name: {name!r}")
    return name


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern matching at least what the glob matches (``*`` → ``%``, ``?`` → ``_``; ``[...]`` → ``_``)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("%")
        elif c == "?":
            out.append("_")
        elif c == "[" and "]" in pattern[i + 1 :]:
            out.append("_")
            i = pattern.index("]", i + 1)
        else:
            out.append(c)
        i += 1
    return "".join(out)


TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def tag(key: str, value: str) -> str:
    """Rows whose ingest-time tag ``key`` equals ``value`` (tags live in the dynamic JSON field ``tags``)."""
    if not TAG_KEY.match(key):
        raise ValueError(f"tag key {key!r} must be letters, digits, '_', '.', '-' (and start with a letter or '_')")
    return f"tags[{quote(key)}] == {quote(value)}"


def parse_tags(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["k=v", ...]`` from the command line → ``{"k": "v"}``; a clear error naming a malformed item."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not TAG_KEY.match(key.strip()):
            raise ValueError(f"tag {item!r} is not key=value (key: letters, digits, '_', '.', '-')")
        tags[key.strip()] = value
    return tags


@dataclass(frozen=True)
class Where:
    """Metadata conditions a search must meet, ANDed; every value is quoted, never pasted.

    ``path_glob`` is matched exactly (fnmatch) on the results after Milvus's LIKE pre-filter.
    ``ingested_after`` / ``ingested_before`` are Unix seconds. ``raw`` is an expression written by
    the user (their own responsibility), ANDed with the rest.
    """

    path_prefix: str = ""  # a folder: images at or below it
    path_glob: str = ""
    job: str = ""
    tags: dict[str, str] = dc_field(default_factory=dict)
    min_width: int | None = None
    min_height: int | None = None
    max_file_size: int | None = None
    min_file_size: int | None = None
    ingested_after: float | None = None
    ingested_before: float | None = None
    raw: str = ""

    def expression(self) -> str:
        parts = []
        if self.path_prefix:
            parts.append(prefix("path", os.path.abspath(os.path.expanduser(self.path_prefix))))
        if self.path_glob:
            parts.append(f"path like {quote(glob_to_like(self._glob()))}")
        if self.job:
            parts.append(eq("job_id", self.job))
        parts += [tag(k, v) for k, v in sorted(self.tags.items())]
        bounds = [("width", ">=", self.min_width), ("height", ">=", self.min_height), ("file_size", "<=", self.max_file_size),
                  ("file_size", ">=", self.min_file_size), ("ingested_at", ">=", self.ingested_after),
                  ("ingested_at", "<", self.ingested_before)]
        parts += [f"{_field(f)} {op} {number(v)}" for f, op, v in bounds if v is not None]
        if self.raw:
            parts.append(self.raw)
        return both(*parts)

    def _glob(self) -> str:
        return os.path.abspath(os.path.expanduser(self.path_glob))

    def accepts(self, path: str) -> bool:
        """The exact checks LIKE cannot make (prefix boundaries, glob classes)."""
        if self.path_prefix and not path_under(path, os.path.abspath(os.path.expanduser(self.path_prefix))):
            return False
        return not self.path_glob or fnmatch.fnmatchcase(path, self._glob())
