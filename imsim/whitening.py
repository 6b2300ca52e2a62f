"""PCA-whitening of embeddings, as data: learned from a stream of vectors in bounded memory, applied to any batch.

``x → normalise((x - mean) @ projection)``, the projection being the principal axes of the training vectors divided by
the square roots of their variances (floored at ``eps_ratio`` x the mean variance, so near-empty directions are not
blown up), optionally keeping only the ``dim`` strongest axes. Whitening spreads a model's cosines over the whole
scale (raw SSCD cosines of unrelated photos sit near 0.3–0.6; whitened near 0), which is what lifts copy-detection
µAP (docs/evaluation.md: SSCD 62.5 → 71.5).

Learning needs no matrix of the vectors: :class:`Covariance` sums them and their outer products in float64 (a D x D
matrix: 4.7 MB at 768-d), so a million rows cost the same memory as a thousand. Pure numpy: the store streams the
rows (:mod:`imsim.store.derived`), the evaluation passes its own (:mod:`imsim.eval.scoring`): one implementation.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np

EPS_RATIO = 1e-2


@dataclass(frozen=True, eq=False)  # arrays: compare ``digest``
class Whitening:
    """A learned whitening: ``mean`` (D,), ``projection`` (D, d), the variances kept, how many rows it was learned from."""

    mean: np.ndarray
    projection: np.ndarray
    variances: np.ndarray
    rows: int
    eps_ratio: float = EPS_RATIO
    meta: dict[str, str] = field(default_factory=dict)  # where it was learned (collection, sample rule)

    @property
    def input_dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    @property
    def digest(self) -> str:
        """16 hex digits of the transform itself (mean and projection as float32): what names a derived version."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.mean, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.projection, np.float32).tobytes())
        return digest.hexdigest()[:16]

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, D) vectors → (n, d) whitened, L2-normalised float32 rows."""
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"whitening takes {self.input_dim}-d vectors, got shape {x.shape}")
        y = (x - self.mean.astype(np.float32)) @ self.projection.astype(np.float32)
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mean=self.mean.astype(np.float32),
            projection=self.projection.astype(np.float32),
            variances=self.variances.astype(np.float64),
            info=np.frombuffer(
                json.dumps({"rows": self.rows, "eps_ratio": self.eps_ratio, "meta": self.meta}).encode(), np.uint8
            ),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Whitening:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            info = json.loads(arrays["info"].tobytes().decode())
            return cls(
                arrays["mean"].astype(np.float32),
                arrays["projection"].astype(np.float32),
                arrays["variances"],
                int(info["rows"]),
                float(info["eps_ratio"]),
                {str(k): str(v) for k, v in info.get("meta", {}).items()},
            )


class Covariance:
    """The running sums a whitening is learned from: count, sum and sum of outer products, in float64."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, vectors: np.ndarray) -> None:
        x = np.asarray(vectors, np.float64)
        if not len(x):
            return
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def whitening(self, dim: int | None = None, eps_ratio: float = EPS_RATIO, meta: dict[str, str] | None = None) -> Whitening:
        """The whitening of what was added: ``dim`` axes at most (default: every axis the data has variance along)."""
        if self.count < 2:
            raise ValueError(f"whitening needs at least 2 vectors, got {self.count}")
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        variances, axes = np.linalg.eigh((covariance + covariance.T) / 2)
        order = np.argsort(variances)[::-1]
        variances, axes = variances[order], axes[:, order]
        supported = int(np.sum(variances > 1e-12 * max(float(variances[0]), 1e-30)))
        keep = max(1, min(dim or len(variances), supported, self.count - 1))
        floor = eps_ratio * float(np.mean(np.clip(variances[:keep], 0, None)))
        kept = np.clip(variances[:keep], 0, None)
        projection = axes[:, :keep] / np.sqrt(kept + floor)
        # a sign per axis fixed by its largest component: the same data gives the same transform, bit for bit
        signs = np.sign(projection[np.abs(projection).argmax(axis=0), np.arange(keep)])
        projection = projection * np.where(signs == 0, 1.0, signs)
        return Whitening(mean.astype(np.float32), projection.astype(np.float32), kept, self.count, eps_ratio, meta or {})


def learn(vectors: np.ndarray, dim: int | None = None, eps_ratio: float = EPS_RATIO) -> Whitening:
    """The whitening of ``vectors`` (n, D) (one batch: see :class:`Covariance` for a stream)."""
    x = np.asarray(vectors)
    covariance = Covariance(x.shape[1])
    covariance.add(x)
    return covariance.whitening(dim, eps_ratio)
