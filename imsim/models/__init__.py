"""The model registry: models are chosen by name; each family lives in its own module.

``load_model("clip", settings)`` imports the family lazily (torch and transformers load
only when a model is needed, never in a Celery parent process) and returns an
:class:`~imsim.models.base.Embedder`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ModelError
from .base import Embedder, ModelCard, ModelInfo, Preprocess, quiet_transformers

if TYPE_CHECKING:
    from ..settings import Settings

# name -> "module:Class" (architectures as data; imported on first use)
REGISTRY: dict[str, str] = {
    "clip": "imsim.models.clip:ClipEmbedder",
    "dinov2": "imsim.models.dinov2:Dinov2Embedder",
    "vit": "imsim.models.vit:VitEmbedder",
    "efficientnet": "imsim.models.efficientnet:EfficientNetEmbedder",
    "blip2": "imsim.models.blip2:Blip2Embedder",
    "vgg16": "imsim.models.vgg16:Vgg16Embedder",
    "sscd": "imsim.models.sscd:SscdEmbedder",
    "onnx": "imsim.models.onnx:OnnxEmbedder",
}


def embedder_class(name: str) -> type[Embedder]:
    try:
        module, _, cls = REGISTRY[name].partition(":")
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None
    return getattr(importlib.import_module(module), cls)


def model_card(name: str) -> ModelCard:
    """The card of a registered model (no weights loaded)."""
    return embedder_class(name).card


def load_model(name: str, settings: Settings) -> Embedder:
    cls = embedder_class(name)
    quiet_transformers()
    model = cls.from_settings(settings)
    if model.device == "cpu":  # large batches are slower on CPU (activations fall out of cache)
        model.batch_size = min(model.batch_size, settings.cpu_batch_size)
    return model


def decode_size(settings: Settings, models: Iterable[Embedder]) -> int:
    """The one JPEG draft size used for ingest and query alike, so the same file decodes the same way."""
    return max([settings.decode_size, *(m.preprocess.draft_size for m in models)])


def load_models(settings: Settings, names: list[str] | None = None) -> dict[str, Embedder]:
    """Load the enabled models (or ``names``), keyed by registry name, in settings order."""
    return {name: load_model(name, settings) for name in (names or settings.model_names)}


__all__ = ["REGISTRY", "Embedder", "ModelCard", "ModelInfo", "Preprocess", "decode_size", "embedder_class", "load_model", "load_models",
           "model_card"]
