"""Ingest benchmark: imsim's path (files → decode once → batched models → store) beside the seed-style loop
(one image per call through each model's Hugging Face processor and model, one row written per call),
on the same images and the same loaded models, in one run.

Prints images/s for both, their ratio, imsim's per-stage split (read, decode, resize, each model's
forward pass, each write), and how close the two paths' vectors are (cosine per model), so a speed-up
is never bought with different embeddings. ``imsim bench ingest`` is the command.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImsimError
from .images import discover, path_id
from .ingest import ChunkResult, Ingestor, ingest_local
from .models import Embedder, load_models
from .settings import Settings
from .store import VectorStore, make_row


@dataclass
class BenchResult:
    images: int
    seconds: float
    stages: dict[str, float]
    baseline_images: int
    baseline_seconds: float
    min_cosine: dict[str, float] = field(default_factory=dict)
    model_load_seconds: float = 0.0
    device: str = ""
    store: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def baseline_images_per_s(self) -> float:
        return self.baseline_images / self.baseline_seconds if self.baseline_seconds else 0.0

    @property
    def speedup(self) -> float:
        return self.images_per_s / self.baseline_images_per_s if self.baseline_images_per_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 2),
                "baseline_images_per_s": round(self.baseline_images_per_s, 2), "speedup": round(self.speedup, 2)}


class NullStore:
    """A store that keeps vectors in memory and writes nothing: measures the pipeline without Milvus."""

    is_lite = False
    where = "no-op sink (vectors kept in memory)"

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict]] = {}

    def ensure_collection(self, info: Any) -> str:
        self.rows.setdefault(info.slug, {})
        return info.slug

    def get(self, name: str, ids: Sequence[str], output_fields: Sequence[str] = ()) -> dict[str, dict]:
        return {i: self.rows[name][i] for i in ids if i in self.rows[name]}

    def upsert(self, name: str, rows: Sequence[dict]) -> int:
        self.rows[name].update({r["id"]: r for r in rows})
        return len(rows)

    def get_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {i: np.asarray(self.rows[name][i]["vector"], np.float32) for i in ids if i in self.rows[name]}

    def flush(self, name: str) -> None:
        """Nothing to seal: the rows are in memory."""

    def close(self) -> None:
        pass


def baseline_embed(model: Embedder, path: str) -> np.ndarray:
    """The seed-style call: open the file, run the model's own HF processor on it, one forward pass, normalise.

    Models without a Hugging Face processor (VGG16, SSCD, ONNX) run their own recipe on the one image."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if model.processor is None:
        return model.embed_images([rgb])[0]
    pixels = model.processor(images=rgb, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    with torch.inference_mode():
        features = model._forward_images(pixels).float()
    return torch.nn.functional.normalize(features, dim=-1)[0].cpu().numpy()


def run_baseline(models: dict[str, Embedder], store: Any, collections: dict[str, str], paths: Sequence[str]):
    """One image per call per model, one row written per call; returns (seconds, {model: {id: vector}})."""
    from .images import load_image

    vectors: dict[str, dict[str, np.ndarray]] = {name: {} for name in models}
    start = time.perf_counter()
    for path in paths:
        facts = load_image(path)  # the row's metadata (hash, size); seed scripts stat and hash too
        for name, model in models.items():
            vec = baseline_embed(model, path)
            vectors[name][facts.id] = vec
            store.upsert(collections[name], [make_row(model.info, facts, vec, "bench-baseline")])
    return time.perf_counter() - start, vectors


def run(
    paths: Sequence[str],
    settings: Settings,
    *,
    baseline_images: int = 32,
    sink: str = "lite",
    warmup: int = 8,
) -> BenchResult:
    """Benchmark imsim's ingest on ``paths`` and the seed-style loop on the first ``baseline_images`` of them."""
    t0 = time.perf_counter()
    models = load_models(settings)
    load_seconds = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="imsim-bench-")
    if sink == "none":
        store: Any = NullStore()
        baseline_store: Any = NullStore()
    else:  # both paths write to the same kind of store, in collections of their own
        uri = settings.milvus_uri or os.path.join(tmp, "bench.db")
        store = VectorStore(settings.model_copy(update={"milvus_uri": uri, "collection_prefix": "bench"}))
        baseline_store = VectorStore(settings.model_copy(update={"milvus_uri": uri, "collection_prefix": "benchbase"}))
    ingestor = Ingestor(settings.model_copy(update={"skip_unchanged": False}), models=models, store=store)
    ingest_local(list(paths[:warmup]), ingestor.settings, ingestor=ingestor)  # first-call costs out of the timing

    t0 = time.perf_counter()
    result: ChunkResult = ingest_local(list(paths), ingestor.settings, ingestor=ingestor, job_id="bench")
    seconds = time.perf_counter() - t0

    base_collections = {name: baseline_store.ensure_collection(model.info) for name, model in models.items()}
    subset = list(paths[:baseline_images])
    baseline_seconds, base_vectors = run_baseline(models, baseline_store, base_collections, subset)

    min_cos = {}
    for name in models:
        fast = store.get_vectors(ingestor.collections[name], [path_id(p) for p in subset])
        min_cos[name] = float(min(np.dot(fast[i], v) for i, v in base_vectors[name].items()))
    ingestor.close()
    store.close()
    baseline_store.close()
    return BenchResult(images=result.done, seconds=seconds, stages=result.timings, baseline_images=len(subset),
                       baseline_seconds=baseline_seconds, min_cosine=min_cos, model_load_seconds=load_seconds,
                       device=next(iter(models.values())).device, store=getattr(store, "where", "") or sink)


def corpus(images: str | None, generate: int, size: tuple[int, int], dest: Path) -> list[str]:
    """The benchmark's files: a given folder, or ``generate`` JPEGs derived from the bundled real photos."""
    if images:
        return discover([images])
    from .synth import write_variants

    samples = Path(__file__).resolve().parent.parent / "samples" / "photos"
    if not samples.is_dir():
        raise ImsimError(f"no bundled sample photos at {samples} (installed without the repository?): pass --images DIR")
    return write_variants([samples], dest, generate, size=size, seed=0)
