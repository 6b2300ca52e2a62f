"""Any ONNX image-embedding model, run with onnxruntime (CPU, or CUDA where its provider is installed).

ONNX files carry no preprocessing, so the config declares it (``IMSIM_ONNX_*``): input layout
(NCHW or NHWC), dtype (float32, float16, or uint8 for graphs that normalise inside), resize
(``crop``: short edge then centre crop; ``exact``: squash to a square; ``short``: short edge only,
sizes vary and are batched by shape), the resize filter, mean/std/rescale for float inputs, and the input and output
names (default: the first of each). Every one of these is part of the model's version (the file's
content hash is its revision), so two wirings of one file never share a collection. Outputs of rank 3
(tokens) or 4 (feature maps, NCHW) are mean-pooled to one vector; every output is L2-normalised. A
model whose batch dimension is fixed runs one image per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BeforeValidator, Field

from ..errors import ModelError
from .base import Family, FamilyConfig, ModelCard, ModelInfo, Preprocess, Runtime, file_revision, l2_normalise, no_text

DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
RESAMPLE = {"bilinear": 2, "bicubic": 3}  # Pillow's filter numbers, as Preprocess takes them


def _three_floats(value: Any) -> Any:
    """``"0.485,0.456,0.406"`` (as IMSIM_ONNX_MEAN is written) → a 3-tuple; other values pass to pydantic."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
        if len(parts) != 3:
            raise ValueError(f"must be three comma-separated numbers, got {value!r}")
        return tuple(parts)
    return value


Triple = Annotated[tuple[float, float, float], BeforeValidator(_three_floats)]


class OnnxConfig(FamilyConfig):
    NOT_IN_VERSION: ClassVar[frozenset[str]] = frozenset({"name"})

    model: str = Field("", description="Path of an ONNX image-embedding model (model name 'onnx').")
    name: str = Field("", description="A label for the ONNX model (default: the file name).")
    input_layout: Literal["nchw", "nhwc"] = Field("nchw", description="ONNX input layout.")
    input_dtype: Literal["float32", "float16", "uint8"] = Field(
        "float32", description="ONNX input dtype; uint8 = raw pixels, the graph normalises."
    )
    resize: Literal["crop", "exact", "short"] = Field(
        "crop", description="ONNX resize: short edge + centre crop, exact square, or short edge only."
    )
    size: int = Field(224, ge=8, le=4096, description="ONNX input side (crop or square), or the short edge for resize 'short'.")
    resize_short: int = Field(
        0, ge=0, le=8192, description="Short edge before the crop for resize 'crop' (0 = size x 8/7, e.g. 256 for 224)."
    )
    resample: Literal["bilinear", "bicubic"] = Field(
        "bicubic", description="ONNX resize filter (antialiased, as Pillow's): bicubic, or bilinear (SSCD's README)."
    )
    mean: Triple = Field((0.485, 0.456, 0.406), description="Per-channel mean for float inputs.")
    std: Triple = Field((0.229, 0.224, 0.225), description="Per-channel std for float inputs.")
    rescale: float = Field(1 / 255, gt=0, description="Pixel scale before mean/std for float inputs.")
    input_name: str = Field("", description="ONNX input name (default: the first input).")
    output_name: str = Field("", description="ONNX output name (default: the first output).")

    def preprocess(self) -> Preprocess:
        resample = RESAMPLE[self.resample]
        if self.resize == "exact":
            return Preprocess(0, self.size, self.size, self.mean, self.std, resample=resample, rescale=self.rescale, exact=True)
        if self.resize == "short":
            return Preprocess(self.size, 0, 0, self.mean, self.std, resample=resample, rescale=self.rescale)
        return Preprocess(
            self.resize_short or round(self.size * 8 / 7),
            self.size,
            self.size,
            self.mean,
            self.std,
            resample=resample,
            rescale=self.rescale,
        )


REVISION_KEY = "imsim.revision"  # metadata of a graph whose network is named by what made it, not by its bytes


class OnnxEmbedder:
    """Implements the :class:`~imsim.models.base.Embedder` protocol directly on an onnxruntime session.

    Other families wire their ONNX graphs through it (``family``: the registry name their vectors are stored under,
    ``family_config``: the config that loads them again, ``text_hint``: why there is no text search)."""

    def __init__(
        self,
        config: OnnxConfig,
        runtime: Runtime,
        *,
        family: str = "onnx",
        family_config: FamilyConfig | None = None,
        description: str = "",
        text_hint: str = "",
        source: str = "",
        variant: str = "",
    ):
        import onnxruntime as ort

        if not config.model:
            raise ModelError("model 'onnx' needs IMSIM_ONNX_MODEL: the path of an .onnx file")
        file = Path(config.model).expanduser()
        if not file.is_file():
            raise ModelError(f"no ONNX model at {config.model!r}")
        available = ort.get_available_providers()
        device = runtime.device
        want_cuda = device.startswith("cuda") or (device == "auto" and "CUDAExecutionProvider" in available)
        if want_cuda and "CUDAExecutionProvider" not in available:
            raise ModelError(f"IMSIM_DEVICE={device!r} but onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        self.file = file  # the graph run (for a converted model, the conversion)
        try:
            self.session = ort.InferenceSession(str(file), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load {config.model!r}: {exc}") from exc
        self.device = "cuda" if want_cuda else "cpu"
        self.batch_size = runtime.batch_for(self.device)
        self.input_dtype = DTYPES[config.input_dtype]
        self.layout = config.input_layout
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = config.input_name or inputs[0].name
        self.output_name = config.output_name or outputs[0].name
        if self.input_name not in {i.name for i in inputs}:
            raise ModelError(f"{config.model!r} has no input {self.input_name!r} (inputs: {', '.join(i.name for i in inputs)})")
        if self.output_name not in {o.name for o in outputs}:
            raise ModelError(
                f"{config.model!r} has no output {self.output_name!r} (outputs: {', '.join(o.name for o in outputs)})"
            )
        batch_dim = next(i.shape[0] for i in inputs if i.name == self.input_name)
        self.fixed_batch = isinstance(batch_dim, int)
        self.preprocess = config.preprocess()
        side = self.preprocess.crop_height or self.preprocess.resize_short
        try:  # a probe image: the output width, and a wiring that cannot run is refused now, by name
            dim = int(self._run(np.zeros((1, side, self.preprocess.crop_width or side, 3), np.uint8)).shape[-1])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"{config.model!r} does not run with input {config.input_layout} {config.input_dtype} "
                f"({config.resize} {config.size}): {exc}"
            ) from exc
        label = config.name or file.stem
        self.text_hint = text_hint
        # A graph converted or exported by imsim names its network (source weights + recipe) in its metadata: the same
        # network is the same version on every machine, whatever bytes an exporter wrote (floats folded differently).
        declared = self.session.get_modelmeta().custom_metadata_map.get(REVISION_KEY, "")
        self.info = ModelInfo(
            name=family,
            source=source or str(file),
            revision=declared or file_revision(file),
            dim=dim,
            supports_text=False,
            config=family_config or config.model_copy(update={"model": str(file)}),
            preprocess=self.preprocess,
            variant=variant,
            description=description
            or f"ONNX model {label} ({config.input_layout}, {config.input_dtype}, {config.resize} {config.size}).",
            extra={
                "label": label,
                "input": f"{self.input_name} {config.input_layout} {config.input_dtype}",
                "output": self.output_name,
            },
        )

    def _run(self, batch_uint8: np.ndarray) -> np.ndarray:
        """NHWC uint8 → (N, D) features (not yet normalised)."""
        p = self.preprocess
        if self.input_dtype == np.uint8:
            x: Any = batch_uint8
        else:
            x = (batch_uint8.astype(np.float32) * p.rescale + p.offset - np.asarray(p.mean, np.float32)) / np.asarray(
                p.std, np.float32
            )
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

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.uint8)
        if not len(batch):
            return np.zeros((0, self.info.dim), np.float32)
        return l2_normalise(
            np.concatenate([self._run(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)])
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text_hint:
            raise ModelError(self.text_hint)
        raise no_text(self.info)


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny SSCD-like network exported with ``torch.onnx.export`` as the int8 SSCD ships (NHWC uint8 in, the
    normalisation inside the graph): the fields that load it."""
    from .testing import export_onnx, tiny_sscd_module

    path = export_onnx(tiny_sscd_module(seed=1), directory / "tiny-sscd-uint8.onnx", nhwc_uint8=True)
    return {"model": str(path), "input_layout": "nhwc", "input_dtype": "uint8", "resize": "short", "size": 96}


FAMILY = Family(
    name="onnx",
    config=OnnxConfig,
    load=OnnxEmbedder,
    card=ModelCard(
        title="Any ONNX image-embedding model (onnxruntime)",
        default_source="(IMSIM_ONNX_MODEL: your .onnx file)",
        dim="the model's output width",
        licence="the model's own",
        embedding="the declared output (IMSIM_ONNX_OUTPUT_NAME), mean-pooled if it has token or spatial axes, L2-normalised",
        good_for="bringing your own exported or quantised model (e.g. an int8 SSCD, a distilled student) without writing code",
    ),
    tiny=tiny,
)
