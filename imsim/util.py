"""Small sequence helpers shared by ingest (slices of a chunk) and the queue (chunks of a job), lists or streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of ``size`` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists of ``size``, taken lazily (a stream of a million paths is never a list)."""
    iterator = iter(items)
    while batch := list(islice(iterator, max(1, size))):
        yield batch


def peeked(stream: Iterable[T]) -> Iterator[T] | None:
    """``stream`` unchanged, or None when it is empty (found out by taking its first item)."""
    iterator = iter(stream)
    for first in iterator:
        return chain([first], iterator)
    return None
