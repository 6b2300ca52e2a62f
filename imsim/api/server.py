"""Running the API: the bind checked (a token is required beyond loopback), then uvicorn with the models loaded on a
thread after the server starts (``/healthz`` answers meanwhile; ``/readyz`` says when they are loaded)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..settings import API_FILE, Settings, served_api
from .app import create_app
from .service import Service


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to serve beyond loopback without a token: anyone who can reach the port could search and queue."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.api_token.get_secret_value():
        raise ConfigError(
            f"`imsim serve` on {host} needs a token: set IMSIM_API_TOKEN (every request then sends "
            "`Authorization: Bearer TOKEN`), or bind 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, in one line, before the banner (uvicorn would exit 3 after it)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use (another imsim serve?): choose one with --port") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def announce(settings: Settings, host: str, port: int) -> None:
    """Write ``DATA_DIR/api.json``: the CLI of this data dir finds this server there and asks it (its models are warm)
    instead of loading models itself, when it would open the same store with the same models."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    first = served_api(settings.data_dir, settings.resolved_milvus_uri)
    if first is not None and int(first["pid"]) != os.getpid():
        return  # another serve of this data dir announced itself first and still answers: the CLI keeps asking it
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    record = {
        "url": f"http://{shown}:{port}",
        "host": host,
        "port": port,
        "pid": os.getpid(),
        "store": settings.resolved_milvus_uri,
        "models": settings.model_names,
    }
    tmp = settings.data_dir / f".{API_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(record))
    tmp.replace(settings.data_dir / API_FILE)


def serve(settings: Settings, host: str, port: int, on_start: Callable[[], None] | None = None) -> None:
    """Run the API until interrupted: the bind checked first (a token beyond loopback), the models loaded on a
    thread after the server starts (/healthz answers meanwhile; /readyz says when they are loaded)."""
    import threading
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    import uvicorn

    check_bind(settings, host)
    check_port(host, port)
    service = Service(settings)
    app = create_app(service)
    record = settings.data_dir / API_FILE

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        loading = threading.Thread(target=service.start, name="imsim-api-load", daemon=True)
        loading.start()
        announce(settings, host, port)
        yield
        service.close()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("pid") == os.getpid():
                record.unlink()

    app.router.lifespan_context = lifespan
    if on_start is not None:
        on_start()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)
