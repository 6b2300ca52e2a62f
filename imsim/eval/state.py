"""What the parts of one evaluation share (:class:`~imsim.eval.runner.Evaluation` holds it; its whitened variants and
its duplicate calibration read and fill it): the models, the settings, the output folder, the progress line, the
report as it grows, the whitened versions written and the fusion weights fitted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..models import Embedder
from ..models.whitened import WhitenedEmbedder
from ..settings import Settings
from .results import EvalReport


@dataclass
class EvalState:
    models: dict[str, Embedder]  # label -> model
    settings: Settings  # the evaluation's own store and prefix
    base_settings: Settings  # the user's: their store's marks and whitened versions are read through it
    out: Path
    progress: Callable[[str], None]
    report: EvalReport
    whitened: dict[str, tuple[str, str, WhitenedEmbedder]] = field(default_factory=dict)  # variant -> (model, collection, model)
    fusion_fits: dict[str, tuple[str, dict[str, float], float]] = field(default_factory=dict)  # label -> (key, weights, bias)
