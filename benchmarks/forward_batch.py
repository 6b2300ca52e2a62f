"""Model forward throughput by batch size (random weights, published architectures), on this machine's device.

    python benchmarks/forward_batch.py --batches 1,4,8,32 [--device cpu|cuda]

Prints images/s of the model forward pass alone (no decoding), for CLIP ViT-B/32 and DINOv2 ViT-B/14
at 224 px, through imsim's Embedder (fp32 on CPU, fp16 on CUDA). Used to choose IMSIM_CPU_BATCH_SIZE.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np

from imsim.models import load_models
from imsim.models.testing import build_random_models
from imsim.settings import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,4,8,32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=32, help="images per measurement")
    args = parser.parse_args()
    dirs = build_random_models(tempfile.mkdtemp(prefix="imsim-fwd-"))
    settings = load(
        dict(
            clip_model=str(dirs["clip"]),
            dinov2_model=str(dirs["dinov2"]),
            device=args.device,
            cpu_batch_size=65_536,
            batch_size=65_536,
        )
    )
    models: dict[str, Any] = dict(load_models(settings))  # torch embedders: their batch size is set below
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(args.images, 224, 224, 3), dtype=np.uint8)
    print("| model | device | batch | images/s |\n| --- | --- | ---: | ---: |")
    for name, model in models.items():
        model.batch_size = 2
        model.embed_uint8(pixels[:2])  # warm-up
        for batch in (int(b) for b in args.batches.split(",")):
            model.batch_size = batch
            start = time.perf_counter()
            model.embed_uint8(pixels)
            print(f"| {name} | {model.device} | {batch} | {args.images / (time.perf_counter() - start):.2f} |", flush=True)


if __name__ == "__main__":
    main()
