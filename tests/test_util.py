"""The read-ahead that overlaps finding the next chunk with processing this one: order, errors, early stop."""

from __future__ import annotations

import threading
import time

import pytest

from imsim.util import batched, read_ahead


def test_read_ahead_keeps_order_and_runs_ahead_of_the_consumer():
    produced: list[int] = []

    def slow_source():
        for i in range(6):
            produced.append(i)
            yield i

    got = []
    for item in read_ahead(slow_source(), depth=2):
        time.sleep(0.05)  # the producer fills the queue meanwhile
        got.append(item)
        assert len(produced) >= min(6, len(got) + 1)  # at least one ahead, whenever there is one to take
    assert got == list(range(6))


def test_read_ahead_raises_the_producers_error_in_order():
    def failing():
        yield [1, 2]
        raise OSError("listing failed")

    stream = read_ahead(failing())
    assert next(stream) == [1, 2]
    with pytest.raises(OSError, match="listing failed"):
        next(stream)


def test_a_consumer_that_stops_early_stops_the_thread():
    taken = []

    def endless():
        i = 0
        while True:
            taken.append(i)
            yield i
            i += 1

    before = threading.active_count()
    stream = read_ahead(batched(endless(), 10), depth=2)
    assert next(stream) == list(range(10))
    stream.close()  # what a `for` loop left by break or an exception does
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    assert len(taken) <= 10 * 4  # bounded: it never ran away with the source


def test_a_path_list_is_deduplicated_exactly_in_a_few_bytes_a_path(tmp_path):
    """`--from-file` remembered every listed path as a 16-byte digest in a set (~96 bytes a path in Python: 173 MB at
    1M lines, ~1 GB projected at 10M). Paths seen are now 12-byte digests in sorted arrays; every path is still yielded
    exactly once however far apart its repeats are, through the merges."""
    from imsim.sources.paths import Discovery, PathList, Seen, iter_files

    listing = tmp_path / "list.txt"
    paths = [f"/data/d{i // 1000:04d}/img{i:07d}.jpg" for i in range(200_000)]
    listing.write_text("\n".join(paths + paths[::7] + paths[:1000]) + "\n")
    seen = Seen()
    seen.BUFFER = 20_000  # several merges in this list
    yielded = list(iter_files(PathList(str(listing)), Discovery(), literal=True, seen=seen))
    assert yielded == paths
    held = sum(a.nbytes for a in seen._old) + 100 * len(seen._recent)  # what the de-duplication holds
    assert held < 40 * len(paths), held  # ~12 bytes a path (and the recent set), not ~96
    print(f"\n{len(paths):,} distinct paths: {held / len(paths):.1f} B a path held")
