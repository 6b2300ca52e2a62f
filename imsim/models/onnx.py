"""Any ONNX image-embedding model, run with onnxruntime (CPU, or CUDA where its provider is installed).

ONNX files carry no preprocessing, so the settings declare it (``IMSIM_ONNX_*``): input layout
(NCHW or NHWC), dtype (float32, float16, or uint8 for graphs that normalise inside), resize
(``crop``: short edge then centre crop; ``exact``: squash to a square; ``short``: short edge only,
sizes vary and are batched by shape), mean/std/rescale for float inputs, and the input and output
names (default: the first of each). Outputs of rank 3 (tokens) or 4 (feature maps, NCHW) are
mean-pooled to one vector; every output is L2-normalised. A model whose batch dimension is fixed
runs one image per call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from .base import Embedder, ModelCard, ModelInfo, Preprocess
from .sscd import file_revision

if TYPE_CHECKING:
    import torch

    from ..settings import Settings

LAYOUTS = ("nchw", "nhwc")
DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
RESIZES = ("crop", "exact", "short")


def floats(text: str, what: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ModelError(f"IMSIM_ONNX_{what.upper()} must be three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def onnx_preprocess(resize: str, size: int, resize_short: int, mean: tuple, std: tuple, rescale: float) -> Preprocess:
    if resize not in RESIZES:
        raise ModelError(f"IMSIM_ONNX_RESIZE {resize!r} is not one of {', '.join(RESIZES)}")
    if resize == "exact":
        return Preprocess(0, size, size, mean, std, resample=3, rescale=rescale, exact=True)
    if resize == "short":
        return Preprocess(size, 0, 0, mean, std, resample=3, rescale=rescale)
    return Preprocess(resize_short or round(size * 8 / 7), size, size, mean, std, resample=3, rescale=rescale)


class OnnxEmbedder(Embedder):
    family = "onnx"
    card = ModelCard(
        title="Any ONNX image-embedding model (onnxruntime)",
        default_source="(IMSIM_ONNX_MODEL: your .onnx file)",
        dim="the model's output width",
        licence="the model's own",
        embedding="the declared output (IMSIM_ONNX_OUTPUT_NAME), mean-pooled if it has token or spatial axes, L2-normalised",
        good_for="bringing your own exported or quantised model (e.g. an int8 SSCD, a distilled student) without writing code",
    )

    def __init__(self, path: str, *, name: str = "", layout: str = "nchw", dtype: str = "float32", resize: str = "crop",
                 size: int = 224, resize_short: int = 0, mean: str = "0.485,0.456,0.406", std: str = "0.229,0.224,0.225",
                 rescale: float = 1 / 255, input_name: str = "", output_name: str = "", device: str = "auto", batch_size: int = 64):
        import onnxruntime as ort

        if not path:
            raise ModelError("model 'onnx' needs IMSIM_ONNX_MODEL: the path of an .onnx file")
        if layout not in LAYOUTS:
            raise ModelError(f"IMSIM_ONNX_INPUT_LAYOUT {layout!r} is not one of {', '.join(LAYOUTS)}")
        if dtype not in DTYPES:
            raise ModelError(f"IMSIM_ONNX_INPUT_DTYPE {dtype!r} is not one of {', '.join(DTYPES)}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ModelError(f"no ONNX model at {path!r}")
        available = ort.get_available_providers()
        want_cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
        if want_cuda and "CUDAExecutionProvider" not in available:
            raise ModelError(f"IMSIM_DEVICE={device!r} but onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(file), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load {path!r}: {exc}") from exc
        self.device = "cuda" if want_cuda else "cpu"
        self.batch_size = batch_size
        self.layout, self.input_dtype = layout, DTYPES[dtype]
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = input_name or inputs[0].name
        self.output_name = output_name or outputs[0].name
        if self.input_name not in {i.name for i in inputs}:
            raise ModelError(f"{path!r} has no input {self.input_name!r} (inputs: {', '.join(i.name for i in inputs)})")
        if self.output_name not in {o.name for o in outputs}:
            raise ModelError(f"{path!r} has no output {self.output_name!r} (outputs: {', '.join(o.name for o in outputs)})")
        batch_dim = next(i.shape[0] for i in inputs if i.name == self.input_name)
        self.fixed_batch = isinstance(batch_dim, int)
        self.preprocess = onnx_preprocess(resize, size, resize_short, floats(mean, "mean"), floats(std, "std"), rescale)
        dim = int(self._run(np.zeros((1, *self._probe_shape()), np.uint8)).shape[-1])
        label = name or file.stem
        self.info = ModelInfo(
            name="onnx", source=str(file), revision=file_revision(file), dim=dim, supports_text=False, variant="",
            description=f"ONNX model {label} ({layout}, {dtype}, {resize} {size}).",
            extra={"label": label, "input": f"{self.input_name} {layout} {dtype}", "output": self.output_name},
            config={"onnx_model": str(file), "onnx_name": name, "onnx_input_layout": layout, "onnx_input_dtype": dtype,
                    "onnx_resize": resize, "onnx_size": str(size), "onnx_resize_short": str(resize_short), "onnx_mean": mean,
                    "onnx_std": std, "onnx_rescale": repr(rescale), "onnx_input_name": input_name, "onnx_output_name": output_name},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OnnxEmbedder:
        return cls(settings.onnx_model, name=settings.onnx_name, layout=settings.onnx_input_layout, dtype=settings.onnx_input_dtype,
                   resize=settings.onnx_resize, size=settings.onnx_size, resize_short=settings.onnx_resize_short,
                   mean=settings.onnx_mean, std=settings.onnx_std, rescale=settings.onnx_rescale,
                   input_name=settings.onnx_input_name, output_name=settings.onnx_output_name, device=settings.device,
                   batch_size=settings.batch_size)

    def _probe_shape(self) -> tuple[int, int, int]:
        p = self.preprocess
        side = p.crop_height or p.resize_short
        return (side, p.crop_width or side, 3)

    def _run(self, batch_uint8: np.ndarray) -> np.ndarray:
        """NHWC uint8 → (N, D) features (not yet normalised)."""
        p = self.preprocess
        if self.input_dtype == np.uint8:
            x: Any = batch_uint8
        else:
            x = (batch_uint8.astype(np.float32) * p.rescale + p.offset - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        parts = [x[i : i + 1] for i in range(len(x))] if self.fixed_batch else [x]
        out = np.concatenate([self.session.run([self.output_name], {self.input_name: part})[0] for part in parts])
        out = out.astype(np.float32)
        if out.ndim == 3:  # (N, tokens, D)
            out = out.mean(axis=1)
        elif out.ndim == 4:  # (N, C, H, W)
            out = out.mean(axis=(2, 3))
        return out.reshape(len(out), -1)

    def embed_uint8(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        batch = np.asarray(batch.cpu() if hasattr(batch, "cpu") else batch, dtype=np.uint8)
        if not len(batch):
            return np.zeros((0, self.dim), np.float32)
        out = np.concatenate([self._run(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def _forward_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise ModelError("the ONNX model takes uint8 images through embed_uint8, not normalised tensors")
