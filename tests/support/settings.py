"""Settings that point every model family at a tiny random instance of it, on a fresh data dir and collection prefix."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imsim.settings import Settings, load

# the raw-pixel ONNX test model declares its input (NHWC uint8, short edge 96)
ONNX_RAW: dict[str, Any] = dict(onnx_input_layout="nhwc", onnx_input_dtype="uint8", onnx_resize="short", onnx_size=96)


def make_settings(model_dirs: Mapping[str, Path | Mapping[str, Any]], data_dir: Path, **overrides: Any) -> Settings:
    """Settings loading each family in ``model_dirs`` from a directory (its ``model`` field) or from the fields its
    tiny builder returned (``Family.tiny``)."""
    values: dict[str, Any] = {}
    for name, where in model_dirs.items():
        if isinstance(where, Mapping):
            values.update({f"{name}_{field}": value for field, value in where.items()})
        else:
            values[f"{name}_model"] = str(where)
            values.update(ONNX_RAW if name == "onnx" else {})
    values.update(
        data_dir=data_dir,
        device="cpu",
        batch_size=16,
        decode_workers=2,
        collection_prefix="t" + uuid.uuid4().hex[:8],
        env_file=data_dir / "no-env-file",
    )
    values.update(overrides)
    return load(values)
