"""CLIP (transformers ``CLIPModel``): image and text towers projected into one space."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelError
from .base import Embedder, ModelInfo, Preprocess, features_of, pretrained_revision, resolve_device

if TYPE_CHECKING:
    import torch

    from ..settings import Settings


class ClipEmbedder(Embedder):
    family = "clip"

    def __init__(self, source: str, revision: str = "main", device: str = "auto", batch_size: int = 64):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.device = resolve_device(device)
        self.batch_size = batch_size
        try:
            model = CLIPModel.from_pretrained(source, revision=revision, dtype=self.dtype)
            processor = AutoImageProcessor.from_pretrained(source, revision=revision)
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load CLIP model from {source!r} (revision {revision!r}): {exc}") from exc
        self.model = model.to(self.device).eval()
        self.processor = processor  # the model's own HF processor: the reference our Preprocess is tested against
        self.preprocess = Preprocess.from_processor(processor)
        self.info = ModelInfo(
            name="clip",
            source=source,
            revision=pretrained_revision(model, source, revision),
            dim=int(model.config.projection_dim),
            supports_text=True,
            description="CLIP image embedding (projected image tower); text queries share the space.",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipEmbedder:
        return cls(settings.clip_model, settings.clip_revision, settings.device, settings.batch_size)

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return features_of(self.model.get_image_features(pixel_values=pixel_values))

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            raise ModelError("no text given")
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return features_of(self.model.get_text_features(**tokens))
