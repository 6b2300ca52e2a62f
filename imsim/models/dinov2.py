"""DINOv2 (transformers ``Dinov2Model``): self-supervised ViT, strong on edited copies.

Pooling is selectable because the write-ups disagree: ``cls`` (the CLS token), ``mean``
(mean of the patch tokens) or ``cls+mean`` (both, concatenated: twice the dimension).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelError
from .base import Embedder, ModelInfo, Preprocess, pretrained_revision, resolve_device

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

POOLINGS = ("cls", "mean", "cls+mean")


class Dinov2Embedder(Embedder):
    family = "dinov2"

    def __init__(self, source: str, revision: str = "main", device: str = "auto", batch_size: int = 64, pooling: str = "cls"):
        from transformers import AutoImageProcessor, Dinov2Model

        if pooling not in POOLINGS:
            raise ModelError(f"DINOv2 pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.pooling = pooling
        try:
            model = Dinov2Model.from_pretrained(source, revision=revision, dtype=self.dtype)
            processor = AutoImageProcessor.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load DINOv2 model from {source!r} (revision {revision!r}): {exc}") from exc
        self.model = model.to(self.device).eval()
        self.processor = processor  # the model's own HF processor: the reference our Preprocess is tested against
        self.preprocess = Preprocess.from_processor(processor)
        hidden = int(model.config.hidden_size)
        self.info = ModelInfo(
            name="dinov2",
            source=source,
            revision=pretrained_revision(model, source, revision),
            dim=hidden * 2 if pooling == "cls+mean" else hidden,
            supports_text=False,
            variant="" if pooling == "cls" else pooling.replace("+", "_"),
            description=f"DINOv2 image embedding, {pooling} pooling of the final layer-normed tokens.",
            extra={"pooling": pooling},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Dinov2Embedder:
        return cls(settings.dinov2_model, settings.dinov2_revision, settings.device, settings.batch_size, settings.dinov2_pooling)

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        import torch

        tokens = self.model(pixel_values=pixel_values).last_hidden_state
        cls_token = tokens[:, 0]
        if self.pooling == "cls":
            return cls_token
        patches = tokens[:, 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0) :].mean(dim=1)
        if self.pooling == "mean":
            return patches
        normed = torch.nn.functional.normalize
        return torch.cat([normed(cls_token.float(), dim=-1), normed(patches.float(), dim=-1)], dim=-1)
