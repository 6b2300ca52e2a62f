"""Real servers and processes for the tests, each on free ports, so two test runs can share a machine.

Nothing here is a mock: Redis is Debian's redis-server (installed by scripts/install.sh --test), Milvus is
Milvus Lite's gRPC server or a real Milvus 2.3.5 standalone server (PyPI ``milvus``, every port of it free,
its embedded etcd included), workers are real ``celery -A workers worker`` subprocesses.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from imsim.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None, host: str = "127.0.0.1") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
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


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, already dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def settings_env(settings: Settings) -> dict[str, str]:
    """The IMSIM_* environment that reproduces ``settings`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMSIM_")}
    for name, value in settings.flat().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        env[f"IMSIM_{name.upper()}"] = str(value)
    return env


class RedisServer:
    """A real redis-server on a free port; ``start`` again keeps the port and data directory."""

    def __init__(self, workdir: Path, *, password: str = "", appendonly: bool = False, appendfsync: str = "always"):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server is not installed: run `bash scripts/install.sh --test`")
        self.port = free_port()
        self.args = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        self.args += ["--appendonly", "yes", "--appendfsync", appendfsync] if appendonly else ["--appendonly", "no"]
        self.workdir = workdir
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
    """``milvus-lite server`` on a free port; ``start`` again keeps the port and data directory."""

    def __init__(self, data: Path):
        self.exe = shutil.which("milvus-lite") or str(Path(sys.executable).parent / "milvus-lite")
        self.data = data
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log: IO[str] | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.data / "server.log", "a")
        self.proc = subprocess.Popen(
            [self.exe, "server", "--data-dir", str(self.data / "db"), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.proc, timeout=60)

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)
        if self.log:
            self.log.close()

    def stop(self) -> None:
        stop(self.proc)
        if self.log:
            self.log.close()


class MilvusServer:
    """A real Milvus 2.3.5 standalone server (PyPI ``milvus``) with every port free, its embedded etcd's included.

    The PyPI wrapper lets the proxy and coordinator ports be chosen but not the embedded etcd's (2379/2380) nor
    the metrics port: so the wrapper only writes the config, this class adds an etcd config on free ports and runs
    the ``milvus`` binary itself. ``stop`` / ``kill`` and ``start`` again restart it on the same data and ports."""

    def __init__(self, data: Path, *, yaml_edits: tuple[tuple[str, str], ...] = ()):
        import milvus

        self.data = data
        config = milvus.MilvusServerConfig(data_dir=str(data / "milvus"))
        ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
        config.update(**ports)
        config.resolve()  # writes configs/milvus.yaml with these ports
        self.base = Path(config.base_data_dir)
        self.port = ports["proxy_port"]
        self.uri = f"http://127.0.0.1:{self.port}"
        peer, self.metrics_port = free_port(), free_port()
        etcd_config = self.base / "configs" / "embedEtcd.yaml"
        etcd_config.write_text(
            f"name: default\ndata-dir: {self.base / 'data' / 'etcd.data'}\n"
            f"listen-client-urls: http://127.0.0.1:{ports['etcd_port']}\nadvertise-client-urls: http://127.0.0.1:{ports['etcd_port']}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
        )
        milvus_config = self.base / "configs" / "milvus.yaml"
        text = milvus_config.read_text()
        if "  use:\n    embed: true" not in text:
            raise RuntimeError("the PyPI milvus config template changed: cannot point its embedded etcd at free ports")
        text = text.replace("  use:\n    embed: true", f"  use:\n    embed: true\n  config:\n    path: {etcd_config}", 1)
        for old, new in yaml_edits:  # (a line of the template, its replacement): a benchmark's server settings
            if old not in text:
                raise RuntimeError(f"the PyPI milvus config template has no {old.strip()!r}")
            text = text.replace(old, new, 1)
        milvus_config.write_text(text)
        milvus._initialize_data_files(str(self.base))
        self.log_path = data / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 120) -> None:
        env = dict(
            os.environ,
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(self.metrics_port),
            MILVUS_RUN_DIR=str(self.base / "run"),
            LD_LIBRARY_PATH=f"{self.base / 'bin'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        )
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [str(self.base / "bin" / "milvus"), "run", "standalone"],
                cwd=self.base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, proc=self.proc, timeout=timeout)
            self.wait_ready(time.time() + timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        """The ``milvus`` process (standalone: every coordinator and node in one process)."""
        if self.proc is None:
            raise RuntimeError("the server is not running")
        return self.proc.pid

    def wait_ready(self, deadline: float) -> float:
        """Block until a client can list collections; returns the seconds waited."""
        from pymilvus import MilvusClient

        started = time.time()
        while True:
            try:
                MilvusClient(self.uri, timeout=5).list_collections()
                return time.time() - started
            except Exception:  # the proxy listens before its coordinators are up
                if time.time() > deadline or self.proc is None or self.proc.poll() is not None:
                    raise
                time.sleep(0.5)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Milvus's own graceful stop (SIGKILL after ``timeout``)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: as when the machine loses power."""
        self._signal(signal.SIGKILL, 10)


class Worker:
    """A real ``celery -A workers worker`` subprocess (its own process group, so a kill takes its children too)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        name: str,
        pool: str = "solo",
        env: dict[str, str] | None = None,
        events: bool = False,
    ):
        self.settings, self.log_path, self.name, self.pool, self.events = settings, log_path, name, pool, events
        self.env = {**settings_env(settings), **(env or {})}
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.log = open(self.log_path, "a")
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-Q",
            self.settings.queue,
            "-P",
            self.pool,
            "-c",
            "1",
            "-n",
            f"{self.name}-{self.starts}@%h",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-heartbeat",
        ]
        cmd += ["-E"] if self.events else ["--without-gossip"]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def run_cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``imsim`` command as a user runs it: a subprocess with IMSIM_* settings in its environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "imsim.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"imsim {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
