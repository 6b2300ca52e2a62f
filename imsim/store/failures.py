"""How Milvus failures are told apart: transient (the server is down, starting or stopping: retry) or not.

Classified by pymilvus exception class and gRPC status code; Milvus 2.3's coordinator outages carry no code
(the legacy 65535) and are recognised by the component they name. Also quietens the clients' own logging
(pymilvus logs a traceback per failed call; imsim raises typed errors instead).
"""

from __future__ import annotations

import logging
import re


def quiet_clients() -> None:
    """pymilvus logs a traceback per failed call and Milvus Lite one for a busy file (we raise typed errors instead);
    pymilvus's import resets logging config, so this runs after it."""
    import pymilvus  # noqa: F401 - imported for its logging side effect, which this undoes

    for name in ("pymilvus", "milvus_lite", "grpc._server"):  # Lite-file mode runs its gRPC server in this process
        logging.getLogger(name).setLevel(logging.CRITICAL)


# --- error classification: by exception class and status code -------------------------------------------
# gRPC status codes that mean "try again later" (the server is down, restarting or overloaded)
_TRANSIENT_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED")
# Milvus error codes (merr) that are retriable: ServiceNotReady, ServiceUnavailable, RequestLimit, RateLimit, TimeTickLongDelay
_TRANSIENT_MILVUS = frozenset({1, 2, 4, 8, 11})
# Milvus 2.3 answers while its coordinators are down (stopping, starting) with the legacy code 65535 and no
# retriable flag; the reason names the component that is missing.
_LEGACY_CODE = 65535
_LEGACY_OUTAGE = re.compile(
    r"no available \w+|check \w+ state|empty grpc client|failed to connect|not ready|"
    r"is not healthy|stopping|connection refused",
    re.I,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a pymilvus/gRPC error means Milvus is (for now) unreachable, starting or stopping."""
    import grpc
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return getattr(code, "name", "") in _TRANSIENT_GRPC
    if isinstance(exc, MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        code = exc.code
        if isinstance(code, grpc.StatusCode):  # a transport error, after pymilvus's own retries
            return code.name in _TRANSIENT_GRPC
        if getattr(exc, "_retriable", False) or code in _TRANSIENT_MILVUS:
            return True
        return code == _LEGACY_CODE and bool(_LEGACY_OUTAGE.search(exc.message or ""))
    return isinstance(exc, (ConnectionError, TimeoutError))


def message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or getattr(exc, "details", lambda: "")() or exc)


def is_released(exc: BaseException) -> bool:
    text = message(exc)
    return "not loaded" in text or "state 'released'" in text or "call load()" in text
