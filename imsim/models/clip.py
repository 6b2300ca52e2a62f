"""CLIP (transformers ``CLIPModel``): image and text towers projected into one space."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..errors import ModelError
from .base import Family, FamilyConfig, ModelCard, ModelInfo, Runtime
from .torch_base import HFEmbedder, features_of, pinned_revision

if TYPE_CHECKING:
    import torch


class ClipConfig(FamilyConfig):
    model: str = Field("openai/clip-vit-base-patch32", description="CLIP hub id or local directory.")
    revision: str = Field("main", description="Hub revision (branch, tag or commit) of the CLIP model.")


class ClipEmbedder(HFEmbedder):
    def __init__(self, config: ClipConfig, runtime: Runtime):
        from transformers import AutoTokenizer, CLIPModel

        super().__init__(runtime)
        model = self._load_hf(CLIPModel, config.model, config.revision, "CLIP")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.model, revision=config.revision)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the CLIP tokenizer from {config.model!r} (revision {config.revision!r}): {exc}"
            ) from exc
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="clip",
            source=config.model,
            revision=recorded,
            dim=int(model.config.projection_dim),
            supports_text=True,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            description="CLIP image embedding (projected image tower); text queries share the space.",
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return features_of(self.model.get_image_features(pixel_values=pixel_values))

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            raise ModelError("no text given")
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return features_of(self.model.get_text_features(**tokens))


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random clip saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_clip

    return {"model": str(build_tiny_clip(directory / "tiny-clip"))}


FAMILY = Family(
    name="clip",
    config=ClipConfig,
    load=ClipEmbedder,
    card=ModelCard(
        title="CLIP (OpenAI), image tower projected into the image-text space",
        default_source="openai/clip-vit-base-patch32",
        dim="512 (ViT-B/32, B/16); 768 (ViT-L/14)",
        licence="MIT (OpenAI CLIP weights)",
        embedding="get_image_features: the projected CLS token; text queries use get_text_features in the same space",
        good_for="semantic similarity and text-to-image search; weaker than DINOv2/SSCD on edited copies",
        text=True,
        paper="Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision",
    ),
    tiny=tiny,
)
