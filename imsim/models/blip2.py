"""BLIP-2 (Salesforce): the frozen ViT-g image encoder and the Q-Former, never the language model.

The write-ups take the Q-Former's output for ``Salesforce/blip2-opt-2.7b`` and average its 32
query tokens (768-d). That checkpoint also holds a 2.7B-parameter OPT language model; imsim's
:class:`~transformers.PreTrainedModel` here declares only ``vision_model``, ``query_tokens`` and
``qformer``, so ``from_pretrained`` reads just those tensors and skips the language model's
(never materialised in memory; the hub download still fetches the whole checkpoint). On CUDA
the vision encoder runs in fp16 and the Q-Former in fp32, as transformers' own BLIP-2 classes keep it.
Alternative pooling ``vision``: the ViT-g's pooled CLS token (1408-d), no Q-Former.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Family, FamilyConfig, ModelCard, ModelInfo, Runtime
from .torch_base import HFEmbedder, pinned_revision

if TYPE_CHECKING:
    import torch


class Blip2Config(FamilyConfig):
    model: str = Field(
        "Salesforce/blip2-opt-2.7b",
        description="BLIP-2 hub id or local directory (only the vision encoder and Q-Former are loaded).",
    )
    revision: str = Field("main", description="Hub revision of the BLIP-2 model.")
    pooling: Literal["mean", "vision"] = Field(
        "mean", description="BLIP-2 embedding: mean of the Q-Former query outputs, or the ViT-g pooled CLS."
    )


@lru_cache(maxsize=1)
def vision_qformer_class() -> Any:
    """The model class, built on first use (torch and transformers import lazily)."""
    import torch
    from torch import nn
    from transformers import Blip2Config as HFBlip2Config
    from transformers.models.blip_2.modeling_blip_2 import Blip2PreTrainedModel, Blip2QFormerModel, Blip2VisionModel

    class Blip2VisionQFormer(Blip2PreTrainedModel):
        """BLIP-2 without its language model: image → ViT-g tokens → Q-Former query outputs."""

        config_class = HFBlip2Config
        main_input_name = "pixel_values"
        _keep_in_fp32_modules = ["query_tokens", "qformer"]

        def __init__(self, config: HFBlip2Config):
            super().__init__(config)
            self.vision_model = Blip2VisionModel._from_config(config.vision_config)
            width = int(getattr(config.qformer_config, "hidden_size"))  # noqa: B009 - a config object, typed loosely upstream
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, width))
            self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
            self.post_init()

        def forward(self, pixel_values: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
            vision = self.vision_model(pixel_values=pixel_values, return_dict=True)
            if pooling == "vision":
                return vision.pooler_output
            image_embeds = vision.last_hidden_state.to(self.query_tokens.dtype)
            mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            out = self.qformer(
                query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask, return_dict=True
            )
            return out.last_hidden_state.mean(dim=1)

    return Blip2VisionQFormer


class Blip2Embedder(HFEmbedder):
    def __init__(self, config: Blip2Config, runtime: Runtime):
        super().__init__(runtime)
        model = self._load_hf(vision_qformer_class(), config.model, config.revision, "BLIP-2", pooling=config.pooling)
        dim = model.config.vision_config.hidden_size if config.pooling == "vision" else model.config.qformer_config.hidden_size
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="blip2",
            source=config.model,
            revision=recorded,
            dim=int(dim),
            supports_text=False,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            variant="" if config.pooling == "mean" else config.pooling,
            description=(
                "BLIP-2 Q-Former output, mean over the query tokens."
                if config.pooling == "mean"
                else "BLIP-2 ViT-g pooled CLS token (no Q-Former)."
            ),
            extra={"pooling": config.pooling},
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, pooling=self.pooling)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random blip2 saved as published (:mod:`imsim.models.testing`): the fields that load it."""
    from .testing import build_tiny_blip2

    return {"model": str(build_tiny_blip2(directory / "tiny-blip2"))}


FAMILY = Family(
    name="blip2",
    config=Blip2Config,
    load=Blip2Embedder,
    card=ModelCard(
        title="BLIP-2 (Salesforce): EVA ViT-g image encoder + Q-Former, without the language model",
        default_source="Salesforce/blip2-opt-2.7b",
        dim="768 (Q-Former query tokens, mean); 1408 (pooling 'vision': ViT-g CLS)",
        licence="MIT (BLIP-2 checkpoint); the OPT language model stored in the same checkpoint (never loaded) "
        "is under Meta's OPT licence",
        embedding="mean over the 32 Q-Former query outputs, as the write-ups (IMSIM_BLIP2_POOLING: mean, vision)",
        good_for="semantic, caption-like similarity; heavy (1B-parameter vision encoder): use a GPU",
        paper="Li et al. 2023, BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders and LLMs",
    ),
    tiny=tiny,
)
