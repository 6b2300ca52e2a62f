"""Milvus filter expressions built from user values without pasting them in raw.

Every user-supplied value becomes a quoted string or a number literal here, never expression
text: a path such as ``/a/x" or id != "`` stays one string. Milvus Lite does not support
expression templates (``filter_params``), so quoting is done once, in this module.
``LIKE`` has no escape for ``%`` and ``_`` on every backend, so prefix matches may return a
superset; callers that need exactness re-check in Python (see :func:`path_under`).
"""

from __future__ import annotations

import json
import math
import os


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
