"""Small sequence helpers shared by ingest (slices of a chunk) and the queue (chunks of a job), lists or streams."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any, TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of ``size`` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists of ``size``, taken lazily (a stream of a million paths is never a list)."""
    iterator = iter(items)
    while batch := list(islice(iterator, max(1, size))):
        yield batch


def read_ahead(batches: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """``batches`` as they come, taken by a background thread up to ``depth`` ahead of the consumer, so finding
    the next chunk (walking a folder, a page of an object listing) overlaps with processing this one. An error of the
    producer is raised here, in order; a consumer that stops early stops the thread."""
    import queue
    import threading

    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(("item", batch)):
                    return
            offer(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            offer(("error", exc))

    thread = threading.Thread(target=produce, name="imsim-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ahead.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def peeked(stream: Iterable[T]) -> Iterator[T] | None:
    """``stream`` unchanged, or None when it is empty (found out by taking its first item)."""
    iterator = iter(stream)
    for first in iterator:
        return chain([first], iterator)
    return None
