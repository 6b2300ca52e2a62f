"""The PCA-whitened half of an evaluation (``--pca-whiten``), run through production code: every whitening is a
derived version of the evaluation's store (:mod:`imsim.store.derived`), written from the stored vectors and searched by
the client with queries embedded by the base model and whitened, as `imsim models whiten` and `imsim search` do.

Three whitenings per model, told apart by their label:

- ``LABEL+pcaw``: learned on the references (DISC21's protocol: a training set apart from the queries);
- ``LABEL+pcaw(collection)``: learned on the collection `imsim models whiten` would see, the references with the edited
  copies beside them, scored by query folds: a fold's queries are ranked with a whitening learned on the references and
  the *other* folds' queries, never on themselves. Its duplicate thresholds are measured with the whitening learned on
  every stored image, the one `imsim models whiten` would write for this collection;
- ``LABEL+pcaw(store)``: the whitening of a derived version in the user's own store of this exact base version (learned
  on a sample of the user's collection): its thresholds and fusion weights apply to that version after `imsim eval apply`.

With several models, ``fused:calibrated+pcaw(collection)`` (and ``+pcaw(store)``) fuse the whitened cosines by the
calibrated fusion, fitted on query folds as ``fused:calibrated`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import calibration
from ..client.local import Client
from ..errors import ImsimError
from ..models import ModelInfo
from ..models.whitened import WhitenedEmbedder
from ..store import VectorStore, derived
from ..store.mirror import Checkpoints
from ..whitening import Whitening, learn
from .results import CV_FOLDS, MethodResult
from .scoring import Candidates, cross_fitted, fit_fusion, fold_of, score_method
from .state import EvalState

REFS, COLLECTION, STORE = "+pcaw", "+pcaw(collection)", "+pcaw(store)"


def stem(path: str) -> str:
    return Path(path).stem


def rankings(hits: Sequence[Sequence[object]], query_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    return {q: [(stem(h.path), h.score) for h in row] for q, row in zip(query_ids, hits, strict=True)}  # type: ignore[attr-defined]


def calibrated_fusion(
    client: Client,
    queries: dict[str, np.ndarray],
    query_ids: list[str],
    truth: dict[str, str],
    depth: int,
    label: str = "fused:calibrated",
) -> tuple[MethodResult, Candidates]:
    """The calibrated fusion (:func:`imsim.fusion.calibrated`) of the client's models over ``queries``, scored honestly:
    each query fold ranked by weights fitted on the other folds. Candidates: every model's top ``depth``, each with
    every model's cosine (returned, so weights fitted on all of them can be kept)."""
    labels = list(queries)
    hits = client.search_batch(queries, k=depth * len(labels), fusion="weighted")
    candidates = {
        q: [(stem(h.path), [h.scores.get(name, 0.0) for name in labels]) for h in row]
        for q, row in zip(query_ids, hits, strict=True)
    }
    return score_method(label, "fusion", cross_fitted(candidates, truth, depth), truth), candidates


class WhitenedVariants:
    """PCA-whitened variants of one evaluation (see the module doc), over its shared :class:`EvalState`."""

    def __init__(self, state: EvalState):
        self.state = state

    def keep_fit(self, result: MethodResult, infos: Sequence[ModelInfo], candidates: Candidates, truth: dict[str, str]) -> None:
        """The weights fitted on every query's candidates, kept for `imsim eval apply` under the fusion's key (when the
        fusion can be applied: a query names models by family, so two wirings of one family cannot)."""
        names = [i.name for i in infos]
        if len(set(names)) != len(names):
            return
        weights, bias = fit_fusion(candidates, truth, list(candidates))
        result.calibration_key = calibration.fused_key("calibrated", [(i.name, i.version_tag) for i in infos])
        self.state.fusion_fits[result.label] = (result.calibration_key, dict(zip(names, map(float, weights), strict=True)), bias)

    def _version(self, store: VectorStore, base: str, whitening: Whitening, restart: bool = True) -> str:
        """A derived version of ``base`` under ``whitening`` in the evaluation's store, written from its stored rows."""
        name = derived.register(store, base, whitening)
        derived.write(store, base, name, whitening, Checkpoints(self.state.out, f"eval:{name}"), restart=restart)
        return name

    def score(
        self,
        store: VectorStore,
        client: Client,
        queries: dict[str, np.ndarray],
        query_ids: list[str],
        truth: dict[str, str],
        depth: int,
        fuse: bool,
    ) -> list[MethodResult]:
        results = []
        references = {label: _matrix(store, client.models.collection(label)) for label in self.state.models}
        own: dict[str, Whitening] = {}
        for label, model in self.state.models.items():
            found = self._store_whitening(model.info)
            if found is not None:
                own[label] = found
        for suffix, learned in [(REFS, {label: learn(references[label]) for label in self.state.models}), (STORE, own)]:
            embedders = {}
            for label, whitening in learned.items():
                model = self.state.models[label]
                name = self._version(store, client.models.collection(label), whitening)
                embedders[label + suffix] = WhitenedEmbedder(model, whitening)
                self.state.whitened[label + suffix] = (label, name, embedders[label + suffix])
            if not embedders:
                continue
            vectors = {key: e.whitening.apply(queries[self.state.whitened[key][0]]) for key, e in embedders.items()}
            with Client(self.state.settings, embedders=embedders, store=store) as searcher:
                for key in embedders:
                    hits = searcher.search_batch({key: vectors[key]}, k=depth, fusion="none")
                    result = score_method(key, "variant", rankings(hits, query_ids), truth)
                    result.calibration_key = calibration.version_key(embedders[key].info.name, embedders[key].info.version_tag)
                    results.append(result)
                if fuse and len(embedders) == len(self.state.models) > 1:
                    result, candidates = calibrated_fusion(
                        searcher, vectors, query_ids, truth, depth, f"fused:calibrated{suffix}"
                    )
                    self.keep_fit(result, [e.info for e in embedders.values()], candidates, truth)
                    results.append(result)
        results += self._collection_folds(store, client, references, queries, query_ids, truth, depth, fuse)
        return results

    def _collection_folds(
        self,
        store: VectorStore,
        client: Client,
        references: dict[str, np.ndarray],
        queries: dict[str, np.ndarray],
        query_ids: list[str],
        truth: dict[str, str],
        depth: int,
        fuse: bool,
    ) -> list[MethodResult]:
        """``LABEL+pcaw(collection)``, one fold of queries at a time (see the module doc)."""
        ranked: dict[str, dict[str, list[tuple[str, float]]]] = {label + COLLECTION: {} for label in self.state.models}
        candidates: Candidates = {}
        for fold in range(CV_FOLDS):
            held = [i for i, q in enumerate(query_ids) if fold_of(q) == fold]
            if not held:
                continue
            others = [i for i, q in enumerate(query_ids) if fold_of(q) != fold]
            embedders, written = {}, []
            for label, model in self.state.models.items():
                whitening = learn(np.concatenate([references[label], queries[label][others]]))
                written.append(self._version(store, client.models.collection(label), whitening))
                embedders[label + COLLECTION] = WhitenedEmbedder(model, whitening)
            vectors = {key: e.whitening.apply(queries[key[: -len(COLLECTION)]][held]) for key, e in embedders.items()}
            held_ids = [query_ids[i] for i in held]
            with Client(self.state.settings, embedders=embedders, store=store) as searcher:
                for key in embedders:
                    ranked[key].update(rankings(searcher.search_batch({key: vectors[key]}, k=depth, fusion="none"), held_ids))
                if fuse and len(embedders) > 1:
                    hits = searcher.search_batch(vectors, k=depth * len(embedders), fusion="weighted")
                    for q, row in zip(held_ids, hits, strict=True):
                        candidates[q] = [(stem(h.path), [h.scores.get(key, 0.0) for key in embedders]) for h in row]
            for name in written:
                store.drop(name)
        results = [score_method(key, "variant", found, truth) for key, found in ranked.items()]
        if candidates:
            results.append(score_method(f"fused:calibrated{COLLECTION}", "fusion", cross_fitted(candidates, truth, depth), truth))
        return results

    def for_duplicates(self, store: VectorStore, client: Client) -> None:
        """Once the queries are stored: the derived versions catch up (a sync pass, as after an ingest), and each model
        gets ``+pcaw(collection)`` learned on every stored image, the version `imsim models whiten` would write."""
        for label, name, version in self.state.whitened.values():
            derived.write(
                store, client.models.collection(label), name, version.whitening, Checkpoints(self.state.out, f"eval:{name}")
            )
        for label, model in self.state.models.items():
            base = client.models.collection(label)
            whitening = derived.learn(store, base)
            name = self._version(store, base, whitening)
            self.state.whitened[label + COLLECTION] = (label, name, WhitenedEmbedder(model, whitening))

    def _store_whitening(self, info: ModelInfo) -> Whitening | None:
        """The whitening of a derived version of ``info``'s exact version in the user's own store, if it holds one."""
        base = self.state.base_settings
        if base.is_milvus_lite_file and not Path(base.resolved_milvus_uri).exists():
            return None
        try:
            with VectorStore(base) as user_store:
                name = f"{user_store.config.collection_prefix}_{info.name}_{info.version_tag}"
                if name not in user_store.versions.collections():
                    return None
                found = sorted(derived.followers(user_store, name).items())
        except ImsimError as exc:
            self.state.progress(f"the store's whitened versions not read ({exc})")
            return None
        if not found:
            return None
        self.state.progress(f"whitening of {found[0][0]} (learned on {found[0][1].rows:,} stored rows) evaluated as {STORE}")
        return found[0][1]


def _matrix(store: VectorStore, collection: str) -> np.ndarray:
    rows = [
        np.asarray(r["vector"], np.float32) for batch in store.rows.iter_rows(collection, output_fields=["vector"]) for r in batch
    ]
    return np.stack(rows) if rows else np.zeros((0, store.versions.dimension(collection)), np.float32)
