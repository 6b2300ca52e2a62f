"""Every registered family, loaded from a tiny random instance through the same code path as published weights.

ViT, EfficientNet and BLIP-2 go through transformers' ``from_pretrained`` (BLIP-2 from a whole checkpoint,
language model included, which must not be loaded); VGG16 from timm's published file layout; SSCD from a
TorchScript file (a local path and an HTTP URL); ONNX from a model exported with ``torch.onnx.export`` here.
"""

from __future__ import annotations

import functools
import http.server
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from imsim.errors import ConfigError, ModelError
from imsim.models import FAMILIES as REGISTRY
from imsim.models import embed_images, load_model, model_card, names

from .support.servers import SAMPLES
from .support.settings import make_settings
from .test_models import assert_like_processor

FAMILIES = list(REGISTRY)  # every built-in family, from the registry: a new one is tested without a line here


@pytest.fixture(scope="module")
def family_models(family_fields, tmp_path_factory):
    settings = make_settings(family_fields, tmp_path_factory.mktemp("fam"), batch_size=3)
    return {name: load_model(name, settings) for name in FAMILIES}


def photos(n=None):
    return [Image.open(p).convert("RGB") for p in sorted((SAMPLES / "photos").glob("*.jpg"))[:n]]


def edited(im: Image.Image) -> Image.Image:
    """A mild edited copy: 5 % border crop, brighter, JPEG quality 60."""
    w, h = im.size
    im = ImageEnhance.Brightness(im.crop((w // 20, h // 20, w - w // 20, h - h // 20))).enhance(1.15)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_every_family_is_registered_with_a_card():
    assert FAMILIES and set(FAMILIES) <= set(names())
    for name in FAMILIES:
        card = model_card(name)
        assert card.title and card.dim and card.licence and card.good_for and card.embedding and card.default_source


@pytest.mark.parametrize("name", FAMILIES)
def test_shape_normalisation_determinism_and_batching(family_models, name):
    model = family_models[name]
    images = photos(5)
    a = embed_images(model, images)  # batch_size 3: two forward passes, and for SSCD/ONNX several shapes
    assert a.shape == (5, model.info.dim) and a.dtype == np.float32 and model.info.dim > 0
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, embed_images(model, images))
    one_by_one = np.concatenate([embed_images(model, [im]) for im in images])
    np.testing.assert_allclose(a, one_by_one, atol=1e-4)
    assert not np.allclose(a[0], a[1], atol=1e-3)
    assert model.info.name == name and model.info.revision and model.info.config.identity() is not None
    assert bool(model_card(name).text) == model.info.supports_text  # the card says "text" exactly when it embeds text
    if model.info.supports_text:
        texts = model.embed_texts(["a photo of a cat", "a red car at night"])
        assert texts.shape == (2, model.info.dim) and not np.allclose(texts[0], texts[1], atol=1e-3)
        np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    else:
        with pytest.raises(ModelError):
            model.embed_texts(["a photo of a cat"])


@pytest.mark.parametrize("name", FAMILIES)
def test_an_edited_copy_scores_above_unrelated_images(family_models, name):
    """Random weights still keep a mild edit closer than a different photo for most pairs (each family >= 0.83
    when this was written; BLIP-2 only after the tiny builder gave its Q-Former trained-like weight scales)."""
    model = family_models[name]
    images = photos()
    originals, copies = embed_images(model, images), embed_images(model, [edited(im) for im in images])
    copy_sim = np.sum(originals * copies, axis=1)
    sims = originals @ originals.T
    n = len(images)
    wins = [copy_sim[i] > sims[i, j] for i in range(n) for j in range(n) if i != j]
    assert np.mean(wins) >= 0.8, f"{name}: the edited copy beat an unrelated photo in only {np.mean(wins):.0%} of pairs"
    assert copy_sim.mean() > sims[~np.eye(n, dtype=bool)].mean()


@pytest.mark.parametrize("name", ["vit", "efficientnet", "blip2"])
def test_preprocessing_matches_the_checkpoints_own_processor(family_models, family_dirs, name):
    from transformers import AutoImageProcessor

    model = family_models[name]
    reference = AutoImageProcessor.from_pretrained(str(family_dirs[name]))
    for im in photos(3):
        want = reference(images=[im], return_tensors="pt")["pixel_values"]
        got = model.preprocess.normalise(torch.as_tensor(model.preprocess.to_uint8(im)[None]), torch.float32)
        if model.preprocess.resample in (2, 3):  # bilinear/bicubic run on torch's uint8 kernel: within one grey level
            assert_like_processor(got, want, model.preprocess.std)
        else:  # other filters (EfficientNet: nearest) are Pillow's own
            assert got.shape == want.shape and (got - want).abs().max().item() < 1e-4
    assert model.preprocess.exact  # all three resize straight to a square, aspect ratio not kept


def test_efficientnet_folds_include_top_into_the_std(family_models):
    p = family_models["efficientnet"].preprocess
    assert p.std == pytest.approx(tuple(s * s for s in (0.47853944, 0.4732864, 0.47434163)))


def test_blip2_loads_vision_and_qformer_but_never_the_language_model(family_models, family_dirs):
    from safetensors.torch import load_file

    model = family_models["blip2"].model
    children = {name for name, _ in model.named_children()}
    assert children == {"vision_model", "qformer"} and not hasattr(model, "language_model")
    checkpoint = load_file(str(family_dirs["blip2"] / "model.safetensors"))
    assert any(k.startswith("language_model.") for k in checkpoint)  # the file does hold one
    wanted = {k: v for k, v in checkpoint.items() if k.split(".")[0] in {"vision_model", "qformer", "query_tokens"}}
    loaded = dict(model.state_dict())
    assert set(loaded) == set(wanted)
    for key, value in wanted.items():
        torch.testing.assert_close(loaded[key].float(), value.float())


def test_blip2_embedding_is_the_mean_of_the_query_outputs(family_models, family_dirs):
    """Against transformers' own Blip2Model.get_qformer_features (which loads the language model too)."""
    from transformers import Blip2Model

    ours = family_models["blip2"]
    reference = Blip2Model.from_pretrained(str(family_dirs["blip2"])).eval()
    pixels = ours.preprocess.normalise(
        torch.as_tensor(np.stack([ours.preprocess.to_uint8(im) for im in photos(2)])), torch.float32
    )
    with torch.inference_mode():
        want = torch.nn.functional.normalize(reference.get_qformer_features(pixel_values=pixels).mean(dim=1), dim=-1)
    np.testing.assert_allclose(
        ours.embed_uint8(np.stack([ours.preprocess.to_uint8(im) for im in photos(2)])), want.numpy(), atol=1e-5
    )


def test_vgg16_reads_timms_layout_as_the_published_network_computes_it(family_models, family_dirs):
    """timm stores fc6 as a 7x7 convolution: run that form directly and compare with our Linear fc6 → fc7."""
    from safetensors.torch import load_file

    model = family_models["vgg16"]
    state = load_file(str(family_dirs["vgg16"] / "model.safetensors"))
    uint8 = np.stack([model.preprocess.to_uint8(im) for im in photos(2)])
    assert uint8.shape[1:3] == (224, 224) and model.preprocess.resize_short == 256
    x = model.preprocess.normalise(torch.as_tensor(uint8), torch.float32)
    with torch.inference_mode():
        f = model.model.features(x)  # (N, C, 7, 7) at 224 px
        h = torch.relu(torch.nn.functional.conv2d(f, state["pre_logits.fc1.weight"], state["pre_logits.fc1.bias"]))
        h = torch.relu(torch.nn.functional.conv2d(h, state["pre_logits.fc2.weight"], state["pre_logits.fc2.bias"]))
        want = torch.nn.functional.normalize(h.flatten(1), dim=-1)
    np.testing.assert_allclose(model.embed_uint8(uint8), want.numpy(), atol=1e-5)


def test_vgg16_gap_pooling_and_a_wrong_checkpoint(family_dirs, tmp_path):
    settings = make_settings(family_dirs, tmp_path, vgg16_pooling="gap")
    model = load_model("vgg16", settings)
    assert model.info.dim == 512 // 16 and model.info.variant == "gap"
    with pytest.raises(ModelError, match="cannot load VGG weights"):
        load_model("vgg16", make_settings({"vgg16": tmp_path / "nowhere"}, tmp_path))


@pytest.fixture()
def http_server(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sscd_from_a_url_is_downloaded_once_and_equals_the_local_file(family_models, family_dirs, tmp_path, http_server):
    root, base = http_server
    (root / "sscd_disc_mixup.torchscript.pt").write_bytes(family_dirs["sscd"].read_bytes())
    settings = make_settings(family_dirs, tmp_path / "data", sscd_model=f"{base}/sscd_disc_mixup.torchscript.pt")
    remote = load_model("sscd", settings)
    cached = list((tmp_path / "data" / "models").rglob("sscd_disc_mixup.torchscript.pt"))
    assert len(cached) == 1
    local = family_models["sscd"]
    assert remote.info.revision == local.info.revision and remote.info.slug == "sscd_disc_mixup"
    images = photos(4)
    np.testing.assert_allclose(embed_images(remote, images), embed_images(local, images), atol=1e-6)
    (root / "sscd_disc_mixup.torchscript.pt").unlink()  # a second load uses the downloaded copy
    assert load_model("sscd", settings).info.revision == local.info.revision
    with pytest.raises(ModelError, match="cannot download"):
        load_model("sscd", make_settings(family_dirs, tmp_path / "d2", sscd_model=f"{base}/missing.pt"))


def test_sscd_keeps_the_aspect_ratio_at_short_edge_288_and_batches_by_shape(family_models, family_dirs, tmp_path):
    model = family_models["sscd"]
    shapes = {model.preprocess.to_uint8(im).shape for im in photos()}
    assert all(min(h, w) == 288 for h, w, _ in shapes) and len(shapes) > 1
    skew = load_model("sscd", make_settings(family_dirs, tmp_path, sscd_resize="skew320"))
    assert {skew.preprocess.to_uint8(im).shape for im in photos()} == {(320, 320, 3)}
    assert skew.info.variant == "skew320" and skew.info.version_tag != model.info.version_tag


def test_onnx_float_export_equals_the_torch_module(family_dirs, tmp_path):
    from imsim.models import testing

    module = testing.tiny_sscd_module(seed=2)
    path = testing.export_onnx(module, tmp_path / "float.onnx")
    model = load_model(
        "onnx",
        make_settings(
            {"onnx": path},
            tmp_path,
            onnx_input_layout="nchw",
            onnx_input_dtype="float32",
            onnx_resize="crop",
            onnx_size=64,
            onnx_name="my-model",
        ),
    )
    uint8 = np.stack([model.preprocess.to_uint8(im) for im in photos(3)])
    assert uint8.shape[1:] == (64, 64, 3) and model.preprocess.resize_short == 73  # 64 * 8/7, like 256 for 224
    with torch.inference_mode():
        want = module(model.preprocess.normalise(torch.as_tensor(uint8), torch.float32)).numpy()
    np.testing.assert_allclose(model.embed_uint8(uint8), want, atol=1e-5)
    assert model.info.extra["label"] == "my-model" and model.info.revision.startswith("sha256-")


def test_onnx_raw_pixel_model_and_clear_errors(family_models, family_dirs, tmp_path):
    from imsim.models import testing

    model = family_models["onnx"]  # NHWC uint8 in; normalises inside the graph
    with torch.inference_mode():
        module = testing.tiny_sscd_module(seed=1)
        im = photos(1)[0]
        uint8 = model.preprocess.to_uint8(im)
        x = (
            torch.as_tensor(uint8[None]).permute(0, 3, 1, 2).float() / 255 - torch.tensor(testing.IMAGENET_MEAN).view(1, 3, 1, 1)
        ) / torch.tensor(testing.IMAGENET_STD).view(1, 3, 1, 1)
        want = module(x).numpy()
    np.testing.assert_allclose(model.embed_uint8(uint8[None]), want, atol=1e-4)
    base = dict(onnx_input_layout="nhwc", onnx_input_dtype="uint8", onnx_resize="short", onnx_size=96)
    with pytest.raises(ModelError, match="has no output 'nope'.*embedding"):
        load_model("onnx", make_settings(family_dirs, tmp_path, onnx_output_name="nope"))
    with pytest.raises(ModelError, match="no ONNX model at"):
        load_model("onnx", make_settings({"onnx": tmp_path / "missing.onnx"}, tmp_path, **base))
    with pytest.raises(ModelError, match="needs IMSIM_ONNX_MODEL"):
        load_model("onnx", make_settings({}, tmp_path))
    with pytest.raises(ConfigError, match="IMSIM_ONNX_MEAN"):  # refused when the settings are made, before any load
        make_settings(family_dirs, tmp_path, onnx_input_dtype="float32", onnx_mean="1,2")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_plain_client_searches_what_ingest_stored_for_every_family(family_fields, tmp_path, name):
    """The `imsim search` path: ingest with IMSIM_MODELS=NAME, then an unpinned Client (no models handed to it)
    loads the model from the config stored on the collection, validated, and finds the image itself first.
    (An ONNX collection once crashed here: the stored settings were re-applied as strings, unvalidated.)"""
    from imsim.client.local import Client
    from imsim.ingest import ingest_local

    settings = make_settings(family_fields, tmp_path / "data", models=name)
    files = sorted(str(p) for p in (SAMPLES / "photos").glob("*.jpg"))[:4]
    assert ingest_local(files, settings).done == 4
    with Client(settings) as client:
        hits = client.search(files[2], k=2, fusion="none")
        assert hits[0].path == files[2] and hits[0].scores[name] == pytest.approx(1.0, abs=1e-4)
        assert client.models.collection(name) == client.store.versions.collection_name(client.models.model(name).info)


def test_a_family_added_by_register_is_configured_ingested_and_searched(tmp_path, monkeypatch):
    """The add-a-family checklist (docs/contributing.md) in one test: a family module's config class, embedder and
    FAMILY entry, one registry line (here `register`), and its IMSIM_<NAME>_<FIELD> settings work end to end."""
    from pydantic import Field

    from imsim import models as registry
    from imsim.client.local import Client
    from imsim.ingest import ingest_local
    from imsim.models.base import Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime, l2_normalise, no_text

    class ColourConfig(FamilyConfig):
        model: str = Field("colour-histogram", description="A name for the histogram model.")
        bins: int = Field(4, ge=2, le=16, description="Histogram bins per channel.")

    class ColourEmbedder:
        def __init__(self, config: ColourConfig, runtime: Runtime):
            self.device = "cpu"
            self.bins = config.bins
            self.preprocess = Preprocess(64, 64, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resample=2)
            self.info = ModelInfo(
                name="colour",
                source=config.model,
                revision=f"bins-{config.bins}",
                dim=3 * config.bins,
                supports_text=False,
                config=config,
                preprocess=self.preprocess,
            )

        def embed_uint8(self, batch):
            edges = np.linspace(0, 256, self.bins + 1)
            hist = [np.stack([np.histogram(img[..., c], edges)[0] for c in range(3)]).ravel() for img in batch]
            return l2_normalise(np.asarray(hist, np.float32))

        def embed_texts(self, texts):
            raise no_text(self.info)

    card = ModelCard(
        title="colour histogram", default_source="-", dim="3 x bins", licence="-", embedding="RGB histogram", good_for="a test"
    )
    registry.register(Family(name="colour", config=ColourConfig, load=ColourEmbedder, card=card))
    try:
        monkeypatch.setenv("IMSIM_COLOUR_BINS", "8")
        settings = make_settings({}, tmp_path / "data", models="colour")
        assert settings.family("colour").model_dump()["bins"] == 8
        files = sorted(str(p) for p in (SAMPLES / "photos").glob("*.jpg"))[:5]
        assert ingest_local(files, settings).done == 5
        monkeypatch.setenv("IMSIM_COLOUR_BINS", "4")  # the collection remembers its own config: the search reloads bins=8
        with Client(
            make_settings({}, tmp_path / "data", models="colour", collection_prefix=settings.collection_prefix)
        ) as client:
            assert client.settings.family("colour").model_dump()["bins"] == 4
            hits = client.search(files[1], k=3)
            assert hits[0].path == files[1] and client.models.model("colour").info.dim == 24
        with pytest.raises(ConfigError, match="IMSIM_COLOUR_BINS"):
            make_settings({}, tmp_path, colour_bins=99)
    finally:
        registry._registered.pop("colour", None)


def test_siglip2_embeds_as_its_own_naflex_processor_does(family_models):
    """SigLIP 2's patches (aspect ratio kept, the processor's size for the patch budget, masked padding) against the
    checkpoint's own Siglip2 image processor and model, on photos, a wide and a tall crop."""
    model = family_models["siglip2"]
    images = photos()
    wide, tall = images[0].crop((0, 0, images[0].width, images[0].height // 5)), images[1].crop((0, 0, 90, images[1].height))
    images += [wide, tall]
    ours = embed_images(model, images)
    with torch.inference_mode():
        reference = []
        for im in images:
            inputs = model.processor(images=[im], return_tensors="pt")
            out = model.model.get_image_features(**inputs)
            reference.append(torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)[0].numpy())
    cosines = np.sum(ours * np.stack(reference), axis=1)
    assert cosines.min() >= 0.999, cosines
