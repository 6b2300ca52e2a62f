"""The client's models and versions: which collection each model's queries use (its alias, re-read every
``ALIAS_TTL`` seconds), the model that embeds them (loaded once from the config stored on that collection), and query
images embedded exactly as ingest embeds files: the ``models`` part of :class:`imsim.client.local.Client`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import models as registry
from ..embedding import EmbeddingStep
from ..errors import ModelError, NotFound
from ..models import Embedder
from ..models.whitened import WhitenedEmbedder
from ..settings import Settings
from ..store import VectorStore, derived
from ..timing import StageTimes
from .queries import embed_queries

log = logging.getLogger(__name__)
ALIAS_TTL = 10.0  # seconds a resolved alias is trusted before it is read again


class Models:
    """The client's models part (see the module doc): which version each model's queries use, the model that embeds
    them, and query images embedded as ingest embeds files. ``store`` opens (or gives) the one store the client uses."""

    def __init__(self, settings: Settings, store: Callable[[], VectorStore], embedders: Mapping[str, Embedder] | None = None):
        """``embedders`` given here are used as they are, each searching its own version's collection; other models
        follow their alias."""
        self.settings = settings
        self._store = store
        self._pinned: dict[str, Embedder] = dict(embedders or {})
        self._models: dict[str, Embedder] = {}
        self._aliases: dict[str, tuple[str | None, float]] = {}  # model -> (active collection or None, when read)
        self._steps: dict[tuple[str, ...], tuple[tuple[int, ...], EmbeddingStep]] = {}

    @property
    def store(self) -> VectorStore:
        return self._store()

    def names(self, models: Sequence[str] | str | None = None) -> list[str]:
        """Model names from a list, a comma-separated string, or the settings."""
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        chosen = list(models or self.settings.model_names)
        for name in chosen:
            registry.family(name)  # an unknown name is a clear error
        return chosen

    def _active(self, name: str) -> str | None:
        cached = self._aliases.get(name)
        if cached and time.monotonic() - cached[1] < ALIAS_TTL:
            return cached[0]
        active = self.store.versions.active_collection(name)
        self._aliases[name] = (active, time.monotonic())
        return active

    def collection(self, name: str) -> str:
        """The collection queries for model ``name`` use: its active version (alias), else the configured version's."""
        if name in self._pinned:
            return self.store.versions.collection_name(self._pinned[name].info)
        active = self._active(name)
        return active if active is not None else self.store.versions.collection_name(self.model(name).info)

    def model(self, name: str) -> Embedder:
        """The model that embeds queries for ``name``: the one its active collection was written with, loaded once
        from the config stored on that collection (identity first, weights once)."""
        if name in self._pinned:
            return self._pinned[name]
        active = self._active(name)
        cached = self._models.get(name)
        if cached is not None and (active is None or self.store.versions.collection_name(cached.info) == active):
            return cached
        if active is None:
            model = registry.load_model(name, self.settings)
        else:
            model = self._load_version(name, active)
        self._models[name] = model
        return model

    def _load_version(self, name: str, collection: str) -> Embedder:
        """The model that wrote ``collection``: loaded from the config stored on it (on its base collection for a derived
        version, then followed by the version's whitening), checked to compute exactly that version."""
        base = derived.base_of(self.store, collection)
        source = base or collection
        config = self.store.versions.model_config(source, registry.config_class(name)) or self.settings.family(name)
        model = registry.load(name, config, self.settings.runtime)
        if base is not None and self.store.versions.collection_name(model.info) == base:
            model = WhitenedEmbedder(model, derived.transform(self.store, collection))
        if self.store.versions.collection_name(model.info) != collection:
            raise ModelError(
                f"the active version of {name!r} is {collection!r}, but its model now loads as {model.info.source} "
                f"revision {model.info.revision} (version {model.info.version_tag}): restore that model, "
                f"or `imsim models activate {name} ...` another version"
            )
        return model

    def random_weights(self, models: Sequence[str] | str | None = None) -> list[str]:
        """The models (of ``models``, default the configured ones) whose loaded weights are random (a demo or test
        model built where the hub was unreachable): their similarities mean nothing, and every output says so."""
        from ..models.base import random_weights

        return [n for n in self.names(models) if random_weights(self.model(n).info.source)]

    def _step(self, names: Sequence[str]) -> EmbeddingStep:
        models = {n: self.model(n) for n in names}
        key = tuple(names)
        ids = tuple(id(m) for m in models.values())
        cached = self._steps.get(key)
        if cached is None or cached[0] != ids:
            if cached is not None:
                cached[1].close()
            self._steps[key] = (ids, EmbeddingStep.from_settings(self.settings, models))
        return self._steps[key][1]

    # --- embedding --------------------------------------------------------------------------------
    def embed(self, image: Any, models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """One normalised vector per model for a query image (path, bytes or PIL image)."""
        return {n: vectors[0] for n, vectors in self.embed_many([image], models).items()}

    def embed_many(
        self, images: Sequence[Any], models: Sequence[str] | str | None = None, times: StageTimes | None = None
    ) -> dict[str, np.ndarray]:
        """(len(images), dim) normalised vectors per model, decoded exactly as ingest decodes files (``times``: where
        the time went, per stage and per model)."""
        return embed_queries(self._step(self.names(models)), list(images), times)

    def stored_vectors(self, like: str, models: Sequence[str] | str | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of one image, by row id or path, per model that has it (no re-embedding)."""
        from ..maintenance import ROW_ID
        from ..sources.names import path_id

        row = like if ROW_ID.match(like) else path_id(like)
        found = {}
        for n in self.names(models):
            vec = self.store.rows.get_vectors(self.collection(n), [row], self.settings.search_consistency).get(row)
            if vec is not None:
                found[n] = vec[None]
        if not found:
            raise NotFound(f"no stored image {like!r} in the collections of {', '.join(self.names(models))}: ingest it first")
        return found

    def close(self) -> None:
        for _, step in self._steps.values():
            step.close()
