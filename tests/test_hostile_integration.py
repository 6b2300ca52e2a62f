"""Hostile, against real servers (the integration tier of test_hostile.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imsim import expr
from imsim.client.local import Client
from imsim.store import VectorStore

from .support.servers import ROOT, SAMPLES, settings_env
from .support.settings import make_settings
from .test_hostile import folder_rows

MEMORY_PROBE = r"""
import json, resource, sys
from imsim.ingest import Ingestor, ingest_local
from imsim.settings import load
settings = load(json.loads(sys.argv[1]))
with Ingestor(settings) as ingestor:
    ingestor.ingest([sys.argv[3]])  # warm-up: models, pools and first-call costs out of the measurement
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = ingest_local(sys.argv[2:], settings, ingestor=ingestor, force=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_before_kb": before, "peak_after_kb": after, "done": result.done, "failures": result.failures}))
"""


@pytest.mark.integration
@pytest.mark.parametrize("models", ["clip,dinov2", "clip,onnx"])
def test_an_aspect_ratio_bomb_never_grows_memory_and_the_good_images_are_stored(family_dirs, tmp_path, models):
    """A 230-byte 50000x1 PNG once grew to gigabytes in preprocessing (short edge scaled up, aspect kept) and got
    the worker OOM-killed. Crop models now resample only what survives the crop; models that keep the aspect ratio
    (the ONNX model here, resize 'short', like SSCD) refuse it with a reason. Measured in a fresh process."""
    for size, name in [((50_000, 1), "wide.png"), ((1, 50_000), "tall.png")]:
        Image.new("RGB", size, (200, 30, 30)).save(tmp_path / name)
    assert (tmp_path / "wide.png").stat().st_size < 1000
    good = [str(p) for p in sorted((SAMPLES / "photos").glob("*.jpg"))[:3]]
    settings = make_settings(family_dirs, tmp_path / "data", models=models)
    values = {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v) for k, v in settings.flat().items()}
    values = {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in values.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSIM_")}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(values), str(tmp_path / "wide.png"), str(tmp_path / "tall.png"), *good],
        cwd=ROOT,
        env={**env, "IMSIM_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    grown_mb = (out["peak_after_kb"] - out["peak_before_kb"]) / 1024
    assert grown_mb < 150, f"the peak grew by {grown_mb:.0f} MB"
    print(f"\naspect-ratio bombs 50000x1 + 1x50000 with 3 photos ({models}): the process peak grew {grown_mb:.1f} MB")
    if "onnx" in models:
        assert out["done"] == 3 and set(out["failures"]) == {str(tmp_path / "wide.png"), str(tmp_path / "tall.png")}
        assert all("aspect ratio" in reason and "onnx" in reason for reason in out["failures"].values())
    else:
        assert out["done"] == 5 and not out["failures"]


def test_under_with_a_large_k_stays_within_a_servers_top_k_cap(tiny_model_dirs, tmp_path, models, milvus_server_uri):
    settings = make_settings(tiny_model_dirs, tmp_path / "data", milvus_uri=milvus_server_uri, search_consistency="Strong")
    store = VectorStore(settings)
    name = store.versions.ensure_collection(models["clip"].info)
    folder_rows(store, name, models["clip"].info.dim, {"/srv/u_x": 5200, "/srv/uAx": 400})
    assert store.connection.like_dialect == "prefix"  # Milvus 2.3: a literal prefix, `_` not a wildcard
    with Client(settings, embedders={"clip": models["clip"]}, store=store) as client:
        hits = client.search_batch(
            {"clip": np.ones((1, models["clip"].info.dim), np.float32)}, k=5000, where=expr.Where(path_prefix="/srv/u_x")
        )[0]
        assert len(hits) == 5000 and all(h.path.startswith("/srv/u_x/") for h in hits)
    store.close()


def test_config_shows_hosts_and_masks_every_credential(cli, settings):
    env = {
        **settings_env(
            settings.replace(
                milvus_uri="http://alice:s3cret@milvus.example:19530",
                redis_url="redis://:hunter2@redis.example:6379/0",
                milvus_token="root:t0ken",
            )
        )
    }
    out = cli(env, "config").stdout
    assert "s3cret" not in out and "hunter2" not in out and "t0ken" not in out
    assert "IMSIM_MILVUS_URI=http://alice:**@milvus.example:19530" in out
    assert "IMSIM_REDIS_URL=redis://:**@redis.example:6379/0" in out and "IMSIM_MILVUS_TOKEN=**" in out
    plain = cli(settings_env(settings.replace(redis_url="redis://cache.local:6380/2")), "config").stdout
    assert "IMSIM_REDIS_URL=redis://cache.local:6380/2" in plain  # no password: nothing to hide
