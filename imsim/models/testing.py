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


def build_tiny_clip(directory: str | Path, seed: int = 0, projection_dim: int = 32) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")).save_pretrained(directory)
    return directory


def build_tiny_dinov2(directory: str | Path, seed: int = 0, hidden_size: int = 48) -> Path:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          patch_size=14, image_size=224)
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
