"""`imsim clusters` end to end, for the CLI, the API and the Client alike: cluster a model's active version (its
whitened version when that is the active one), label the topics when a model has a text tower, keep the clustering
in the store, and read it back as the vocabulary's :class:`~imsim.vocabulary.Topics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .analysis import clusters as kmeans
from .errors import ImsimError, NotFound
from .store.clustering import Clusterings

__all__ = ["Clusterings", "read", "run", "topics_of"]
from .vocabulary import Topic, TopicImage, Topics

if TYPE_CHECKING:
    from .client.local import Client


def run(
    client: Client,
    model: str | None = None,
    k: int | None = None,
    *,
    seed: int = 0,
    sample: int = kmeans.SAMPLE,
    prompts: list[str] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Topics:
    """Cluster ``model``'s active collection into ``k`` topics (default: from its size) and keep the clustering."""
    name = model or client.settings.model_names[0]
    collection = client.models.collection(name)
    if collection not in set(client.store.versions.collections()):
        raise ImsimError(f"nothing ingested yet for model {name!r}: ingest images first (`imsim ingest ...`)")
    rows = client.store.rows.count(collection)
    if k is not None and not 2 <= k <= rows:
        raise ImsimError(f"k={k}: a clustering of {rows:,} images needs 2 <= k <= {rows:,}")
    if rows < 2:
        raise ImsimError(f"{rows} image(s) stored for {name}: nothing to cluster")
    found, stream = kmeans.cluster(client.store, collection, k, seed=seed, sample=sample, on_progress=on_progress)
    keep = Clusterings(client.store)
    keep.remove(found.name)  # a rerun with the same collection, k and seed replaces its rows
    for ids, clusters, similarity in stream:
        keep.write(found.name, ids, clusters, similarity)
    _label(client, found, prompts)
    keep.save(found.name, found.centres, found.meta(), found.labels())
    return topics_of(client, found.name, found.meta(), found.topics, found.centres)


def _label(client: Client, found: kmeans.Clustering, prompts: list[str] | None) -> None:
    """Each topic's nearest prompt by a model with a text tower (its own vectors: only when it is the clustered one)."""
    model = client.models.model(client.store.versions.properties(found.collection).get("model", ""))
    if not getattr(model.info, "supports_text", False):
        return
    words = prompts or kmeans.BUILT_IN_PROMPTS
    kmeans.label(found.topics, found.centres, words, model.embed_texts(words))


def topics_of(client: Client, name: str, meta: dict, topics: list[kmeans.Topic], centres: np.ndarray | None) -> Topics:
    shown = []
    for topic in sorted(topics, key=lambda t: -t.size):
        nearest, outliers = topic.ordered()
        shown.append(
            Topic(
                cluster=topic.cluster,
                size=topic.size,
                label=topic.label,
                nearest=[TopicImage(id=i, path=p, similarity=round(s, 4)) for s, i, p in nearest],
                outliers=[TopicImage(id=i, path=p, similarity=round(s, 4)) for s, i, p in outliers],
            )
        )
    return Topics(
        name=name,
        collection=str(meta.get("collection", "")),
        k=int(meta.get("k", len(topics))),
        seed=int(meta.get("seed", 0)),
        rows=int(meta.get("rows", 0)),
        sample=int(meta.get("sample", 0)),
        fit={int(k): float(v) for k, v in dict(meta.get("fit", {})).items()},
        seconds=float(meta.get("seconds", 0.0)),
        made_at=str(meta.get("made_at", "")),
        labelled=any(t.label for t in topics),
        map=_map(centres),
        topics=shown,
    )


def _map(centres: np.ndarray | None) -> list[list[float]]:
    """The centres in two dimensions (PCA), for a map of the topics: one [x, y] per cluster, in cluster order."""
    if centres is None or len(centres) < 2:
        return []
    centred = centres - centres.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ axes[:2].T
    return [[round(float(x), 4), round(float(y), 4)] for x, y in xy]


def read(client: Client, name: str | None = None) -> Topics:
    """A kept clustering (the newest when ``name`` is None), its topics read back from the store: sizes, the images
    nearest each centre and the farthest (one streamed pass over its rows)."""
    keep = Clusterings(client.store)
    kept = keep.kept()
    if not kept:
        raise NotFound("no clustering yet: run `imsim clusters` (or POST /v1/clusters)")
    meta = next((m for m in kept if m["name"] == name), None) if name else kept[0]
    if meta is None:
        raise NotFound(f"no clustering {name!r}; kept: {', '.join(m['name'] for m in kept)}")
    centres = keep.centres(meta["name"])
    k = int(meta["k"])
    topics = [kmeans.Topic(c) for c in range(k)]
    labels = keep.labels(meta["name"])
    for topic in topics:
        topic.label = labels.get(topic.cluster, "")
    for row_id, cluster, similarity in keep.assignments(meta["name"]):  # streamed: memory is the kept rows only
        topics[cluster].keep(similarity, row_id, "")
    shown = [i for t in topics for _, i, _ in [*t.nearest, *t.outliers]]
    paths = client.store.rows.get(meta["collection"], sorted(set(shown)), ["path"], "Bounded") if shown else {}
    for topic in topics:
        topic.nearest = [(s, i, str(paths.get(i, {}).get("path", ""))) for s, i, _ in topic.nearest]
        topic.outliers = [(s, i, str(paths.get(i, {}).get("path", ""))) for s, i, _ in topic.outliers]
    return topics_of(client, meta["name"], meta, topics, centres)
