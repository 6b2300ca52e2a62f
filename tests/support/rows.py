"""Rows shaped as imsim stores them, for tests that need rows without embedding images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def row(row_id: str, path: str, vector: Sequence[float] | np.ndarray, job_id: str = "") -> dict[str, Any]:
    """One row with placeholder file facts (1x1, 1 byte, mtime 0)."""
    return {
        "id": row_id,
        "path": path,
        "sha256": "",
        "width": 1,
        "height": 1,
        "file_size": 1,
        "mtime": 0.0,
        "file_version": "",
        "model_id": "m",
        "model_revision": "r",
        "ingested_at": 0,
        "job_id": job_id,
        "tags": {},
        "vector": np.asarray(vector, np.float32).tolist(),
    }


def random_rows(count: int, dim: int, seed: int = 7) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``count`` rows (ids ``{i:032x}``, paths ``/corpus/d{i % 10}/{i}.jpg``) and their unit vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [row(f"{i:032x}", f"/corpus/d{i % 10}/{i}.jpg", v) for i, v in enumerate(vectors)], vectors


def clustered(count: int, dim: int, seed: int, batch: int = 10_000) -> Iterator[np.ndarray]:
    """Unit vectors in clusters (like real embeddings), one in five a near-copy of another: in batches."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, count // 50), dim)).astype(np.float32)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        v = centres[rng.integers(0, len(centres), n)] + 0.45 * rng.normal(size=(n, dim)).astype(np.float32)
        v[1::5] = v[0::5][: len(v[1::5])] + 0.02 * rng.normal(size=v[1::5].shape).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)
