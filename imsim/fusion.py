"""Merging per-model result lists into one ranking: reciprocal-rank fusion, weighted scores, or none.

Pure functions over plain data (no Milvus, no models), so the maths is tested on hand-made
rankings. Milvus's own hybrid search fuses vector fields inside one collection only; imsim
keeps one collection per model, so fusion happens here, on the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FUSIONS = ("rrf", "weighted", "none")


def rrf(rankings: Mapping[str, Sequence[str]], k: int = 60) -> dict[str, float]:
    """Reciprocal-rank fusion: ``sum over models of 1 / (k + rank)``, ranks starting at 1.

    An item absent from a model's list contributes nothing for that model.
    """
    fused: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


def weighted(scores: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Weighted mean of each model's similarity score.

    ``weights`` defaults to equal; they are normalised to sum to 1 over the models given.
    An item without a score from a model counts that model's score as 0.
    """
    models = list(scores)
    raw = {m: float((weights or {}).get(m, 1.0 if not weights else 0.0)) for m in models}
    if any(w < 0 for w in raw.values()):
        raise ValueError(f"fusion weights must be non-negative, got {raw}")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"fusion weights {dict(weights or {})} give no weight to any of the models {models}")
    fused: dict[str, float] = {}
    for model in models:
        w = raw[model] / total
        for item, score in scores[model].items():
            fused[item] = fused.get(item, 0.0) + w * score
    items = {i for s in scores.values() for i in s}
    return {i: fused.get(i, 0.0) for i in items}


def order(fused: Mapping[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    """Items best first; ties broken by id so the order is deterministic."""
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit] if limit is not None else ranked
