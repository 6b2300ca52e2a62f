"""The query side: embed once per model → search each model's collection → fuse.

:class:`Client` is the Python API a user holds; the CLI is a thin layer over it. Results are
typed: each :class:`SearchHit` carries the fused score and every model's own score and rank.
Models load lazily, on the first query that needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import fusion as fusion_maths
from .errors import ImsimError, ModelError
from .images import open_query_image
from .models import Embedder, decode_size, load_model
from .settings import Settings, get_settings
from .store import VectorStore


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
        base = settings or get_settings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self._models: dict[str, Embedder] = dict(models or {})
        self._store = store

    # --- plumbing ----------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = VectorStore(self.settings)
        return self._store

    def model(self, name: str) -> Embedder:
        if name not in self._models:
            self._models[name] = load_model(name, self.settings)
        return self._models[name]

    def _names(self, models: Sequence[str] | str | None) -> list[str]:
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        return list(models or self.settings.model_names)

    # --- API ---------------------------------------------------------------------------
    def embed(self, image: Any, models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """One normalised vector per model for a query image (path, bytes or PIL image)."""
        names = self._names(models)
        size = decode_size(self.settings, (self.model(n) for n in names))
        pil = open_query_image(image, min_size=size, max_pixels=self.settings.max_image_pixels)
        return {n: self.model(n).embed_images([pil])[0] for n in names}

    def compare(self, a: Any, b: Any, models: Sequence[str] | str | None = None) -> dict[str, float]:
        """Cosine similarity of two images per model."""
        va, vb = self.embed(a, models), self.embed(b, models)
        return {n: float(np.dot(va[n], vb[n])) for n in va}

    def search(
        self,
        image: Any = None,
        *,
        text: str | None = None,
        k: int = 10,
        models: Sequence[str] | str | None = None,
        fusion: str | None = None,
        filter: str = "",
    ) -> list[SearchHit]:
        """Search by image (path, bytes, PIL image) or by ``text`` (text-capable models only)."""
        if (image is None) == (text is None):
            raise ImsimError("give exactly one of an image or text to search by")
        names = self._names(models)
        if text is not None:
            names = [n for n in names if self.model(n).info.supports_text]
            if not names:
                raise ModelError("none of the selected models can embed text; include 'clip' in --models")
            queries = {n: self.model(n).embed_texts([text])[0] for n in names}
        else:
            queries = self.embed(image, names)
        return self.search_vectors(queries, k=k, fusion=fusion, filter=filter)

    def search_vectors(self, queries: dict[str, np.ndarray], *, k: int = 10, fusion: str | None = None,
                       filter: str = "") -> list[SearchHit]:
        """Search each model's collection with its query vector and fuse the lists."""
        method = fusion or self.settings.fusion
        if method not in fusion_maths.FUSIONS:
            raise ImsimError(f"unknown fusion {method!r}; use one of {', '.join(fusion_maths.FUSIONS)}")
        names = list(queries)
        collections = {n: self.store.collection_name(self.model(n).info) for n in names}
        existing = set(self.store.collections())
        for n, c in collections.items():
            if c not in existing:
                raise ImsimError(f"no collection {c!r} for model {n!r}: ingest images with this model first")
        per_model = {n: self.store.search(collections[n], queries[n][None], k, filter=filter)[0] for n in names}
        paths = {h.id: str(h.fields.get("path", "")) for hits in per_model.values() for h in hits}
        ranks = {n: {h.id: r for r, h in enumerate(hits, 1)} for n, hits in per_model.items()}
        scores = {n: {h.id: h.score for h in hits} for n, hits in per_model.items()}
        # Fill in each model's exact score for items only other models returned.
        for n in names:
            missing = [i for i in paths if i not in scores[n]]
            for i, vec in self.store.get_vectors(collections[n], missing).items():
                scores[n][i] = float(np.dot(vec, queries[n]))
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
    def ingest(self, paths: Sequence[str], *, force: bool = False) -> str:
        """Queue files, folders or globs for the workers; returns the job id (see :meth:`job`)."""
        from .images import discover
        from .queue import enqueue

        files = discover(paths)
        if not files:
            raise ImsimError(f"no image files found in {', '.join(map(str, paths))}")
        return enqueue(files, self.settings, inputs=[str(p) for p in paths], force=force)

    def job(self, job_id: str) -> Any:
        """A job's :class:`~imsim.jobs.JobStatus`: totals, times, and every failed path with its reason."""
        from .jobs import JobStore

        return JobStore(self.settings.redis_url.get_secret_value()).get(job_id)

    def retry(self, job_id: str) -> str:
        """Queue the files that failed in ``job_id`` as a new job; returns its id."""
        from .queue import retry

        return retry(job_id, self.settings)

    def delete(self, selectors: Sequence[str]) -> dict[str, int]:
        """Delete rows by id, path, folder or glob from every collection; returns rows removed per collection."""
        from . import maintenance

        return maintenance.delete(self.store, maintenance.select(self.store, list(selectors)))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
