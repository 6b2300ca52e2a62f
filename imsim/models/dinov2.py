"""DINOv2 (transformers ``Dinov2Model``): self-supervised ViT, strong on edited copies.

Pooling is selectable because the write-ups disagree: ``cls`` (the CLS token), ``mean``
(mean of the patch tokens), ``cls+mean`` (both, concatenated: twice the dimension) or
``cls+gem`` (CLS token and generalised-mean pooling of the patch tokens, p=3, concatenated:
the descriptor trick that helps copy detection).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Family, FamilyConfig, ModelCard, ModelInfo, Runtime
from .torch_base import HFEmbedder, pinned_revision

if TYPE_CHECKING:
    import torch

Pooling = Literal["cls", "mean", "cls+mean", "cls+gem"]
GEM_P = 3.0


class Dinov2Config(FamilyConfig):
    model: str = Field("facebook/dinov2-base", description="DINOv2 hub id or local directory.")
    revision: str = Field("main", description="Hub revision of the DINOv2 model.")
    pooling: Pooling = Field(
        "cls", description="DINOv2 embedding: CLS token, mean of patch tokens, CLS+mean or CLS+GeM (p=3) concatenated."
    )


def gem(tokens: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over tokens (N, T, D) → (N, D): ``mean(clamp(x, eps)^p)^(1/p)`` (Radenović et al.)."""
    return tokens.float().clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


class Dinov2Embedder(HFEmbedder):
    def __init__(self, config: Dinov2Config, runtime: Runtime):
        from transformers import Dinov2Model

        super().__init__(runtime)
        model = self._load_hf(Dinov2Model, config.model, config.revision, "DINOv2", pooling=config.pooling)
        hidden = int(model.config.hidden_size)
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="dinov2",
            source=config.model,
            revision=recorded,
            dim=hidden if config.pooling in ("cls", "mean") else hidden * 2,
            supports_text=False,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            variant="" if config.pooling == "cls" else config.pooling.replace("+", "_"),
            description=f"DINOv2 image embedding, {config.pooling} pooling of the final layer-normed tokens.",
            extra={"pooling": config.pooling},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        import torch

        tokens = self.model(pixel_values=pixel_values).last_hidden_state
        cls_token = tokens[:, 0]
        if self.pooling == "cls":
            return cls_token
        patches = tokens[:, 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0) :]
        pooled = patches.mean(dim=1) if self.pooling in ("mean", "cls+mean") else gem(patches)
        if self.pooling == "mean":
            return pooled
        normed = torch.nn.functional.normalize
        return torch.cat([normed(cls_token.float(), dim=-1), normed(pooled.float(), dim=-1)], dim=-1)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random dinov2 saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_dinov2

    return {"model": str(build_tiny_dinov2(directory / "tiny-dinov2"))}


FAMILY = Family(
    name="dinov2",
    config=Dinov2Config,
    load=Dinov2Embedder,
    card=ModelCard(
        title="DINOv2 (Meta), self-supervised ViT",
        default_source="facebook/dinov2-base",
        dim="768 (base, cls or mean); 1536 (cls+mean, cls+gem); 384 small, 1024 large, 1536 giant",
        licence="Apache-2.0",
        embedding="CLS token of the final layer-normed tokens (IMSIM_DINOV2_POOLING: cls, mean, cls+mean, cls+gem)",
        good_for="edited copies and near-duplicates (crops, colour changes, overlays); no text queries",
        paper="Oquab et al. 2023, DINOv2: Learning Robust Visual Features without Supervision",
    ),
    tiny=tiny,
)
