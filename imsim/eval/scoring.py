"""Scoring an evaluation's rankings: a method's metrics, the calibrated fusion (fitted and cross-fitted by query
folds), duplicate links and groups against the true pairs, and the descriptor variants' exact rankings (PCA
whitening). Pure functions over rankings and vectors: nothing here reaches a store or a model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from .. import calibration
from .. import fusion as fusion_maths
from . import metrics
from .results import CV_FOLDS, K_VALUES, PREDICTIONS_PER_QUERY, MethodResult


def duplicate_quality(
    edges: Sequence[tuple[str, str, float]], threshold: float, positives: set[tuple[str, str]], ids: Sequence[str]
) -> dict[str, float]:
    """Precision and recall of the links at ``threshold`` (edges) and of the groups they make (every pair inside a
    connected component, which is what a user of `imsim duplicates` is shown), against the positive pairs."""
    from ..duplicates import components

    kept = [(a, b, s) for a, b, s in edges if s >= threshold]
    edge_pairs = {(a, b) for a, b, _ in kept}
    groups = components(ids, kept)
    group_pairs = {(a, b) for g in groups for i, a in enumerate(g) for b in g[i + 1 :]}  # g is sorted: a < b
    right_edges, right_groups = len(edge_pairs & positives), len(group_pairs & positives)
    return {
        "threshold": threshold,
        "edge_precision": right_edges / len(edge_pairs) if edge_pairs else 0.0,
        "edge_recall": right_edges / len(positives) if positives else 0.0,
        "group_precision": right_groups / len(group_pairs) if group_pairs else 0.0,
        "group_recall": right_groups / len(positives) if positives else 0.0,
        "groups": float(len(groups)),
        "largest_group": float(max((len(g) for g in groups), default=0)),
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


def pca_whitening(train: np.ndarray, dim: int | None = None, eps_ratio: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection): x → normalise((x - mean) @ projection), whitened on ``train``'s principal axes.

    ``dim`` components at most (default: all the training set supports); eigenvalues are floored at
    ``eps_ratio`` x their mean so near-empty directions are not blown up."""
    mean = train.mean(axis=0)
    _, sing, vt = np.linalg.svd(train - mean, full_matrices=False)
    var = sing**2 / max(len(train) - 1, 1)
    keep = min(dim or len(var), int(np.sum(var > 1e-12)))
    var, vt = var[:keep], vt[:keep]
    projection = vt.T / np.sqrt(var + eps_ratio * var.mean())
    return mean, projection


def project(mean: np.ndarray, projection: np.ndarray, x: np.ndarray) -> np.ndarray:
    y = (x - mean) @ projection
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def exact_rankings(
    queries: np.ndarray, refs: np.ndarray, ref_ids: list[str], query_ids: list[str], depth: int, offsets: np.ndarray | None = None
) -> dict[str, list[tuple[str, float]]]:
    sims = queries @ refs.T
    if offsets is not None:
        sims = sims - offsets[:, None]
    top = np.argsort(-sims, axis=1)[:, :depth]
    return {q: [(ref_ids[j], float(sims[i, j])) for j in top[i]] for i, q in enumerate(query_ids)}


def descriptor_variants(
    queries: dict[str, np.ndarray],
    references: dict[str, tuple[list[str], np.ndarray]],
    query_ids: list[str],
    truth: dict[str, str],
    depth: int,
    *,
    whiten: bool = False,
    background: dict[str, np.ndarray] | None = None,
) -> list[MethodResult]:
    """Per model label, scored by exact search over its stored ``references`` (ids, matrix): ``+pcaw`` with
    PCA-whitening learned on the references, ``+norm`` (given ``background`` vectors) with each query's scores minus
    its similarity to the nearest background image."""
    out = []
    for label, q in queries.items():
        ref_ids, refs = references[label]
        if whiten:
            mean, projection = pca_whitening(refs)
            ranked = exact_rankings(project(mean, projection, q), project(mean, projection, refs), ref_ids, query_ids, depth)
            out.append(score_method(f"{label}+pcaw", "variant", ranked, truth))
        if background is not None:
            offsets = (q @ background[label].T).max(axis=1)  # similarity to the nearest background image
            ranked = exact_rankings(q, refs, ref_ids, query_ids, depth, offsets)
            out.append(score_method(f"{label}+norm", "variant", ranked, truth))
    return out
