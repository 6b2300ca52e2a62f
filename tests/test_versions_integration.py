"""Versions, against real servers (the integration tier of test_versions.py)."""

from __future__ import annotations

import json

from imsim.models.testing import build_tiny_clip

from .support.servers import settings_env
from .support.settings import make_settings


def test_cli_models_lists_versions_activates_and_shows_cards(cli, tiny_model_dirs, tmp_path, image_folder):
    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(image_folder / "flags"))
    other = build_tiny_clip(tmp_path / "clip-v2" / "tiny-clip", seed=4)
    env2 = {**env, "IMSIM_CLIP_MODEL": str(other), "IMSIM_MODELS": "clip"}
    cli(env2, "ingest", "--local", "--activate", str(image_folder / "flags" / "[a-c]*.png"))  # ar br ca ch cn
    listing = json.loads(cli(env, "models", "--json").stdout)
    assert {"clip", "dinov2", "vit", "efficientnet", "blip2", "vgg16", "sscd", "onnx"} <= {r["name"] for r in listing["registry"]}
    clip = sorted((v for v in listing["versions"] if v["model"] == "clip"), key=lambda v: -v["rows"])
    assert [(v["rows"], v["active"]) for v in clip] == [(24, False), (5, True)]  # --activate switched to the new one
    tag = clip[0]["name"].rsplit("_", 1)[1]
    proc = cli(env, "models", "activate", "clip", tag)
    assert clip[0]["name"] in proc.stderr
    listing = json.loads(cli(env, "models", "--json").stdout)
    assert [v["name"] for v in listing["versions"] if v["active"] and v["model"] == "clip"] == [clip[0]["name"]]
    card = cli({**env, "COLUMNS": "200"}, "models", "--info", "sscd").stdout
    assert "sscd_disc_mixup" in card and "MIT" in card and "512" in card and "copy" in card
    proc = cli(env, "models", "activate", "clip", "deadbeef", check=False)
    assert proc.returncode == 2 and "names no stored collection" in proc.stderr
    proc = cli(env, "models", "--info", "nope", check=False)
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
