"""VGG16 (ImageNet CNN) in plain PyTorch, loading timm's published weights (or torchvision's).

The architecture is data (:data:`CFGS`, as in the VGG paper and timm); the weights are timm's
``timm/vgg16.tv_in1k`` (the torchvision ImageNet weights, BSD-3-Clause) read from the hub with
``huggingface_hub`` or from a local directory holding timm's ``config.json`` + ``model.safetensors``.
Timm itself is not needed (it requires torchvision, which has no CPU build here); where
torchvision is installed, ``IMSIM_VGG16_MODEL=torchvision`` loads its weights instead.

Embedding (IMSIM_VGG16_POOLING): ``fc7`` (default), the 4096-d output of the second fully
connected layer after its ReLU (Keras' ``fc2``, the usual choice in image-similarity write-ups),
or ``gap``, the 512-d global average of the last convolutional block (Keras' ``pooling='avg'``).
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..errors import ModelError
from .base import Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime, local_revision
from .torch_base import TorchEmbedder, hub_reachable

if TYPE_CHECKING:
    import torch


CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
HIDDEN = 4096
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Vgg16Config(FamilyConfig):
    model: str = Field(
        "timm/vgg16.tv_in1k", description="VGG16 weights: a hub repo or local directory in timm's layout, or 'torchvision'."
    )
    revision: str = Field("main", description="Hub revision of the VGG16 weights.")
    pooling: Literal["fc7", "gap"] = Field(
        "fc7", description="VGG16 embedding: fc7 after ReLU (4096-d) or global average of the last conv block (512-d)."
    )


@lru_cache(maxsize=1)
def vgg_class() -> Any:
    import torch
    from torch import nn

    class VGG(nn.Module):
        """torchvision's VGG: conv blocks → adaptive 7×7 average → fc6 → ReLU → fc7 → ReLU (→ classifier, unused)."""

        def __init__(self, cfg: list[int | str], hidden: int = HIDDEN):
            super().__init__()
            layers: list[nn.Module] = []
            channels = 3
            for v in cfg:
                if v == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                    channels = int(v)
            self.features = nn.Sequential(*layers)
            self.channels = channels
            self.fc6 = nn.Linear(channels * 7 * 7, hidden)
            self.fc7 = nn.Linear(hidden, hidden)

        def forward(self, x: torch.Tensor, pooling: str = "fc7") -> torch.Tensor:
            x = self.features(x)
            if pooling == "gap":
                return x.mean(dim=(2, 3))
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (7, 7)), 1)
            return torch.relu(self.fc7(torch.relu(self.fc6(x))))

    return VGG


def convert_state_dict(state: dict[str, Any], channels: int) -> dict[str, Any]:
    """timm (``pre_logits.fc1`` as a 7×7 conv) or torchvision (``classifier.0``) keys → this module's keys."""
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            out[key] = value
        elif re.match(r"(pre_logits\.fc1|classifier\.0)\.", key):
            out["fc6." + key.rsplit(".", 1)[1]] = value.reshape(value.shape[0], -1) if key.endswith("weight") else value
        elif re.match(r"(pre_logits\.fc2|classifier\.3)\.", key):
            out["fc7." + key.rsplit(".", 1)[1]] = value.reshape(value.shape[0], -1) if key.endswith("weight") else value
    if "fc6.weight" in out and out["fc6.weight"].shape[1] != channels * 49:
        raise ModelError(
            f"VGG weights do not fit the architecture: fc6 takes {out['fc6.weight'].shape[1]} inputs, "
            f"the conv blocks give {channels} × 7 × 7"
        )
    return out


def read_checkpoint(source: str, revision: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(timm config, state dict, revision) from a local directory, a hub repo (timm layout) or torchvision."""
    from safetensors.torch import load_file

    if source == "torchvision":
        try:
            import torchvision
        except ImportError:
            raise ModelError(
                "IMSIM_VGG16_MODEL=torchvision but torchvision is not installed; use the hub id "
                "timm/vgg16.tv_in1k (the same weights)"
            ) from None
        weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
        model = torchvision.models.vgg16(weights=weights)
        config = {
            "architecture": "vgg16",
            "pretrained_cfg": {
                "input_size": [3, 224, 224],
                "crop_pct": 0.875,
                "interpolation": "bilinear",
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
        }
        return config, model.state_dict(), f"torchvision-{torchvision.__version__}-{weights.name}"
    if os.path.isdir(source):
        directory = Path(source)
        resolved = local_revision(source)
    else:
        try:
            from huggingface_hub import hf_hub_download

            hub_reachable()  # decided once: offline, the download reads the local cache at once

            config_path = hf_hub_download(source, "config.json", revision=revision)
            hf_hub_download(source, "model.safetensors", revision=revision)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "cannot load"
            raise ModelError(f"cannot load VGG weights from {source!r} (revision {revision!r}): {exc}") from exc
        directory = Path(config_path).parent
        resolved = directory.name if re.fullmatch(r"[0-9a-f]{40}", directory.name) else revision
    try:
        config = json.loads((directory / "config.json").read_text())
        state = load_file(str(directory / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load VGG weights from {source!r}: {exc} (expected timm's config.json and model.safetensors)"
        ) from exc
    return config, state, resolved


class Vgg16Embedder(TorchEmbedder):
    def __init__(self, config: Vgg16Config, runtime: Runtime):
        super().__init__(runtime)
        self.pooling = config.pooling
        config_json, state, resolved = read_checkpoint(config.model, config.revision)
        arch = config_json.get("architecture", "vgg16").split(".")[0]
        if arch not in CFGS:
            raise ModelError(f"{config.model!r} holds a {arch!r}, not a VGG ({', '.join(CFGS)})")
        args = config_json.get("model_args", {})
        divisor = int(args.get("width_divisor", 1))  # >1 only for the tiny test models
        cfg = [v if v == "M" else int(v) // divisor for v in CFGS[arch]]
        model = vgg_class()(cfg, hidden=HIDDEN // divisor)
        try:
            model.load_state_dict(convert_state_dict(state, model.channels), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"VGG weights in {config.model!r} do not match {arch}: {exc}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        pre = config_json.get("pretrained_cfg", {})
        side = int(pre.get("input_size", [3, 224, 224])[-1])
        resample = {"bilinear": 2, "bicubic": 3, "nearest": 0}.get(pre.get("interpolation", "bilinear"), 2)
        self.preprocess = Preprocess(
            resize_short=int(side / float(pre.get("crop_pct", 0.875))),
            crop_height=side,
            crop_width=side,
            mean=tuple(pre.get("mean", IMAGENET_MEAN)),
            std=tuple(pre.get("std", IMAGENET_STD)),
            resample=resample,
        )
        reload = config.revision if resolved.startswith("local-") else resolved
        self.info = ModelInfo(
            name="vgg16",
            source=config.model,
            revision=resolved,
            dim=model.channels if config.pooling == "gap" else HIDDEN // divisor,
            supports_text=False,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            variant="" if config.pooling == "fc7" else config.pooling,
            description=f"VGG ({arch}) ImageNet features, {config.pooling}.",
            extra={"pooling": config.pooling, "architecture": arch},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, pooling=self.pooling)


def build_tiny(directory: str | Path, seed: int = 0, width_divisor: int = 16) -> Path:
    """timm's layout for ``timm/vgg16.tv_in1k`` (config.json + model.safetensors), channels divided by ``width_divisor``."""
    import torch
    from safetensors.torch import save_file

    from .testing import IMAGENET_MEAN, IMAGENET_STD, mark_random

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state, channels, index = {}, 3, 0
    for v in CFGS["vgg16"]:
        if v == "M":
            index += 1
            continue
        out = int(v) // width_divisor
        state[f"features.{index}.weight"] = torch.randn(out, channels, 3, 3) * (2 / (9 * channels)) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(out)
        channels, index = out, index + 2
    hidden = HIDDEN // width_divisor
    state["pre_logits.fc1.weight"] = torch.randn(hidden, channels, 7, 7) * (2 / (49 * channels)) ** 0.5
    state["pre_logits.fc1.bias"] = torch.zeros(hidden)
    state["pre_logits.fc2.weight"] = torch.randn(hidden, hidden, 1, 1) * (2 / hidden) ** 0.5
    state["pre_logits.fc2.bias"] = torch.zeros(hidden)
    state["head.fc.weight"] = torch.randn(1000, hidden) * 0.01
    state["head.fc.bias"] = torch.zeros(1000)
    save_file(state, str(directory / "model.safetensors"))
    config = {
        "architecture": "vgg16",
        "num_classes": 1000,
        "num_features": channels,
        "model_args": {"width_divisor": width_divisor} if width_divisor > 1 else {},
        "pretrained_cfg": {
            "tag": "tv_in1k",
            "input_size": [3, 224, 224],
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "license": "bsd-3-clause",
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return mark_random(directory)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random vgg16 saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    return {"model": str(build_tiny(directory / "tiny-vgg16"))}


FAMILY = Family(
    name="vgg16",
    config=Vgg16Config,
    load=Vgg16Embedder,
    card=ModelCard(
        title="VGG16 (Oxford VGG), supervised on ImageNet-1k (torchvision weights via timm)",
        default_source="timm/vgg16.tv_in1k",
        dim="4096 (fc7); 512 (gap)",
        licence="BSD-3-Clause (torchvision weights)",
        embedding="fc7 after ReLU, 4096-d (IMSIM_VGG16_POOLING: fc7, gap)",
        good_for="a classic CNN baseline for category similarity; the oldest and weakest model here",
        paper="Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ),
    tiny=tiny,
)
