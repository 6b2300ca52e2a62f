"""Model versions without data loss: each version its own collection, an alias picks the one queries use."""

from __future__ import annotations

import json

import pytest

from imsim.errors import ModelError
from imsim.ingest import Ingestor, ingest_local
from imsim.models.testing import build_tiny_clip
from imsim.paths import discover
from imsim.query import Client
from imsim.store import VectorStore

from .support.servers import settings_env
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
    assert second != first and store.active_collection("clip") == first
    ids, scores, client = ranking(v2, store, query)  # configured v2, but the alias says v1: v1's model is loaded
    assert (ids, scores) == before and client.model("clip").info.source == v1.family("clip").model

    store.activate("clip", second)
    ids, scores, client = ranking(v2, store, query)
    assert ids[0] == before[0][0] and scores != before[1]  # itself first, but other vectors
    assert client.collection("clip") == second and client.model("clip").info.source == v2.family("clip").model

    store.activate("clip", first)  # back: same results as before, nothing re-embedded
    assert ranking(v2, store, query)[:2] == before
    assert store.count(first) == store.count(second) == len(files)

    # A new dimension never alters an existing collection; --activate style switch after a complete ingest.
    v3 = v1.replace(clip_model=str(build_tiny_clip(tmp_path / "clip-v3" / "tiny-clip", projection_dim=24)))
    third = ingest(v3, files[:5], store)["clip"]
    assert store.dimension(third) == 24 and store.dimension(first) == store.dimension(second) == 32
    assert [store.count(c) for c in (first, second, third)] == [len(files), len(files), 5]
    versions = {v.name: v for v in store.summaries()}
    assert [n for n, v in versions.items() if v.active] == [first] and {v.model for v in versions.values()} == {"clip"}
    store.close()


def test_a_running_client_follows_a_switch_made_elsewhere(tiny_model_dirs, tmp_path, image_folder, monkeypatch):
    import imsim.query

    files = discover([image_folder / "photos"]).files[:6]
    v1 = make_settings(tiny_model_dirs, tmp_path / "data", models="clip")
    store = VectorStore(v1)
    first = ingest(v1, files, store)["clip"]
    v2 = v1.replace(clip_model=str(build_tiny_clip(tmp_path / "clip-v2" / "tiny-clip", seed=2)))
    second = ingest(v2, files, store)["clip"]
    monkeypatch.setattr(imsim.query, "ALIAS_TTL", 0.0)
    client = Client(v1, store=store)
    assert client.collection("clip") == first
    other = VectorStore(v1.replace(milvus_uri=v1.resolved_milvus_uri))  # as if from another process
    other.activate("clip", second)
    assert client.collection("clip") == second and client.model("clip").info.source == v2.family("clip").model
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
    store.activate("clip", second)
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
    assert a != b and store.dimension(b) == 2 * store.dimension(a) and store.properties(b)["variant"] == "cls_gem"
    assert store.model_config(b, type(cls.family("dinov2"))).pooling == "cls+gem"
    store.activate("dinov2", b)
    client = Client(cls, store=store)  # configured cls, active cls+gem: queries embed with cls+gem
    assert client.model("dinov2").pooling == "cls+gem" and client.search(files[2], k=1)[0].path == files[2]
    store.close()


def test_cli_models_lists_versions_activates_and_shows_cards(cli, tiny_model_dirs, tmp_path, image_folder):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(image_folder / "flags"))
    other = build_tiny_clip(tmp_path / "clip-v2" / "tiny-clip", seed=4)
    env2 = {**env, "IMSIM_CLIP_MODEL": str(other), "IMSIM_MODELS": "clip"}
    cli(env2, "ingest", "--local", "--activate", str(image_folder / "flags" / "[a-c]*.png"))  # ar br ca ch cn
    listing = json.loads(cli(env, "models", "--json").stdout)
    assert {"clip", "dinov2", "vit", "efficientnet", "blip2", "vgg16", "sscd", "onnx"} <= {r["name"] for r in listing["registry"]}
    clip = sorted((v for v in listing["versions"] if v["model"] == "clip"), key=lambda v: -v["rows"])
    assert [(v["rows"], v["active"]) for v in clip] == [(24, False), (5, True)]  # --activate switched to the new one
    tag = clip[0]["name"].rsplit("_", 1)[1]
    proc = cli(env, "models", "activate", "clip", tag)
    assert clip[0]["name"] in proc.stderr
    listing = json.loads(cli(env, "models", "--json").stdout)
    assert [v["name"] for v in listing["versions"] if v["active"] and v["model"] == "clip"] == [clip[0]["name"]]
    card = cli({**env, "COLUMNS": "200"}, "models", "--info", "sscd").stdout
    assert "sscd_disc_mixup" in card and "MIT" in card and "512" in card and "copy" in card
    proc = cli(env, "models", "activate", "clip", "deadbeef", check=False)
    assert proc.returncode == 2 and "names no stored collection" in proc.stderr
    proc = cli(env, "models", "--info", "nope", check=False)
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
