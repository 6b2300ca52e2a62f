"""Shared fixtures: tiny real-architecture models, and real servers (Redis, Milvus Lite, a Milvus server, Celery workers).

Tests are in two tiers, by module: the unit tier (``pytest -m "not integration"``) needs no server process; a module
with a test that uses one of the :data:`INTEGRATION_FIXTURES` (or is marked ``integration``) is in the integration
tier as a whole (its server-free tests belong in a module of their own, as ``test_X.py`` and
``test_X_integration.py`` are split).
The server classes live in :mod:`tests.support.servers`; every port they open is a free port.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import PIL.Image
import pytest

from imsim.settings import Settings

from .support.servers import SAMPLES, MilvusLiteServer, MilvusServer, RedisServer, Worker
from .support.settings import make_settings

# A developer's own ~/.imsim/imsim.env must never leak into a test (nor a test's into their shell).
os.environ["IMSIM_ENV_FILE"] = os.devnull
for _key in [k for k in os.environ if k.startswith("IMSIM_") and k != "IMSIM_ENV_FILE"]:
    del os.environ[_key]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

INTEGRATION_FIXTURES = frozenset(
    {"redis_url", "milvus_uri", "milvus_server", "milvus_server_uri", "servers", "start_worker", "cli"}
)


# about 2-4 minutes each on two cores (`pytest --durations=0`)
LONGEST_MODULES = ("test_store_outages", "test_resilience", "test_readme", "test_attu", "test_cli")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    live = {item.path for item in items if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))}
    live |= {item.path for item in items if item.get_closest_marker("integration")}
    for item in items:
        if item.path in live:  # a module is one tier
            item.add_marker(pytest.mark.integration)

    # `scripts/test.sh` runs two pytest-xdist workers, one test module at a time each (`--dist loadfile`, so a module's
    # costly fixtures are built once), in this order: the longest modules first, then the rest of the integration
    # tier, then the unit tier; the run ends on short modules instead of one worker finishing a long one alone.
    integration_modules = {item.path.stem for item in items if item.get_closest_marker("integration")}

    def rank(item: pytest.Item) -> int:
        module = item.path.stem
        if module in LONGEST_MODULES:
            return LONGEST_MODULES.index(module)
        return len(LONGEST_MODULES) + (module not in integration_modules)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from imsim.models.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def family_fields(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every registered family (the registry's list, never a hand list), built tiny by its own ``Family.tiny``:
    family -> the config fields that load it. A family without a tiny builder fails here, so none goes untested."""
    from imsim.models import FAMILIES, family

    root = tmp_path_factory.mktemp("families")
    built = {}
    for name in FAMILIES:  # the built-in registry (a test's own `register`ed family builds itself)
        build = family(name).tiny
        assert build is not None, f"family {name!r} has no tiny builder (Family.tiny): it would go untested"
        (root / name).mkdir()
        built[name] = build(root / name)
    return built


@pytest.fixture(scope="session")
def family_dirs(family_fields: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """Where each family's tiny instance was saved (its ``model`` field)."""
    return {name: Path(fields["model"]) for name, fields in family_fields.items()}


@pytest.fixture(scope="session")
def models(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny CLIP and DINOv2, loaded once through the real registry."""
    from imsim.models import load_models

    return load_models(make_settings(tiny_model_dirs, tmp_path_factory.mktemp("unused")))


@pytest.fixture()
def settings(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> Settings:
    """Settings on a fresh Milvus Lite file in a temp dir."""
    return make_settings(tiny_model_dirs, tmp_path / "data")


@pytest.fixture()
def servers() -> Iterator[Callable[..., Any]]:
    """Start private servers for one test (``servers(RedisServer, path, ...)``); all are stopped afterwards."""
    started: list[Any] = []

    def start(kind: type, *args: Any, **kwargs: Any) -> Any:
        server = kind(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:  # the test is over and its data is temporary: no graceful stop needed
        getattr(server, "kill", server.stop)()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus Lite gRPC server shared by the test process and worker subprocesses."""
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus"))
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus server (not Lite), shared by the tests of what only a server does."""
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    yield server
    server.kill()


@pytest.fixture(scope="session")
def milvus_server_uri(milvus_server: MilvusServer) -> str:
    return milvus_server.uri


@pytest.fixture()
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(
        settings: Settings, name: str = "w", pool: str = "solo", env: dict[str, str] | None = None, events: bool = False
    ) -> Worker:
        """A worker on ``settings``; ``env`` adds to the IMSIM_* environment made from them."""
        worker = Worker(settings, tmp_path / f"{name}-{len(started)}.log", name, pool, env, events)
        started.append(worker)
        return worker

    yield start
    for w in started:
        w.stop()


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """A copy of the bundled real sample images (38 files: photos and flags)."""
    dest = tmp_path / "images"
    shutil.copytree(SAMPLES, dest, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    return dest


@pytest.fixture()
def cli() -> Callable[..., Any]:
    """Run ``imsim`` as a subprocess (see :func:`tests.support.servers.run_cli`)."""
    from .support.servers import run_cli

    return run_cli


# --- data shared by a module and its integration twin ------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny copy-detection benchmark built from the samples (16 queries, 8 negatives, 4 background)."""
    from imsim.eval.build import build_copydetect

    root = tmp_path_factory.mktemp("bench") / "b"
    build_copydetect(SAMPLES, root, queries=16, negatives=8, background=4, seed=1)
    return root


@pytest.fixture()
def copies(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """Ten photos; three of them also stored as byte copies and lossless PNG copies under other names."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = sorted((SAMPLES / "photos").glob("*.jpg"))[:10]
    for p in photos:
        shutil.copyfile(p, folder / p.name)
    expected = []
    for p in photos[:3]:
        shutil.copyfile(p, folder / f"{p.stem}-copy.jpg")
        PIL.Image.open(p).save(folder / f"{p.stem}-lossless.png")
        expected.append(sorted(str(folder / n) for n in (p.name, f"{p.stem}-copy.jpg", f"{p.stem}-lossless.png")))
    return folder, sorted(expected, key=lambda g: g[0])
