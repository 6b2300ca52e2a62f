"""Which models an evaluation compares: model specs such as ``dinov2@dinov2_pooling=cls+gem`` (a family with settings
of its own), parsed, checked against the known settings and loaded through the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ImsimError
from ..models import Embedder, load_model
from ..settings import Settings, known_variables


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: a registry name plus setting overrides (``label`` = the spec as written)."""

    label: str
    name: str
    overrides: dict[str, str] = field(default_factory=dict)


def parse_models(text: str) -> list[ModelSpec]:
    """``clip,dinov2,gem=dinov2@dinov2_pooling=cls+gem;dinov2_model=...`` → specs.

    A spec is ``[LABEL=]NAME[@SETTING=VALUE;...]``; the label (default: the spec as written) names it in reports."""
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        head, _, rest = part.partition("@")
        label, _, name = head.rpartition("=")
        label = label.strip() or part
        overrides = {}
        for item in filter(None, rest.split(";")):
            key, sep, value = item.partition("=")
            if not sep or f"IMSIM_{key.strip().upper()}" not in known_variables():
                raise ImsimError(f"model spec {part!r}: {item!r} is not SETTING=VALUE for a known setting")
            overrides[key.strip()] = value.strip()
        specs.append(ModelSpec(label, name.strip(), overrides))
    if not specs:
        raise ImsimError("no models to evaluate")
    if len({s.label for s in specs}) != len(specs):
        raise ImsimError(f"a model spec is given twice in {text!r}")
    return specs


def load_specs(specs: Sequence[ModelSpec], settings: Settings) -> dict[str, Embedder]:
    models = {}
    for spec in specs:
        spec_settings = settings.replace(**spec.overrides) if spec.overrides else settings
        models[spec.label] = load_model(spec.name, spec_settings)
    return models
