"""SSCD (Meta): the self-supervised copy-detection descriptor, from its official TorchScript file.

``sscd_disc_mixup`` is a ResNet-50 trunk with GeM pooling and a 512-d projection, trained for
the DISC21 image-copy-detection task. imsim loads the published TorchScript file
(``torch.jit.load``) from a URL (downloaded once into ``IMSIM_DATA_DIR/models``) or a local path,
preprocesses as SSCD's README documents (short edge 288, aspect ratio kept, ImageNet mean/std;
or the batch-friendly square ``skew320``), and L2-normalises the descriptor. With ``short288``
images of different shapes are batched by shape.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError
from .base import Embedder, ModelCard, ModelInfo, Preprocess, resolve_device

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt"
RESIZES = ("short288", "skew320")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def file_revision(path: str | os.PathLike[str]) -> str:
    """``sha256-`` + 12 hex digits of a weights file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256-" + digest.hexdigest()[:12]


def fetch(source: str, cache_dir: Path) -> Path:
    """A local path for ``source``: the file itself, or a URL downloaded once into ``cache_dir``."""
    if not re.match(r"^[a-z][a-z0-9+.-]*://", source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ModelError(f"no model file at {source!r}")
        return path
    from torch.hub import download_url_to_file

    name = os.path.basename(urllib.parse.urlparse(source).path) or "model.pt"
    target = cache_dir / hashlib.sha256(source.encode()).hexdigest()[:8] / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(source, str(target), progress=False)
        except Exception as exc:  # noqa: BLE001 - urllib raises many types; all mean "cannot download"
            raise ModelError(f"cannot download {source!r}: {exc}") from exc
    return target


def sscd_preprocess(resize: str) -> Preprocess:
    if resize == "short288":  # torchvision Resize(288): bilinear, short edge 288, aspect ratio kept
        return Preprocess(resize_short=288, crop_height=0, crop_width=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=2)
    if resize == "skew320":  # Resize([320, 320]): squashed to a square, so every batch stacks
        return Preprocess(resize_short=0, crop_height=320, crop_width=320, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=2,
                          exact=True)
    raise ModelError(f"SSCD resize {resize!r} is not one of {', '.join(RESIZES)}")


class SscdEmbedder(Embedder):
    family = "sscd"
    card = ModelCard(
        title="SSCD (Meta): self-supervised descriptor for image copy detection (sscd_disc_mixup)",
        default_source=OFFICIAL_URL,
        dim="512",
        licence="MIT (facebookresearch/sscd-copy-detection)",
        embedding="the model's 512-d descriptor (ResNet-50, GeM, projection), L2-normalised; input short edge 288",
        good_for="finding edited copies (crops, overlays, re-encodes, screenshots) and telling them from mere look-alikes: "
                 "the model built for copy detection (DISC21 µAP 0.61 with this descriptor alone)",
        paper="Pizzi et al. 2022, A Self-Supervised Descriptor for Image Copy Detection",
    )

    def __init__(self, source: str = OFFICIAL_URL, device: str = "auto", batch_size: int = 64, resize: str = "short288",
                 cache_dir: Path | None = None):
        import torch

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.preprocess = sscd_preprocess(resize)
        path = fetch(source, cache_dir or Path.home() / ".imsim" / "models")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{source!r} is not a TorchScript model: {exc}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        with torch.inference_mode():  # the descriptor size, from the model itself
            probe = torch.zeros(1, 3, 64, 64, device=self.device, dtype=self.dtype)
            dim = int(self.model(probe).shape[-1])
        self.info = ModelInfo(
            name="sscd", source=source, revision=file_revision(path), dim=dim, supports_text=False,
            variant="" if resize == "short288" else resize,
            description=f"SSCD copy-detection descriptor ({resize}), L2-normalised.", extra={"resize": resize},
            config={"sscd_model": source, "sscd_resize": resize},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SscdEmbedder:
        return cls(settings.sscd_model, settings.device, settings.batch_size, settings.sscd_resize, settings.data_dir / "models")

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)
