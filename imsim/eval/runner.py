"""Run an evaluation: ingest through the normal pipeline into a namespace of its own, query, score.

Copy detection (a benchmark folder from :mod:`imsim.eval.build`): the references are ingested with
every model (one Milvus collection per model version, prefix ``imsimeval``, by default in a Milvus
Lite file inside the output folder), the queries are embedded by the same decode path and searched per
model and fused (:meth:`imsim.query.Client.search_batch`), and each method is scored with
:mod:`imsim.eval.metrics`: recall@1/3/10, µAP, recall at 90 % precision, and the score thresholds
for 90 % / 95 % precision (stored for ``imsim duplicates``, see :mod:`imsim.calibration`).

Optional descriptor variants, scored by exact (numpy) search over the same stored vectors:
``+pcaw`` PCA-whitening learned on the references, ``+norm`` each query's scores minus its
similarity to the nearest background image (the two tricks that lifted SSCD on DISC21).
Model variants are model specs: ``dinov2@dinov2_pooling=cls+gem`` is DINOv2 with CLS+GeM pooling.

Group retrieval (``path,group`` CSV): every image queries all the others; mAP and recall@k.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import calibration
from .. import fusion as fusion_maths
from ..embedding import Embedded
from ..errors import ImsimError
from ..ingest import Ingestor, ingest_local
from ..models import Embedder, load_model
from ..query import Client, SearchHit
from ..settings import Settings, known_variables
from ..store import VectorStore
from ..util import chunked
from . import metrics
from .build import Benchmark, Groups

K_VALUES = (1, 3, 10)
CV_FOLDS = 5  # the calibrated fusion is scored on each fifth of the queries with weights fitted on the other four
PREDICTIONS_PER_QUERY = 10  # DISC21-style: each query contributes its top 10 (query, reference, score) triples


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
        """Which method to use for copy detection, in one sentence: a fusion only when it is at least as good as the best
        single model on both µAP and R@1 (measured with tied scores counted against it, the reference definition)."""
        singles = [r for r in self.copydetect if r.kind == "model"]
        if not singles:
            return ""
        best = max(singles, key=lambda r: (r.micro_ap, r.recall[1]))
        top_ap, top_r1 = max(r.micro_ap for r in singles), max(r.recall[1] for r in singles)
        earning = [r for r in self.copydetect if r.kind == "fusion" and r.micro_ap >= top_ap and r.recall[1] >= top_r1]
        if earning:
            top = max(earning, key=lambda r: (r.micro_ap, r.recall[1]))
            return (
                f"use {top.label}: µAP {100 * top.micro_ap:.1f} and R@1 {100 * top.recall[1]:.1f}, at least every single "
                f"model's best (µAP {100 * top_ap:.1f}, R@1 {100 * top_r1:.1f})"
            )
        if len(singles) < 2:
            return f"use {best.label}"
        return (
            f"use {best.label} alone (µAP {100 * best.micro_ap:.1f}, R@1 {100 * best.recall[1]:.1f}): no fusion reached every "
            f"single model's best on both µAP ({100 * top_ap:.1f}) and R@1 ({100 * top_r1:.1f}) on this benchmark"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
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


def _stem(path: str) -> str:
    return Path(path).stem


def _rankings(hits: list[list[SearchHit]], query_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    return {q: [(_stem(h.path), h.score) for h in row] for q, row in zip(query_ids, hits, strict=True)}


def _stored_matrix(store: VectorStore, collection: str) -> tuple[list[str], np.ndarray]:
    ids, rows = [], []
    for batch in store.iter_rows(collection, output_fields=["path", "vector"]):
        for r in batch:
            ids.append(_stem(r["path"]))
            rows.append(np.asarray(r["vector"], np.float32))
    return ids, np.stack(rows) if rows else np.zeros((0, 1), np.float32)


def pca_whitening(train: np.ndarray, dim: int | None = None, eps_ratio: float = 1e-2):
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


def _apply(mean: np.ndarray, projection: np.ndarray, x: np.ndarray) -> np.ndarray:
    y = (x - mean) @ projection
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def _exact_rankings(
    queries: np.ndarray, refs: np.ndarray, ref_ids: list[str], query_ids: list[str], depth: int, offsets: np.ndarray | None = None
) -> dict[str, list[tuple[str, float]]]:
    sims = queries @ refs.T
    if offsets is not None:
        sims = sims - offsets[:, None]
    top = np.argsort(-sims, axis=1)[:, :depth]
    return {q: [(ref_ids[j], float(sims[i, j])) for j in top[i]] for i, q in enumerate(query_ids)}


GROUP_DEPTH = 100  # ranks scored per group query (mAP@100): deep top-k searches are slow on Milvus Lite


class Evaluation:
    """One evaluation session: the models, an eval store of its own, and the numbers."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        settings: Settings,
        out: Path,
        *,
        milvus_uri: str = "",
        progress: Callable[[str], None] | None = None,
    ):
        self.specs = list(specs)
        self.progress = progress or (lambda message: None)
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.base_settings = settings
        self.settings = settings.replace(  # queries follow the ingest at once: read every write
            milvus_uri=milvus_uri or str(out / "eval.db"),
            skip_unchanged=False,
            collection_prefix="imsimeval",
            search_consistency="Strong",
        )
        self.models = load_specs(self.specs, self.settings)
        self.fusion_fit: tuple[dict[str, float], float] | None = None  # (weights by model name, bias), to apply
        self._user_marks: tuple[VectorStore | None, list[tuple[str, str]]] | None = None
        self.report = EvalReport(
            models={
                label: {
                    "name": m.info.name,
                    "source": m.info.source,
                    "revision": m.info.revision,
                    "version": m.info.version_tag,
                    "dim": m.info.dim,
                    "variant": m.info.variant,
                }
                for label, m in self.models.items()
            },
            throughput={},
        )

    @contextlib.contextmanager
    def _stage(self, what: str) -> Iterator[None]:
        """Tell the user what runs now and, after it, how long it took (an evaluation runs for minutes)."""
        self.progress(f"{what} ...")
        t0 = time.perf_counter()
        yield
        self.progress(f"{what}: {time.perf_counter() - t0:.1f}s")

    def _session(self, prefix: str):
        settings = self.settings.replace(collection_prefix=prefix)
        store = VectorStore(settings)
        for name in store.collections():  # a rerun into the same folder starts clean
            store.drop(name)
        ingestor = Ingestor(settings, embedders=self.models, store=store)
        client = Client(settings, embedders=self.models, store=store)
        return settings, store, ingestor, client

    def _ingest(self, ingestor: Ingestor, settings: Settings, paths: list[str], what: str) -> None:
        t0 = time.perf_counter()
        result = ingest_local(paths, settings, ingestor=ingestor, job_id=f"eval-{what}")
        wall = time.perf_counter() - t0
        self.report.failures.update(result.failures)
        if result.done and "ingest" not in self.report.throughput:
            self.report.throughput["ingest"] = result.done / wall
            for label in self.models:
                seconds = result.times.embed.get(label, 0.0)
                self.report.throughput[label] = result.done / seconds if seconds else 0.0

    def _embed(
        self, ingestor: Ingestor, paths: list[str], keep: list[Embedded] | None = None
    ) -> tuple[list[str], dict[str, np.ndarray]]:
        """Embed ``paths`` (nothing stored); ``keep`` collects what was embedded, so it can be stored later as it is."""
        done: list[str] = []
        parts: dict[str, list[np.ndarray]] = {label: [] for label in self.models}
        for chunk in chunked(paths, 256):
            embedded = ingestor.step.embed_paths(chunk)
            self.report.failures.update(embedded.failures)
            done += [image.path for image in embedded.images]
            for label in self.models:
                parts[label].append(embedded.vectors[label])
            if keep is not None:
                keep.append(embedded)
        return done, {
            label: np.concatenate(v) if v else np.zeros((0, self.models[label].info.dim), np.float32)
            for label, v in parts.items()
        }

    def _store(self, ingestor: Ingestor, store: VectorStore, embedded: list[Embedded], what: str) -> None:
        """Store vectors already computed (the queries: embedded once, searched, then stored for the duplicates)."""
        from ..store import make_row

        for part in embedded:
            for label, model in self.models.items():
                rows = [
                    make_row(model.info, image, vector, f"eval-{what}")
                    for image, vector in zip(part.images, part.vectors[label], strict=True)
                ]
                self.report.failures.update(store.upsert_each(ingestor.collections[label], rows))
        ingestor.seal()

    def _stored_vectors(self, store: VectorStore, client: Client, paths: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
        """The stored vectors of ``paths`` (the ones every model has), in order: queries that need no second embedding."""
        from ..names import path_id

        ids = {path_id(p): p for p in paths}
        found = {label: store.get_vectors(client.collection(label), list(ids)) for label in self.models}
        embedded = [p for i, p in ids.items() if all(i in f for f in found.values())]
        return embedded, {
            label: np.stack([found[label][path_id(p)] for p in embedded])
            if embedded
            else np.zeros((0, self.models[label].info.dim), np.float32)
            for label in self.models
        }

    # --- copy detection --------------------------------------------------------------------------
    def copydetect(
        self, bench: Benchmark, fusions: Sequence[str], *, whiten: bool = False, score_norm: bool = False, depth: int = 50
    ) -> list[MethodResult]:
        settings, store, ingestor, client = self._session("imsimeval")
        self.report.bench = {
            "root": str(bench.root),
            "references": len(bench.references),
            "queries": len(bench.queries),
            "queries_with_copy": len(bench.truth),
            "background": len(bench.background),
        }
        try:
            with self._stage(f"copy detection: ingesting {len(bench.references)} references"):
                self._ingest(ingestor, settings, sorted(bench.references.values()), "references")
            embedded: list[Embedded] = []
            with self._stage(f"copy detection: embedding {len(bench.queries)} queries"):
                paths, queries = self._embed(ingestor, sorted(bench.queries.values()), keep=embedded)
            query_ids = [_stem(p) for p in paths]
            truth = {q: r for q, r in bench.truth.items() if q in set(query_ids)}
            results = []
            for label in self.models:
                hits = client.search_batch({label: queries[label]}, k=depth, fusion="none")
                result = score_method(label, "model", _rankings(hits, query_ids), truth)
                info = self.models[label].info
                result.calibration_key = calibration.version_key(info.name, info.version_tag)
                results.append(result)
            if len(self.models) > 1:
                for method in fusions:
                    if method == "calibrated":
                        with self._stage(f"copy detection: calibrated fusion, fitted on {CV_FOLDS} folds of the queries"):
                            results.append(self._calibrated(client, queries, query_ids, truth, depth))
                        continue
                    hits = client.search_batch(queries, k=depth, fusion=method)
                    result = score_method(f"fused:{method}", "fusion", _rankings(hits, query_ids), truth)
                    if method == "weighted":
                        result.calibration_key = calibration.fused_key(
                            "weighted",
                            [(m.info.name, m.info.version_tag) for m in self.models.values()],
                            settings.weights or None,
                        )
                    results.append(result)
            if whiten or score_norm:
                with self._stage("copy detection: PCA-whitening / score-normalisation variants"):
                    results += self._variants(
                        store, client, ingestor, bench, queries, query_ids, truth, whiten, score_norm, depth
                    )
            self.report.copydetect = results
            with self._stage(f"duplicates: storing the {len(bench.queries)} queries beside the references, linking pairs"):
                self._store(ingestor, store, embedded, "queries")  # their vectors from above: nothing embedded twice
                self.report.duplicates = self._duplicates(store, client, settings, bench)
        finally:
            ingestor.close()
            store.close()
        self.report.copydetect = results
        return results

    def _calibrated(
        self,
        client: Client,
        queries: dict[str, np.ndarray],
        query_ids: list[str],
        truth: dict[str, str],
        depth: int,
    ) -> MethodResult:
        """The calibrated fusion (:func:`imsim.fusion.calibrated`), scored honestly: the queries are split into
        :data:`CV_FOLDS` folds, and each fold is ranked by weights fitted on the other folds only (never on the queries
        it is scored on). Candidates: every model's top ``depth``, each with every model's cosine. The weights fitted
        on all queries are what `imsim eval apply` keeps for `imsim search --fusion calibrated`."""
        labels = list(self.models)
        hits = client.search_batch(queries, k=depth * len(labels), fusion="weighted")
        candidates = {
            q: [(_stem(h.path), [h.scores.get(label, 0.0) for label in labels]) for h in row]
            for q, row in zip(query_ids, hits, strict=True)
        }
        rankings = cross_fitted(candidates, truth, depth)
        result = score_method("fused:calibrated", "fusion", rankings, truth)
        weights, bias = fit_fusion(candidates, truth, list(candidates))
        names = [self.models[label].info.name for label in labels]
        self.report.fusion_weights = {label: round(float(w), 4) for label, w in zip(labels, weights, strict=True)}
        self.report.fusion_weights["(bias)"] = round(bias, 4)
        if len(set(names)) == len(names):  # a query names models by family: two wirings of one family cannot be applied
            result.calibration_key = calibration.fused_key(
                "calibrated", [(m.info.name, m.info.version_tag) for m in self.models.values()]
            )
            self.fusion_fit = ({n: float(w) for n, w in zip(names, weights, strict=True)}, bias)
        return result

    def _variants(
        self,
        store: VectorStore,
        client: Client,
        ingestor: Ingestor,
        bench: Benchmark,
        queries: dict[str, np.ndarray],
        query_ids: list[str],
        truth: dict[str, str],
        whiten: bool,
        score_norm: bool,
        depth: int,
    ) -> list[MethodResult]:
        background: dict[str, np.ndarray] = {}
        if score_norm:
            if not bench.background:
                raise ImsimError("--score-norm needs background images: build the benchmark with --background N")
            _, background = self._embed(ingestor, sorted(bench.background.values()))
        out = []
        for label in self.models:
            ref_ids, refs = _stored_matrix(store, client.collection(label))
            q = queries[label]
            if whiten:
                mean, projection = pca_whitening(refs)
                ranked = _exact_rankings(_apply(mean, projection, q), _apply(mean, projection, refs), ref_ids, query_ids, depth)
                out.append(score_method(f"{label}+pcaw", "variant", ranked, truth))
            if score_norm:
                offsets = (q @ background[label].T).max(axis=1)  # similarity to the nearest background image
                out.append(
                    score_method(f"{label}+norm", "variant", _exact_rankings(q, refs, ref_ids, query_ids, depth, offsets), truth)
                )
        return out

    def _duplicates(
        self, store: VectorStore, client: Client, settings: Settings, bench: Benchmark, neighbours: int = 16
    ) -> list[DuplicateResult]:
        """Calibrate and measure `imsim duplicates` itself: every stored image (references and queries) is linked to
        its ``neighbours`` nearest, as `imsim duplicates` does (:func:`imsim.duplicates.neighbour_edges`); a pair is
        a positive when both images come from the same original (:meth:`Benchmark.copy_classes`: a query and its
        reference, two queries of one reference, two copies of one no-match original), and every other pair (two
        queries made with the same overlay template, two references) is a negative."""
        from ..duplicates import neighbour_edges
        from ..names import path_id

        files = {**bench.references, **bench.queries}
        positives = set()
        for members in bench.copy_classes():
            ids = sorted(path_id(files[m]) for m in members if m in files)
            positives |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
        truth: dict[str, set[str]] = {}
        for a, b in positives:
            truth.setdefault(a, set()).add(b)
        methods: list[tuple[str, str, dict[str, str], str]] = [
            (label, "model", {label: client.collection(label)}, calibration.version_key(m.info.name, m.info.version_tag))
            for label, m in self.models.items()
        ]
        if len(self.models) > 1:
            key = calibration.fused_key(
                "weighted", [(m.info.name, m.info.version_tag) for m in self.models.values()], settings.weights or None
            )
            methods.append(("fused:weighted", "fusion", {label: client.collection(label) for label in self.models}, key))
        out = []
        for label, kind, collections, key in methods:
            paths, edges = neighbour_edges(
                store, collections, float("-inf"), fused=kind == "fusion", weights=settings.weights or None, neighbours=neighbours
            )
            marked = self._marked_edges(list(collections), settings)
            curve = metrics.pr_curve([*edges, *marked], truth)
            seen = {(a, b) for a, b, _ in edges}
            result = DuplicateResult(
                label=label,
                kind=kind,
                calibration_key=key,
                images=len(paths),
                positives=len(positives),
                pairs_seen=len(seen),
                recall_seen=len(seen & positives) / len(positives) if positives else 0.0,
                thresholds={f"p{round(p * 100)}": curve.threshold_for_precision(p) for p in calibration.PRECISIONS},
                curve=curve,
                marked_negatives=len(marked),
            )
            for name, value in result.thresholds.items():
                if value is not None:
                    result.at[name] = duplicate_quality(edges, value, positives, list(paths))
            out.append(result)
        return out

    def _marked_edges(self, labels: Sequence[str], settings: Settings) -> list[tuple[str, str, float]]:
        """The pairs people marked "not a duplicate" (`imsim serve`'s duplicates page) in the user's own store, scored
        with the user's stored vectors of these very model versions (weighted mean of their cosines for a fusion, as
        `imsim duplicates` scores it): extra negatives for the thresholds, so a marked pair's similarity is above no
        threshold calibrated from now on at the precision it is calibrated for. None when the store has no marks, no
        collection of these versions, or cannot be opened (said in the progress lines)."""
        from ..duplicates import fused_edges

        if self._user_marks is None:
            self._user_marks = self._read_marks()
        user_store, pairs = self._user_marks
        if user_store is None or not pairs:
            return []
        collections = {}
        for label in labels:
            name = user_store.collection_name(self.models[label].info)
            if not user_store._call("has_collection", name):
                return []  # the user's store holds no vectors of this version: its marks cannot be scored by it
            collections[label] = name
        edges = fused_edges(user_store, collections, {p: 0.0 for p in pairs}, float("-inf"), settings.weights or None)
        return [(f"mark:{a}", f"mark:{b}", score) for a, b, score in edges]

    def _read_marks(self) -> tuple[VectorStore | None, list[tuple[str, str]]]:
        from ..errors import StoreError
        from ..store.marks import Marks

        base = self.base_settings
        if base.is_milvus_lite_file and not Path(base.resolved_milvus_uri).exists():
            return None, []
        try:
            user_store = VectorStore(base)
            pairs = sorted(Marks(user_store).pairs())
        except StoreError as exc:
            self.progress(f"marks not read from the store ({exc}); calibrating without them")
            return None, []
        if pairs:
            self.progress(f"{len(pairs)} pair(s) marked 'not a duplicate' in the store: calibrated as negatives")
        return user_store, pairs

    def save_calibration(self) -> Path | None:
        """Write the duplicate thresholds to OUT/calibration.json (never to the data dir: `imsim eval apply` does).

        Every calibrated method gets an entry; one whose links never reach a precision has ``null`` there
        (`imsim eval apply` skips those, so a threshold measured before is never replaced by "unreached")."""
        entries = {}
        for result in self.report.duplicates:
            p95 = result.at.get("p95", {})
            entries[result.calibration_key] = {
                "threshold_p90": result.thresholds["p90"],
                "threshold_p95": result.thresholds["p95"],
                "label": result.label,
                "calibrated_on": f"all pairs `imsim duplicates` links among {result.images} stored benchmark images "
                "(references and queries; pairs from the same original positive, every other pair negative)",
                "duplicates_precision_p95": p95.get("group_precision"),
                "duplicates_recall_p95": p95.get("group_recall"),
                "benchmark": self.report.bench.get("root", ""),
                "queries": self.report.bench.get("queries", 0),
            }
        calibrated = next((r for r in self.report.copydetect if r.label == "fused:calibrated" and r.calibration_key), None)
        if calibrated is not None and self.fusion_fit is not None:
            weights, bias = self.fusion_fit
            entries[calibrated.calibration_key] = {
                "fusion": {"weights": weights, "bias": bias},
                "label": calibrated.label,
                "calibrated_on": f"the {self.report.bench.get('queries', 0)} queries' candidates (every model's top "
                f"results, labelled by the ground truth); scored on {CV_FOLDS} folds it was not fitted on: "
                f"µAP {calibrated.micro_ap:.4f}, R@1 {calibrated.recall[1]:.4f}",
                "benchmark": self.report.bench.get("root", ""),
                "queries": self.report.bench.get("queries", 0),
            }
        if not entries:
            return None
        file = calibration.save(self.out, entries)  # applied only on request: `imsim eval apply` / --calibration
        self.report.calibration_file = str(file)
        return file

    # --- groups ----------------------------------------------------------------------------------
    def groups(self, groups: Groups, fusions: Sequence[str], *, depth: int = GROUP_DEPTH) -> list[GroupResult]:
        """mAP@depth and recall@k of every image against all the others (members past ``depth`` count as not found)."""
        settings, store, ingestor, client = self._session("imsimevalgroups")
        paths = sorted(groups.members)  # a missing file is recorded as a failure, like any ingest
        self.report.group_info = {"images": len(paths), "groups": len(set(groups.members.values())), "depth": depth}
        try:
            with self._stage(f"groups: ingesting {len(paths)} images"):
                self._ingest(ingestor, settings, paths, "groups")
            embedded, vectors = self._stored_vectors(store, client, paths)
            membership = {p: groups.members[p] for p in embedded}
            methods = [(label, "model", {label: vectors[label]}, "none") for label in self.models]
            if len(self.models) > 1:  # the calibrated fusion is fitted on copy detection, not on groups
                methods += [(f"fused:{m}", "fusion", vectors, m) for m in fusions if m != "calibrated"]
            results = []
            for label, kind, queries, method in methods:
                with self._stage(f"groups: top {depth + 1} of {len(embedded)} images with {label}"):
                    hits = client.search_batch(queries, k=min(depth + 1, len(embedded)), fusion=method)  # +1: itself
                rankings = {p: [(h.path, h.score) for h in row] for p, row in zip(embedded, hits, strict=True)}
                results.append(
                    GroupResult(
                        label,
                        kind,
                        metrics.mean_average_precision(rankings, membership),
                        {k: metrics.group_recall_at_k(rankings, membership, k) for k in K_VALUES},
                    )
                )
        finally:
            ingestor.close()
            store.close()
        self.report.groups = results
        return results
