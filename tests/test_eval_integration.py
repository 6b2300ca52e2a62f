"""Eval, against real servers (the integration tier of test_eval.py)."""

from __future__ import annotations

import json

from PIL import Image

from imsim import calibration

from .support.servers import SAMPLES, settings_env
from .support.settings import make_settings

# --- metrics on fixed rankings ---------------------------------------------------------------------


# Hand-made cases with the values the ISC2021 definition gives (facebookresearch/isc2021, isc/metrics.py): predictions
# are ranked by score, equal scores false first; µAP = sum of precision x recall gained; the operating point at a
# precision is the highest recall reaching it, at its first (highest-scoring) prediction; R@k per ground-truth pair,
# rank = the query's predictions scoring at least as high as the true one, minus one.


# --- edits and the benchmark builder ------------------------------------------------------------------


# --- full runs ----------------------------------------------------------------------------------------


def test_cli_build_and_run_write_a_report_with_plots(cli, tiny_model_dirs, tmp_path):
    env = settings_env(make_settings(tiny_model_dirs, tmp_path / "data"))
    built = json.loads(
        cli(
            env,
            "eval",
            "build-copydetect",
            "--refs",
            str(SAMPLES),
            "--out",
            str(tmp_path / "bench"),
            "--queries",
            "10",
            "--negatives",
            "5",
            "--no-augly",
        ).stdout
    )
    assert built["edit_backend"] == "pillow" and built["queries_with_copy"] == 10
    out = tmp_path / "report"
    cli(
        env,
        "eval",
        "run",
        "--bench",
        str(tmp_path / "bench"),
        "--out",
        str(out),
        "--models",
        "clip,dinov2",
        "--fusion",
        "rrf,weighted",
    )
    text = (out / "report.md").read_text()
    assert "| fused:weighted |" in text and "µAP" in text and "![pr_curves.png](pr_curves.png)" in text
    data = json.loads((out / "report.json").read_text())
    assert {m["label"] for m in data["copydetect"]} == {"clip", "dinov2", "fused:rrf", "fused:weighted"}
    assert data["command"].startswith("imsim eval run --bench")
    for plot in ("pr_curves.png", "recall_at_k.png"):
        assert Image.open(out / plot).size[0] > 500
    proc = cli(env, "eval", "run", "--out", str(out), check=False)
    assert proc.returncode == 2 and "--bench" in proc.stderr


# --- positives by source, the calibrated fusion ------------------------------------------------------


def test_the_calibrated_fusion_is_scored_applied_and_searched(cli, tiny_model_dirs, tmp_path, small_bench):
    from .support.servers import settings_env

    settings = make_settings(tiny_model_dirs, tmp_path / "data")
    env = settings_env(settings)
    out = tmp_path / "out"
    cli(env, "ingest", "--local", str(SAMPLES / "photos"))
    proc = cli(env, "search", str(SAMPLES / "photos" / "coffee.jpg"), "--fusion", "calibrated", check=False)
    assert (
        proc.returncode == 2 and "no calibrated fusion for calibrated(clip@" in proc.stderr and "imsim eval apply" in proc.stderr
    )
    proc = cli(env, "eval", "run", "--bench", str(small_bench), "--out", str(out), "--models", "clip,dinov2", "--json")
    report = json.loads(proc.stdout)
    labels = [r["label"] for r in report["copydetect"]]
    assert "fused:calibrated" in labels and set(report["fusion_weights"]) == {"clip", "dinov2", "(bias)"}
    # random weights (the tiny test models): the run recommends nothing, and says why, in the report and on stderr
    assert report["recommendation"].startswith("none: clip, dinov2 have RANDOM weights") and "RANDOM weights" in proc.stderr
    stored = calibration.load(out)
    key = next(k for k in stored if k.startswith("calibrated("))
    assert set(stored[key]["fusion"]["weights"]) == {"clip", "dinov2"}
    assert "calibrated fusion(s) applied" in cli(env, "eval", "apply", str(out / "calibration.json")).stderr
    hits = json.loads(cli(env, "search", str(SAMPLES / "photos" / "coffee.jpg"), "--fusion", "calibrated", "--json").stdout)
    assert hits[0]["path"].endswith("coffee.jpg") and 0 < hits[0]["score"] <= 1  # a match probability
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
