"""The benchmarks measure what they claim: every stage timed, null models shaped like the real ones, decoders that give
identical model inputs, and a fast path whose vectors equal the one-image-per-call baseline's."""

from __future__ import annotations

import numpy as np
import pytest

from imsim import bench
from imsim.synth import write_variants

from .support.servers import SAMPLES


@pytest.fixture()
def jpegs(tmp_path):
    return write_variants([SAMPLES / "photos"], tmp_path / "jpegs", 12, size=(640, 480), seed=3)


@pytest.mark.parametrize("sink", ["none", "lite"])
def test_ingest_bench_times_every_stage_into_each_sink(settings, models, jpegs, sink):
    run = bench.run_ingest(jpegs, settings, models, sink=sink, warmup=2)
    assert run.images == 12 and run.seconds > 0 and run.images_per_s == pytest.approx(12 / run.seconds)
    assert set(run.times.embed) == set(run.times.write) == {"clip", "dinov2"}
    stages = run.stage_cpu_ms()
    assert (
        all(stages[s] > 0 for s in ("read", "decode", "resize", "embed")) and run.cpu_ms_per_image >= sum(stages.values()) * 0.5
    )
    assert run.projected_images_per_s == pytest.approx(bench.PROJECTION_CORES * 1000 / run.cpu_ms_per_image)
    assert ("no-op" in run.store) == (sink == "none") and run.as_dict()["images"] == 12


def test_null_models_take_the_real_models_inputs_and_give_their_dimensions():
    null = bench.null_models()
    clip, dino = null["clip"], null["dinov2"]
    assert (clip.preprocess.resize_short, clip.preprocess.crop_height, clip.info.dim) == (224, 224, 512)
    assert (dino.preprocess.resize_short, dino.preprocess.crop_height, dino.info.dim) == (256, 224, 768)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    a = clip.embed_uint8(batch)
    assert a.shape == (3, 512) and np.allclose(np.linalg.norm(a, axis=1), 1) and np.array_equal(a, clip.embed_uint8(batch))
    assert not np.allclose(a[0], a[1])  # it depends on the pixels: two decoders' outputs can be told apart


def test_the_fast_path_computes_the_baselines_vectors(settings, models, jpegs):
    """Per-model draft decode + torch resize + batched forward == one image per call through the HF processor."""
    base = bench.run_baseline(models, jpegs[:5], settings)
    assert base.images == 5 and base.seconds > 0
    assert set(base.min_cosine) == {"clip", "dinov2"} and min(base.min_cosine.values()) > 0.999


def test_decoders_give_identical_model_inputs(jpegs):
    runs = bench.compare_decoders(jpegs, bench.null_models(), ["pillow", "simplejpeg"], [1])
    assert [r.decoder for r in runs] == ["pillow", "simplejpeg"]
    for r in runs:
        assert r.images == len(jpegs) and r.identical == len(jpegs) and r.min_cosine == pytest.approx(1.0, abs=1e-6)
