"""The small value languages of the settings, each parsed or printed in one place: durations (``7d``), fusion
weights (``clip=0.3,dinov2=0.7``), family keys (``dinov2_pooling``), URLs with their secrets masked, and the record
`imsim store serve` leaves for the other processes of a data dir."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from .. import models as registry

SERVED_FILE = "served.json"
API_FILE = "api.json"  # the running `imsim serve` of this data dir: the CLI asks it instead of loading models
SECRET_PARAMETERS = frozenset({"password", "token", "secret", "key", "access_key", "secret_key", "api_key", "apikey"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def split_family_key(key: str) -> tuple[str, str] | None:
    """``"dinov2_pooling"`` → ``("dinov2", "pooling")`` for a registered family (longest name first), else None."""
    for name in sorted(registry.names(), key=len, reverse=True):
        if key.startswith(name + "_") and len(key) > len(name) + 1:
            return name, key[len(name) + 1 :]
    return None


def parse_duration(text: str) -> int:
    """``"3600"``, ``"90m"``, ``"12h"``, ``"7d"``, ``"2w"`` → seconds; anything else is a ValueError."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration: seconds, or a number with s, m, h, d or w (7d)")
    return int(float(found.group(1)) * _SECONDS[found.group(2).lower()])


def parse_weights(text: str) -> dict[str, float]:
    """``"clip=0.3,dinov2=0.7"`` → weights; a malformed entry, a weight that is no number, negative or not finite is a
    ValueError naming it."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"fusion_weights entry {part!r} is not name=weight")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"fusion_weights entry {part!r}: {value!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"fusion_weights entry {part!r}: a weight must be a number >= 0")
        out[name.strip()] = weight
    return out


def redact(url: str) -> str:
    """``url`` with its secrets replaced by ``**`` (for messages, logs and ``imsim config``): the password of the
    userinfo, read up to the *last* ``@`` as redis-py does (``redis://:p@ss@host`` holds the password ``p@ss``),
    a bare token as userinfo, and query parameters that carry secrets (``?password=``, ``?token=`` ...)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^/]*:)[^/]*@", r"\1**@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:**@{host}" if sep else f"**@{host}"
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode([(k, "**" if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def served_store(data_dir: Path, store: Path) -> dict[str, Any] | None:
    """The record `imsim store serve` wrote for ``store`` in ``data_dir`` when that server still runs, else None."""
    try:
        record = json.loads((data_dir / SERVED_FILE).read_text())
        pid, host, port = int(record["pid"]), str(record["host"]), int(record["port"])
        if os.path.realpath(record["store"]) != os.path.realpath(store):
            return None
        os.kill(pid, 0)  # still running (an error if not)
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else host, port), timeout=0.3):
            pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def served_api(data_dir: Path, store_uri: str) -> dict[str, Any] | None:
    """The record a running `imsim serve` wrote in ``data_dir`` when it serves ``store_uri`` (the store this process
    would open) and still answers, else None."""
    try:
        record = json.loads((data_dir / API_FILE).read_text())
        pid, host, port = int(record["pid"]), str(record["host"]), int(record["port"])
        if str(record["store"]) != store_uri:
            return None
        os.kill(pid, 0)  # still running (an error if not)
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port), timeout=0.3):
            pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record
