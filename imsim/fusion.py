r"""Merging per-model result lists into one ranking: reciprocal-rank fusion, weighted scores, a calibrated match
probability, or none.

Pure functions over plain data (no Milvus, no models), so the maths is tested on hand-made
rankings; :func:`assemble` turns each model's hits for one query into fused :class:`SearchHit`\ s carrying every
model's score and rank. Milvus's own hybrid search fuses vector fields inside one collection only; imsim
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
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

FUSIONS = ("auto", "rrf", "weighted", "calibrated", "none")
# "auto" (the default) is resolved by the client: one model -> "none" (its own cosine), several -> "calibrated" where
# `imsim eval apply` kept a fit for exactly the versions searched, else "rrf".


def cosine(value: float) -> float:
    """A cosine as Milvus reports it, within [-1, 1] (float32 rounding gave 1.0000001 for an image against itself)."""
    return min(1.0, max(-1.0, float(value)))


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


# --- assembling fused hits from per-model result lists ---------------------------------------------------------
@dataclass(frozen=True)
class SearchHit:
    id: str
    path: str
    score: float  # the fused score (or the single model's cosine when fusion is "none")
    scores: dict[str, float] = field(default_factory=dict)  # model -> cosine similarity
    ranks: dict[str, int | None] = field(default_factory=dict)  # model -> 1-based rank in its own list (None: not in top-k)


class Ranked(Protocol):
    """One model's hit as its store returned it (:class:`imsim.store.StoredHit` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Method:
    """How to fuse: ``name`` one of :data:`FUSIONS`, with RRF's k, the weighted fusion's weights (empty: equal) and
    the calibrated fusion's (weights, bias)."""

    name: str
    rrf_k: int = 60
    weights: Mapping[str, float] = field(default_factory=dict)
    calibrated: tuple[dict[str, float], float] | None = None


def missing(lists: Sequence[Mapping[str, Sequence[Ranked]]]) -> dict[str, set[str]]:
    """For a batch of queries (each: model -> its hits), the ids each model lacks a score for: those only other models
    returned. Fetching their vectors once per model for the whole batch gives every hit every model's score."""
    names = list(lists[0]) if lists else []
    out: dict[str, set[str]] = {n: set() for n in names}
    for per_model in lists:
        found = {h.id for hits in per_model.values() for h in hits}
        for n in names:
            out[n] |= found.difference(h.id for h in per_model[n])
    return out


def assemble(
    per_model: Mapping[str, Sequence[Ranked]],
    queries: Mapping[str, np.ndarray],
    vectors: Mapping[str, Mapping[str, np.ndarray]],
    method: Method,
    k: int,
) -> list[SearchHit]:
    """One query's fused top ``k``: each model's list (``per_model``), each model's query vector, and the stored vectors
    of the ids a model did not return (``vectors``, see :func:`missing`), so every hit carries every model's cosine
    and rank, fused by ``method``."""
    names = list(per_model)
    paths = {h.id: str(h.fields.get("path", "")) for hits in per_model.values() for h in hits}
    ranks = {n: {h.id: r for r, h in enumerate(hits, 1)} for n, hits in per_model.items()}
    scores = {n: {h.id: float(h.score) for h in hits} for n, hits in per_model.items()}
    for n in names:
        for i in paths:
            if i not in scores[n] and i in vectors[n]:
                scores[n][i] = cosine(np.dot(vectors[n][i], queries[n]))
    if method.name == "rrf":
        fused = rrf({n: [h.id for h in per_model[n]] for n in names}, k=method.rrf_k)
    elif method.name == "weighted":
        fused = weighted(scores, method.weights or None)
    elif method.name == "calibrated" and method.calibrated is not None:
        fused = calibrated(scores, *method.calibrated)
    else:  # "none": the first model's own ranking
        fused = {h.id: h.score for h in per_model[names[0]]}
    return [
        SearchHit(
            id=i,
            path=paths[i],
            score=s,
            scores={n: scores[n][i] for n in names if i in scores[n]},
            ranks={n: ranks[n].get(i) for n in names},
        )
        for i, s in order(fused, k)
    ]
