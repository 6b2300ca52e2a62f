"""Shared fixtures: tiny real-architecture models, and real servers (Redis, Milvus Lite, Celery workers).

Nothing here is a mock: Redis is Debian's redis-server (installed by scripts/install.sh --test),
Milvus is Milvus Lite (a file, or its gRPC server for multi-process tests) or, for the server-only
behaviour, a real Milvus standalone server (PyPI ``milvus``), workers are real
``celery -A workers worker`` subprocesses.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from imsim.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child_pids(pid: int) -> list[int]:
    """Pids of a process's direct children (from /proc)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    from imsim.models.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def family_dirs(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """Tiny random instances of every registered family, saved the way each is published (see imsim.models.testing)."""
    from imsim.models import testing

    root = tmp_path_factory.mktemp("families")
    return {**tiny_model_dirs,
            "vit": testing.build_tiny_vit(root / "tiny-vit"),
            "efficientnet": testing.build_tiny_efficientnet(root / "tiny-efficientnet"),
            "blip2": testing.build_tiny_blip2(root / "tiny-blip2"),
            "vgg16": testing.build_tiny_vgg16(root / "tiny-vgg16"),
            "sscd": testing.build_tiny_sscd(root / "tiny_sscd.torchscript.pt"),
            # exported with torch.onnx.export, shipped like the int8 SSCD: NHWC uint8 in, normalisation inside
            "onnx": testing.export_onnx(testing.tiny_sscd_module(seed=1), root / "tiny-sscd-uint8.onnx", nhwc_uint8=True)}


# settings that point each family at its tiny model (the ONNX one declares its raw-pixel input)
FAMILY_SETTINGS = {"clip": "clip_model", "dinov2": "dinov2_model", "vit": "vit_model", "efficientnet": "efficientnet_model",
                   "blip2": "blip2_model", "vgg16": "vgg16_model", "sscd": "sscd_model", "onnx": "onnx_model"}
ONNX_RAW = dict(onnx_input_layout="nhwc", onnx_input_dtype="uint8", onnx_resize="short", onnx_size=96)


def make_settings(model_dirs: dict[str, Path], data_dir: Path, **overrides) -> Settings:
    values = dict(
        data_dir=data_dir,
        **{FAMILY_SETTINGS[name]: str(path) for name, path in model_dirs.items()},
        **(ONNX_RAW if "onnx" in model_dirs else {}),
        device="cpu",
        batch_size=16,
        decode_workers=2,
        collection_prefix="t" + uuid.uuid4().hex[:8],
    )
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The IMSIM_* environment that reproduces ``settings`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSIM_")}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"IMSIM_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="session")
def models(tiny_model_dirs, tmp_path_factory):
    """The tiny CLIP and DINOv2, loaded once through the real registry."""
    from imsim.models import load_models

    return load_models(make_settings(tiny_model_dirs, tmp_path_factory.mktemp("unused")))


@pytest.fixture()
def settings(tiny_model_dirs, tmp_path) -> Settings:
    """Settings on a fresh Milvus Lite file in a temp dir."""
    return make_settings(tiny_model_dirs, tmp_path / "data")


class RedisServer:
    """A real redis-server on a free port; ``restart`` keeps the port and data directory."""

    def __init__(self, workdir: Path, *, password: str = "", appendonly: bool = False):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server is not installed: run `bash scripts/install.sh --test`")
        self.port = free_port()
        self.args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                     "--protected-mode", "yes"]
        self.args += ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
        if password:
            self.args += ["--requirepass", password]
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop(self.proc)


class MilvusLiteServer:
    """``milvus-lite server`` on a free port; ``restart`` keeps the port and data directory."""

    def __init__(self, data: Path):
        self.exe = shutil.which("milvus-lite") or str(Path(sys.executable).parent / "milvus-lite")
        self.data = data
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.log = open(self.data / "server.log", "a")
        self.proc = subprocess.Popen([self.exe, "server", "--data-dir", str(self.data / "db"), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc, timeout=60)

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)
        self.log.close()

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


@pytest.fixture()
def servers():
    """Start private servers for one test (``servers(RedisServer, path, ...)``); all are stopped afterwards."""
    started = []

    def start(kind, *args, **kwargs):
        server = kind(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    """A Milvus Lite gRPC server shared by the test process and worker subprocesses."""
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus"))
    yield server.uri
    server.stop()


class MilvusServer:
    """A real Milvus standalone server (PyPI ``milvus``: Milvus 2.3.5 with embedded etcd) on a free proxy port.

    Its other ports are Milvus's defaults (2379, 19529, 9091 ...): one such server per machine at a time."""

    FIXED_PORTS = (2379, 9091, 19529)

    def __init__(self, data: Path):
        self.exe = shutil.which("milvus-server") or str(Path(sys.executable).parent / "milvus-server")
        self.data = data
        for port in self.FIXED_PORTS:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise RuntimeError(f"port {port} is taken (another Milvus on this machine?): the test server needs it")
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(data / "server.log", "a")
        self.server_pids: list[int] = []
        self.proc = subprocess.Popen([self.exe, "--data", str(data / "milvus"), "--proxy-port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, proc=self.proc, timeout=120)
            self.server_pids = child_pids(self.proc.pid)  # the wrapper runs `milvus run standalone` as its child
            self._wait_ready(time.time() + 120)
        except BaseException:
            self.server_pids = self.server_pids or child_pids(self.proc.pid)
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        from pymilvus import MilvusClient

        while True:
            try:
                MilvusClient(self.uri, timeout=5).list_collections()
                return
            except Exception:  # noqa: BLE001 - the proxy listens before its coordinators are up
                if time.time() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(1)

    def stop(self) -> None:
        pids = [*self.server_pids, self.proc.pid]
        for sig in (signal.SIGTERM, signal.SIGKILL):  # a test server's data is thrown away: no long graceful stop
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5
            while time.time() < deadline and self._running():
                time.sleep(0.2)
            if not self._running():
                break
        self.log.close()

    def _running(self) -> bool:
        return self.proc.poll() is None or any(_alive(p) for p in self.server_pids)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, already dead but not yet reaped by init, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory):
    """A real Milvus server (not Lite) for the tests of what only a server does."""
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    yield server.uri
    server.stop()


class Worker:
    """A real ``celery -A workers worker`` subprocess (its own process group, so a kill takes its children too)."""

    def __init__(self, settings: Settings, log_path: Path, name: str, pool: str = "solo", env: dict[str, str] | None = None):
        self.settings, self.log_path, self.name, self.pool = settings, log_path, name, pool
        self.env = {**settings_env(settings), **(env or {})}
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.log = open(self.log_path, "a")
        cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", self.settings.queue, "-P", self.pool,
               "-c", "1", "-n", f"{self.name}-{self.starts}@%h", "-l", "INFO", "--without-gossip", "--without-mingle",
               "--without-heartbeat"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while self.log_path.read_text().count("ready.") < self.starts:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def children(self) -> list[int]:
        """Pids of the worker's pool processes (prefork)."""
        return child_pids(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: no shutdown, no acks, as when a node dies."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        stop(self.proc)
        if not self.log.closed:
            self.log.close()


@pytest.fixture()
def start_worker(tmp_path):
    started: list[Worker] = []

    def start(settings: Settings, name: str = "w", pool: str = "solo", env: dict[str, str] | None = None) -> Worker:
        """A worker on ``settings``; ``env`` adds to the IMSIM_* environment made from them."""
        worker = Worker(settings, tmp_path / f"{name}-{len(started)}.log", name, pool, env)
        started.append(worker)
        return worker

    yield start
    for w in started:
        w.stop()


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    """A copy of the bundled real sample images (38 files: photos and flags)."""
    dest = tmp_path / "images"
    shutil.copytree(SAMPLES, dest, ignore=shutil.ignore_patterns("*.csv", "*.md"))
    return dest
