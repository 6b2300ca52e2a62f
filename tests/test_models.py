"""Tiny CLIP and DINOv2 built from configs, saved, and loaded through the real from_pretrained path."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from imsim.errors import ModelError
from imsim.models import embed_images, family, load, load_model, names
from imsim.models.base import Runtime
from imsim.models.dinov2 import Dinov2Config

from .support.servers import SAMPLES
from .support.settings import make_settings


def images():
    return [Image.open(p).convert("RGB") for p in sorted((SAMPLES / "photos").glob("*.jpg"))[:4]]


def assert_like_processor(ours: torch.Tensor, reference: torch.Tensor, std: tuple[float, ...]) -> None:
    """Our pixels equal the model's own HF processor's within one grey level (torch's uint8 resize vs Pillow's),
    and exactly on almost every value."""
    assert ours.shape == reference.shape
    diff = (ours - reference).abs()
    assert diff.max().item() <= 2.01 / 255 / min(std)
    assert (diff > 1e-4).float().mean().item() < 0.02


def test_registry_names():
    assert {"clip", "dinov2"} <= set(names())
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        family("nope")


@pytest.mark.parametrize("name,dim", [("clip", 32), ("dinov2", 48)])
def test_embeddings_normalised_deterministic_right_dimension(models, name, dim):
    model = models[name]
    a = embed_images(model, images())
    b = embed_images(model, images())
    assert a.shape == (4, dim) and a.dtype == np.float32 and model.info.dim == dim
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])  # different images, different vectors


def test_batching_does_not_change_vectors(models):
    model = models["clip"]
    batch = embed_images(model, images())
    single = np.concatenate([embed_images(model, [im]) for im in images()])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_preprocessing_matches_the_models_own_processor(models, tiny_model_dirs):
    from transformers import AutoImageProcessor

    for im in images():
        for name in ("clip", "dinov2"):
            model = models[name]
            reference = AutoImageProcessor.from_pretrained(str(tiny_model_dirs[name]))(images=[im], return_tensors="pt")[
                "pixel_values"
            ]
            ours = model.preprocess.normalise(torch.as_tensor(np.stack([model.preprocess.to_uint8(im)])), torch.float32)
            assert_like_processor(ours, reference, model.preprocess.std)
    assert models["dinov2"].preprocess.resize_short == 256 and models["clip"].preprocess.resize_short == 224


def test_clip_text_features(models):
    text = models["clip"].embed_texts(["a red bus", "a cat on a sofa"])
    assert text.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])
    with pytest.raises(ModelError, match="no text tower"):
        models["dinov2"].embed_texts(["x"])


def test_dinov2_pooling_modes(tiny_model_dirs):
    src = str(tiny_model_dirs["dinov2"])
    runtime = Runtime(device="cpu")
    out = {p: load("dinov2", Dinov2Config(model=src, pooling=p), runtime) for p in ("cls", "mean", "cls+mean")}
    vecs = {p: embed_images(m, images()[:2]) for p, m in out.items()}
    assert vecs["cls"].shape == (2, 48) and vecs["mean"].shape == (2, 48) and vecs["cls+mean"].shape == (2, 96)
    assert not np.allclose(vecs["cls"], vecs["mean"])
    # cls+mean is the normalised concatenation of the two
    both = np.concatenate([vecs["cls"], vecs["mean"]], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(vecs["cls+mean"], both, atol=1e-5)
    assert {m.info.slug for m in out.values()} == {"tiny_dinov2", "tiny_dinov2_mean", "tiny_dinov2_cls_mean"}
    assert len({m.info.version_tag for m in out.values()}) == 3
    with pytest.raises(ValueError, match="cls\\+gem"):  # the config validates the pooling before any weights load
        Dinov2Config(model=src, pooling="max")


def test_model_info_records_revision_source_and_the_config_that_reloads_it(models, tiny_model_dirs):
    info = models["clip"].info
    assert info.source == str(tiny_model_dirs["clip"]) and info.revision.startswith("local-")
    assert info.supports_text and not models["dinov2"].info.supports_text
    again = load("clip", type(info.config).model_validate(info.config.model_dump(mode="json")), Runtime(device="cpu"))
    assert again.info.version_tag == info.version_tag


def test_missing_model_source_is_a_clear_error(tmp_path):
    settings = make_settings({"clip": tmp_path / "nowhere", "dinov2": tmp_path / "nowhere"}, tmp_path)
    with pytest.raises(ModelError, match="cannot load CLIP model from"):
        load_model("clip", settings)


def test_an_offline_hub_id_fails_fast_with_a_hint(tmp_path):
    """With HF_HUB_OFFLINE set (the tests set it) a hub id not in the cache fails at once, saying what to do."""
    import time

    settings = make_settings({}, tmp_path, clip_model="openai/clip-vit-base-patch32")
    start = time.monotonic()
    with pytest.raises(ModelError, match="hub is unreachable"):
        load_model("clip", settings)
    assert time.monotonic() - start < 10


def test_out_of_memory_halves_the_batch_and_retries(models, caplog):
    """The same exception type CUDA raises, injected into the model call on CPU."""
    model = models["clip"]
    expected = embed_images(model, images())
    real_forward, calls = model._forward_images, []

    def forward(pixels):
        calls.append(pixels.shape[0])
        if pixels.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(pixels)

    model._forward_images, saved_batch = forward, model.batch_size
    try:
        model.batch_size = 4
        with caplog.at_level("WARNING"):
            got = embed_images(model, images())
        assert calls[:3] == [4, 2, 1] and model.batch_size == 1
        assert "batch size halved to 2" in caplog.text and "batch size halved to 1" in caplog.text
        np.testing.assert_allclose(got, expected, atol=1e-5)
        model._forward_images = lambda pixels: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("still"))
        with pytest.raises(torch.cuda.OutOfMemoryError):
            embed_images(model, images()[:1])  # at batch size 1 there is nothing left to halve
    finally:
        model._forward_images, model.batch_size = real_forward, saved_batch


def test_cpu_forward_batch_is_capped_by_cpu_batch_size(tiny_model_dirs, tmp_path):
    model = load_model("clip", make_settings(tiny_model_dirs, tmp_path, batch_size=64, cpu_batch_size=4))
    assert model.device == "cpu" and cast(Any, model).batch_size == 4


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_fp16_path_agrees_with_fp32(tiny_model_dirs, tmp_path, name):
    """The dtype path a CUDA worker takes (fp16 weights and inputs), run on CPU tensors: cosine >= 0.999 with fp32."""
    fp32 = load_model(name, make_settings(tiny_model_dirs, tmp_path, precision="fp32"))
    fp16 = load_model(name, make_settings(tiny_model_dirs, tmp_path, precision="fp16"))
    half = cast(Any, fp16)  # a torch embedder: its dtype and module
    assert half.dtype == torch.float16 and next(half.model.parameters()).dtype == torch.float16
    a, b = embed_images(fp32, images()), embed_images(fp16, images())
    assert b.dtype == np.float32 and np.min(np.sum(a * b, axis=1)) >= 0.999
    assert fp16.info.version_tag == fp32.info.version_tag  # precision is where a model runs, not what it is


def test_a_forward_pass_in_a_fresh_thread_uses_every_core_it_is_given(models):
    """torch's intra-op thread count is a per-thread OpenMP setting: `imsim serve`'s batching thread ran DINOv2 B/14 on
    one core (418 ms a query instead of 236 ms) until the forward pass set it where it runs."""
    import threading

    from imsim.models.torch_base import forward_threads

    model = models["dinov2"]
    batch = model.preprocess.to_uint8(Image.open(SAMPLES / "photos" / "coffee.jpg").convert("RGB"))[None]
    seen: list[tuple[int, int]] = []

    def run() -> None:
        torch.set_num_threads(1)  # what a thread that never set it may run with
        before = torch.get_num_threads()
        model.embed_uint8(batch)
        seen.append((before, torch.get_num_threads()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(1, forward_threads())]
