"""What every model family shares, with no torch at import time.

- :class:`FamilyConfig`: the base of each family's own settings (``IMSIM_<FAMILY>_<FIELD>``); what a
  collection stores to reload its model is ``config.model_dump(mode="json")``.
- :class:`Runtime`: where and how a model runs (device, batch size, precision, cache) — not part of what
  a model *is*, so never part of a version.
- :class:`Preprocess`: how pixels become model input, as data, with one resize that never materialises
  more than the model's input (a 50000×1 image is cropped before it is scaled up).
- :class:`ModelInfo`: what a loaded model is, and its version tag: a hash of everything that changes a
  vector (checkpoint revision, the family config, the preprocessing recipe, the decode pipeline, dimension).
- :class:`Embedder`: the narrow protocol ingest, query and eval use (``info``, ``preprocess``, ``device``,
  ``embed_uint8``, ``embed_texts``); torch families build on :mod:`imsim.models.torch_base`, ONNX
  implements it directly.
- :class:`Family`: a registry entry (name, config class, constructor, model card).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from ..errors import ModelError

# How imsim turns a file into model input (decoding, draft scale per model, resize): part of every version
# tag, so a change here writes new collections instead of mixing old and new vectors in one.
#   1: one JPEG draft size for all models (the largest any enabled model needed); Pillow resize
#   2: each model's JPEG draft scale from that model's own input size alone; torch uint8 antialiased resize
#   3: the draft keeps at least DRAFT_GAP x the model's input size (v2 drafted down to 1x: worst cosine 0.95 to a
#      full decode on real photos; 1.5x: 0.989, median 0.9996; 2x: 0.997 but a full decode of 1024x768 for 224 px)
PIPELINE_VERSION = 3
#: JPEGs are DCT-downscaled to no less than this many times a model's input size (Pillow's ``thumbnail`` uses 2.0):
#: the antialiased resize that follows sees enough pixels that the input matches a full decode (cosine >= 0.995 in
#: tests/test_real_weights.py; docs/benchmarks.md has the measurement) while a 1024x768 JPEG still decodes at 1/2
#: scale and a 12-Mpx photo at 1/8 for a 224-px model: 2.0 would decode those at full and 1/4 scale.
DRAFT_GAP = 1.5
VERSION_TAG_LENGTH = 6
Precision = Literal["auto", "fp32", "fp16", "bf16"]


class FamilyConfig(BaseModel):
    """A model family's settings. Field ``foo`` of family ``bar`` is read from ``IMSIM_BAR_FOO``.

    ``model`` is a hub id, URL or local path, ``revision`` a hub revision where the family has one.
    Fields in ``NOT_IN_VERSION`` (labels) never change a vector and are left out of the version tag."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    NOT_IN_VERSION: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        """The fields that change vectors, as JSON values (source and revision are named by :class:`ModelInfo`)."""
        skip = self.NOT_IN_VERSION | {"model", "revision"}
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}

    def digest(self) -> str:
        """12 hex digits of :meth:`identity`: two configs with the same digest make the same vectors from the same
        weights (what a queued chunk and a worker compare before any weights load)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Runtime:
    """Where a model runs: never part of what it computes (fp16 agrees with fp32 to cosine >= 0.999, tested)."""

    device: str = "auto"
    batch_size: int = 64
    cpu_batch_size: int = 8
    precision: Precision = "auto"
    cache_dir: Path = Path.home() / ".imsim" / "models"

    def batch_for(self, device: str) -> int:
        """Images per forward pass: large batches are slower on CPU (activations fall out of cache)."""
        return self.batch_size if device.startswith("cuda") else min(self.batch_size, self.cpu_batch_size)


MAX_SCALED_PIXELS = 16_000_000  # a whole scaled image larger than this is cropped before it is scaled
_TORCH_FILTERS = {int(Image.Resampling.BILINEAR): "bilinear", int(Image.Resampling.BICUBIC): "bicubic"}


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)


def _resize(pixels: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """HWC uint8 → (height, width) with PIL's filter ``resample``: torch's uint8 antialiased kernel for bilinear and
    bicubic, Pillow for the rest."""
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    mode = _TORCH_FILTERS.get(int(resample))
    if mode is None:
        return np.array(Image.fromarray(pixels).resize((width, height), resample=resample), dtype=np.uint8)
    import torch

    if not pixels.flags.writeable:
        pixels = pixels.copy()
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # a channels-last view: no copy
    y = torch.nn.functional.interpolate(x, size=(height, width), mode=mode, antialias=True)
    return y[0].permute(1, 2, 0).numpy()  # an HWC view; the caller's crop copies what it keeps


@dataclass(frozen=True)
class Preprocess:
    """How pixels become model input: the recipe of the Hugging Face image processors, as data.

    Three resize modes cover every family imsim has:

    - ``resize_short`` > 0 and a crop (CLIP, DINOv2, VGG): scale so the short edge is ``resize_short``,
      then centre-crop ``crop_height`` × ``crop_width``;
    - ``exact`` (ViT, BLIP-2, EfficientNet): resize straight to ``crop_height`` × ``crop_width``
      (aspect ratio not kept, as those processors do);
    - ``resize_short`` > 0 and no crop (``crop_height == 0``; SSCD): keep the aspect ratio, so
      images come out in different sizes and are batched by shape.

    Then ``x * rescale + offset``, minus ``mean``, divided by ``std`` (per channel).
    """

    resize_short: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255
    exact: bool = False
    offset: float = 0.0

    @classmethod
    def from_processor(cls, processor: Any) -> Preprocess:
        """Read the recipe off a transformers image processor (the model's own config).

        Also folds in EfficientNet's extras: ``rescale_offset`` (x/255 - 1) and ``include_top``
        (a second division by the std).
        """
        size = dict(processor.size or {})
        crop = dict(getattr(processor, "crop_size", None) or {})
        do_crop = bool(getattr(processor, "do_center_crop", False) and crop)
        if "shortest_edge" in size:
            short, exact = int(size["shortest_edge"]), False
            height = int(crop["height"]) if do_crop else 0
            width = int(crop["width"]) if do_crop else 0
        elif "height" in size and "width" in size:
            short, exact = 0, True
            height, width = int(size["height"]), int(size["width"])
            if do_crop:  # resize to (height, width) then crop: rare; refuse it rather than guess
                raise ModelError(f"unsupported image processor: exact resize {size!r} followed by a centre crop {crop!r}")
        else:
            raise ModelError(f"unsupported image processor size {size!r}")
        do_normalize = getattr(processor, "do_normalize", True)
        mean = tuple(float(m) for m in processor.image_mean) if do_normalize else (0.0, 0.0, 0.0)
        std = tuple(float(s) for s in processor.image_std) if do_normalize else (1.0, 1.0, 1.0)
        if getattr(processor, "include_top", False):  # EfficientNet: normalised, then divided by std once more
            std = tuple(s * s for s in std)
        resample = getattr(processor, "resample", None)
        do_rescale = getattr(processor, "do_rescale", True)
        return cls(
            resize_short=short,
            crop_height=height,
            crop_width=width,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            resample=int(resample if resample is not None else Image.Resampling.BILINEAR),
            rescale=float(getattr(processor, "rescale_factor", 1 / 255)) if do_rescale else 1.0,
            exact=exact,
            offset=-1.0 if getattr(processor, "rescale_offset", False) else 0.0,
        )

    @property
    def fixed_size(self) -> bool:
        """Whether every image comes out the same size (so any batch stacks)."""
        return self.crop_height > 0 and self.crop_width > 0

    @property
    def draft_size(self) -> int:
        """The smallest short edge a JPEG is DCT-downscaled to for this recipe: :data:`DRAFT_GAP` x its input size."""
        return math.ceil(DRAFT_GAP * (max(self.crop_height, self.crop_width) if self.exact else self.resize_short))

    def identity(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the image is scaled to before any crop (short edge ``resize_short``, aspect kept)."""
        if self.exact:
            return self.crop_width, self.crop_height
        short, long_ = (width, height) if width <= height else (height, width)
        new_long = int(self.resize_short * long_ / short)
        return (self.resize_short, new_long) if width <= height else (new_long, self.resize_short)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the array :meth:`to_uint8` makes from an image of this size."""
        if self.fixed_size:
            return self.crop_width, self.crop_height
        return self.scaled_size(width, height)

    def to_uint8(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """Resize (+ centre-crop) one RGB image (PIL, or an HWC uint8 array) to an HWC uint8 array.

        Bilinear and bicubic resizes run on torch's uint8 antialiased kernel (PIL's filters, vectorised: ~6x
        faster than Pillow here, within one grey level of it on ~99.5 % of values, tested); other filters on Pillow.
        With a crop the whole image is scaled, then cropped, as the HF processors do, unless the scaled whole would
        exceed :data:`MAX_SCALED_PIXELS` (an extreme aspect ratio, say 50000x1): then only the region that survives
        the crop is resampled (Pillow's ``box``), so memory never grows with the aspect ratio."""
        pixels = _as_rgb_array(image)
        h, w = pixels.shape[:2]
        if self.exact:
            return _resize(pixels, self.crop_width, self.crop_height, self.resample)
        nw, nh = self.scaled_size(w, h)
        if not self.fixed_size:
            return _resize(pixels, nw, nh, self.resample)
        cw, ch = self.crop_width, self.crop_height
        kw, kh = min(cw, nw), min(ch, nh)  # the part of the crop the scaled image covers
        left, top = (nw - kw) // 2, (nh - kh) // 2
        if nw * nh <= MAX_SCALED_PIXELS:
            region = _resize(pixels, nw, nh, self.resample)[top : top + kh, left : left + kw]
        else:
            sx, sy = w / nw, h / nh
            box = (left * sx, top * sy, (left + kw) * sx, (top + kh) * sy)
            region = np.asarray(Image.fromarray(pixels).resize((kw, kh), resample=self.resample, box=box), dtype=np.uint8)
        if (kw, kh) != (cw, ch):  # pad like the HF processors do when the crop exceeds the image
            canvas = np.zeros((ch, cw, 3), np.uint8)
            y0, x0 = (ch - kh) // 2, (cw - kw) // 2
            canvas[y0 : y0 + kh, x0 : x0 + kw] = region
            region = canvas
        return np.ascontiguousarray(region)

    def normalise(self, batch_uint8: Any, dtype: Any) -> Any:
        """NHWC uint8 torch tensor (on any device) → NCHW normalised floats in ``dtype``."""
        import torch

        x = batch_uint8.permute(0, 3, 1, 2).to(torch.float32) * self.rescale + self.offset
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


@dataclass(frozen=True)
class ModelCard:
    """What a user should know before choosing a model: shown by ``imsim models --info NAME``."""

    title: str
    default_source: str  # hub id, URL or "(your file)"
    dim: str  # embedding dimension of the default checkpoint (and of the alternatives)
    licence: str
    embedding: str  # which vector is taken, and the alternatives
    good_for: str
    text: bool = False
    paper: str = ""
    duplicate_threshold: str = "none measured: calibrate with `imsim eval run`"


_PINNED = re.compile(r"[0-9a-f]{40}|local-[0-9a-f]{12}|sha256-[0-9a-f]{12}")


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: enough to name its collection, describe it in Attu and load it again."""

    name: str  # registry name, e.g. "clip"
    source: str  # hub id, URL or local path
    revision: str  # resolved commit, or a content hash of the local weights
    dim: int
    supports_text: bool
    config: FamilyConfig  # the family config that loads exactly this version again (revision pinned)
    preprocess: Preprocess
    variant: str = ""  # e.g. DINOv2 pooling; shown in listings when not the default
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    derived: str = ""  # a version computed from another's stored vectors (its whitening), e.g. "pcaw:<base tag>:<digest>"

    @property
    def slug(self) -> str:
        """A short name of the checkpoint (+ variant): ``clip_vit_b32``, ``dinov2_base_cls_gem`` ..."""
        base = os.path.basename(os.path.normpath(self.source.split("?", 1)[0])) or self.name
        base = re.sub(r"(\.(pt|pth|onnx|torchscript|safetensors|bin))+$", "", base)
        slug = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower() or self.name
        slug = slug.replace("_base_patch32", "_b32").replace("_base_patch16", "_b16").replace("_large_patch14", "_l14")
        if self.variant:
            slug += "_" + re.sub(r"[^0-9a-zA-Z]+", "_", self.variant).strip("_").lower()
        return slug

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes this model's vector for a given file. The source path is left out when the
        revision pins the weights by content or commit, so a model directory that moves keeps its collection. A
        derived version is named by its base version's tag and its transform (:func:`derived_identity`)."""
        if self.derived:
            return derived_identity(self.name, self.derived, self.dim)
        return {
            "name": self.name,
            "source": "" if _PINNED.fullmatch(self.revision) else self.source,
            "revision": self.revision,
            "dim": self.dim,
            "variant": self.variant,
            "config": self.config.identity(),
            "preprocess": self.preprocess.identity(),
            "pipeline": PIPELINE_VERSION,
        }

    @functools.cached_property
    def version_tag(self) -> str:
        """6 hex digits naming this exact model version (a hash of :attr:`identity`): short enough that a collection
        name ``imsim_dinov2_3f2a9c`` shows whole in Attu's list (which cuts names after ~19 characters). Computed once
        per loaded model (every search names its collection by it)."""
        return tag_of(self.identity)


def tag_of(identity: dict[str, Any]) -> str:
    """The 6-hex version tag of an identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:VERSION_TAG_LENGTH]


def derived_identity(name: str, derived: str, dim: int) -> dict[str, Any]:
    """The identity of a version derived from another's stored vectors: ``derived`` names the base version (its tag)
    and the transform (its digest), which fix everything else (computable from a collection's properties alone)."""
    return {"name": name, "derived": derived, "dim": dim}


@runtime_checkable
class Embedder(Protocol):
    """A loaded image (and maybe text) embedding model. Outputs are L2-normalised float32 rows."""

    info: ModelInfo
    preprocess: Preprocess
    device: str

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 made by :attr:`preprocess` → (N, dim) float32, L2-normalised."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries into the image space; a :class:`ModelError` for models without a text tower."""
        ...


C = TypeVar("C", bound=FamilyConfig)


@dataclass(frozen=True)
class Family(Generic[C]):
    """A registry entry: the family's name, its config class, how to load it, its card, and ``tiny``: how to build a
    tiny random instance of it under a directory, saved the way the family is published (so the same loading code
    reads it), returning the config fields that load it. Tests take every registered family from the registry and
    build it with ``tiny``: a family without one fails them, so none goes untested."""

    name: str
    config: type[C]
    load: Callable[[C, Runtime], Embedder]
    card: ModelCard
    tiny: Callable[[Path], dict[str, Any]] | None = None


def embed_arrays(model: Embedder, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Embed HWC uint8 arrays made by ``model.preprocess``; arrays of different sizes are batched by shape."""
    if not arrays:
        return np.zeros((0, model.info.dim), np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    if len(by_shape) == 1:
        return model.embed_uint8(np.stack(arrays))
    out = np.zeros((len(arrays), model.info.dim), np.float32)
    for indices in by_shape.values():
        out[indices] = model.embed_uint8(np.stack([arrays[i] for i in indices]))
    return out


def embed_images(model: Embedder, images: Sequence[Image.Image]) -> np.ndarray:
    """Embed RGB PIL images already decoded: preprocess, batch, normalise."""
    return embed_arrays(model, [model.preprocess.to_uint8(im) for im in images])


def no_text(info: ModelInfo) -> ModelError:
    return ModelError(
        f"model {info.name!r} ({info.source}) has no text tower; text search needs a model with one "
        "(`imsim models` lists them: text = yes)"
    )


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    return (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def file_revision(path: str | os.PathLike[str]) -> str:
    """``sha256-`` + 12 hex digits of a weights file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256-" + digest.hexdigest()[:12]


RANDOM_WEIGHTS_MARK = "RANDOM_WEIGHTS.md"  # in a model directory built with random weights (imsim.models.testing)


def random_weights(source: str) -> bool:
    """Whether a model directory says its weights are random (a demo or test model: similarities mean nothing)."""
    return os.path.isfile(os.path.join(source, RANDOM_WEIGHTS_MARK))


def local_revision(source: str) -> str:
    """Content hash of a local model directory's config and weights (a revision for non-hub models)."""
    digest = hashlib.sha256()
    for path in sorted(Path(source).iterdir()):
        if path.suffix in {".json", ".safetensors", ".bin", ".txt", ".model", ".pt", ".onnx"} and path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return "local-" + digest.hexdigest()[:12]
