"""Run an evaluation: ingest through the normal pipeline into a namespace of its own, query, score.

Copy detection (a benchmark folder from :mod:`imsim.eval.build`): the references are ingested with
every model (one Milvus collection per model version, prefix ``imsimeval``, by default in a Milvus
Lite file inside the output folder), the queries are embedded by the same decode path and searched per
model and fused (:meth:`imsim.client.local.Client.search_batch`), and each method is scored with
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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import calibration
from ..client.local import Client
from ..embedding import Embedded
from ..errors import ImsimError
from ..fusion import SearchHit
from ..ingest import Ingestor, ingest_local
from ..models import Embedder
from ..models.whitened import WhitenedEmbedder
from ..settings import Settings
from ..store import VectorStore
from ..util import chunked
from . import metrics
from .build import Benchmark, Groups
from .duplicates_calibration import DuplicatesCalibration
from .results import CV_FOLDS, GROUP_DEPTH, K_VALUES, EvalReport, GroupResult, MethodResult, model_facts
from .scoring import score_method, score_normalised
from .specs import ModelSpec, load_specs
from .state import EvalState
from .whitened import WhitenedVariants, calibrated_fusion


def _stem(path: str) -> str:
    return Path(path).stem


def _rankings(hits: list[list[SearchHit]], query_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    return {q: [(_stem(h.path), h.score) for h in row] for q, row in zip(query_ids, hits, strict=True)}


def _stored_matrix(store: VectorStore, collection: str) -> tuple[list[str], np.ndarray]:
    ids, rows = [], []
    for batch in store.rows.iter_rows(collection, output_fields=["path", "vector"]):
        for r in batch:
            ids.append(_stem(r["path"]))
            rows.append(np.asarray(r["vector"], np.float32))
    return ids, np.stack(rows) if rows else np.zeros((0, 1), np.float32)


class Evaluation:
    """One evaluation session: the models, an eval store of its own, and the numbers. Its whitened variants
    (:class:`~imsim.eval.whitened.WhitenedVariants`) and its duplicate calibration
    (:class:`~imsim.eval.duplicates_calibration.DuplicatesCalibration`) are parts it holds, sharing one
    :class:`~imsim.eval.state.EvalState`."""

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
        out.mkdir(parents=True, exist_ok=True)
        own = settings.replace(  # queries follow the ingest at once: read every write
            milvus_uri=milvus_uri or str(out / "eval.db"),
            skip_unchanged=False,
            collection_prefix="imsimeval",
            search_consistency="Strong",
        )
        models = load_specs(self.specs, own)
        self.state = EvalState(
            models=models,
            settings=own,
            base_settings=settings,
            out=out,
            progress=progress or (lambda message: None),
            report=EvalReport(models={label: model_facts(m.info) for label, m in models.items()}, throughput={}),
        )
        self.variants = WhitenedVariants(self.state)
        self.duplicates = DuplicatesCalibration(self.state)

    # what the parts share, as the session's own (read-only views of the state)
    @property
    def models(self) -> dict[str, Embedder]:
        return self.state.models

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def report(self) -> EvalReport:
        return self.state.report

    @property
    def whitened(self) -> dict[str, tuple[str, str, WhitenedEmbedder]]:
        return self.state.whitened

    def progress(self, message: str) -> None:
        self.state.progress(message)

    def save_calibration(self) -> Path | None:
        """OUT/calibration.json (:meth:`DuplicatesCalibration.save_calibration`)."""
        return self.duplicates.save_calibration()

    @contextlib.contextmanager
    def _stage(self, what: str) -> Iterator[None]:
        """Tell the user what runs now and, after it, how long it took (an evaluation runs for minutes)."""
        self.progress(f"{what} ...")
        t0 = time.perf_counter()
        yield
        self.progress(f"{what}: {time.perf_counter() - t0:.1f}s")

    def _session(self, prefix: str) -> tuple[Settings, VectorStore, Ingestor, Client]:
        settings = self.settings.replace(collection_prefix=prefix)
        store = VectorStore(settings)
        for name in store.versions.collections():  # a rerun into the same folder starts clean
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
                self.report.failures.update(store.rows.upsert_each(ingestor.collections[label], rows))
        ingestor.seal()

    def _stored_vectors(self, store: VectorStore, client: Client, paths: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
        """The stored vectors of ``paths`` (the ones every model has), in order: queries that need no second embedding."""
        from ..sources.names import path_id

        ids = {path_id(p): p for p in paths}
        found = {label: store.rows.get_vectors(client.models.collection(label), list(ids)) for label in self.models}
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
                            result, candidates = calibrated_fusion(client, queries, query_ids, truth, depth)
                            self.variants.keep_fit(result, [m.info for m in self.models.values()], candidates, truth)
                            weights = self.state.fusion_fits.get(result.label)
                            if weights is not None:
                                self.report.fusion_weights = {**weights[1], "(bias)": weights[2]}
                            results.append(result)
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
                        store,
                        client,
                        ingestor,
                        bench,
                        queries,
                        query_ids,
                        truth,
                        whiten,
                        score_norm,
                        depth,
                        "calibrated" in fusions,
                    )
            self.report.copydetect = results
            with self._stage(f"duplicates: storing the {len(bench.queries)} queries beside the references, linking pairs"):
                self._store(ingestor, store, embedded, "queries")  # their vectors from above: nothing embedded twice
                if whiten:
                    self.variants.for_duplicates(store, client)
                self.report.duplicates = self.duplicates.measure(store, client, settings, bench)
        finally:
            ingestor.close()
            store.close()
        self.report.copydetect = results
        return results

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
        fuse: bool,
    ) -> list[MethodResult]:
        results: list[MethodResult] = []
        if whiten:
            results += self.variants.score(store, client, queries, query_ids, truth, depth, fuse)
        if score_norm:
            if not bench.background:
                raise ImsimError("--score-norm needs background images: build the benchmark with --background N")
            _, background = self._embed(ingestor, sorted(bench.background.values()))
            references = {label: _stored_matrix(store, client.models.collection(label)) for label in self.models}
            results += score_normalised(queries, references, query_ids, truth, depth, background)
        return results

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
