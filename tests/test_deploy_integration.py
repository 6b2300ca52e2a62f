"""Deploy, against real servers (the integration tier of test_deploy.py)."""

from __future__ import annotations

from pathlib import Path

from .support.servers import ROOT

DEPLOY = ROOT / "deploy"


def test_doctor_reports_health_and_plain_words_for_each_problem(
    cli, tiny_model_dirs, tmp_path, redis_url, milvus_uri, image_folder
):
    import json

    from imsim.models.testing import build_tiny_clip

    from .support.servers import free_port, settings_env
    from .support.settings import make_settings

    settings = make_settings(
        tiny_model_dirs, tmp_path / "data", redis_url=redis_url, milvus_uri=milvus_uri, queue="doc" + tmp_path.name[-8:]
    )
    env = settings_env(settings)
    cli(env, "ingest", "--local", str(image_folder / "flags"))
    checks = {c["name"]: c for c in json.loads(cli(env, "doctor", "--json").stdout)}
    random = {f"model {name} weights" for name in ("clip", "dinov2")}  # the tiny test models say they are random
    assert all(checks[n]["status"] == "warn" and "RANDOM weights" in checks[n]["detail"] for n in random), checks
    assert all(c["status"] == "ok" for n, c in checks.items() if n not in {"redis persistence", "workers", *random}), checks
    assert checks["redis persistence"]["status"] == "warn" and "--appendonly yes" in checks["redis persistence"]["detail"]
    assert checks["workers"]["status"] == "warn" and "no worker consumes queue" in checks["workers"]["detail"]
    assert any("24 rows" in c["detail"] for c in checks.values())

    # The same collection prefix with a CLIP of another dimension (a new version: its own collection, the stored
    # one untouched and still the one queries use), and Redis on a dead port.
    other = build_tiny_clip(tmp_path / "other" / Path(settings.family("clip").model_dump()["model"]).name, projection_dim=24)
    broken = {**env, "IMSIM_CLIP_MODEL": str(other), "IMSIM_REDIS_URL": f"redis://:pw@127.0.0.1:{free_port()}/0"}
    proc = cli(broken, "doctor", "--json", check=False)
    assert proc.returncode == 1
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["redis"]["status"] == "fail" and "unreachable" in checks["redis"]["detail"]
    assert "pw@" not in proc.stdout
    version = checks["model clip version"]
    assert version["status"] == "warn" and "32-d" in version["detail"] and "imsim models activate clip" in version["detail"]
    assert any(n.startswith("collection") and "not created yet" in c["detail"] for n, c in checks.items())

    lite = settings_env(make_settings(tiny_model_dirs, tmp_path / "lite"))
    text = cli({**lite, "COLUMNS": "200"}, "doctor", "--no-queue", "--no-models").stdout
    assert "Milvus Lite file can be open in one process only" in text

    # Past Milvus Lite's envelope (24 rows against a limit of 20 here), doctor and collections say so and name the way out
    small = {**env, "IMSIM_LITE_WARN_ROWS": "20", "COLUMNS": "200"}
    checks = {c["name"]: c for c in json.loads(cli(small, "doctor", "--no-queue", "--no-models", "--json").stdout)}
    assert checks["milvus lite size"]["status"] == "warn" and "imsim store copy --to" in checks["milvus lite size"]["detail"]
    assert "(24 rows)" in checks["milvus lite size"]["detail"]
    assert "imsim store copy --to" in cli(small, "collections").stderr
