"""Tiny, randomly initialised instances of the real architectures, saved as model directories.

They load through exactly the same ``from_pretrained`` code as published checkpoints; the
tests and the offline demo use them because this machine and CI cannot reach a model hub.
Random weights: the vectors are deterministic but carry no semantic meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _byte_vocab() -> dict[str, int]:
    """A byte-level vocabulary with CLIP's end-of-word marker (no merges needed)."""
    # GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest above 255.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


# Architectures as data: "tiny" for tests, and the published sizes (random weights) for benchmarks.
CLIP_SIZES = {
    "tiny": dict(text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2), projection_dim=32),
    # openai/clip-vit-base-patch32 (text tower with a byte-level vocabulary instead of the 49,408 BPE tokens)
    "b32": dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12), projection_dim=512),
}
DINOV2_SIZES = {
    "tiny": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, image_size=518),  # facebook/dinov2-base
}


def build_tiny_clip(directory: str | Path, seed: int = 0, projection_dim: int | None = None, size: str = "tiny") -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    arch = CLIP_SIZES[size]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, **arch["text"],
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=224, patch_size=32, **arch["vision"]),
        projection_dim=projection_dim or arch["projection_dim"],
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")).save_pretrained(directory)
    return directory


def build_tiny_dinov2(directory: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(patch_size=14, **DINOV2_SIZES[size])
    torch.manual_seed(seed)
    Dinov2Model(config).eval().save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                      image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, resample=3).save_pretrained(directory)
    return directory


def build_tiny_models(root: str | Path) -> dict[str, Path]:
    """Build every tiny model under ``root``; returns registry name → directory."""
    from .base import quiet_transformers

    quiet_transformers()
    root = Path(root)
    return {"clip": build_tiny_clip(root / "tiny-clip"), "dinov2": build_tiny_dinov2(root / "tiny-dinov2")}


def build_random_models(root: str | Path) -> dict[str, Path]:
    """CLIP ViT-B/32 and DINOv2 ViT-B/14 at their published sizes, random weights (for benchmarks)."""
    from .base import quiet_transformers

    quiet_transformers()
    root = Path(root)
    return {"clip": build_tiny_clip(root / "random-clip-vit-b32", size="b32"),
            "dinov2": build_tiny_dinov2(root / "random-dinov2-base", size="base")}
