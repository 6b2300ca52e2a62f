"""What an evaluation produces, as data: per-method scores, duplicate calibration, group retrieval and the whole
report. Kept apart from the runner so a report can be read, rendered or compared without importing the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import metrics

if TYPE_CHECKING:
    from ..models.base import ModelInfo

K_VALUES = (1, 3, 10)
CV_FOLDS = 5  # the calibrated fusion is scored on each fifth of the queries with weights fitted on the other four
GROUP_DEPTH = 100  # ranks scored per group query (mAP@100): deep top-k searches are slow on Milvus Lite
PREDICTIONS_PER_QUERY = 10  # DISC21-style: each query contributes its top 10 (query, reference, score) triples


@dataclass
class MethodResult:
    """One way of answering (a model, a fusion, or a descriptor variant) and how well it did."""

    label: str
    kind: str  # "model", "fusion" or "variant"
    recall: dict[int, float]
    micro_ap: float
    recall_at_p90: float
    thresholds: dict[str, float | None]  # "p90" / "p95" -> score threshold
    curve: metrics.PRCurve | None = None
    calibration_key: str = ""
    rankings: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # query -> top (reference, score)
    truth: dict[str, str] = field(default_factory=dict)

    @property
    def score_kind(self) -> str:
        """What the scores (and so the thresholds) are: cosine similarities, or RRF's rank-fusion sums."""
        return "rank-fusion score (sum of 1/(60+rank))" if self.label == "fused:rrf" else "similarity"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "recall": {f"@{k}": round(v, 4) for k, v in self.recall.items()},
            "micro_ap": round(self.micro_ap, 4),
            "recall_at_p90": round(self.recall_at_p90, 4),
            "score_kind": self.score_kind,
            "thresholds": {k: (round(v, 6) if v is not None else None) for k, v in self.thresholds.items()},
            "calibration_key": self.calibration_key,
            "per_query": {
                q: {
                    "reference": self.truth.get(q),
                    "ranking": [[r, round(score, 6)] for r, score in ranked[:PREDICTIONS_PER_QUERY]],
                }
                for q, ranked in sorted(self.rankings.items())
            },
        }


@dataclass
class DuplicateResult:
    """How `imsim duplicates` does on the benchmark with one method: calibrated on the pairs it links (each stored
    image's nearest neighbours among references and queries together), then measured at the chosen thresholds."""

    label: str
    kind: str  # "model" or "fusion"
    calibration_key: str
    images: int  # stored images (references + queries)
    positives: int  # ground-truth copy pairs (query, its reference)
    pairs_seen: int  # pairs the neighbour search proposes at any score
    recall_seen: float  # share of the positives among them (the ceiling of any threshold)
    thresholds: dict[str, float | None]  # "p90" / "p95" -> lowest score with that pair precision
    at: dict[str, dict[str, float]] = field(default_factory=dict)  # "p90"/"p95" -> what `imsim duplicates` returns
    curve: metrics.PRCurve | None = None
    marked_negatives: int = 0  # pairs people marked "not a duplicate" in the user's store, calibrated as negatives

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "calibration_key": self.calibration_key,
            "images": self.images,
            "positives": self.positives,
            "pairs_seen": self.pairs_seen,
            "recall_seen": round(self.recall_seen, 4),
            "marked_negatives": self.marked_negatives,
            "thresholds": {k: (round(v, 6) if v is not None else None) for k, v in self.thresholds.items()},
            "at": {k: {m: round(v, 4) for m, v in d.items()} for k, d in self.at.items()},
        }


@dataclass
class GroupResult:
    label: str
    kind: str
    map: float
    recall: dict[int, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "map": round(self.map, 4),
            "recall": {f"@{k}": round(v, 4) for k, v in self.recall.items()},
        }


def model_facts(info: ModelInfo) -> dict[str, Any]:
    """What a report says of one evaluated model: name, source, revision, version, dim, variant, random weights."""
    from ..models.base import random_weights

    return {
        "name": info.name,
        "source": info.source,
        "revision": info.revision,
        "version": info.version_tag,
        "dim": info.dim,
        "variant": info.variant,
        "random_weights": random_weights(info.source),
    }


@dataclass
class EvalReport:
    models: dict[str, dict[str, Any]]  # label -> name, source, revision, version, dim
    throughput: dict[str, float]  # label -> images/s (model forward), plus "ingest" (end to end)
    copydetect: list[MethodResult] = field(default_factory=list)
    groups: list[GroupResult] = field(default_factory=list)
    duplicates: list[DuplicateResult] = field(default_factory=list)
    bench: dict[str, Any] = field(default_factory=dict)
    group_info: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    calibration_file: str = ""
    fusion_weights: dict[str, float] = field(default_factory=dict)  # the calibrated fusion fitted on every query

    @property
    def recommendation(self) -> str:
        """Which method to use for copy detection, in one sentence, with how to apply it: of every method scored
        (models, whitened variants, fusions), the highest µAP among those at least as good as the best single model
        on both µAP and R@1 (measured with tied scores counted against them, the reference definition)."""
        singles = [r for r in self.copydetect if r.kind == "model"]
        if not singles:
            return ""
        random = sorted(label for label, facts in self.models.items() if facts.get("random_weights"))
        if random:
            return (
                f"none: {', '.join(random)} {'has' if len(random) == 1 else 'have'} RANDOM weights, so these numbers "
                "measure the pipeline, not which model to use (run again with real weights)"
            )
        best = max(singles, key=lambda r: (r.micro_ap, r.recall[1]))
        top_r1 = max(r.recall[1] for r in singles)
        earning = [r for r in self.copydetect if r.micro_ap >= best.micro_ap and r.recall[1] >= top_r1 and r is not best]
        choice = max(earning, key=lambda r: (r.micro_ap, r.recall[1])) if earning else best
        said = f"use {choice.label}: µAP {100 * choice.micro_ap:.1f}, R@1 {100 * choice.recall[1]:.1f}"
        if choice is best:
            if len(singles) < 2 and len(self.copydetect) == 1:
                return f"use {best.label}"
            return (
                f"{said} (no other method reached the best single model's µAP {100 * best.micro_ap:.1f} and "
                f"R@1 {100 * top_r1:.1f} together on this benchmark)"
            )
        return (
            f"{said}; the best single model {best.label}: µAP {100 * best.micro_ap:.1f}, best single R@1 "
            f"{100 * top_r1:.1f} ({self.how_to_apply(choice.label)})"
        )

    @property
    def gain(self) -> dict[str, Any]:
        """The recommended method against the best single model: µAP and R@1 differences in points."""
        singles = [r for r in self.copydetect if r.kind == "model"]
        if not singles or not self.copydetect:
            return {}
        best = max(singles, key=lambda r: (r.micro_ap, r.recall[1]))
        top_r1 = max(r.recall[1] for r in singles)
        choice = max(
            (r for r in self.copydetect if r.micro_ap >= best.micro_ap and r.recall[1] >= top_r1),
            key=lambda r: (r.micro_ap, r.recall[1]),
            default=best,
        )
        return {
            "method": choice.label,
            "best_single": best.label,
            "micro_ap_points": round(100 * (choice.micro_ap - best.micro_ap), 1),
            "recall_at_1_points": round(100 * (choice.recall[1] - top_r1), 1),
        }

    def how_to_apply(self, label: str) -> str:
        """The commands that make `imsim search` and `imsim duplicates` answer with method ``label``."""
        base = label.split("+", 1)[0]
        name = self.models.get(base, {}).get("name", base)
        if label.startswith("fused:calibrated+pcaw(store)"):
            return (
                "activate your whitened versions (`imsim models`), `imsim eval apply` this calibration, "
                "search with --fusion calibrated"
            )
        if label.startswith("fused:calibrated+pcaw"):
            return (
                "whiten each model on your collection (`imsim models whiten MODEL --activate`), run this evaluation again "
                "with --pca-whiten to fit the fusion on those versions, `imsim eval apply` it, search with --fusion calibrated"
            )
        if label == "fused:calibrated":
            return "`imsim eval apply` this calibration, then search with --fusion calibrated"
        if label.startswith("fused:"):
            return f"search with --fusion {label.removeprefix('fused:')}"
        if label.endswith("+pcaw(store)"):
            return f"activate your whitened version of {name} (`imsim models`, then `imsim models activate {name} TAG`)"
        if "+pcaw" in label:
            return f"`imsim models whiten {name} --activate`: whitening learned on your own collection"
        return f"search with {name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
            "gain": self.gain,
            "fusion_weights": self.fusion_weights,
            "models": self.models,
            "throughput": {k: round(v, 2) for k, v in self.throughput.items()},
            "bench": self.bench,
            "copydetect": [m.as_dict() for m in self.copydetect],
            "group_info": self.group_info,
            "groups": [g.as_dict() for g in self.groups],
            "duplicates": [d.as_dict() for d in self.duplicates],
            "failures": self.failures,
            "calibration_file": self.calibration_file,
        }
