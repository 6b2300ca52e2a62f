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
    """Resize the short edge, centre-crop, scale and normalise: the recipe of CLIP/ViT/DINOv2 processors."""

    resize_short: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255

    @classmethod
    def from_processor(cls, processor: Any) -> Preprocess:
        """Read the recipe off a transformers image processor (the model's own config)."""
        size = dict(processor.size or {})
        crop = dict(getattr(processor, "crop_size", None) or {})
        if "shortest_edge" in size:
            short = int(size["shortest_edge"])
        elif "height" in size:
            short = int(min(size["height"], size["width"]))
        else:
            raise ModelError(f"unsupported image processor size {size!r}")
        do_crop = getattr(processor, "do_center_crop", True) and crop
        return cls(
            resize_short=short,
            crop_height=int(crop["height"]) if do_crop else short,
            crop_width=int(crop["width"]) if do_crop else short,
            mean=tuple(float(m) for m in processor.image_mean),  # type: ignore[arg-type]
            std=tuple(float(s) for s in processor.image_std),  # type: ignore[arg-type]
            resample=int(getattr(processor, "resample", Image.Resampling.BICUBIC)),
            rescale=float(getattr(processor, "rescale_factor", 1 / 255)),
        )

    @property
    def draft_size(self) -> int:
        """The smallest short edge a decoder must deliver for this recipe."""
        return self.resize_short

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize + centre-crop one RGB image to an HWC uint8 array (normalisation is batched later)."""
        w, h = image.size
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(self.resize_short * long_ / short)
        size = (self.resize_short, new_long) if w <= h else (new_long, self.resize_short)
        if (w, h) != size:
            image = image.resize(size, resample=self.resample)
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

        x = batch_uint8.permute(0, 3, 1, 2).to(torch.float32) * self.rescale
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


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

    @property
    def slug(self) -> str:
        """A collection-name-safe short name of the checkpoint (+ variant)."""
        base = os.path.basename(os.path.normpath(self.source)) or self.name
        slug = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()
        slug = slug.replace("_base_patch32", "_b32").replace("_base_patch16", "_b16").replace("_large_patch14", "_l14")
        if self.variant:
            slug += "_" + re.sub(r"[^0-9a-zA-Z]+", "_", self.variant).strip("_").lower()
        return slug


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
    info: ModelInfo
    preprocess: Preprocess
    processor: Any  # the model's own Hugging Face image processor (reference and baseline)
    device: str
    batch_size: int

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """Load this family's model as the settings describe it."""

    @abstractmethod
    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model-specific: normalised NCHW pixels → (N, dim) unnormalised features."""

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

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images: preprocess, batch, normalise."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_uint8(np.stack([self.preprocess.to_uint8(im) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _l2(self._forward_texts(list(texts)))


def _l2(features: torch.Tensor) -> np.ndarray:
    import torch

    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32, copy=False)


def features_of(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output
