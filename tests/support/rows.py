"""Rows of random unit vectors, shaped as imsim stores them, for tests that need many rows without embedding images."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_rows(count: int, dim: int, seed: int = 7) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``count`` rows (ids ``{i:032x}``, paths ``/corpus/d{i % 10}/{i}.jpg``) and their unit vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        {
            "id": f"{i:032x}",
            "path": f"/corpus/d{i % 10}/{i}.jpg",
            "sha256": "",
            "width": 1,
            "height": 1,
            "file_size": 1,
            "mtime": 0.0,
            "model_id": "m",
            "model_revision": "r",
            "ingested_at": 0,
            "job_id": "",
            "tags": {},
            "vector": v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    return rows, vectors
