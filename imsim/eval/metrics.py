"""Retrieval and copy-detection metrics, as the literature defines them. Pure functions over plain data.

Copy detection follows DISC21 (the Image Similarity Challenge): every prediction is a
``(query, reference, score)`` triple; all predictions of all queries are ranked together by score;
``micro_ap`` is the area under that single precision-recall curve, with recall counted over the
ground-truth pairs (queries without a copy add only false positives, which is what makes
"no copy" answers matter). Recall@k is per query: is the true reference in its top k.
Group retrieval (images that belong together) uses mean average precision over queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Prediction = tuple[str, str, float]  # (query id, reference id, score)


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall after each prediction of the global ranking (best score first), with its score."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray

    def recall_at_precision(self, target: float) -> float:
        """The highest recall at which precision is still >= ``target`` (0 if never)."""
        ok = self.precision >= target
        return float(self.recall[ok].max()) if ok.any() else 0.0

    def threshold_for_precision(self, target: float) -> float | None:
        """The lowest score threshold whose predictions (score >= threshold) have precision >= ``target``.

        None when no threshold reaches it. Ties share a threshold, so the curve is read at the last
        prediction of each score."""
        if not len(self.scores):
            return None
        last_of_tie = np.append(self.scores[1:] != self.scores[:-1], True)
        ok = (self.precision >= target) & last_of_tie
        if not ok.any():
            return None
        return float(self.scores[np.nonzero(ok)[0].max()])


def pr_curve(predictions: Iterable[Prediction], truth: Mapping[str, str | set[str]]) -> PRCurve:
    """The global precision-recall curve. ``truth`` maps each query with a copy to its reference id(s).

    A (query, reference) pair predicted twice counts once, at its best score."""
    best: dict[tuple[str, str], float] = {}
    for q, r, s in predictions:
        if (q, r) not in best or s > best[(q, r)]:
            best[(q, r)] = s
    positives = sum(len(v) if isinstance(v, (set, frozenset)) else 1 for v in truth.values())
    ranked = sorted(best.items(), key=lambda kv: -kv[1])  # stable: ties keep input order
    hits = np.array([_is_match(truth, q, r) for (q, r), _ in ranked], dtype=float)
    tp = np.cumsum(hits)
    n = np.arange(1, len(hits) + 1)
    return PRCurve(
        precision=tp / np.maximum(n, 1), recall=tp / max(positives, 1), scores=np.array([s for _, s in ranked], dtype=float)
    )


def _is_match(truth: Mapping[str, str | set[str]], q: str, r: str) -> bool:
    want = truth.get(q)
    if want is None:
        return False
    return r in want if isinstance(want, (set, frozenset)) else r == want


def micro_ap(curve: PRCurve) -> float:
    """DISC21's µAP: sum over the ranking of precision x the recall gained at that prediction."""
    if not len(curve.recall):
        return 0.0
    gained = np.diff(np.concatenate([[0.0], curve.recall]))
    return float(np.sum(gained * curve.precision))


def recall_at_k(rankings: Mapping[str, Sequence[str]], truth: Mapping[str, str | set[str]], k: int) -> float:
    """Share of the queries that have a copy whose (a) true reference is among their first ``k`` results."""
    queries = [q for q in truth if truth[q]]
    if not queries:
        return 0.0
    return sum(any(_is_match(truth, q, r) for r in rankings.get(q, [])[:k]) for q in queries) / len(queries)


def average_precision(ranking: Sequence[str], relevant: set[str]) -> float:
    """AP of one ranked list: mean over the relevant items of the precision at the rank each is found
    (relevant items never retrieved contribute 0)."""
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for i, item in enumerate(ranking, 1):
        if item in relevant:
            found += 1
            total += found / i
    return total / len(relevant)


def mean_average_precision(rankings: Mapping[str, Sequence[str]], groups: Mapping[str, str]) -> float:
    """mAP for group retrieval: each query's relevant items are the other members of its group (itself excluded)."""
    members: dict[str, set[str]] = {}
    for item, group in groups.items():
        members.setdefault(group, set()).add(item)
    aps = []
    for q, ranking in rankings.items():
        relevant = members.get(groups.get(q, ""), set()) - {q}
        if relevant:
            aps.append(average_precision([r for r in ranking if r != q], relevant))
    return float(np.mean(aps)) if aps else 0.0


def group_recall_at_k(rankings: Mapping[str, Sequence[str]], groups: Mapping[str, str], k: int) -> float:
    """Share of queries (with at least one other group member) that find a member of their group in their top ``k``."""
    members: dict[str, set[str]] = {}
    for item, group in groups.items():
        members.setdefault(group, set()).add(item)
    wins, total = 0, 0
    for q, ranking in rankings.items():
        relevant = members.get(groups.get(q, ""), set()) - {q}
        if relevant:
            total += 1
            wins += any(r in relevant for r in [r for r in ranking if r != q][:k])
    return wins / total if total else 0.0
