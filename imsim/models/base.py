"""What every model family shares: the :class:`Embedder` interface, preprocessing read from a
model's own processor config, device/dtype choice, and how a model's revision is pinned.

A family module (``clip.py``, ``dinov2.py`` ...) only says how to load its model from a hub id
or local directory and how to turn pixels (and text, if it has a text tower) into vectors.
Batching, normalisation and the float32 contract live here, once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from ..errors import ModelError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from ..settings import Settings


@dataclass(frozen=True)
class Preprocess:
    """How pixels become model input: the recipe of the Hugging Face image processors, as data.

    Three resize modes cover every family imsim has:

    - ``resize_short`` > 0 and a crop (CLIP, DINOv2, VGG): scale so the short edge is ``resize_short``,
      then centre-crop ``crop_height`` × ``crop_width``;
    - ``exact`` (ViT, BLIP-2, EfficientNet): resize straight to ``crop_height`` × ``crop_width``
      (aspect ratio not kept, as those processors do);
    - ``resize_short`` > 0 and no crop (``crop_height == 0``; SSCD): keep the aspect ratio, so
      images come out in different sizes and are batched by shape (:meth:`Embedder.embed_arrays`).

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
            if do_crop:  # resize to (height, width) then crop: expressed as exact resize + crop is rare; refuse it
                raise ModelError(f"unsupported image processor: exact resize {size!r} followed by a centre crop {crop!r}")
        else:
            raise ModelError(f"unsupported image processor size {size!r}")
        do_normalize = getattr(processor, "do_normalize", True)
        mean = tuple(float(m) for m in processor.image_mean) if do_normalize else (0.0, 0.0, 0.0)
        std = tuple(float(s) for s in processor.image_std) if do_normalize else (1.0, 1.0, 1.0)
        if getattr(processor, "include_top", False):  # EfficientNet: normalised, then divided by std once more
            std = tuple(s * s for s in std)
        do_rescale = getattr(processor, "do_rescale", True)
        return cls(
            resize_short=short, crop_height=height, crop_width=width,
            mean=mean, std=std,  # type: ignore[arg-type]
            resample=int(getattr(processor, "resample", None) if getattr(processor, "resample", None) is not None
                         else Image.Resampling.BILINEAR),
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
        """The smallest short edge a decoder must deliver for this recipe."""
        return max(self.crop_height, self.crop_width) if self.exact else self.resize_short

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize (+ centre-crop) one RGB image to an HWC uint8 array (normalisation is batched later)."""
        if self.exact:
            size = (self.crop_width, self.crop_height)
            if image.size != size:
                image = image.resize(size, resample=self.resample)
            return np.asarray(image, dtype=np.uint8)
        w, h = image.size
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(self.resize_short * long_ / short)
        size = (self.resize_short, new_long) if w <= h else (new_long, self.resize_short)
        if (w, h) != size:
            image = image.resize(size, resample=self.resample)
        if not self.fixed_size:
            return np.asarray(image, dtype=np.uint8)
        w, h = image.size
        ch, cw = self.crop_height, self.crop_width
        if w < cw or h < ch:  # pad like the HF processors do when the crop exceeds the image
            canvas = Image.new("RGB", (max(w, cw), max(h, ch)))
            canvas.paste(image, ((max(w, cw) - w) // 2, (max(h, ch) - h) // 2))
            image, (w, h) = canvas, canvas.size
        top, left = (h - ch) // 2, (w - cw) // 2
        if (left, top, cw, ch) != (0, 0, w, h):
            image = image.crop((left, top, left + cw, top + ch))
        return np.asarray(image, dtype=np.uint8)

    def normalise(self, batch_uint8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """NHWC uint8 (on any device) → NCHW normalised floats in ``dtype``."""
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


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: enough to name its collection and describe it in Attu."""

    name: str  # registry name, e.g. "clip"
    source: str  # hub id or local directory
    revision: str  # resolved commit, or a content hash of a local directory
    dim: int
    supports_text: bool
    variant: str = ""  # e.g. DINOv2 pooling; part of the collection name when not the default
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    # The IMSIM_* settings (field -> value) that load exactly this model again, revision pinned:
    # stored on its collection, so a query can always load the model a collection was written with.
    config: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """A collection-name-safe short name of the checkpoint (+ variant)."""
        base = os.path.basename(os.path.normpath(self.source.split("?", 1)[0])) or self.name
        base = re.sub(r"(\.(pt|pth|onnx|torchscript|safetensors|bin))+$", "", base)
        slug = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower() or self.name
        slug = slug.replace("_base_patch32", "_b32").replace("_base_patch16", "_b16").replace("_large_patch14", "_l14")
        if self.variant:
            slug += "_" + re.sub(r"[^0-9a-zA-Z]+", "_", self.variant).strip("_").lower()
        return slug

    @property
    def version_tag(self) -> str:
        """8 hex digits naming this exact model version: revision (a commit or a content hash), variant, dimension.

        The source path is left out when the revision pins the weights, so a model directory that moves
        keeps its collection; an unresolved branch name ("main") is only meaningful with its source."""
        pins = re.fullmatch(r"[0-9a-f]{40}|local-[0-9a-f]{12}|sha256-[0-9a-f]{12}", self.revision)
        key = "\n".join([self.name, "" if pins else self.source, self.revision, self.variant, str(self.dim)])
        return hashlib.sha256(key.encode()).hexdigest()[:8]


def quiet_transformers() -> None:
    """No per-load progress bars or backend notices from transformers (our own logs say what loads)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"IMSIM_DEVICE={device!r} but CUDA is not available in this process")
    return device


def local_revision(source: str) -> str:
    """Content hash of a local model directory's config and weights (a revision for non-hub models)."""
    digest = hashlib.sha256()
    root = Path(source)
    for path in sorted(root.iterdir()):
        if path.suffix in {".json", ".safetensors", ".bin", ".txt", ".model", ".pt", ".onnx"} and path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return "local-" + digest.hexdigest()[:12]


def pretrained_revision(model: Any, source: str, revision: str) -> str:
    """The commit a hub model resolved to, or a content hash for a local directory."""
    if os.path.isdir(source):
        return local_revision(source)
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return str(commit or revision)


class Embedder(ABC):
    """A loaded image (and maybe text) embedding model. Outputs are L2-normalised float32 rows."""

    family: ClassVar[str]
    card: ClassVar[ModelCard]
    info: ModelInfo
    preprocess: Preprocess
    processor: Any = None  # the model's own Hugging Face image processor, when it has one (reference and baseline)
    device: str
    batch_size: int

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """Load this family's model as the settings describe it."""

    @abstractmethod
    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model-specific: normalised NCHW pixels → (N, dim) unnormalised features."""

    def _load_hf(self, model_class: Any, source: str, revision: str, device: str, batch_size: int, what: str, *,
                 pooling: str = "", poolings: Sequence[str] = (), **kwargs: Any) -> Any:
        """The shared start of a Hugging Face family: check the pooling, pick the device, ``from_pretrained`` the
        model and its image processor, move the model to the device, read the preprocessing recipe; returns the model."""
        if poolings and pooling not in poolings:
            raise ModelError(f"{what} pooling {pooling!r} is not one of {', '.join(poolings)}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.pooling = pooling
        model, processor = load_pretrained(model_class, source, revision, self.dtype, what, **kwargs)
        self.model = model.to(self.device).eval()
        self.processor = processor  # the model's own HF processor: the reference our Preprocess is tested against
        self.preprocess = Preprocess.from_processor(processor)
        return model

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        raise ModelError(f"model {self.info.name!r} ({self.info.source}) has no text tower; use a CLIP model for text search")

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return torch.float16 if self.device.startswith("cuda") else torch.float32

    @property
    def dim(self) -> int:
        return self.info.dim

    def embed_uint8(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed an NHWC uint8 batch already resized and cropped by :attr:`preprocess`."""
        import torch

        tensor = torch.as_tensor(batch)
        if self.device.startswith("cuda") and not tensor.is_cuda:
            tensor = tensor.pin_memory()  # page-locked: the copies below run asynchronously
        out = []
        start = 0
        with torch.inference_mode():
            while start < tensor.shape[0]:
                part = tensor[start : start + self.batch_size]
                try:
                    features = self._forward_images(self.preprocess.normalise(part.to(self.device, non_blocking=True), self.dtype))
                except torch.cuda.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    self.batch_size = max(1, self.batch_size // 2)  # stays lowered for later batches
                    log.warning("%s: out of GPU memory; batch size halved to %d", self.info.name, self.batch_size)
                    if self.device.startswith("cuda"):
                        torch.cuda.empty_cache()
                    continue
                out.append(_l2(features))
                start += part.shape[0]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_arrays(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Embed HWC uint8 arrays made by :attr:`preprocess`; arrays of different sizes are batched by shape."""
        if not arrays:
            return np.zeros((0, self.dim), np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape, []).append(i)
        if len(by_shape) == 1:
            return self.embed_uint8(np.stack(arrays))
        out = np.zeros((len(arrays), self.dim), np.float32)
        for indices in by_shape.values():
            out[indices] = self.embed_uint8(np.stack([arrays[i] for i in indices]))
        return out

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images: preprocess, batch, normalise."""
        return self.embed_arrays([self.preprocess.to_uint8(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _l2(self._forward_texts(list(texts)))


def _l2(features: torch.Tensor) -> np.ndarray:
    import torch

    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32, copy=False)


def load_pretrained(model_cls: Any, source: str, revision: str, dtype: Any, what: str, *, processor: bool = True,
                    **kwargs: Any) -> tuple[Any, Any]:
    """``model_cls.from_pretrained`` (+ the image processor) from a hub id or local directory; a clear error naming both."""
    from transformers import AutoImageProcessor

    try:
        model = model_cls.from_pretrained(source, revision=revision, dtype=dtype, **kwargs)
        proc = AutoImageProcessor.from_pretrained(source, revision=revision) if processor else None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {what} model from {source!r} (revision {revision!r}): {exc}") from exc
    return model, proc


def pinned(source: str, revision: str, model: Any) -> tuple[str, str]:
    """(revision to record, revision that reloads exactly this model): a hub commit pins itself."""
    resolved = pretrained_revision(model, source, revision)
    return resolved, (revision if resolved.startswith("local-") else resolved)


def features_of(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output
