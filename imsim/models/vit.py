"""ViT (transformers ``ViTModel``): the supervised ImageNet-21k ViT the write-ups compared.

The write-ups take the CLS token of ``google/vit-large-patch16-224-in21k``'s last hidden state
(after the final layer norm). Alternatives: ``mean`` of the patch tokens, or ``pooler`` (the
checkpoint's dense+tanh pooler over the CLS token). No text tower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Embedder, ModelCard, ModelInfo, pinned

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

POOLINGS = ("cls", "mean", "pooler")


class VitEmbedder(Embedder):
    family = "vit"
    card = ModelCard(
        title="ViT (Google), supervised on ImageNet-21k",
        default_source="google/vit-large-patch16-224-in21k",
        dim="1024 (ViT-L/16); 768 (ViT-B/16)",
        licence="Apache-2.0",
        embedding="CLS token of the last hidden state, as the write-ups (IMSIM_VIT_POOLING: cls, mean, pooler)",
        good_for="category-level similarity (same kind of object or scene); a baseline for the self-supervised models",
        paper="Dosovitskiy et al. 2021, An Image is Worth 16x16 Words",
    )

    def __init__(self, source: str, revision: str = "main", device: str = "auto", batch_size: int = 64, pooling: str = "cls"):
        from transformers import ViTModel

        model = self._load_hf(ViTModel, source, revision, device, batch_size, "ViT", pooling=pooling, poolings=POOLINGS, add_pooling_layer=pooling == "pooler")
        recorded, reload = pinned(source, revision, model)
        self.info = ModelInfo(
            name="vit", source=source, revision=recorded, dim=int(model.config.hidden_size), supports_text=False,
            variant="" if pooling == "cls" else pooling,
            description=f"ViT image embedding, {pooling} of the last hidden state.",
            extra={"pooling": pooling},
            config={"vit_model": source, "vit_revision": reload, "vit_pooling": pooling},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> VitEmbedder:
        return cls(settings.vit_model, settings.vit_revision, settings.device, settings.batch_size, settings.vit_pooling)

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        if self.pooling == "pooler":
            return out.pooler_output
        tokens = out.last_hidden_state
        return tokens[:, 0] if self.pooling == "cls" else tokens[:, 1:].mean(dim=1)
