"""A derived model version: another version's model with a learned whitening applied to everything it embeds.

A whitened version is not a new network: it is the base version's model (loaded from the config stored on the base
collection) followed by a fixed transform (:class:`~imsim.whitening.Whitening`), so queries, ingest and the stored
vectors of a derived collection all pass through the same two steps. Its :class:`~imsim.models.base.ModelInfo` is the
base's with the output dimension, a variant (``pcaw256``) and ``derived`` (the base tag and the transform's digest)
changed: a new version tag, a collection of its own, never mixed with the base's vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..whitening import Whitening
from .base import Embedder, ModelInfo, Preprocess


def variant_of(base: ModelInfo, whitening: Whitening) -> str:
    label = f"pcaw{whitening.dim}"
    return f"{base.variant}+{label}" if base.variant else label


def whitened_info(base: ModelInfo, whitening: Whitening) -> ModelInfo:
    """The derived version's identity: the base's, plus the transform (so its tag names base and transform alike)."""
    learned = whitening.meta.get("learned_on", "stored vectors")
    return dataclasses.replace(
        base,
        dim=whitening.dim,
        variant=variant_of(base, whitening),
        derived=f"pcaw:{base.version_tag}:{whitening.digest}",
        description=f"{base.description} PCA-whitened to {whitening.dim}-d on {whitening.rows:,} {learned}.".strip(),
        extra={
            **base.extra,
            "derived_from_version": base.version_tag,
            "transform": f"pcaw {whitening.input_dim}->{whitening.dim}",
            "transform_sha": whitening.digest,
            "transform_rows": str(whitening.rows),
        },
    )


class WhitenedEmbedder:
    """An :class:`~imsim.models.base.Embedder` whose vectors are the base model's, whitened."""

    def __init__(self, base: Embedder, whitening: Whitening):
        if whitening.input_dim != base.info.dim:
            raise ValueError(f"a {whitening.input_dim}-d whitening cannot follow {base.info.name}'s {base.info.dim}-d vectors")
        self.base = base
        self.whitening = whitening
        self.info = whitened_info(base.info, whitening)
        self.preprocess: Preprocess = base.preprocess
        self.device = base.device

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        return self.whitening.apply(self.base.embed_uint8(batch))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.whitening.apply(self.base.embed_texts(texts))
