"""Model versions without data loss: each version its own collection, an alias picks the one queries use."""

from __future__ import annotations

from typing import Any, cast

import pytest

from imsim.client.local import Client
from imsim.errors import ModelError
from imsim.ingest import Ingestor, ingest_local
from imsim.models.testing import build_tiny_clip
from imsim.sources.paths import discover
from imsim.store import VectorStore

from .support.settings import make_settings


def ingest(settings, files, store, **kwargs):
    ingestor = Ingestor(settings, store=store)
    try:
        ingest_local(files, settings, ingestor=ingestor, **kwargs)
        return dict(ingestor.collections)
    finally:
        ingestor.close()


def ranking(settings, store, query):
    client = Client(settings, store=store)
    hits = client.search(query, k=8, models="clip", fusion="none")
    return [h.id for h in hits], [round(h.score, 5) for h in hits], client


def test_versions_switch_back_and_forth_without_reingest(tiny_model_dirs, tmp_path, image_folder):
    files = discover([image_folder / "photos"]).files
    query = files[3]
    v1 = make_settings(tiny_model_dirs, tmp_path / "data", models="clip")
    store = VectorStore(v1)
    first = ingest(v1, files, store)["clip"]
    before = ranking(v1, store, query)[:2]

    # A retrained CLIP (other weights, same size) is a new version: a new collection; queries stay on the first.
    v2 = v1.replace(clip_model=str(build_tiny_clip(tmp_path / "clip-v2" / "tiny-clip", seed=1)))
    second = ingest(v2, files, store)["clip"]
    assert second != first and store.versions.active_collection("clip") == first
    ids, scores, client = ranking(v2, store, query)  # configured v2, but the alias says v1: v1's model is loaded
    assert (ids, scores) == before and client.models.model("clip").info.source == v1.family("clip").model_dump()["model"]

    store.versions.activate("clip", second)
    ids, scores, client = ranking(v2, store, query)
    assert ids[0] == before[0][0] and scores != before[1]  # itself first, but other vectors
    assert (
        client.models.collection("clip") == second
        and client.models.model("clip").info.source == v2.family("clip").model_dump()["model"]
    )

    store.versions.activate("clip", first)  # back: same results as before, nothing re-embedded
    assert ranking(v2, store, query)[:2] == before
    assert store.rows.count(first) == store.rows.count(second) == len(files)

    # A new dimension never alters an existing collection; --activate style switch after a complete ingest.
    v3 = v1.replace(clip_model=str(build_tiny_clip(tmp_path / "clip-v3" / "tiny-clip", projection_dim=24)))
    third = ingest(v3, files[:5], store)["clip"]
    assert store.versions.dimension(third) == 24 and store.versions.dimension(first) == store.versions.dimension(second) == 32
    assert [store.rows.count(c) for c in (first, second, third)] == [len(files), len(files), 5]
    versions = {v.name: v for v in store.rows.summaries()}
    assert [n for n, v in versions.items() if v.active] == [first] and {v.model for v in versions.values()} == {"clip"}
    store.close()


def test_a_running_client_follows_a_switch_made_elsewhere(tiny_model_dirs, tmp_path, image_folder, monkeypatch):
    import imsim.client.models

    files = discover([image_folder / "photos"]).files[:6]
    v1 = make_settings(tiny_model_dirs, tmp_path / "data", models="clip")
    store = VectorStore(v1)
    first = ingest(v1, files, store)["clip"]
    v2 = v1.replace(clip_model=str(build_tiny_clip(tmp_path / "clip-v2" / "tiny-clip", seed=2)))
    second = ingest(v2, files, store)["clip"]
    monkeypatch.setattr(imsim.client.models, "ALIAS_TTL", 0.0)
    client = Client(v1, store=store)
    assert client.models.collection("clip") == first
    other = VectorStore(v1.replace(milvus_uri=v1.resolved_milvus_uri))  # as if from another process
    other.versions.activate("clip", second)
    assert (
        client.models.collection("clip") == second
        and client.models.model("clip").info.source == v2.family("clip").model_dump()["model"]
    )
    assert client.search(files[0], k=1, models="clip")[0].path == files[0]
    other.close()
    store.close()


def test_a_version_whose_model_is_gone_is_a_clear_error(tiny_model_dirs, tmp_path, image_folder):
    import shutil

    files = discover([image_folder / "photos"]).files[:4]
    base = make_settings(tiny_model_dirs, tmp_path / "data", models="clip")
    store = VectorStore(base)
    ingest(base, files, store)
    moved = base.replace(clip_model=str(build_tiny_clip(tmp_path / "v2" / "tiny-clip", seed=3)))
    second = ingest(moved, files, store)["clip"]
    store.versions.activate("clip", second)
    shutil.rmtree(tmp_path / "v2")
    with pytest.raises(ModelError, match="cannot load CLIP model"):
        Client(base, store=store).search(files[0], k=1, models="clip")
    store.close()


def test_dinov2_pooling_is_its_own_version(tiny_model_dirs, tmp_path, image_folder):
    files = discover([image_folder / "photos"]).files[:4]
    cls = make_settings(tiny_model_dirs, tmp_path / "data", models="dinov2")
    store = VectorStore(cls)
    a = ingest(cls, files, store)["dinov2"]
    b = ingest(cls.replace(dinov2_pooling="cls+gem"), files, store)["dinov2"]
    assert (
        a != b
        and store.versions.dimension(b) == 2 * store.versions.dimension(a)
        and store.versions.properties(b)["variant"] == "cls_gem"
    )
    stored = store.versions.model_config(b, type(cls.family("dinov2")))
    assert stored is not None and stored.model_dump()["pooling"] == "cls+gem"
    store.versions.activate("dinov2", b)
    client = Client(cls, store=store)  # configured cls, active cls+gem: queries embed with cls+gem
    assert cast(Any, client.models.model("dinov2")).pooling == "cls+gem" and client.search(files[2], k=1)[0].path == files[2]
    store.close()


def large_jpeg(path, size=(4200, 2800)):
    """A real photo as a large JPEG: big enough that each model's DCT draft scale differs."""
    from PIL import Image

    from .support.servers import SAMPLES

    Image.open(SAMPLES / "photos" / "chelsea.jpg").resize(size, Image.Resampling.LANCZOS).save(path, quality=92)
    return str(path)


def test_one_file_one_model_version_one_vector_whatever_else_is_enabled(family_dirs, tmp_path, image_folder):
    """The same file and the same clip version give bit-identical stored vectors with clip alone and with clip,sscd,
    dinov2 enabled (the draft scale once was the largest any enabled model needed, so SSCD changed CLIP's vectors)."""
    import numpy as np

    from imsim.images import jpeg_draft_scale, read_header
    from imsim.sources.names import path_id

    files = discover([image_folder / "photos"]).files[:6] + [large_jpeg(tmp_path / "large.jpg")]
    stored = {}
    for models in ("clip", "clip,sscd,dinov2"):
        settings = make_settings(family_dirs, tmp_path / models.replace(",", "-"), models=models)
        store = VectorStore(settings)
        ingestor = Ingestor(settings, store=store)
        try:
            assert ingest_local(files, settings, ingestor=ingestor).done == len(files)
            stored[models] = store.rows.get_vectors(ingestor.collections["clip"], [path_id(f) for f in files])
            embedders = ingestor.models
            header = read_header(open(files[-1], "rb").read(), files[-1])
            scales = {name: jpeg_draft_scale(header, m.preprocess.draft_size) for name, m in embedders.items()}
        finally:
            ingestor.close()
            store.close()
    assert len(set(scales.values())) > 1, scales  # the models really decode the large file at different scales
    alone, together = stored["clip"], stored["clip,sscd,dinov2"]
    assert set(alone) == set(together) == {path_id(f) for f in files}
    for key in alone:
        assert np.array_equal(np.asarray(alone[key], np.float32), np.asarray(together[key], np.float32)), key


def test_every_onnx_preprocessing_setting_is_part_of_its_version_and_a_change_re_embeds(tmp_path, image_folder):
    """Two wirings of one .onnx file never share a collection: the file's hash, layout, dtype, resize, size, filter,
    mean/std/rescale and input/output names are all in the version tag; the label is not."""
    from imsim.models import load_model, testing

    path = testing.export_onnx(testing.tiny_sscd_module(seed=2), tmp_path / "float.onnx")
    other = testing.export_onnx(testing.tiny_sscd_module(seed=3), tmp_path / "other.onnx")
    base = dict(onnx_input_layout="nchw", onnx_input_dtype="float32", onnx_resize="crop", onnx_size=64)
    changes: dict[str, dict[str, Any]] = {
        "file": {"onnx": other},
        "size": {"onnx_size": 72},
        "resize exact": {"onnx_resize": "exact"},
        "resize short": {"onnx_resize": "short"},
        "resize_short": {"onnx_resize_short": 80},
        "resample": {"onnx_resample": "bilinear"},
        "mean": {"onnx_mean": "0.5,0.5,0.5"},
        "std": {"onnx_std": "0.5,0.5,0.5"},
        "rescale": {"onnx_rescale": 0.5},
        "input name": {"onnx_input_name": "pixel_values"},
        "output name": {"onnx_output_name": "embedding"},
    }

    def tag(**change):
        model_dirs = {"onnx": change.pop("onnx", path)}
        return load_model("onnx", make_settings(model_dirs, tmp_path / "d", **{**base, **change})).info.version_tag

    tags = {name: tag(**change) for name, change in changes.items()}
    first = tag()
    assert first not in tags.values() and len(set(tags.values())) == len(tags), tags
    assert tag(onnx_name="my label") == first
    from imsim.models.onnx import OnnxConfig

    assert {"input_layout", "input_dtype", "resize", "size", "resize_short", "resample", "mean", "std", "rescale"} | {
        "input_name",
        "output_name",
    } <= set(OnnxConfig(model=str(path)).identity())
    with pytest.raises(ModelError, match="float16.*float"):  # a wiring that cannot run is refused at load, by name
        tag(onnx_input_dtype="float16")

    files = discover([image_folder / "photos"]).files[:5]
    data = tmp_path / "data"
    v1 = make_settings({"onnx": path}, data, models="onnx", **base)
    v2 = v1.replace(onnx_resample="bilinear")
    store = VectorStore(v1)
    try:
        first_collection = ingest(v1, files, store)["onnx"]
        result = ingest_local(files, v2, ingestor=(second := Ingestor(v2, store=store)))
        second.close()
        assert (result.done, result.skipped) == (len(files), 0)  # re-embedded, never "already stored unchanged"
        second_collection = store.versions.collection_name(load_model("onnx", v2).info)
        assert second_collection != first_collection and store.rows.count(second_collection) == len(files)
        again = ingest_local(files, v1, ingestor=(third := Ingestor(v1, store=store)))
        third.close()
        assert (again.done, again.skipped) == (0, len(files))  # the first wiring's rows are still there, unchanged
    finally:
        store.close()
