"""EfficientNet (transformers ``EfficientNetModel``): the ImageNet CNN the write-ups compared.

The write-ups average ``google/efficientnet-b7``'s last hidden state; that state is a feature
map (N, 2560, H, W), so imsim averages over the spatial positions (global average pooling, the
model's own pooler): 2560-d for B7. Alternatives: ``max`` and ``gem`` (generalised mean, p=3)
over the same map. Preprocessing is the checkpoint's own (600×600 for B7, with EfficientNet's
``include_top`` second division by the std).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Family, FamilyConfig, ModelCard, ModelInfo, Runtime
from .torch_base import HFEmbedder, pinned_revision

if TYPE_CHECKING:
    import torch


class EfficientNetConfig(FamilyConfig):
    model: str = Field("google/efficientnet-b7", description="EfficientNet hub id or local directory.")
    revision: str = Field("main", description="Hub revision of the EfficientNet model.")
    pooling: Literal["mean", "max", "gem"] = Field(
        "mean", description="EfficientNet embedding: mean, max or GeM over the last feature map."
    )


class EfficientNetEmbedder(HFEmbedder):
    def __init__(self, config: EfficientNetConfig, runtime: Runtime):
        from transformers import EfficientNetModel

        super().__init__(runtime)
        model = self._load_hf(EfficientNetModel, config.model, config.revision, "EfficientNet", pooling=config.pooling)
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="efficientnet",
            source=config.model,
            revision=recorded,
            dim=int(model.config.hidden_dim),
            supports_text=False,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            variant="" if config.pooling == "mean" else config.pooling,
            description=f"EfficientNet image embedding, {config.pooling} over the positions of the last feature map.",
            extra={"pooling": config.pooling},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        fmap = self.model(pixel_values=pixel_values).last_hidden_state  # (N, C, H, W)
        return spatial_pool(fmap, self.pooling)


def spatial_pool(fmap: torch.Tensor, pooling: str, p: float = 3.0) -> torch.Tensor:
    """(N, C, H, W) → (N, C): mean, max or generalised mean (p) over the positions."""
    if pooling == "mean":
        return fmap.float().mean(dim=(2, 3))
    if pooling == "max":
        return fmap.float().amax(dim=(2, 3))
    return fmap.float().clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random efficientnet saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_efficientnet

    return {"model": str(build_tiny_efficientnet(directory / "tiny-efficientnet"))}


FAMILY = Family(
    name="efficientnet",
    config=EfficientNetConfig,
    load=EfficientNetEmbedder,
    card=ModelCard(
        title="EfficientNet (Google), supervised on ImageNet-1k",
        default_source="google/efficientnet-b7",
        dim="2560 (B7); 1280 (B0); the hidden_dim of the checkpoint",
        licence="Apache-2.0",
        embedding="spatial mean of the last hidden state (global average pooling); IMSIM_EFFICIENTNET_POOLING: mean, max, gem",
        good_for="object/category similarity at high input resolution (600 px for B7); slow per image",
        paper="Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ),
    tiny=tiny,
)
