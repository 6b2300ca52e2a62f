"""The query side: embed once per model → search each model's collection → fuse.

:class:`Client` is the Python API a user holds; the CLI is a thin layer over it. Results are typed: each
:class:`SearchHit` carries the fused score and every model's own score and rank. Queries follow each
model's alias (``imsim models activate``): the client reads which version is active, then loads that
version's model from the config stored on its collection (once), so switching versions never needs a
re-ingest and never pairs one model's query vectors with another's stored ones. A switch made by another
process is picked up within ``ALIAS_TTL`` seconds. Path filters return exactly k results when k exist:
the client deepens the search until enough rows pass the exact check (within the server's top-k cap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self

import numpy as np

from .. import fusion as fusion_maths
from .. import models as registry
from ..errors import ImsimError, ModelError, StoreError
from ..expr import Where, both
from ..fusion import SearchHit
from ..models import Embedder
from ..settings import Settings, get_settings
from ..store import StoredHit, VectorStore, cosine, open_store
from ..vocabulary import SearchOptions
from .jobs import Jobs
from .models import Models

log = logging.getLogger(__name__)
DEEPEN = 4  # each deeper search asks for this many times more rows, when exact path checks dropped some


MAX_TOPIC_FILTER = 20_000  # a search filtered by a topic names its members' ids in the expression
PAGE_BLOCK = 50  # fused rankings are made this deep (or a multiple): pages within a block agree


class Client:
    """Search the per-model collections and fuse the results; ``client.models`` (versions, the models that embed
    queries) and ``client.jobs`` (queue, follow, retry, cancel) are its parts.

    >>> client = Client(models="clip")                          # any setting as a keyword, validated
    >>> hits = client.search("query.jpg", k=10, fusion="rrf")   # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedders: Mapping[str, Embedder] | None = None,
        store: VectorStore | None = None,
        **overrides: Any,
    ):
        """``overrides`` are settings by keyword name (``milvus_uri=``, ``models="clip"``, ``dinov2_pooling=``);
        an unknown name or a bad value is a :class:`~imsim.errors.ConfigError`. ``embedders`` given here are
        used as they are, each searching its own version's collection; other models follow their alias."""
        base = settings or get_settings()
        self.settings = base.replace(**overrides) if overrides else base
        self._store = store
        self._own_store = store is None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="imsim-search")  # threads start on first use
        self.models = Models(self.settings, lambda: self.store, embedders)
        self.jobs = Jobs(self.settings)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def store(self) -> VectorStore:
        """The store the client searches (opened on first use)."""
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.models.close()
        if self._store is not None and self._own_store:
            self._store.close()

    def compare(self, a: Any, b: Any, models: Sequence[str] | str | None = None) -> dict[str, float]:
        """Cosine similarity of two images per model."""
        vectors = self.models.embed_many([a, b], models)
        return {n: cosine(np.dot(v[0], v[1])) for n, v in vectors.items()}

    # --- search -----------------------------------------------------------------------------------
    def search(
        self,
        image: Any = None,
        *,
        text: str | None = None,
        like: str | None = None,
        k: int = 10,
        models: Sequence[str] | str | None = None,
        fusion: str | None = None,
        where: Where | None = None,
        filter: str = "",
        offset: int = 0,
        options: SearchOptions | None = None,
    ) -> list[SearchHit]:
        """Search by an image (path, bytes, PIL image), by ``text`` (text-capable models only), or ``like`` a
        stored image (row id or path: its stored vectors, nothing re-embedded). ``where`` filters on metadata
        and tags; ``filter`` is a raw Milvus expression ANDed with it (one balanced expression over known fields);
        ``offset`` skips that many results (the next page). ``options`` (the vocabulary's
        :class:`~imsim.vocabulary.SearchOptions`, as the CLI and the API build them) stands for all of these."""
        if options is not None:
            k, models, fusion, filter, offset = options.k, options.models or None, options.fusion, options.filter, options.offset
            members = self.topic_members(options.clustering, options.cluster) if options.cluster is not None else None
            where = options.where(members)
        queries = self._queries(image, text, like, self.models.names(models))
        return self.search_batch(queries, k=k, fusion=fusion, where=where, filter=filter, offset=offset)[0]

    def topic_members(self, clustering: str, cluster: int) -> list[str]:
        """The ids in topic ``cluster`` of ``clustering`` (the newest clustering when ''), for a search filter."""
        from ..store.clustering import Clusterings

        keep = Clusterings(self.store)
        kept = keep.kept()
        if not kept:
            raise ImsimError("no clustering yet: run `imsim clusters` before filtering by cluster")
        name = clustering or str(kept[0]["name"])
        meta = next((m for m in kept if m["name"] == name), None)
        if meta is None:
            raise ImsimError(f"no clustering {name!r}; kept: {', '.join(str(m['name']) for m in kept)}")
        if not 0 <= cluster < int(meta["k"]):
            raise ImsimError(f"cluster {cluster}: clustering {name} has clusters 0 to {int(meta['k']) - 1}")
        members = keep.members(name, cluster, limit=MAX_TOPIC_FILTER + 1)
        if len(members) > MAX_TOPIC_FILTER:
            raise ImsimError(
                f"cluster {cluster} of {name} holds more than {MAX_TOPIC_FILTER:,} images: too many to filter a search "
                "by; cluster with a larger k"
            )
        return members

    def _queries(self, image: Any, text: str | None, like: str | None, names: list[str]) -> dict[str, np.ndarray]:
        """One (1, dim) query vector per model from exactly one of an image, a text or a stored image."""
        if sum(x is not None for x in (image, text, like)) != 1:
            raise ImsimError("give exactly one of an image, text, or like= (a stored id or path) to search by")
        if text is not None:
            if not text.strip():
                raise ImsimError("the text query is empty: give the words to search for")
            names = [n for n in names if self.models.model(n).info.supports_text]
            if not names:
                raise registry.no_text_model(names)
            return {n: self.models.model(n).embed_texts([text]) for n in names}
        if like is not None:
            return self.models.stored_vectors(like, names)
        return self.models.embed_many([image], names)

    def search_iter(
        self,
        image: Any = None,
        *,
        text: str | None = None,
        like: str | None = None,
        model: str | None = None,
        where: Where | None = None,
        filter: str = "",
        batch: int = 1000,
    ) -> Iterator[SearchHit]:
        """Every stored image by similarity to the query under one ``model``, best first, fetched page by page
        (no top-k cap): stop whenever you have enough."""
        name = model or self.settings.model_names[0]
        queries = self._queries(image, text, like, self.models.names([name]))
        if name not in queries:
            raise ModelError(f"model {name!r} cannot embed this query")
        collection = self.models.collection(name)
        expression = self._expression(collection, where, filter)
        rank = 0
        for hit in self.store.searching.search_iter(
            collection, queries[name][0], filter=expression, batch=batch, consistency=self.settings.search_consistency
        ):
            path = str(hit.fields.get("path", ""))
            if where is not None and not where.accepts(path):
                continue
            rank += 1
            yield SearchHit(id=hit.id, path=path, score=hit.score, scores={name: hit.score}, ranks={name: rank})

    def search_many(
        self,
        images: Sequence[Any],
        *,
        k: int = 10,
        models: Sequence[str] | str | None = None,
        fusion: str | None = None,
        where: Where | None = None,
        filter: str = "",
    ) -> list[list[SearchHit]]:
        """One result list per query image; all queries embedded in one batch per model and searched in one call."""
        if not images:
            return []
        return self.search_batch(self.models.embed_many(images, models), k=k, fusion=fusion, where=where, filter=filter)

    def _expression(self, collection: str, where: Where | None, filter: str) -> str:
        checked = self.store.searching.check_filter(collection, filter) if filter.strip() else ""
        return both(where.expression(self.store.connection.like_dialect) if where else "", checked)

    def _top(self, collection: str, vectors: np.ndarray, k: int, expression: str, where: Where | None) -> list[list[StoredHit]]:
        """Top k per query vector among rows passing ``where``'s exact path checks: deepens the search while the
        LIKE pre-filter's extra rows crowd out real matches, up to the server's top-k cap."""
        level = self.settings.search_consistency
        fetch, cap = k, self.store.connection.search_cap
        while True:
            hits = self.store.searching.search(collection, vectors, fetch, filter=expression, consistency=level)
            if where is None or not where.needs_exact_check:
                return hits
            kept = [[h for h in row if where.accepts(str(h.fields.get("path", "")))] for row in hits]
            if all(len(good) >= k or len(row) < fetch for row, good in zip(hits, kept, strict=True)):
                return [good[:k] for good in kept]
            if cap is not None and fetch >= cap:
                log.warning("fewer than %d matches of the path filter within Milvus's top-%d cap", k, cap)
                return [good[:k] for good in kept]
            fetch = fetch * DEEPEN if cap is None else min(fetch * DEEPEN, cap)

    def search_batch(
        self,
        queries: dict[str, np.ndarray],
        *,
        k: int,
        fusion: str | None = None,
        where: Where | None = None,
        filter: str = "",
        offset: int = 0,
    ) -> list[list[SearchHit]]:
        """One fused result list per query row: ``queries`` maps each model to its (n, dim) query vectors; ``offset``
        results are skipped. A fused ranking depends on how deep each model's list goes (an image past one model's
        list has no rank there), so several models are asked for ``offset + k`` rounded up to :data:`PAGE_BLOCK`: the
        pages inside one block come from one ranking and never repeat or skip an image."""
        method = fusion or self.settings.fusion
        if method not in fusion_maths.FUSIONS:
            raise ImsimError(f"unknown fusion {method!r}; use one of {', '.join(fusion_maths.FUSIONS)}")
        if k < 1 or offset < 0:
            raise ImsimError(f"k must be at least 1 and offset at least 0, got k={k}, offset={offset}")
        page, k = (offset, k), offset + k
        names = list(queries)
        if len(names) > 1:
            k = -(-k // PAGE_BLOCK) * PAGE_BLOCK
        collections = {n: self.models.collection(n) for n in names}
        method = self.resolve_fusion(method, names)
        calibrated = self.calibrated_fusion(names) if method == "calibrated" and len(names) > 1 else None
        expressions = self._per_model(names, lambda n: self._expression(collections[n], where, filter), collections)
        lists_by_model = self._per_model(
            names, lambda n: self._top(collections[n], queries[n], k, expressions[n], where), collections
        )
        count = len(next(iter(queries.values())))
        lists = [{n: lists_by_model[n][q] for n in names} for q in range(count)]
        # Each model's exact score for items only other models returned: one fetch per model for the whole batch.
        wanted = fusion_maths.missing(lists)
        level = self.settings.search_consistency
        vectors = self._per_model(
            names, lambda n: self.store.rows.get_vectors(collections[n], sorted(wanted[n]), level), collections
        )
        how = fusion_maths.Method(method, rrf_k=self.settings.rrf_k, weights=self.settings.weights, calibrated=calibrated)
        return [
            fusion_maths.assemble(per_model, {n: queries[n][q] for n in names}, vectors, how, k)[page[0] : page[0] + page[1]]
            for q, per_model in enumerate(lists)
        ]

    def resolve_fusion(self, method: str, names: Sequence[str]) -> str:
        """``auto`` made concrete for these models: one model, its own cosine (``none``); several, the calibrated
        fusion when `imsim eval apply` kept one for exactly their active versions, else ``rrf``."""
        if method != "auto":
            return method
        if len(names) < 2:
            return "none"
        try:
            self.calibrated_fusion(names)
        except ImsimError:
            return "rrf"
        return "calibrated"

    def calibrated_fusion(self, names: Sequence[str]) -> tuple[dict[str, float], float]:
        """(weights, bias) of the calibrated fusion of these models' active versions, fitted by `imsim eval run` on a
        labelled benchmark and applied with `imsim eval apply`; a clear error when there is none."""
        from .. import calibration

        versions = [(n, self.store.versions.properties(self.models.collection(n)).get("version", "")) for n in names]
        key = calibration.fused_key("calibrated", versions)
        found = calibration.fusion_params(calibration.path(self.settings.data_dir), key)
        if found is None:
            raise ImsimError(
                f"no calibrated fusion for {key}: fit one on your images (`imsim eval run --bench ... --fusion calibrated`) "
                "and apply it (`imsim eval apply OUT/calibration.json`), or use --fusion rrf or weighted"
            )
        return found

    def _per_model(self, names: list[str], call: Callable[[str], Any], collections: dict[str, str]) -> dict[str, Any]:
        """``call(name)`` for every model, concurrently (each is a round trip to Milvus: the slowest, not the sum).

        A collection that does not exist is named in a clear error (looked up only then: no extra round trip)."""
        try:
            if len(names) == 1:
                return {names[0]: call(names[0])}
            futures = {n: self._pool.submit(call, n) for n in names}
            return {n: f.result() for n, f in futures.items()}
        except StoreError:
            existing = set(self.store.versions.collections())
            for n in names:
                if collections[n] not in existing:
                    raise ImsimError(
                        f"no collection {collections[n]!r} for model {n!r}: ingest images with this model first"
                    ) from None
            raise

    def collections(self) -> list[Any]:
        return self.store.rows.summaries()

    def delete(self, selectors: str | Sequence[str]) -> dict[str, int]:
        """Delete rows by id, path, folder or glob (one, or a list) from every collection; returns rows removed
        per collection. A single string is one selector, never its characters (``"/"`` would select everything)."""
        from .. import maintenance

        chosen = [selectors] if isinstance(selectors, str) else list(selectors)
        return maintenance.delete(self.store, [maintenance.resolve(self.store, s) for s in chosen])
