"""Search: filters checked against the backend's dialect, top-k searches, paging past the backend's cap with a search
iterator (exact: a deeper search never repeats or drops a row), and an exact (brute-force) search for ground truth."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import expr
from ..errors import StoreError
from ..fusion import cosine
from ..settings import Consistency
from . import indexes
from .connection import ITERATOR_BATCH, ITERATOR_V2, SEARCH_CAP, Connection, pages_of
from .rows import Rows
from .schema import METRIC, PK, VECTOR
from .versions import Versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredHit:
    id: str
    score: float
    fields: dict[str, Any]


class Searching:
    """Search operations (see the module doc), over one :class:`Connection`, its versions and rows."""

    def __init__(self, connection: Connection, versions: Versions, rows: Rows):
        self.conn = connection
        self.versions = versions
        self.rows = rows

    def check_filter(self, name: str, expression: str) -> str:
        """A user's raw expression made safe to AND with imsim's own: one balanced expression naming only fields of
        ``name`` (a :class:`FilterError` otherwise), returned parenthesised."""
        return expr.check_raw(expression, self.versions.fields(name) - {VECTOR})

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        *,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        consistency: Consistency = "Strong",
        ef: int | None = None,
    ) -> list[list[StoredHit]]:
        """Top-k rows per query vector, best first; ``score`` is the cosine similarity. ``ef``: HNSW's search breadth
        (default ``IMSIM_HNSW_EF_SEARCH``; at least k).

        ``k`` above Milvus's cap (16,384) pages through a search iterator on a server (one query vector at
        a time); Milvus Lite has no cap and answers in one search. ``consistency``: every read here defaults
        to Strong (read-your-writes); the query client passes ``IMSIM_SEARCH_CONSISTENCY``."""
        self.conn.load(name)
        vectors = np.asarray(vectors, np.float32)
        if k > SEARCH_CAP:  # never ask for more rows than there are: Milvus Lite allocates for k (k=1e9 was OOM-killed)
            k = max(1, min(k, self.rows.count(name)))
        if k > SEARCH_CAP and not self.conn.lite_backend:
            if not self.conn.has_search_iterator:
                raise StoreError(self._past_cap(k))
            return [
                list(self.search_iter(name, v, limit=k, filter=filter, output_fields=output_fields, consistency=consistency))
                for v in vectors
            ]
        found = self._search(name, vectors, k, filter, output_fields, consistency, ef)
        return self._complete(name, vectors, k, filter, output_fields, consistency, found)

    def _complete(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str,
        output_fields: Sequence[str],
        consistency: Consistency,
        found: list[list[StoredHit]],
    ) -> list[list[StoredHit]]:
        """Exactly k hits wherever k rows match: an HNSW search under a filter that keeps few rows can stop short
        (Milvus Lite returned 2-9 of 10 for a folder of 26 images). A short answer is checked against the count of
        matching rows (one query, only then) and completed by an exact scan of those rows."""
        short = [q for q, hits in enumerate(found) if len(hits) < k]
        if not short:
            return found
        matching = self.rows.count(name, filter, consistency)
        redo = [q for q in short if len(found[q]) < min(k, matching)]
        if redo:
            exact = self.exact_search(name, vectors[redo], k, filter, output_fields, consistency=consistency)
            for q, hits in zip(redo, exact, strict=True):
                found[q] = hits
        return found

    def _search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str,
        output_fields: Sequence[str],
        consistency: Consistency,
        ef: int | None = None,
    ) -> list[list[StoredHit]]:
        index_type, built = self.versions.describe_index(name)
        search = indexes.search_params(index_type, built, k, self.conn.config, ef)
        params: dict[str, Any] = {"metric_type": METRIC, "params": search}
        results = self.conn.call(
            "search",
            name,
            data=[v.tolist() for v in vectors],
            limit=k,
            filter=filter,
            output_fields=list(output_fields),
            search_params=params,
            anns_field=VECTOR,
            consistency_level=consistency,
        )
        return [[StoredHit(str(h["id"]), cosine(h["distance"]), dict(h.get("entity") or {})) for h in hits] for hits in results]

    def search_iter(
        self,
        name: str,
        vector: np.ndarray,
        *,
        limit: int = -1,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        batch: int = ITERATOR_BATCH,
        consistency: Consistency = "Strong",
    ) -> Iterator[StoredHit]:
        """Every row (or the first ``limit``) by similarity to ``vector``, best first, fetched page by page:
        a Milvus search iterator on a server (v2: Milvus >= 2.5.2), deepening plain searches on Milvus Lite and
        on older servers (which stop with a clear error at the 16,384 cap rather than return a short list)."""
        self.conn.load(name)
        vector = np.asarray(vector, np.float32)
        if self.conn.lite_backend or not self.conn.has_search_iterator:
            cap = None if self.conn.lite_backend else SEARCH_CAP
            yield from self._deepening(name, vector, limit, filter, output_fields, batch, consistency, cap)
            return
        index_type, built = self.versions.describe_index(name)
        params: dict[str, Any] = {
            "metric_type": METRIC,
            "params": indexes.search_params(index_type, built, min(batch, SEARCH_CAP), self.conn.config),
        }
        iterator = self.conn.call(
            "search_iterator",
            name,
            data=[vector.tolist()],
            batch_size=batch,
            limit=limit,
            filter=filter,
            output_fields=list(output_fields),
            anns_field=VECTOR,
            search_params=params,
            consistency_level=consistency,
        )
        for page in pages_of(iterator, f"Milvus search iterator over {name!r}"):
            for h in page:
                yield StoredHit(str(h["id"]), cosine(h["distance"]), dict(h.get("entity") or {}))

    def _deepening(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        filter: str,
        output_fields: Sequence[str],
        batch: int,
        consistency: Consistency,
        cap: int | None,
    ) -> Iterator[StoredHit]:
        """Pages of plain searches, each deeper than the last (batch, 2 x batch, 4 x batch ... at most ``cap``): what a
        search returns that was not yielded before is yielded, best first, so every row comes once (a deeper
        approximate search does not return the same first rows in the same order: slicing it by position repeated
        some and dropped others). When the searches run dry, the rows the filter matches are counted, and any the
        index never returned are found by an exact scan and yielded last, so every matching row comes."""
        seen: set[str] = set()
        depth = batch
        while True:
            want = depth if limit < 0 else min(depth, limit)
            if cap is not None and want > cap:
                if len(seen) < cap:
                    want = cap
                else:
                    raise StoreError(self._past_cap(limit))
            hits = self._search(name, vector[None], want, filter, output_fields, consistency, ef=2 * want)[0]
            exhausted = len(hits) < want
            # the tail of an approximate search is its least reliable part: yield the first half of each search (the
            # next, twice as deep, confirms the rest) and everything once the searches run dry
            sure = hits if exhausted or (limit >= 0 and want >= limit) else hits[: max(len(hits) // 2, len(seen) + 1)]
            for hit in sure:
                if hit.id not in seen:
                    seen.add(hit.id)
                    yield hit
                    if 0 <= limit <= len(seen):
                        return
            if exhausted or (limit >= 0 and want >= limit):
                break
            depth *= 2
        missing = self.rows.count(name, filter, consistency) - len(seen)
        if missing > 0:
            wanted = missing if limit < 0 else min(missing, limit - len(seen))
            yield from self.exact_search(name, vector[None], wanted, filter, output_fields, exclude=seen)[0]

    def exact_search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        *,
        exclude: set[str] | frozenset[str] = frozenset(),
        consistency: Consistency = "Strong",
    ) -> list[list[StoredHit]]:
        """Top-k rows per query vector by an exact scan of the rows ``filter`` matches (streamed, one batch in memory):
        what an approximate index missed. Rows in ``exclude`` are left out. Cost: reading those rows' vectors."""
        vectors = np.asarray(vectors, np.float32)
        best: list[list[tuple[float, str, dict[str, Any]]]] = [[] for _ in vectors]
        fields = [f for f in output_fields if f != VECTOR]
        for rows in self.rows.iter_rows(name, filter, output_fields=[*fields, VECTOR], batch=4000, consistency=consistency):
            rows = [r for r in rows if str(r[PK]) not in exclude]
            if not rows:
                continue
            scores = vectors @ np.asarray([r[VECTOR] for r in rows], np.float32).T
            for q, row_scores in enumerate(scores):
                top = np.argsort(-row_scores, kind="stable")[:k]
                merged = best[q] + [(float(row_scores[j]), str(rows[j][PK]), rows[j]) for j in top]
                best[q] = sorted(merged, key=lambda t: (-t[0], t[1]))[:k]
        return [
            [StoredHit(i, cosine(score), {f: row[f] for f in fields if f in row}) for score, i, row in found] for found in best
        ]

    def _past_cap(self, k: int) -> str:
        more = "every result" if k < 0 else f"{k:,} results"
        return (
            f"{more} asked for, past Milvus's top-k cap of {SEARCH_CAP:,}: this server ({self.conn.server_version}) "
            f"has no search iterator v2 (Milvus >= {'.'.join(map(str, ITERATOR_V2))}); upgrade it, or ask for fewer"
        )
