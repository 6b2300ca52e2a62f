"""Object-storage inputs attacked without an object store: an endpoint that never answers, credentials in the endpoint
URL, and object keys an HTTP client would rewrite."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from imsim.errors import ImageUnreadable, SourceUnavailable
from imsim.sources import s3
from imsim.sources.reading import Limits

from .support.servers import ROOT


@pytest.fixture()
def black_hole():
    """A TCP server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_endpoint_that_never_answers_is_named_in_seconds(black_hole, monkeypatch):
    """It took 8 attempts x 30 s (294 s) before `cannot reach ... (ReadTimeoutError)`, silent all along."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    config = s3.S3Config(endpoint=black_hole, timeout=30.0, max_attempts=8)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"did not answer a 1-key LIST within 5 s"):
        list(s3.iter_objects("s3://bucket/photos/", config))
    assert time.monotonic() - started < 15


def test_credentials_in_the_endpoint_are_never_shown():
    config = s3.S3Config(endpoint="http://user:hunter2-secret@minio.local:9000")
    assert "hunter2" not in config.where() and config.where() == "http://user:**@minio.local:9000"
    env = {"IMSIM_S3_ENDPOINT": "http://user:hunter2-secret@minio.local:9000", "IMSIM_ENV_FILE": "/dev/null", "PATH": ""}
    shown = subprocess.run(
        [sys.executable, "-m", "imsim.cli", "config"], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout
    assert "IMSIM_S3_ENDPOINT=http://user:**@minio.local:9000" in shown and "hunter2" not in shown


@pytest.mark.parametrize("key", ["a/../b.jpg", "./b.jpg", "a/./b.jpg", "a/..", "photos/../../etc/x.jpg"])
def test_a_key_an_http_client_would_rewrite_fails_alone_with_its_reason(key):
    """urllib3 resolves '/./' and '/../' before asking, so a GET of 'a/../b.jpg' fetched 'b.jpg' (another object, or a
    signature error): such a key is refused by name instead, before any request."""
    with pytest.raises(ImageUnreadable, match=r"'\.' or '\.\.' path segment.*rename the object"):
        s3.open_object(f"s3://bucket/{key}", Limits(), s3.S3Config(endpoint="http://127.0.0.1:9"))
    assert not s3.dot_segments("a/..b/c.jpg") and not s3.dot_segments("a/b.c/.d.jpg")
