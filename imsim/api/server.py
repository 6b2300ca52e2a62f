"""Running the API: the bind checked (a token is required beyond loopback), then uvicorn with the models loaded on a
thread after the server starts (``/healthz`` answers meanwhile; ``/readyz`` says when they are loaded)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
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


def serve(settings: Settings, host: str, port: int, on_start: Callable[[], None] | None = None) -> None:
    """Run the API until interrupted: the bind checked first (a token beyond loopback), the models loaded on a
    thread after the server starts (/healthz answers meanwhile; /readyz says when they are loaded)."""
    import threading
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    import uvicorn

    check_bind(settings, host)
    service = Service(settings)
    app = create_app(service)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        loading = threading.Thread(target=service.start, name="imsim-api-load", daemon=True)
        loading.start()
        yield
        service.close()

    app.router.lifespan_context = lifespan
    if on_start is not None:
        on_start()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)
