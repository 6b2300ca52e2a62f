"""CLIP (transformers ``CLIPModel``): image and text towers projected into one space."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelError
from .base import Embedder, ModelCard, ModelInfo, features_of, pinned

if TYPE_CHECKING:
    import torch

    from ..settings import Settings


class ClipEmbedder(Embedder):
    family = "clip"
    card = ModelCard(
        title="CLIP (OpenAI), image tower projected into the image-text space",
        default_source="openai/clip-vit-base-patch32",
        dim="512 (ViT-B/32, B/16); 768 (ViT-L/14)",
        licence="MIT (OpenAI CLIP weights)",
        embedding="get_image_features: the projected CLS token; text queries use get_text_features in the same space",
        good_for="semantic similarity and text-to-image search; weaker than DINOv2/SSCD on edited copies",
        text=True,
        paper="Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision",
    )

    def __init__(self, source: str, revision: str = "main", device: str = "auto", batch_size: int = 64):
        from transformers import AutoTokenizer, CLIPModel

        model = self._load_hf(CLIPModel, source, revision, device, batch_size, "CLIP")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the CLIP tokenizer from {source!r} (revision {revision!r}): {exc}") from exc
        recorded, reload = pinned(source, revision, model)
        self.info = ModelInfo(
            name="clip",
            source=source,
            revision=recorded,
            dim=int(model.config.projection_dim),
            supports_text=True,
            description="CLIP image embedding (projected image tower); text queries share the space.",
            config={"clip_model": source, "clip_revision": reload},
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
