"""Retrieval and copy-detection metrics, as the literature defines them. Pure functions over plain data.

Copy detection follows DISC21 (the Image Similarity Challenge) as Meta's reference code defines it
(``facebookresearch/isc2021``, ``isc/metrics.py``): every prediction is a ``(query, reference, score)``
triple; all predictions of all queries are ranked together by score, **predictions with equal scores ordered
false first** (the worst case, so that a constant score cannot earn a good µAP); ``micro_ap`` is the sum over
that ranking of precision times the recall gained, with recall counted over the ground-truth pairs (queries
without a copy add only false positives, which is what makes "no copy" answers matter). The operating point for
a target precision is the one with the highest recall among those that reach it, and of those the highest score
(the safest threshold that keeps that recall). Recall@k is per ground-truth pair, ties counted pessimistically:
the true reference's rank is the number of that query's predictions scoring at least as high as it. A pair
predicted twice counts once, at its best score (the reference refuses such input). Group retrieval (images that
belong together) uses mean average precision over queries, ties ordered the same worst-case way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Prediction = tuple[str, str, float]  # (query id, reference id, score)


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall after each prediction of the global ranking (best score first, ties false first), with
    its score."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray

    def operating_point(self, target: float) -> int | None:
        """The index of the operating point for ``target`` precision: the highest recall with precision >= target,
        and of the points with that recall the first (highest score); None if precision never reaches it."""
        ok = np.nonzero(self.precision >= target)[0]
        if not len(ok):
            return None
        return int(ok[np.argmax(self.recall[ok])])

    def recall_at_precision(self, target: float) -> float:
        """The highest recall at which precision is still >= ``target`` (0 if never)."""
        index = self.operating_point(target)
        return float(self.recall[index]) if index is not None else 0.0

    def threshold_for_precision(self, target: float) -> float | None:
        """The score threshold of the operating point for ``target`` (see :meth:`operating_point`): predictions
        scoring at least this keep that precision (a tie below the point holds only true predictions, by the
        false-first order). None when no threshold reaches it."""
        index = self.operating_point(target)
        return float(self.scores[index]) if index is not None else None


def worst_case_order(scores: Sequence[float], hits: Sequence[bool]) -> list[int]:
    """Indices by decreasing score, equal scores false first: the order every metric here ranks predictions in."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], bool(hits[i])))


def pr_curve(predictions: Iterable[Prediction], truth: Mapping[str, str | set[str]]) -> PRCurve:
    """The global precision-recall curve. ``truth`` maps each query with a copy to its reference id(s).

    A (query, reference) pair predicted twice counts once, at its best score."""
    best: dict[tuple[str, str], float] = {}
    for q, r, s in predictions:
        if (q, r) not in best or s > best[(q, r)]:
            best[(q, r)] = s
    positives = sum(len(v) if isinstance(v, (set, frozenset)) else 1 for v in truth.values())
    pairs = list(best)
    scores = [best[p] for p in pairs]
    hits = [_is_match(truth, q, r) for q, r in pairs]
    order = worst_case_order(scores, hits)
    ranked_hits = np.array([hits[i] for i in order], dtype=float)
    tp = np.cumsum(ranked_hits)
    n = np.arange(1, len(ranked_hits) + 1)
    return PRCurve(
        precision=tp / np.maximum(n, 1),
        recall=tp / max(positives, 1),
        scores=np.array([scores[i] for i in order], dtype=float),
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


Ranked = Sequence[tuple[str, float]]  # one query's predictions: (reference id, score), any order


def recall_at_k(rankings: Mapping[str, Ranked], truth: Mapping[str, str | set[str]], k: int) -> float:
    """Share of the ground-truth pairs whose reference ranks within the first ``k`` of its query's predictions, ties
    counted against it (its rank is how many of the query's predictions score at least as high); a pair never
    predicted is not found."""
    pairs = [(q, r) for q, want in truth.items() for r in (sorted(want) if isinstance(want, (set, frozenset)) else [want])]
    if not pairs:
        return 0.0
    found = 0
    for q, r in pairs:
        ranked = rankings.get(q, [])
        score = max((s for ref, s in ranked if ref == r), default=None)
        if score is not None and sum(1 for _, s in ranked if s >= score) <= k:
            found += 1
    return found / len(pairs)


def average_precision(ranking: Ranked, relevant: set[str]) -> float:
    """AP of one query's predictions: mean over the relevant items of the precision at the rank each is found,
    equal scores ordered irrelevant first (relevant items never retrieved contribute 0)."""
    if not relevant:
        return 0.0
    order = worst_case_order([s for _, s in ranking], [r in relevant for r, _ in ranking])
    found, total = 0, 0.0
    for i, index in enumerate(order, 1):
        if ranking[index][0] in relevant:
            found += 1
            total += found / i
    return total / len(relevant)


def _members(groups: Mapping[str, str]) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {}
    for item, group in groups.items():
        members.setdefault(group, set()).add(item)
    return members


def mean_average_precision(rankings: Mapping[str, Ranked], groups: Mapping[str, str]) -> float:
    """mAP for group retrieval: each query's relevant items are the other members of its group (itself excluded)."""
    members = _members(groups)
    aps = []
    for q, ranking in rankings.items():
        relevant = members.get(groups.get(q, ""), set()) - {q}
        if relevant:
            aps.append(average_precision([(r, s) for r, s in ranking if r != q], relevant))
    return float(np.mean(aps)) if aps else 0.0


def group_recall_at_k(rankings: Mapping[str, Ranked], groups: Mapping[str, str], k: int) -> float:
    """Share of queries (with at least one other group member) that find a member of their group within their first
    ``k`` predictions, ties counted against them (as :func:`recall_at_k`)."""
    members = _members(groups)
    wins, total = 0, 0
    for q, ranking in rankings.items():
        relevant = members.get(groups.get(q, ""), set()) - {q}
        if not relevant:
            continue
        total += 1
        others = [(r, s) for r, s in ranking if r != q]
        best = max((s for r, s in others if r in relevant), default=None)
        wins += best is not None and sum(1 for _, s in others if s >= best) <= k
    return wins / total if total else 0.0
