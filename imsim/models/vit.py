"""ViT (transformers ``ViTModel``): the supervised ImageNet-21k ViT the write-ups compared.

The write-ups take the CLS token of ``google/vit-large-patch16-224-in21k``'s last hidden state
(after the final layer norm). Alternatives: ``mean`` of the patch tokens, or ``pooler`` (the
checkpoint's dense+tanh pooler over the CLS token). No text tower.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Family, FamilyConfig, ModelCard, ModelInfo, Runtime
from .torch_base import HFEmbedder, pinned_revision

if TYPE_CHECKING:
    import torch


class VitConfig(FamilyConfig):
    model: str = Field("google/vit-large-patch16-224-in21k", description="ViT hub id or local directory.")
    revision: str = Field("main", description="Hub revision of the ViT model.")
    pooling: Literal["cls", "mean", "pooler"] = Field(
        "cls", description="ViT embedding: CLS token (write-ups), mean of patch tokens, or the pooler."
    )


class VitEmbedder(HFEmbedder):
    def __init__(self, config: VitConfig, runtime: Runtime):
        from transformers import ViTModel

        super().__init__(runtime)
        model = self._load_hf(
            ViTModel, config.model, config.revision, "ViT", pooling=config.pooling, add_pooling_layer=config.pooling == "pooler"
        )
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="vit",
            source=config.model,
            revision=recorded,
            dim=int(model.config.hidden_size),
            supports_text=False,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            variant="" if config.pooling == "cls" else config.pooling,
            description=f"ViT image embedding, {config.pooling} of the last hidden state.",
            extra={"pooling": config.pooling},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.pooling == "pooler":
            return out.pooler_output
        tokens = out.last_hidden_state
        return tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(dim=1)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random vit saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_vit

    return {"model": str(build_tiny_vit(directory / "tiny-vit"))}


FAMILY = Family(
    name="vit",
    config=VitConfig,
    load=VitEmbedder,
    card=ModelCard(
        title="ViT (Google), supervised on ImageNet-21k",
        default_source="google/vit-large-patch16-224-in21k",
        dim="1024 (ViT-L/16); 768 (ViT-B/16)",
        licence="Apache-2.0",
        embedding="CLS token of the last hidden state, as the write-ups (IMSIM_VIT_POOLING: cls, mean, pooler)",
        good_for="category-level similarity (same kind of object or scene); a baseline for the self-supervised models",
        paper="Dosovitskiy et al. 2021, An Image is Worth 16x16 Words",
    ),
    tiny=tiny,
)
