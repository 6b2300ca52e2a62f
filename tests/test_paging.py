"""Result lists deeper than Milvus's top-k cap (16,384) page through a search iterator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from imsim.client.local import Client
from imsim.expr import Where
from imsim.store import SEARCH_CAP, VectorStore

from .support.rows import random_rows

ROWS = 20_000


@pytest.fixture(scope="module")
def big(tiny_model_dirs, tmp_path_factory, models):
    """20,000 rows of random unit vectors in the tiny CLIP's collection (one Milvus Lite file)."""
    from .support.settings import make_settings

    settings = make_settings(tiny_model_dirs, tmp_path_factory.mktemp("paging"), models="clip")
    store = VectorStore(settings)
    name = store.versions.ensure_collection(models["clip"].info)
    rows, vectors = random_rows(ROWS, models["clip"].info.dim)
    store.rows.upsert(name, rows, batch=5000)
    client = Client(settings, embedders={"clip": models["clip"]}, store=store)
    yield client, vectors
    store.close()


def test_search_past_the_cap_returns_every_requested_hit_in_order(big):
    client, vectors = big
    k = SEARCH_CAP + 616  # 17,000
    hits = client.search_batch({"clip": vectors[:1]}, k=k, fusion="none")[0]
    ids = [h.id for h in hits]
    assert len(ids) == k == len(set(ids))
    scores = [h.score for h in hits]
    assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False))
    assert ids[0] == f"{0:032x}" and scores[0] == pytest.approx(1.0, abs=1e-5)
    exact = {f"{i:032x}" for i in np.argsort(-(vectors @ vectors[0]))[:k]}
    assert len(exact & set(ids)) / k > 0.99  # HNSW is approximate; the iterator must not skip or repeat pages


def test_search_iter_streams_a_filtered_collection_to_the_end(big):
    client, vectors = big
    stream = client.search_iter(like=f"{3:032x}", model="clip", where=Where(path_prefix="/corpus/d3"), batch=500)
    first = list(itertools.islice(stream, 10))
    assert first[0].id == f"{3:032x}" and [h.ranks["clip"] for h in first] == list(range(1, 11))
    rest = list(stream)  # 2,000 matches in pages of 500: none skipped, none repeated
    seen = [h.id for h in first + rest]
    assert len(seen) == len(set(seen)) == ROWS // 10 and all(h.path.startswith("/corpus/d3/") for h in first + rest)
    scores = [h.score for h in first + rest]
    assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False))
