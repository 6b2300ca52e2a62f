"""Query depth: search by stored id/path, bytes and PIL images, metadata and tag filters, batched queries."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from imsim.client.local import Client
from imsim.errors import ImsimError
from imsim.expr import Where
from imsim.ingest import Ingestor, ingest_local
from imsim.sources.names import path_id
from imsim.sources.paths import discover
from imsim.store import VectorStore


@pytest.fixture()
def tagged(settings, models, image_folder):
    """Flags tagged kind=flag, photos tagged kind=photo (+ camera=skimage), in one Milvus Lite file."""
    store = VectorStore(settings)
    ingestor = Ingestor(settings, embedders=models, store=store)
    before = time.time()
    flags = discover([image_folder / "flags"]).files
    photos = discover([image_folder / "photos"]).files
    ingest_local(flags, settings, ingestor=ingestor, job_id="job-flags", tags={"kind": "flag"})
    ingest_local(photos, settings, ingestor=ingestor, job_id="job-photos", tags={"kind": "photo", "camera": 'sk"image'})
    client = Client(settings, embedders=models, store=store)
    yield client, flags, photos, before
    ingestor.close()
    store.close()


def test_search_like_a_stored_image_uses_its_stored_vectors(tagged):
    client, flags, photos, _ = tagged
    by_path = client.search(like=photos[3], k=5)
    by_id = client.search(like=path_id(photos[3]), k=5)
    by_image = client.search(photos[3], k=5)
    assert [h.id for h in by_path] == [h.id for h in by_id] == [h.id for h in by_image]
    assert by_path[0].path == photos[3]
    with pytest.raises(ImsimError, match="no stored image"):
        client.search(like="/nowhere/x.jpg")


def test_search_by_bytes_and_pil_image(tagged):
    client, flags, photos, _ = tagged
    data = open(photos[0], "rb").read()
    assert client.search(data, k=1)[0].path == photos[0]
    assert client.search(Image.open(io.BytesIO(data)), k=1)[0].path == photos[0]


def test_filters_by_tag_job_folder_glob_size_and_date(tagged, image_folder):
    client, flags, photos, before = tagged
    query = photos[0]

    def paths(where, k=50):
        return {h.path for h in client.search(query, k=k, where=where)}

    assert paths(Where(tags={"kind": "flag"})) == set(flags)
    assert paths(Where(tags={"kind": "photo", "camera": 'sk"image'})) == set(photos)
    assert paths(Where(tags={"kind": "nothing"})) == set()
    assert paths(Where(job="job-flags")) == set(flags)
    assert paths(Where(path_prefix=str(image_folder / "photos"))) == set(photos)
    wanted = {p for p in flags if p.rsplit("/", 1)[1][0] in "abc"}
    assert paths(Where(path_glob=str(image_folder / "flags" / "[a-c]*.png"))) == wanted and wanted
    big = {p for p in photos if min(Image.open(p).size) >= 400}
    assert paths(Where(min_width=400, min_height=400)) == big and 0 < len(big) < len(photos)
    assert paths(Where(ingested_after=before - 1)) == set(flags) | set(photos)
    assert paths(Where(ingested_before=before - 1)) == set()
    # A path prefix is a folder boundary, not a string prefix: "photos" does not take "photos2".
    assert paths(Where(path_prefix=str(image_folder / "phot"))) == set()


def test_search_many_equals_one_by_one(tagged):
    client, flags, photos, _ = tagged
    queries = [photos[1], flags[2], photos[5]]
    batched = client.search_many(queries, k=4)
    single = [client.search(q, k=4) for q in queries]
    assert [[h.id for h in hits] for hits in batched] == [[h.id for h in hits] for hits in single]
    for got, want in zip(batched, single, strict=False):
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    assert [hits[0].path for hits in batched] == queries
    assert client.search_many([]) == []


def test_searching_a_model_with_no_collection_names_it(settings, models):
    client = Client(settings, embedders=models)  # a fresh store: nothing ingested yet
    with pytest.raises(ImsimError, match=r"no collection '\w+_clip_\w+' for model 'clip': ingest images with this model first"):
        client.search_batch({n: np.ones((1, m.info.dim), np.float32) for n, m in models.items()}, k=3)
    client.close()
