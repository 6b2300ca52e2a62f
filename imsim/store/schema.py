"""The collection schema as data, and the rows and properties that go with it.

Field descriptions are written for Attu, which cuts them at ~40 characters: the key fact comes first. A
collection's description and properties say which model version it holds (the description is what Attu
shows; the properties are what imsim reads back: the config that reloads the model, its identity).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from ..models.base import ModelInfo

PK = "id"
VECTOR = "vector"
TAGS = "tags"

METRIC = "COSINE"
PROPERTY_PREFIX = "imsim."
METADATA_FIELDS = [
    "path",
    "sha256",
    "width",
    "height",
    "file_size",
    "mtime",
    "file_version",
    "model_id",
    "model_revision",
    "ingested_at",
    "job_id",
]

# (name, type, kwargs, description) — the schema, as data. Attu cuts descriptions at ~40 characters: key fact first.
FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        PK,
        "VARCHAR",
        {"max_length": 64, "is_primary": True},
        "Image id = sha256(absolute path or URI)[:32]. Re-ingesting a path overwrites its row; the same id in every model's "
        "collection.",
    ),
    (
        "path",
        "VARCHAR",
        {"max_length": 4096},
        "File path on the workers' disk, or s3://bucket/key. Attu shows it as an image link that can open neither.",
    ),
    ("sha256", "VARCHAR", {"max_length": 64}, "sha256 of the file's bytes when embedded (an edit changes it)."),
    ("width", "INT32", {}, "Width in pixels, full size, after EXIF rotation."),
    ("height", "INT32", {}, "Height in pixels, full size, after EXIF rotation."),
    ("file_size", "INT64", {}, "File size in bytes."),
    ("mtime", "DOUBLE", {}, "File modified: Unix seconds, UTC (a raw number in Attu; `date -d @N` reads it)."),
    (
        "file_version",
        "VARCHAR",
        # short on purpose: Milvus 2.3 sizes a search's result by every field's max_length, and returned 736 of 5,000
        # hits when this field was 256 long (tests/test_hostile.py, the servers' top-k test)
        {"max_length": 64},
        "ino:N (local inode) or etag:X (S3 object): with size+mtime, a re-ingest skips the file unread.",
    ),
    ("model_id", "VARCHAR", {"max_length": 512}, "Model source: hub id, URL or local path."),
    ("model_revision", "VARCHAR", {"max_length": 128}, "Model revision: hub commit or content hash of the weights."),
    ("ingested_at", "INT64", {}, "Row written: Unix seconds, UTC (a raw number in Attu)."),
    ("job_id", "VARCHAR", {"max_length": 64}, "Ingest job that wrote the row ('' for direct calls)."),
    (TAGS, "JSON", {}, 'Ingest tags {"key": "value"} (imsim ingest --tag k=v); filter: tags["k"] == "v".'),
]
FIELD_NAMES = frozenset([name for name, *_ in FIELDS] + [VECTOR])


def describe_version(info: ModelInfo, index_type: str, params: dict[str, Any]) -> str:
    """The collection description: what a person needs to tell versions apart, most telling first (Attu cuts it):
    model and version tag, dimension, metric and index, revision, source, then what the vector is."""
    variant = f" {info.variant}" if info.variant else ""
    index = index_type + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else "")
    return (
        f"{info.name}{variant} · version {info.version_tag} · {info.dim}-d {METRIC} {index} · rev {info.revision} · "
        f"{info.source} · {info.description}"
    )


def vector_description(info: ModelInfo, index_type: str) -> str:
    return f"{info.name} embedding: {info.dim}-d, L2-normalised, {METRIC} ({index_type})."


def version_properties(info: ModelInfo, index_type: str, params: dict[str, Any]) -> dict[str, str]:
    """The ``imsim.*`` collection properties: who wrote the vectors and the config that loads that model again."""
    properties = {
        "model": info.name,
        "source": info.source,
        "revision": info.revision,
        "dim": str(info.dim),
        "variant": info.variant,
        "version": info.version_tag,
        "metric": METRIC,
        "index": f"{index_type} {params}",
        "supports_text": str(info.supports_text).lower(),
        "config": json.dumps(info.config.model_dump(mode="json"), sort_keys=True),
        "identity": json.dumps(info.identity, sort_keys=True),
        "created_at": str(int(time.time())),
        "description": describe_version(info, index_type, params),  # Milvus Lite drops descriptions: a copy restores it
        **info.extra,
    }
    return {PROPERTY_PREFIX + k: v for k, v in properties.items()}


def make_row(model: ModelInfo, image: Any, vector: np.ndarray, job_id: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """One store row for an embedded image (see :class:`imsim.embedding.ImageRecord`)."""
    return {
        PK: image.id,
        "path": image.path,
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "file_size": image.file_size,
        "mtime": float(image.mtime),
        "file_version": getattr(image, "file_version", ""),
        "model_id": model.source,
        "model_revision": model.revision,
        "ingested_at": int(time.time()),
        "job_id": job_id,
        TAGS: dict(tags or {}),
        VECTOR: vector.tolist(),
    }
