"""The model registry: models are chosen by name; each family lives in its own module.

A family module defines its config class (``IMSIM_<NAME>_<FIELD>`` settings), its embedder and a
``FAMILY`` entry (:class:`~imsim.models.base.Family`). Adding a family is one module, one line in
:data:`FAMILIES` and one row in docs/models.md (docs/contributing.md has the checklist); a family
defined elsewhere (a plugin, a test) joins with :func:`register`. Family modules import torch lazily,
so reading the registry or the settings never loads torch (never in a Celery parent process).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from ..errors import ModelError
from .base import Embedder, Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime, embed_arrays, embed_images


class ModelSettings(Protocol):
    """What loading models needs from the settings (:class:`imsim.settings.Settings` has it): the registry never
    imports the settings, which compose the families' configs from the registry."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def model_names(self) -> list[str]: ...

    def family(self, name: str) -> FamilyConfig: ...


# name -> module defining FAMILY (architectures as data; imported on first use)
FAMILIES: dict[str, str] = {
    "clip": "imsim.models.clip",
    "clip_onnx": "imsim.models.clip_onnx",
    "siglip2": "imsim.models.siglip2",
    "dinov2": "imsim.models.dinov2",
    "vit": "imsim.models.vit",
    "efficientnet": "imsim.models.efficientnet",
    "blip2": "imsim.models.blip2",
    "vgg16": "imsim.models.vgg16",
    "sscd": "imsim.models.sscd",
    "onnx": "imsim.models.onnx",
}
_registered: dict[str, Family[Any]] = {}


def register(family: Family[Any]) -> None:
    """Add a family defined outside this package (settings made after this call read its ``IMSIM_*`` fields)."""
    if family.name in FAMILIES:
        raise ModelError(f"a model family named {family.name!r} is already built in")
    _registered[family.name] = family


def names() -> list[str]:
    """Every registered model name, in registry order."""
    return [*FAMILIES, *(n for n in _registered if n not in FAMILIES)]


def family(name: str) -> Family[Any]:
    if name in _registered:
        return _registered[name]
    if name not in FAMILIES:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(names()))}")
    entry: Family[Any] = importlib.import_module(FAMILIES[name]).FAMILY
    return entry


def text_models() -> list[str]:
    """The registered models whose card says they embed text (a text tower beside the image one)."""
    return [n for n in names() if family(n).card.text]


def no_text_model(selected: list[str]) -> ModelError:
    """The error for a text query when none of ``selected`` has a text tower, naming the models that do."""
    return ModelError(
        f"none of the selected models ({', '.join(selected)}) has a text tower; text search needs one of "
        f"{', '.join(text_models())} in --models / IMSIM_MODELS (their weights come from the model hub)"
    )


def config_class(name: str) -> type[FamilyConfig]:
    return family(name).config


def model_card(name: str) -> ModelCard:
    """The card of a registered model (no weights loaded)."""
    return family(name).card


def load(name: str, config: FamilyConfig, runtime: Runtime) -> Embedder:
    """Load model ``name`` as ``config`` describes it (a stored config of a collection, or the settings')."""
    entry = family(name)
    if not isinstance(config, entry.config):
        config = entry.config.model_validate(config.model_dump())
    return entry.load(config, runtime)


def load_model(name: str, settings: ModelSettings) -> Embedder:
    return load(name, settings.family(name), settings.runtime)


def load_models(settings: ModelSettings, selected: list[str] | None = None) -> dict[str, Embedder]:
    """Load the enabled models (or ``selected``), keyed by registry name, in settings order."""
    return {name: load_model(name, settings) for name in (selected or settings.model_names)}


__all__ = [
    "FAMILIES",
    "Embedder",
    "Family",
    "FamilyConfig",
    "ModelCard",
    "ModelInfo",
    "Preprocess",
    "Runtime",
    "config_class",
    "embed_arrays",
    "embed_images",
    "family",
    "load",
    "load_model",
    "load_models",
    "model_card",
    "names",
    "no_text_model",
    "register",
    "text_models",
]
