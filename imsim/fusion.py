"""Merging per-model result lists into one ranking: reciprocal-rank fusion, weighted scores, a calibrated match
probability, or none.

Pure functions over plain data (no Milvus, no models), so the maths is tested on hand-made
rankings. Milvus's own hybrid search fuses vector fields inside one collection only; imsim
keeps one collection per model, so fusion happens here, on the client.

Each model's cosine lives on its own scale (an SSCD cosine of 0.5 is a near-certain copy, a CLIP cosine of 0.5
means little), so a mean of raw cosines weighs them arbitrarily and rank fusion throws the scale away (RRF gives
rank 1 the same score whether it is a copy or not, which costs it µAP). ``calibrated`` maps the models' cosines
together to a match probability, ``sigmoid(bias + sum of weight x cosine)``, with weights fitted by logistic
regression on a labelled benchmark (:func:`fit_logistic`; ``imsim eval run`` fits them on the user's images and
``imsim eval apply`` keeps them): scores comparable across models and across queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

FUSIONS = ("rrf", "weighted", "calibrated", "none")


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


def calibrated(scores: Mapping[str, Mapping[str, float]], weights: Mapping[str, float], bias: float) -> dict[str, float]:
    """A match probability per item: ``sigmoid(bias + sum over models of weights[model] x cosine)``. An item without
    a score from a model counts that model's cosine as 0; a model without a weight counts for nothing."""
    items = {i for s in scores.values() for i in s}
    fused = {}
    for item in items:
        logit = bias + sum(float(weights.get(m, 0.0)) * s.get(item, 0.0) for m, s in scores.items())
        fused[item] = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return fused


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> tuple[np.ndarray, float]:
    """(weights, bias) of a logistic regression of ``labels`` (0/1) on ``features`` (n x models), by Newton's method
    (IRLS) with a small L2 penalty on the weights (so separable data still has a finite answer)."""
    x = np.hstack([np.asarray(features, np.float64), np.ones((len(features), 1))])
    y = np.asarray(labels, np.float64)
    theta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2 * len(y))
    penalty[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -700, 700)))
        gradient = x.T @ (p - y) + penalty * theta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta[:-1], float(theta[-1])


def order(fused: Mapping[str, float], limit: int | None = None) -> list[tuple[str, float]]:
    """Items best first; ties broken by id so the order is deterministic."""
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit] if limit is not None else ranked
