"""The query side: embed once per model → search each model's collection → fuse.

:class:`Client` is the Python API a user holds; the CLI is a thin layer over it. Results are
typed: each :class:`SearchHit` carries the fused score and every model's own score and rank.
Queries follow each model's alias (``imsim models activate``): the client searches the active
version's collection and loads the very model that collection was written with (its settings are
stored on it), so switching versions never needs a re-ingest. Models load lazily, on the first
query that needs them; a switch made by another process is picked up within ``ALIAS_TTL`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import fusion as fusion_maths
from .errors import ImsimError, ModelError, StoreError
from .expr import Where, both
from .images import open_query_image
from .models import Embedder, decode_size, load_model
from .settings import Settings, get_settings
from .store import VectorStore

ALIAS_TTL = 10.0  # seconds a resolved alias is trusted before it is read again


@dataclass(frozen=True)
class SearchHit:
    id: str
    path: str
    score: float  # the fused score (or the single model's cosine when fusion is "none")
    scores: dict[str, float] = field(default_factory=dict)  # model -> cosine similarity
    ranks: dict[str, int | None] = field(default_factory=dict)  # model -> 1-based rank in its own list (None: not in top-k)


class Client:
    """Search the per-model collections and fuse the results.

    >>> client = Client()                                       # settings from IMSIM_* variables
    >>> hits = client.search("query.jpg", k=10, fusion="rrf")   # doctest: +SKIP
    """

    def __init__(self, settings: Settings | None = None, *, models: dict[str, Embedder] | None = None,
                 store: VectorStore | None = None, **overrides: Any):
        """``models`` given here are used as they are, each searching its own version's collection;
        other models follow their alias and load the version it points at."""
        base = settings or get_settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self._pinned: dict[str, Embedder] = dict(models or {})
        self._models: dict[str, Embedder] = {}
        self._collections: dict[str, tuple[str, float]] = {}  # model -> (collection, when resolved)
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="imsim-search")  # threads start on first use

    # --- plumbing ----------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = VectorStore(self.settings)
        return self._store

    def collection(self, name: str) -> str:
        """The collection queries for model ``name`` use: its active version (alias), else the configured version."""
        if name in self._pinned:
            return self.store.collection_name(self._pinned[name].info)
        cached = self._collections.get(name)
        if cached and time.monotonic() - cached[1] < ALIAS_TTL:
            return cached[0]
        active = self.store.active_collection(name)
        if active is None:
            active = self.store.collection_name(self._configured(name).info)
        if cached and cached[0] != active:
            self._models.pop(name, None)  # the alias moved: load the model of the new version
        self._collections[name] = (active, time.monotonic())
        return active

    def _configured(self, name: str) -> Embedder:
        if name not in self._models:
            self._models[name] = load_model(name, self.settings)
        return self._models[name]

    def model(self, name: str) -> Embedder:
        """The model that embeds queries for ``name``: the one its active collection was written with."""
        if name in self._pinned:
            return self._pinned[name]
        collection = self.collection(name)
        if name in self._models and self.store.collection_name(self._models[name].info) == collection:
            return self._models[name]
        existing = set(self.store.collections())
        overrides = self.store.model_settings(collection) if collection in existing else {}
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        model = load_model(name, settings)
        if collection in existing and self.store.collection_name(model.info) != collection:
            raise ModelError(f"the active version of {name!r} is {collection!r}, but its model now loads as "
                             f"{model.info.source} revision {model.info.revision} (a different version): restore that model, "
                             f"or `imsim models activate {name} ...` another version")
        self._models[name] = model
        return model

    def _names(self, models: Sequence[str] | str | None) -> list[str]:
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        return list(models or self.settings.model_names)

    # --- API ---------------------------------------------------------------------------
    def embed(self, image: Any, models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """One normalised vector per model for a query image (path, bytes or PIL image)."""
        return {n: vectors[0] for n, vectors in self.embed_many([image], models).items()}

    def compare(self, a: Any, b: Any, models: Sequence[str] | str | None = None) -> dict[str, float]:
        """Cosine similarity of two images per model."""
        va, vb = self.embed(a, models), self.embed(b, models)
        return {n: float(np.dot(va[n], vb[n])) for n in va}

    def embed_many(self, images: Sequence[Any], models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """(len(images), dim) normalised vectors per model, each model run once over the whole batch."""
        names = self._names(models)
        size = decode_size(self.settings, (self.model(n) for n in names))
        pils = [open_query_image(im, min_size=size, max_pixels=self.settings.max_image_pixels) for im in images]
        return {n: self.model(n).embed_images(pils) for n in names}

    def stored_vectors(self, like: str, models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of one image, by row id or path, per model that has it (no re-embedding)."""
        from .images import path_id
        from .maintenance import ROW_ID

        row = like if ROW_ID.match(like) else path_id(like)
        found = {}
        for n in self._names(models):
            vec = self.store.get_vectors(self.collection(n), [row], self.settings.search_consistency).get(row)
            if vec is not None:
                found[n] = vec[None]
        if not found:
            raise ImsimError(f"no stored image {like!r} in the collections of {', '.join(self._names(models))}: ingest it first")
        return found

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
    ) -> list[SearchHit]:
        """Search by an image (path, bytes, PIL image), by ``text`` (text-capable models only), or ``like`` a
        stored image (row id or path: its stored vectors, nothing re-embedded). ``where`` filters on metadata
        and tags; ``filter`` is a raw Milvus expression ANDed with it."""
        queries = self._queries(image, text, like, self._names(models))
        return self.search_batch(queries, k=k, fusion=fusion, where=where, filter=filter)[0]

    def _queries(self, image: Any, text: str | None, like: str | None, names: list[str]) -> dict[str, np.ndarray]:
        """One (1, dim) query vector per model from exactly one of an image, a text or a stored image."""
        if sum(x is not None for x in (image, text, like)) != 1:
            raise ImsimError("give exactly one of an image, text, or like= (a stored id or path) to search by")
        if text is not None:
            names = [n for n in names if self.model(n).info.supports_text]
            if not names:
                raise ModelError("none of the selected models can embed text; include 'clip' in --models")
            return {n: self.model(n).embed_texts([text]) for n in names}
        if like is not None:
            return self.stored_vectors(like, names)
        return self.embed_many([image], names)

    def search_iter(self, image: Any = None, *, text: str | None = None, like: str | None = None, model: str | None = None,
                    where: Where | None = None, filter: str = "", batch: int = 1000) -> Iterator[SearchHit]:
        """Every stored image by similarity to the query under one model, best first, fetched page by page with a
        Milvus search iterator (no top-k cap): stop whenever you have enough."""
        name = model or self.settings.model_names[0]
        queries = self._queries(image, text, like, [name])
        if name not in queries:
            raise ModelError(f"model {name!r} cannot embed this query")
        expression = both(where.expression() if where else "", filter)
        rank = 0
        for hit in self.store.search_iter(self.collection(name), queries[name][0], filter=expression, batch=batch,
                                          consistency=self.settings.search_consistency):
            path = str(hit.fields.get("path", ""))
            if where is not None and not where.accepts(path):
                continue
            rank += 1
            yield SearchHit(id=hit.id, path=path, score=hit.score, scores={name: hit.score}, ranks={name: rank})

    def search_many(self, images: Sequence[Any], *, k: int = 10, models: Sequence[str] | str | None = None,
                    fusion: str | None = None, where: Where | None = None, filter: str = "") -> list[list[SearchHit]]:
        """One result list per query image; all queries embedded in one batch per model and searched in one call."""
        if not images:
            return []
        return self.search_batch(self.embed_many(images, models), k=k, fusion=fusion, where=where, filter=filter)

    def search_vectors(self, queries: dict[str, np.ndarray], *, k: int = 10, fusion: str | None = None,
                       where: Where | None = None, filter: str = "") -> list[SearchHit]:
        """Search each model's collection with its (1-d) query vector and fuse the lists."""
        return self.search_batch({n: np.asarray(v, np.float32).reshape(1, -1) for n, v in queries.items()},
                                  k=k, fusion=fusion, where=where, filter=filter)[0]

    def search_batch(self, queries: dict[str, np.ndarray], *, k: int, fusion: str | None = None, where: Where | None = None,
                     filter: str = "") -> list[list[SearchHit]]:
        """One fused result list per query row: ``queries`` maps each model to its (n, dim) query vectors."""
        method = fusion or self.settings.fusion
        if method not in fusion_maths.FUSIONS:
            raise ImsimError(f"unknown fusion {method!r}; use one of {', '.join(fusion_maths.FUSIONS)}")
        names = list(queries)
        collections = {n: self.collection(n) for n in names}
        expression = both(where.expression() if where else "", filter)
        exact = where is not None and bool(where.path_prefix or where.path_glob)
        fetch = k * 4 if exact else k  # LIKE is a superset: over-fetch, then check exactly (past 16,384: an iterator)
        level = self.settings.search_consistency
        results = self._per_model(
            names, lambda n: self.store.search(collections[n], queries[n], fetch, filter=expression, consistency=level),
            collections)
        count = len(next(iter(queries.values())))
        lists = [{n: [h for h in results[n][q] if not exact or where.accepts(str(h.fields.get("path", "")))][:k]
                  for n in names} for q in range(count)]
        # Each model's exact score for items only other models returned: one fetch per model for the whole batch.
        missing: dict[str, set[str]] = {n: set() for n in names}
        for per_model in lists:
            found = {h.id for hits in per_model.values() for h in hits}
            for n in names:
                missing[n] |= found.difference(h.id for h in per_model[n])
        vectors = self._per_model(names, lambda n: self.store.get_vectors(collections[n], sorted(missing[n]), level),
                                  collections)
        return [self._fuse(per_model, {n: queries[n][q] for n in names}, vectors, method, k) for q, per_model in enumerate(lists)]

    def _per_model(self, names: list[str], call: Callable[[str], Any], collections: dict[str, str]) -> dict[str, Any]:
        """``call(name)`` for every model, concurrently (each is a round trip to Milvus: the slowest, not the sum).

        A collection that does not exist is named in a clear error (looked up only then: no extra round trip)."""
        try:
            if len(names) == 1:
                return {names[0]: call(names[0])}
            futures = {n: self._pool.submit(call, n) for n in names}
            return {n: f.result() for n, f in futures.items()}
        except StoreError:
            existing = set(self.store.collections())
            for n in names:
                if collections[n] not in existing:
                    raise ImsimError(f"no collection {collections[n]!r} for model {n!r}: ingest images with this model first") from None
            raise

    def _fuse(self, per_model: dict[str, list[Any]], queries: dict[str, np.ndarray], vectors: dict[str, dict[str, np.ndarray]],
              method: str, k: int) -> list[SearchHit]:
        names = list(per_model)
        paths = {h.id: str(h.fields.get("path", "")) for hits in per_model.values() for h in hits}
        ranks = {n: {h.id: r for r, h in enumerate(hits, 1)} for n, hits in per_model.items()}
        scores = {n: {h.id: h.score for h in hits} for n, hits in per_model.items()}
        for n in names:
            for i in paths:
                if i not in scores[n] and i in vectors[n]:
                    scores[n][i] = float(np.dot(vectors[n][i], queries[n]))
        if method == "rrf":
            fused = fusion_maths.rrf({n: [h.id for h in per_model[n]] for n in names}, k=self.settings.rrf_k)
        elif method == "weighted":
            fused = fusion_maths.weighted(scores, self.settings.weights)
        else:  # "none": the first model's own ranking
            fused = {h.id: h.score for h in per_model[names[0]]}
        return [
            SearchHit(id=i, path=paths[i], score=s, scores={n: scores[n][i] for n in names if i in scores[n]},
                      ranks={n: ranks[n].get(i) for n in names})
            for i, s in fusion_maths.order(fused, k)
        ]

    def collections(self) -> list[Any]:
        return self.store.summaries()

    # --- jobs and upkeep (thin: the work happens in workers, imsim.queue and imsim.maintenance) ---
    def ingest(self, paths: Sequence[str], *, force: bool = False, tags: dict[str, str] | None = None) -> str:
        """Queue files, folders or globs for the workers; returns the job id (see :meth:`job`).

        ``tags`` ({"key": "value"}) are stored with every image and usable in ``Where(tags=...)``."""
        from .images import discover
        from .queue import enqueue

        files = discover(paths)
        if not files:
            raise ImsimError(f"no image files found in {', '.join(map(str, paths))}")
        return enqueue(files, self.settings, inputs=[str(p) for p in paths], force=force, tags=tags)

    def job(self, job_id: str) -> Any:
        """A job's :class:`~imsim.jobs.JobStatus`: totals, times, and every failed path with its reason."""
        from .jobs import JobStore

        return JobStore(self.settings.redis_url.get_secret_value()).get(job_id)

    def retry(self, job_id: str) -> str:
        """Queue the files that failed in ``job_id`` as a new job; returns its id."""
        from .queue import retry

        return retry(job_id, self.settings)

    def delete(self, selectors: str | Sequence[str]) -> dict[str, int]:
        """Delete rows by id, path, folder or glob (one, or a list) from every collection; returns rows removed
        per collection. A single string is one selector, never its characters (``"/"`` would select everything)."""
        from . import maintenance

        chosen = [selectors] if isinstance(selectors, str) else list(selectors)
        return maintenance.delete(self.store, maintenance.select(self.store, chosen))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        if self._store is not None:
            self._store.close()
