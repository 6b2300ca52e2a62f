"""Small sequence helpers shared by ingest (slices of a chunk) and the queue (chunks of a job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of ``size`` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]
