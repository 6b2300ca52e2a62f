"""The duplicates half of an evaluation: every model's (and fusion's) links between the benchmark's images scored
against the true copy pairs (two copies of one source count as a true pair; user marks of "not a duplicate" count
as negatives), the thresholds for 90 % / 95 % precision chosen as the reference does, and the calibration file
`imsim eval apply` installs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .. import calibration
from ..client.local import Client
from ..models import ModelInfo
from ..settings import Settings
from ..store import VectorStore
from . import metrics
from .build import Benchmark
from .results import CV_FOLDS, DuplicateResult
from .scoring import (
    duplicate_quality,
)
from .state import EvalState


class DuplicatesCalibration:
    """The duplicates half of one evaluation (see the module doc), over its shared :class:`EvalState`."""

    def __init__(self, state: EvalState):
        self.state = state
        self._user_marks: tuple[VectorStore | None, list[tuple[str, str]]] | None = None

    def measure(
        self, store: VectorStore, client: Client, settings: Settings, bench: Benchmark, neighbours: int = 16
    ) -> list[DuplicateResult]:
        """Calibrate and measure `imsim duplicates` itself: every stored image (references and queries) is linked to
        its ``neighbours`` nearest, as `imsim duplicates` does (:func:`imsim.duplicates.neighbour_edges`); a pair is
        a positive when both images come from the same original (:meth:`Benchmark.copy_classes`: a query and its
        reference, two queries of one reference, two copies of one no-match original), and every other pair (two
        queries made with the same overlay template, two references) is a negative."""
        from ..duplicates import neighbour_edges
        from ..sources.names import path_id

        files = {**bench.references, **bench.queries}
        positives = set()
        for members in bench.copy_classes():
            ids = sorted(path_id(files[m]) for m in members if m in files)
            positives |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
        truth: dict[str, set[str]] = {}
        for a, b in positives:
            truth.setdefault(a, set()).add(b)
        methods: list[tuple[str, str, dict[str, str], str]] = [
            (label, "model", {label: client.models.collection(label)}, calibration.version_key(m.info.name, m.info.version_tag))
            for label, m in self.state.models.items()
        ]
        methods += [  # the whitened versions (--pca-whiten): what `imsim duplicates` uses once one is active
            (variant, "variant", {variant: name}, calibration.version_key(m.info.name, m.info.version_tag))
            for variant, (_, name, m) in self.state.whitened.items()
        ]
        if len(self.state.models) > 1:
            key = calibration.fused_key(
                "weighted", [(m.info.name, m.info.version_tag) for m in self.state.models.values()], settings.weights or None
            )
            methods.append(
                ("fused:weighted", "fusion", {label: client.models.collection(label) for label in self.state.models}, key)
            )
        out = []
        for label, kind, collections, key in methods:
            paths, edges = neighbour_edges(
                store, collections, float("-inf"), fused=kind == "fusion", weights=settings.weights or None, neighbours=neighbours
            )
            marked = self._marked_edges({c: self._info(c) for c in collections}, settings)
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
                    result.at[name] = duplicate_quality(edges, value, positives, list(paths), settings.duplicate_link_share)
            out.append(result)
        return out

    def _info(self, label: str) -> ModelInfo:
        return self.state.whitened[label][2].info if label in self.state.whitened else self.state.models[label].info

    def _marked_edges(self, labels: Mapping[str, ModelInfo], settings: Settings) -> list[tuple[str, str, float]]:
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
        for label, info in labels.items():
            name = user_store.versions.collection_name(info)
            if not user_store.connection.call("has_collection", name):
                return []  # the user's store holds no vectors of this version: its marks cannot be scored by it
            collections[label] = name
        edges = fused_edges(user_store, collections, {p: 0.0 for p in pairs}, float("-inf"), settings.weights or None)
        return [(f"mark:{a}", f"mark:{b}", score) for a, b, score in edges]

    def _read_marks(self) -> tuple[VectorStore | None, list[tuple[str, str]]]:
        from ..errors import StoreError
        from ..store.marks import Marks

        base = self.state.base_settings
        if base.is_milvus_lite_file and not Path(base.resolved_milvus_uri).exists():
            return None, []
        try:
            user_store = VectorStore(base)
            pairs = sorted(Marks(user_store).pairs())
        except StoreError as exc:
            self.state.progress(f"marks not read from the store ({exc}); calibrating without them")
            return None, []
        if pairs:
            self.state.progress(f"{len(pairs)} pair(s) marked 'not a duplicate' in the store: calibrated as negatives")
        return user_store, pairs

    def save_calibration(self) -> Path | None:
        """Write the duplicate thresholds to OUT/calibration.json (never to the data dir: `imsim eval apply` does).

        Every calibrated method gets an entry; one whose links never reach a precision has ``null`` there
        (`imsim eval apply` skips those, so a threshold measured before is never replaced by "unreached")."""
        entries = {}
        for result in self.state.report.duplicates:
            p95 = result.at.get("p95", {})
            entries[result.calibration_key] = {
                "threshold_p90": result.thresholds["p90"],
                "threshold_p95": result.thresholds["p95"],
                "label": result.label,
                "calibrated_on": f"all pairs `imsim duplicates` links among {result.images} stored benchmark images "
                "(references and queries; pairs from the same original positive, every other pair negative)",
                "duplicates_precision_p95": p95.get("group_precision"),
                "duplicates_recall_p95": p95.get("group_recall"),
                "benchmark": self.state.report.bench.get("root", ""),
                "queries": self.state.report.bench.get("queries", 0),
            }
        scored = {r.label: r for r in self.state.report.copydetect}
        for label, (key, weights, bias) in self.state.fusion_fits.items():
            fused = scored.get(label)
            if fused is None:
                continue
            entries[key] = {
                "fusion": {"weights": weights, "bias": bias},
                "label": label,
                "calibrated_on": f"the {self.state.report.bench.get('queries', 0)} queries' candidates (every model's top "
                f"results, labelled by the ground truth); scored on {CV_FOLDS} folds it was not fitted on: "
                f"µAP {fused.micro_ap:.4f}, R@1 {fused.recall[1]:.4f}",
                "benchmark": self.state.report.bench.get("root", ""),
                "queries": self.state.report.bench.get("queries", 0),
            }
        if not entries:
            return None
        file = calibration.save(self.state.out, entries)  # applied only on request: `imsim eval apply` / --calibration
        self.state.report.calibration_file = str(file)
        return file
