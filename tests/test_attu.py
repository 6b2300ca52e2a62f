"""What a user of Milvus's Attu dashboard reads and sees of imsim's collections, from the real Attu (2.5.6, built from
its source in ../shared/tools/attu) against a real Milvus 2.3.5 server, driven in headless Chromium.

Attu hides custom collection properties, cuts long names and descriptions, and shows numbers raw: so what identifies
a model version has to be in the collection name's first ~19 characters and at the head of its description, and
each field's key fact in the first 40 characters of its description. Screenshots land in the test's tmp dir
(``attu-collections.png``, ``attu-schema.png``, ``attu-search.png``); docs/attu-collections.png is one of them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imsim.ingest import ingest_local
from imsim.models import load_models
from imsim.models.testing import build_tiny_clip
from imsim.sources.names import path_id
from imsim.sources.paths import discover
from imsim.store import VectorStore

from .support.servers import ROOT, SAMPLES, free_port, stop, wait_for_port
from .support.settings import make_settings

ATTU = ROOT.parent / "shared" / "tools" / "attu" / "start.sh"
NODE_MODULES = ROOT / ".cache" / "node" / "node_modules"
# field -> the fact a user must read before Attu's ellipsis (~40 characters)
KEY_FACTS = {
    "id": "sha256(absolute path or URI)",
    "path": "File path",
    "sha256": "sha256 of the file",
    "width": "Width in pixels",
    "height": "Height in pixels",
    "file_size": "File size in bytes",
    "mtime": "Unix seconds",
    "model_id": "Model source",
    "model_revision": "Model revision",
    "ingested_at": "Unix seconds",
    "job_id": "Ingest job",
    "tags": "Ingest tags",
    "vector": "embedding: 32-d",
}

pytestmark = pytest.mark.integration


def _skip_reason() -> str:
    if not ATTU.exists():
        return f"Attu is not here ({ATTU}): it comes with the project's shared tools, not with a clone"
    if not shutil.which("node"):
        return "node is not installed"
    if not (NODE_MODULES / "playwright-core").is_dir():
        return f"playwright-core is not installed in {NODE_MODULES}: run `bash scripts/install.sh --test`"
    if not shutil.which("chromium"):
        return "chromium is not installed: run `bash scripts/install.sh --test`"
    return ""


@pytest.fixture(scope="module")
def attu(milvus_server, tiny_model_dirs, tmp_path_factory):
    """Two CLIP versions and a DINOv2 ingested into the real server under the default prefix, and Attu on it."""
    if reason := _skip_reason():
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("attu")
    second_clip = build_tiny_clip(tmp / "clip-v2" / "tiny-clip", seed=5)
    settings = make_settings(tiny_model_dirs, tmp / "data", milvus_uri=milvus_server.uri, collection_prefix="imsim")
    files = discover([SAMPLES / "photos"]).files
    ingest_local(files, settings)
    ingest_local(files, settings.replace(models="clip", clip_model=str(second_clip)))
    with VectorStore(settings) as store:
        collections = store.versions.collections()
        active = {model: store.versions.active_collection(model) for model in ("clip", "dinov2")}
    port = free_port()
    log = open(tmp / "attu.log", "w")  # noqa: SIM115 - closed below
    # The first start installs Attu's server dependencies into one folder per machine (~/.cache/attu-2.5.6): a second
    # test run starting Attu at the same moment waits for that install instead of racing it.
    lock_file = Path.home() / ".cache" / "imsim-attu-install.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command = [str(ATTU), f"127.0.0.1:{milvus_server.port}", str(port)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, timeout=600, proc=proc)
        except BaseException:
            stop(proc)
            log.close()
            raise
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "milvus": f"127.0.0.1:{milvus_server.port}",
            "collections": collections,
            "active": active,
            "files": files,
            "tmp": tmp,
            "settings": settings,
            "models": load_models(settings),
        }
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def seen(attu):
    """Run the browser once: what the user reads (innerText, table rows) on each page, and the screenshots."""
    query = attu["files"][3]
    config = {
        "attu": attu["url"],
        "milvus": attu["milvus"],
        "collections": attu["collections"],
        "shots": str(attu["tmp"]),
        "search": {"collection": attu["active"]["dinov2"], "id": path_id(query)},
    }
    (attu["tmp"] / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(
        ["node", str(ROOT / "tests" / "support" / "attu.js"), str(attu["tmp"] / "config.json")],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout), "query": query}


def test_the_list_shows_every_version_whole_with_its_alias(attu, seen):
    clips = [c for c in attu["collections"] if c.startswith("imsim_clip_")]
    assert len(clips) == 2 and len(set(c[-6:] for c in clips)) == 2
    for entry in seen["names"]:
        assert entry["shown"] and not entry["cut"], f"Attu cuts the name {entry['name']}: versions would look alike"
    header = next(row for row in seen["listRows"] if "Alias" in row)
    alias = header.index("Alias")
    rows = {row[1]: row for row in seen["listRows"] if len(row) > alias and row[1].startswith("imsim_")}
    assert rows[attu["active"]["clip"]][alias] == "imsim_clip"  # the alias column names the version queries use
    other = next(c for c in clips if c != attu["active"]["clip"])
    assert rows[other][alias] in ("", "--")
    assert (attu["tmp"] / "attu-collections.png").stat().st_size > 10_000


def test_the_description_identifies_the_version(attu, seen):
    for name, model in attu["models"].items():
        info = model.info
        collection = attu["active"][name]
        text = seen["schema"][collection]["text"]
        head = f"{name} · version {info.version_tag} · {info.dim}-d COSINE HNSW(M=16, efConstruction=200) · rev {info.revision}"
        assert head in text and info.source in text, f"{collection}: {text[:400]}"
        header = next(row for row in seen["listRows"] if "Description" in row)
        row = next(r for r in seen["listRows"] if len(r) > 1 and r[1] == collection)
        assert row[header.index("Description")].startswith(head)  # also at the head of the list's column


def test_each_field_description_reads_right_when_cut_at_40_characters(attu, seen):
    rows = seen["schema"][attu["active"]["clip"]]["rows"]
    described = {row[0].split("\n")[0].strip(): row[-1] for row in rows if len(row) >= 8 and row[0]}
    assert set(KEY_FACTS) <= set(described), sorted(described)
    for field, fact in KEY_FACTS.items():
        assert fact in described[field][:40], f"{field}: {described[field]!r}"


def test_a_vector_search_by_entity_id_finds_the_image_itself_first(seen):
    rows = [r for r in seen["searchRows"] if len(r) > 3 and len(r[0]) == 32]
    assert rows and rows[0][0] == path_id(seen["query"]) and float(rows[0][1]) == pytest.approx(1.0, abs=1e-4)
    assert rows[0][2] == seen["query"]  # the path column
    assert len(rows) > 3 and all(float(a[1]) >= float(b[1]) for a, b in zip(rows, rows[1:], strict=False))


def test_screenshots_are_kept(attu, seen):
    for shot in ("attu-collections.png", "attu-schema.png", "attu-search.png"):
        assert (Path(attu["tmp"]) / shot).stat().st_size > 10_000
