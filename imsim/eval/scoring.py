"""Scoring an evaluation's rankings: a method's metrics, the calibrated fusion (fitted and cross-fitted by query
folds), duplicate links and groups against the true pairs, and the score-normalised variant's exact rankings. Pure
functions over rankings and vectors: nothing here reaches a store or a model (PCA-whitening runs through the store's
derived versions, as in production: :mod:`imsim.whitening`, :mod:`imsim.store.derived`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from .. import calibration
from .. import fusion as fusion_maths
from . import metrics
from .results import CV_FOLDS, K_VALUES, PREDICTIONS_PER_QUERY, MethodResult


def duplicate_quality(
    edges: Sequence[tuple[str, str, float]],
    threshold: float,
    positives: set[tuple[str, str]],
    ids: Sequence[str],
    link_share: float = 0.5,
) -> dict[str, float]:
    """Precision and recall of the links at ``threshold`` (edges) and of the groups they make (every pair inside a
    group, as `imsim duplicates` groups them with ``link_share``: what a user is shown), against the positive pairs."""
    from ..duplicates import linked_groups

    kept = [(a, b, s) for a, b, s in edges if s >= threshold]
    edge_pairs = {(a, b) for a, b, _ in kept}
    groups = linked_groups(ids, kept, link_share)
    components = linked_groups(ids, kept, 0.0)  # what connected components (link share 0) would show, for comparison

    def pairs(found: list[list[str]]) -> set[tuple[str, str]]:
        return {(a, b) for g in found for i, a in enumerate(g) for b in g[i + 1 :]}  # g is sorted: a < b

    group_pairs, component_pairs = pairs(groups), pairs(components)
    right_edges, right_groups = len(edge_pairs & positives), len(group_pairs & positives)
    right_components = len(component_pairs & positives)
    return {
        "threshold": threshold,
        "edge_precision": right_edges / len(edge_pairs) if edge_pairs else 0.0,
        "edge_recall": right_edges / len(positives) if positives else 0.0,
        "group_precision": right_groups / len(group_pairs) if group_pairs else 0.0,
        "group_recall": right_groups / len(positives) if positives else 0.0,
        "groups": float(len(groups)),
        "largest_group": float(max((len(g) for g in groups), default=0)),
        "component_precision": right_components / len(component_pairs) if component_pairs else 0.0,
        "component_recall": right_components / len(positives) if positives else 0.0,
    }


def score_method(label: str, kind: str, rankings: dict[str, list[tuple[str, float]]], truth: dict[str, str]) -> MethodResult:
    """Metrics of one method from its per-query rankings [(reference id, score), ...] (best first)."""
    predictions = [(q, r, s) for q, ranked in rankings.items() for r, s in ranked[:PREDICTIONS_PER_QUERY]]
    curve = metrics.pr_curve(predictions, truth)
    return MethodResult(
        label=label,
        kind=kind,
        recall={k: metrics.recall_at_k({q: r[:PREDICTIONS_PER_QUERY] for q, r in rankings.items()}, truth, k) for k in K_VALUES},
        micro_ap=metrics.micro_ap(curve),
        recall_at_p90=curve.recall_at_precision(0.90),
        thresholds={f"p{round(p * 100)}": curve.threshold_for_precision(p) for p in calibration.PRECISIONS},
        curve=curve,
        rankings=rankings,
        truth=dict(truth),
    )


Candidates = dict[str, list[tuple[str, list[float]]]]  # query -> [(reference id, every model's cosine), ...]


def fit_fusion(candidates: Candidates, truth: dict[str, str], queries: Sequence[str]) -> tuple[np.ndarray, float]:
    """(weights, bias) of the calibrated fusion fitted on these queries' candidates, labelled by the ground truth
    (equal weights when they hold no positive or no negative: nothing to learn from)."""
    x = [features for q in queries for _, features in candidates[q]]
    y = [float(truth.get(q) == ref) for q in queries for ref, _ in candidates[q]]
    width = len(next(iter(candidates.values()), [("", [0.0])])[0][1]) if candidates else 1
    if not x or len(set(y)) < 2:
        return np.ones(width) / width, 0.0
    return fusion_maths.fit_logistic(np.asarray(x), np.asarray(y))


def fold_of(query: str, folds: int = CV_FOLDS) -> int:
    """A query's fold, from its id alone (the same split in every run)."""
    return int(hashlib.sha256(query.encode()).hexdigest(), 16) % folds


def cross_fitted(
    candidates: Candidates,
    truth: dict[str, str],
    depth: int,
    folds: int = CV_FOLDS,
    fit: Callable[[Candidates, dict[str, str], Sequence[str]], tuple[np.ndarray, float]] = fit_fusion,
) -> dict[str, list[tuple[str, float]]]:
    """Each query's candidates ranked by match probability, with weights fitted on the other folds only: a query is
    never scored by weights that saw its own label."""
    rankings: dict[str, list[tuple[str, float]]] = {}
    for fold in range(folds):
        held_out = [q for q in candidates if fold_of(q, folds) == fold]
        if not held_out:
            continue
        weights, bias = fit(candidates, truth, [q for q in candidates if fold_of(q, folds) != fold])
        for q in held_out:
            scored = [(ref, float(1 / (1 + np.exp(-(bias + float(np.dot(weights, x))))))) for ref, x in candidates[q]]
            rankings[q] = sorted(scored, key=lambda t: (-t[1], t[0]))[:depth]
    return rankings


def exact_rankings(
    queries: np.ndarray, refs: np.ndarray, ref_ids: list[str], query_ids: list[str], depth: int, offsets: np.ndarray | None = None
) -> dict[str, list[tuple[str, float]]]:
    sims = queries @ refs.T
    if offsets is not None:
        sims = sims - offsets[:, None]
    top = np.argsort(-sims, axis=1)[:, :depth]
    return {q: [(ref_ids[j], float(sims[i, j])) for j in top[i]] for i, q in enumerate(query_ids)}


def score_normalised(
    queries: dict[str, np.ndarray],
    references: dict[str, tuple[list[str], np.ndarray]],
    query_ids: list[str],
    truth: dict[str, str],
    depth: int,
    background: dict[str, np.ndarray],
) -> list[MethodResult]:
    """Per model label, ``+norm``: each query's scores (exact, over its stored ``references``: ids, matrix) minus its
    similarity to the nearest ``background`` image."""
    out = []
    for label, q in queries.items():
        ref_ids, refs = references[label]
        offsets = (q @ background[label].T).max(axis=1)  # similarity to the nearest background image
        ranked = exact_rankings(q, refs, ref_ids, query_ids, depth, offsets)
        out.append(score_method(f"{label}+norm", "variant", ranked, truth))
    return out
