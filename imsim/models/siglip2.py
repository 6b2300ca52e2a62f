"""SigLIP 2 (transformers ``Siglip2Model``, NaFlex): multilingual image and text towers in one space.

The NaFlex processor keeps each image's aspect ratio: it picks the largest size, in whole patches, whose patch
count fits ``max_num_patches`` (256 for the published checkpoints), and feeds the patches with a mask and their grid
shape. Here the image is first scaled, aspect kept, to a short edge of ``patch_size * sqrt(max_num_patches)`` (the
shared decode and resize step: 256 for the published checkpoints, so the images of a slice that share a shape are
batched), then, inside the forward pass, to the processor's own size for that shape
(``get_image_size_for_max_num_patches``, transformers' function), antialiased bilinear as its PIL backend resizes.
Text is lower-cased by the Siglip2 tokenizer and padded to 64 tokens, as the model was trained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import Field

from ..errors import ModelError
from .base import Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime
from .torch_base import HFEmbedder, features_of, load_pretrained, pinned_revision

if TYPE_CHECKING:
    import torch


class Siglip2Config(FamilyConfig):
    model: str = Field("google/siglip2-base-patch16-naflex", description="SigLIP 2 (NaFlex) hub id or local directory.")
    revision: str = Field("main", description="Hub revision (branch, tag or commit) of the SigLIP 2 model.")


class Siglip2Embedder(HFEmbedder):
    def __init__(self, config: Siglip2Config, runtime: Runtime):
        from transformers import AutoTokenizer, Siglip2Model

        super().__init__(runtime)
        model, processor = load_pretrained(Siglip2Model, config.model, config.revision, self.dtype, "SigLIP 2")
        if not hasattr(processor, "max_num_patches"):
            raise ModelError(f"{config.model!r} is not a SigLIP 2 NaFlex checkpoint (its image processor has no patch budget)")
        self.model, self.processor, self.pooling = model.to(self.device).eval(), processor, ""
        self.patch = int(processor.patch_size)
        self.max_patches = int(processor.max_num_patches)
        self.preprocess = Preprocess(
            resize_short=self.patch * math.isqrt(self.max_patches),
            crop_height=0,
            crop_width=0,
            mean=tuple(float(m) for m in processor.image_mean),  # type: ignore[arg-type]
            std=tuple(float(s) for s in processor.image_std),  # type: ignore[arg-type]
            resample=int(processor.resample if processor.resample is not None else Image.Resampling.BILINEAR),
            rescale=float(processor.rescale_factor),
        )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(config.model, revision=config.revision)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the SigLIP 2 tokenizer from {config.model!r} (revision {config.revision!r}): {exc}"
            ) from exc
        recorded, reload = pinned_revision(model, config.model, config.revision)
        self.info = ModelInfo(
            name="siglip2",
            source=config.model,
            revision=recorded,
            dim=int(model.config.vision_config.hidden_size),
            supports_text=True,
            config=config.model_copy(update={"revision": reload}),
            preprocess=self.preprocess,
            description="SigLIP 2 NaFlex image embedding (attention-pooled); multilingual text queries share the space.",
        )

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW pixels (one shape per call) → the NaFlex patch sequence the processor would make."""
        import torch
        from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

        n, channels, height, width = pixel_values.shape
        p = self.patch
        target_h, target_w = get_image_size_for_max_num_patches(height, width, p, self.max_patches)
        if (target_h, target_w) != (height, width):
            pixel_values = torch.nn.functional.interpolate(
                pixel_values.float(), size=(target_h, target_w), mode="bilinear", antialias=True, align_corners=False
            ).to(pixel_values.dtype)
        rows, cols = target_h // p, target_w // p
        grid = pixel_values.reshape(n, channels, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1)  # as the processor patches
        patches = grid.reshape(n, rows * cols, p * p * channels)
        padded = patches.new_zeros((n, self.max_patches, p * p * channels))
        padded[:, : rows * cols] = patches
        mask = torch.zeros((n, self.max_patches), dtype=torch.long, device=pixel_values.device)
        mask[:, : rows * cols] = 1
        shapes = torch.tensor([[rows, cols]] * n, dtype=torch.long, device=pixel_values.device)
        return features_of(self.model.get_image_features(pixel_values=padded, pixel_attention_mask=mask, spatial_shapes=shapes))

    def _forward_texts(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            raise ModelError("no text given")
        length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return features_of(self.model.get_text_features(**tokens))


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random SigLIP 2 NaFlex saved as published (model, NaFlex image processor, lower-casing byte-fallback
    tokenizer): the fields that load it."""
    import torch
    from transformers import Siglip2Config as HFSiglip2Config
    from transformers import Siglip2Model, Siglip2Tokenizer
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    from .testing import mark_random
    from .torch_base import quiet_transformers

    quiet_transformers()
    target = directory / "tiny-siglip2"
    target.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({f"<0x{b:02X}>": 5 + b for b in range(256)})  # byte fallback: any UTF-8 text tokenises
    config = HFSiglip2Config(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_patches=256,
            patch_size=8,
        ),
    )
    torch.manual_seed(0)
    Siglip2Model(config).eval().save_pretrained(target)
    Siglip2ImageProcessorPil(patch_size=8, max_num_patches=256).save_pretrained(target)
    Siglip2Tokenizer(vocab=vocab, merges=[]).save_pretrained(target)
    return {"model": str(mark_random(target))}


FAMILY = Family(
    name="siglip2",
    config=Siglip2Config,
    load=Siglip2Embedder,
    card=ModelCard(
        title="SigLIP 2 (Google), NaFlex: image and multilingual text in one space, aspect ratio kept",
        default_source="google/siglip2-base-patch16-naflex",
        dim="768 (B/16); 1152 (So400m/16)",
        licence="Apache-2.0",
        embedding="get_image_features: the attention-pooled (MAP head) image embedding; text queries use "
        "get_text_features in the same space",
        good_for="text-to-image search in many languages and semantic similarity; a stronger CLIP",
        text=True,
        paper="Tschannen et al. 2025, SigLIP 2: Multilingual Vision-Language Encoders",
    ),
    tiny=tiny,
)
