"""Topics by clustering: the adjusted Rand index against hand-made cases, k-means recovering known topics in
generated clustered vectors, and `imsim clusters` over a store (a Milvus Lite file): kept, read back, reproducible,
searched by topic, removed without touching the vectors, and drawn."""

from __future__ import annotations

import numpy as np
import pytest

from imsim import topics
from imsim.analysis import clusters as kmeans
from imsim.client.local import Client
from imsim.errors import ImsimError
from imsim.store import VectorStore
from imsim.store.clustering import Clusterings
from imsim.vocabulary import SearchOptions

from .support.rows import row
from .support.settings import make_settings


def test_the_adjusted_rand_index_agrees_with_its_definition_on_hand_made_cases():
    assert kmeans.adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == pytest.approx(1.0)  # renamed
    assert kmeans.adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2])) == pytest.approx(4 / 7)
    assert kmeans.adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    rng = np.random.default_rng(0)  # independent labelings: about 0
    assert abs(kmeans.adjusted_rand_index(rng.integers(0, 5, 5000), rng.integers(0, 5, 5000))) < 0.01


def clustered(topics_count: int, per: int, dim: int = 64, spread: float = 0.25, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics_count, dim))
    truth = np.repeat(np.arange(topics_count), per)
    vectors = centres[truth] + spread * rng.normal(size=(len(truth), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(truth))
    return vectors[order].astype(np.float32), truth[order]


def test_k_means_recovers_known_topics():
    vectors, truth = clustered(40, 50)
    found, similarity = kmeans.assign(vectors, kmeans.train(vectors, 40, seed=1))
    assert kmeans.adjusted_rand_index(truth, found) >= 0.9 and float(np.mean(similarity)) > 0.9
    fit = kmeans.fit(vectors, [20, 40, 80])
    assert fit[20] < fit[40] <= fit[80]  # tighter with k, and the gain flattens past the true k
    assert fit[40] - fit[20] > fit[80] - fit[40]
    assert kmeans.default_k(100_000) == 224 and kmeans.default_k(3) == 2


@pytest.fixture()
def stored(tiny_model_dirs, tmp_path):
    settings = make_settings(tiny_model_dirs, tmp_path / "data", models="clip")
    store = VectorStore(settings)
    client = Client(settings, store=store)
    name = store.versions.ensure_collection(client.models.model("clip").info)
    store.versions.activate("clip", name)
    dim = store.versions.dimension(name)
    vectors, truth = clustered(6, 60, dim=dim)
    store.rows.upsert(
        name, [row(f"{i:032x}", f"/topic{t}/{i}.jpg", v) for i, (v, t) in enumerate(zip(vectors, truth, strict=True))]
    )
    yield client, truth
    store.close()


def test_a_clustering_is_kept_read_back_reproduced_searched_by_topic_and_removed(stored):
    client, truth = stored
    made = topics.run(client, "clip", 6, seed=2)
    assert sum(t.size for t in made.topics) == len(truth) == made.rows and made.k == 6
    assert all(len(t.nearest) == kmeans.SHOWN for t in made.topics)
    # each topic's members share one true topic (their paths say which)
    for topic in made.topics:
        assert len({image.path.split("/")[1] for image in topic.nearest + topic.outliers}) == 1
    assert made.labelled and all(t.label in kmeans.BUILT_IN_PROMPTS for t in made.topics)  # the tiny CLIP has a text tower
    assert len(made.map) == 6 and all(len(xy) == 2 for xy in made.map)
    back = topics.read(client)
    assert back.name == made.name and [(t.cluster, t.size, t.label) for t in back.topics] == [
        (t.cluster, t.size, t.label) for t in made.topics
    ]
    assert [[i.id for i in t.nearest] for t in back.topics] == [[i.id for i in t.nearest] for t in made.topics]
    again = topics.run(client, "clip", 6, seed=2)  # the same rows, k and seed: the same topics, rows replaced
    assert [(t.cluster, t.size) for t in again.topics] == [(t.cluster, t.size) for t in made.topics]
    keep = Clusterings(client.store)
    assert keep.kept()[0]["name"] == made.name and len(keep.kept()) == 1
    # a search in one topic finds only its members
    first = made.topics[0]
    members = set(keep.members(made.name, first.cluster))
    hits = client.search(like=first.nearest[0].id, options=SearchOptions(k=100, cluster=first.cluster))
    assert {h.id for h in hits} == members and len(members) == first.size
    with pytest.raises(ImsimError, match="clusters 0 to 5"):
        client.search(like=first.nearest[0].id, options=SearchOptions(k=5, cluster=9))
    # the page the CLI writes: the map and every topic
    from imsim.cli.topics import page

    drawn = page(made, client)
    assert drawn.count("<section>") == 6 and 'data-testid="map"' in drawn and drawn.count("<circle") == 6
    # removed: its rows and artifacts gone, the vectors untouched
    rows_before = client.store.rows.count(client.models.collection("clip"))
    assert keep.remove(made.name) == len(truth) and keep.kept() == []
    assert client.store.rows.count(client.models.collection("clip")) == rows_before
    with pytest.raises(ImsimError, match="no clustering yet"):
        topics.read(client)
    with pytest.raises(ImsimError, match="k=1"):
        topics.run(client, "clip", 1)
