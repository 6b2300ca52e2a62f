"""The ingest benchmark runs both paths on the same files, and imsim's fast path gives the baseline's vectors."""

from __future__ import annotations

import pytest

from imsim import bench
from imsim.synth import write_variants

from .conftest import SAMPLES


@pytest.mark.parametrize("sink", ["none", "lite"])
def test_bench_runs_both_paths_and_vectors_agree(settings, tmp_path, sink):
    files = write_variants([SAMPLES / "photos"], tmp_path / "jpegs", 12, size=(640, 480), seed=3)
    result = bench.run(files, settings, baseline_images=5, sink=sink, warmup=2)
    assert result.images == 12 and result.baseline_images == 5
    assert result.seconds > 0 and result.baseline_seconds > 0 and result.speedup > 0
    assert {"read", "decode", "resize", "embed:clip", "embed:dinov2", "write:clip", "write:dinov2"} <= set(result.stages)
    # Decode once with JPEG draft + our resize + batched fp32 forward == one image per call through the HF processor.
    assert set(result.min_cosine) == {"clip", "dinov2"} and min(result.min_cosine.values()) > 0.999
    assert result.as_dict()["speedup"] == round(result.speedup, 2)
