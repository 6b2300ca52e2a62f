"""What an evaluation run measures for the product: score thresholds for "is a copy" (``imsim duplicates``) and the
weights of the calibrated fusion (``imsim search --fusion calibrated``), kept per model version.

A threshold belongs to one model *version* (registry name + version tag, the same tag that names its
collection), or to one fusion of versions: a similarity scale means nothing for another version.
They live in ``IMSIM_DATA_DIR/calibration.json`` (one JSON object per key: the thresholds for 90 %
and 95 % precision, the benchmark they came from, and when). The same file keeps the fitted weights of the
``calibrated`` fusion of a set of versions (key ``calibrated(NAME@TAG,...)``: ``{"fusion": {"weights": {name:
w}, "bias": b}}``), which `imsim search --fusion calibrated` reads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PRECISIONS = (0.90, 0.95)


def version_key(name: str, version_tag: str) -> str:
    return f"{name}@{version_tag}"


def fused_key(method: str, versions: Sequence[tuple[str, str]], weights: Mapping[str, float] | None = None) -> str:
    """A fusion's key: its method, each member version (name, version tag) and (for weighted) the weights."""
    parts = [version_key(n, t) + (f"*{weights[n]:g}" if weights and n in weights else "") for n, t in sorted(versions)]
    return f"{method}({','.join(parts)})"


def path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "calibration.json"


def _file(where: str | os.PathLike[str]) -> Path:
    """A calibration file, or the calibration.json inside a folder."""
    where = Path(where)
    return where if where.suffix == ".json" else path(where)


def load(where: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    file = _file(where)
    if not file.is_file():
        return {}
    try:
        return dict(json.loads(file.read_text()))
    except ValueError:
        return {}


def save(where: str | os.PathLike[str], entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Merge ``entries`` into the calibration file (a key measured again is replaced)."""
    current = load(where)
    current.update({k: {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **v} for k, v in entries.items()})
    file = _file(where)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    tmp.replace(file)
    return file


def measured(entries: object) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Split a calibration's entries into those with a measured threshold and the keys without one.

    ``entries`` is a parsed calibration.json; anything but an object of objects whose thresholds are numbers
    or null raises ValueError naming the key."""
    if not isinstance(entries, dict):
        raise ValueError("not a calibration (expected a JSON object of model keys)")
    usable: dict[str, dict[str, Any]] = {}
    unreached: list[str] = []
    for key, record in entries.items():
        if not isinstance(record, dict):
            raise ValueError(f"entry {key!r} is not an object")
        values = [record.get(f"threshold_p{round(p * 100)}") for p in PRECISIONS]
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"entry {key!r} has a threshold that is not a number: {v!r}")
        if any(v is not None for v in values) or _fusion_params(record) is not None:
            usable[key] = record
        else:
            unreached.append(key)
    return usable, unreached


def threshold(where: str | os.PathLike[str], key: str, precision: float = 0.95) -> tuple[float, dict[str, Any]] | None:
    """(threshold, its record) for ``key`` at ``precision``, or None if never measured (or unreachable)."""
    record = load(where).get(key)
    if not record:
        return None
    value = record.get(f"threshold_p{round(precision * 100)}")
    return (float(value), record) if value is not None else None


def _fusion_params(record: Mapping[str, Any]) -> tuple[dict[str, float], float] | None:
    fusion = record.get("fusion")
    if not isinstance(fusion, dict) or not isinstance(fusion.get("weights"), dict):
        return None
    try:
        return {str(k): float(v) for k, v in fusion["weights"].items()}, float(fusion.get("bias", 0.0))
    except (TypeError, ValueError):
        raise ValueError(f"a calibrated fusion's weights are not numbers: {fusion!r}") from None


def fusion_params(where: str | os.PathLike[str], key: str) -> tuple[dict[str, float], float] | None:
    """(weights by model name, bias) of the calibrated fusion ``key``, or None if never fitted (or applied)."""
    record = load(where).get(key)
    return _fusion_params(record) if record else None
