"""Settings that point every model family at a tiny random instance of it, on a fresh data dir and collection prefix."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from imsim.settings import Settings, load

# the raw-pixel ONNX test model declares its input (NHWC uint8, short edge 96)
ONNX_RAW: dict[str, Any] = dict(onnx_input_layout="nhwc", onnx_input_dtype="uint8", onnx_resize="short", onnx_size=96)


def make_settings(model_dirs: dict[str, Path], data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {f"{name}_model": str(path) for name, path in model_dirs.items()}
    values.update(ONNX_RAW if "onnx" in model_dirs else {})
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
