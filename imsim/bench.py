"""Benchmarks that print numbers (``imsim bench ...``): where the host's time goes, and what a change buys.

- :func:`run_ingest`: files → read → hash → decode → resize → batch → embed → store through the real
  :class:`~imsim.ingest.Ingestor`, with real models or **null models** (:class:`NullEmbedder`: the input sizes
  and dimensions of CLIP B/32 and DINOv2 B/14, a forward pass that costs ~nothing), into a no-op sink
  (:class:`NullStore`), a Milvus Lite file, or any Milvus server. Reports images/s, wall and CPU per stage,
  and CPU-ms per image for the whole process, from which a many-core host's rate is *projected* (not measured).
- :func:`compare_decoders`: the decode + resize stage alone for each decoder and pool size, side by side on
  the same files, each checked against the reference (Pillow) path: model inputs identical, vectors' cosine.
- :func:`run_baseline`: the seed-style loop (one image per call through the model's own Hugging Face
  processor and model, one row per write), to state the speed-up honestly on the same models and files.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from .embedding import EmbeddingStep
from .errors import ImsimError
from .ingest import Ingestor, ingest_local
from .models import Embedder, FamilyConfig, ModelInfo, Preprocess
from .models.base import l2_normalise, no_text
from .settings import Settings
from .sources.names import path_id
from .sources.paths import discover
from .sources.reading import Limits, read_file
from .store import VectorStore, make_row
from .timing import StageTimes
from .whitening import Whitening

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The published preprocessing of openai/clip-vit-base-patch32 and facebook/dinov2-base, and their dimensions.
NULL_MODELS: dict[str, tuple[Preprocess, int]] = {
    "clip": (Preprocess(224, 224, 224, CLIP_MEAN, CLIP_STD, resample=3), 512),
    "dinov2": (Preprocess(256, 224, 224, IMAGENET_MEAN, IMAGENET_STD, resample=3), 768),
}
PROJECTION_CORES = 16


class NullConfig(FamilyConfig):
    mimics: str = Field("", description="The model whose input size and dimension this null model has.")


class NullEmbedder:
    """An :class:`~imsim.models.base.Embedder` with a real model's input recipe and dimension whose forward pass is a
    fixed random signed gather of an 8x8 subsample: deterministic, pixel-dependent, and ~free.

    No matrix product: numpy's ``@`` wakes OpenBLAS's thread pool, whose threads then spin-wait for more work and took
    ~2 of the ~6 CPU-ms per image this benchmark measured on a 2-core host, CPU that a GPU host's model never spends
    there (its forward pass runs on the GPU)."""

    def __init__(self, name: str, preprocess: Preprocess, dim: int, seed: int = 0):
        self.preprocess = preprocess
        self.device = "cpu"
        self.info = ModelInfo(
            name=name,
            source=f"null:{name}",
            revision="null",
            dim=dim,
            supports_text=False,
            config=NullConfig(mimics=name),
            preprocess=preprocess,
            description=f"null model shaped like {name}",
        )
        rng = np.random.default_rng(seed)
        self._gather = rng.integers(0, 8 * 8 * 3, dim)  # output k = sign_k * sample[gather_k]
        self._signs = rng.choice(np.array([-1.0, 1.0], np.float32), dim)

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        ys, xs = np.linspace(0, h - 1, 8).astype(int), np.linspace(0, w - 1, 8).astype(int)
        sample = batch[:, ys][:, :, xs].reshape(n, -1).astype(np.float32) / 255.0 + 1e-3
        return l2_normalise(sample[:, self._gather] * self._signs)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise no_text(self.info)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays, in float64: float32 vectors normalised to 1 give a self-dot up to ~2e-6
    away from 1, which would read as a difference between two paths that computed identical vectors."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a64 * b64, axis=1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-300)


def null_models(names: Sequence[str] = ("clip", "dinov2")) -> dict[str, Embedder]:
    return {name: NullEmbedder(name, *NULL_MODELS[name]) for name in names}


class NullStore:
    """A sink that keeps rows in memory and writes nothing: the pipeline without Milvus (implements ingest's Sink)."""

    where = "no-op sink (rows kept in memory)"

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, dict[str, Any]]] = {}  # collection -> id -> row

    @property
    def versions(self) -> NullStore:
        """Its own versions part (ingest's VersionsSink)."""
        return self

    @property
    def rows(self) -> NullStore:
        """Its own rows part (ingest's RowsSink)."""
        return self

    def ensure_collection(self, info: ModelInfo) -> str:
        name = f"{info.name}_{info.version_tag}"
        self.kept.setdefault(name, {})
        return name

    def get(
        self, name: str, ids: Sequence[str], output_fields: Sequence[str] = ("path",), consistency: str = "Strong"
    ) -> dict[str, dict[str, Any]]:
        return {i: self.kept[name][i] for i in ids if i in self.kept[name]}

    def upsert_each(self, name: str, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
        self.kept[name].update({r["id"]: r for r in rows})
        return {}

    def get_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {i: np.asarray(self.kept[name][i]["vector"], np.float32) for i in ids if i in self.kept[name]}

    def flush(self, name: str, *, wait: bool = True) -> None:
        """Nothing to seal: the rows are in memory."""

    def followers(self, base: str) -> dict[str, Whitening]:
        """No derived versions: a benchmark sink holds one collection per model."""
        return {}

    def close(self) -> None:
        """Nothing to close."""


@dataclass
class IngestRun:
    """One measured ingest: images/s and where the time went."""

    images: int
    seconds: float
    cpu_seconds: float  # the whole process (every thread), from time.process_time
    times: StageTimes
    store: str
    models: str
    decoder: str
    workers: int
    failures: dict[str, str] = field(default_factory=dict)
    store_cpu_seconds: float | None = None  # the store server's own CPU over the run (--store-pid), when measured
    seal_seconds: float = 0.0  # the flush at the end of the job (once per job, not per image): not in ``seconds``

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def sealed_images_per_s(self) -> float:
        """The rate with the job's seal counted (what a job of this many images gets end to end)."""
        return self.images / (self.seconds + self.seal_seconds) if self.seconds else 0.0

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_seconds / self.images if self.images else 0.0

    def stage_cpu_ms(self) -> dict[str, float]:
        """Thread CPU milliseconds per image, per stage."""
        return {stage: 1000 * seconds / self.images for stage, seconds in self.times.cpu.items()} if self.images else {}

    @property
    def wait_ms_per_image(self) -> float:
        """Milliseconds per image the pipeline waited for the store to take a slice (the critical path's wait)."""
        return 1000 * self.times.wait.get("write", 0.0) / self.images if self.images else 0.0

    @property
    def lookup_wait_ms_per_image(self) -> float:
        """Milliseconds per image the read threads waited for a skip check's stored rows (summed over threads)."""
        return 1000 * self.times.wait.get("lookup", 0.0) / self.images if self.images else 0.0

    @property
    def store_cpu_ms_per_image(self) -> float | None:
        if self.store_cpu_seconds is None or not self.images:
            return None
        return 1000 * self.store_cpu_seconds / self.images

    @property
    def projected_images_per_s(self) -> float:
        """What :data:`PROJECTION_CORES` cores would do if the host side scaled linearly and the store never made the
        pipeline wait: a projection, not a measurement (it ignores the store's latency and its own CPU)."""
        return PROJECTION_CORES * 1000 / self.cpu_ms_per_image if self.cpu_ms_per_image else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
            "cpu_ms_per_image": round(self.cpu_ms_per_image, 3),
            "stage_cpu_ms_per_image": {k: round(v, 3) for k, v in self.stage_cpu_ms().items()},
            "stage_seconds": self.times.as_dict(),
            "seal_seconds": round(self.seal_seconds, 3),
            "sealed_images_per_s": round(self.sealed_images_per_s, 1),
            "wait_ms_per_image": round(self.wait_ms_per_image, 3),
            "lookup_wait_ms_per_image": round(self.lookup_wait_ms_per_image, 3),
            "store_cpu_ms_per_image": None if self.store_cpu_ms_per_image is None else round(self.store_cpu_ms_per_image, 3),
            "store": self.store,
            "models": self.models,
            "decoder": self.decoder,
            "workers": self.workers,
            f"projected_images_per_s_{PROJECTION_CORES}_cores": round(self.projected_images_per_s),
            "failed": len(self.failures),
        }


def make_sink(kind: str, settings: Settings, prefix: str = "bench") -> tuple[Any, str]:
    """(sink, description): ``none`` (no-op), ``lite`` (a Milvus Lite file in a temp dir) or a Milvus URI."""
    if kind == "none":
        return NullStore(), NullStore.where
    uri = os.path.join(tempfile.mkdtemp(prefix="imsim-bench-"), "bench.db") if kind == "lite" else kind
    store = VectorStore(settings.replace(milvus_uri=uri, collection_prefix=prefix))
    for name in store.versions.collections():
        store.drop(name)
    return store, f"{'Milvus Lite file' if kind == 'lite' else 'Milvus'} {store.where} ({store.connection.server_version})"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) and of its children that exited, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_ingest(
    paths: Sequence[str],
    settings: Settings,
    models: Mapping[str, Embedder],
    sink: str = "none",
    warmup: int = 16,
    store_pid: int | None = None,
) -> IngestRun:
    """Ingest ``paths`` once (after ``warmup`` files to take first-call costs out) and time every stage; ``store_pid``:
    the store server's process, whose CPU over the run is reported beside the pipeline's."""
    settings = settings.replace(skip_unchanged=False)
    store, where = make_sink(sink, settings)
    try:
        with Ingestor(settings, embedders=models, store=store) as ingestor:
            if warmup:
                ingestor.ingest(list(paths[:warmup]), job_id="bench-warmup")
            server_cpu = process_cpu_seconds(store_pid) if store_pid else None
            wall, cpu = time.perf_counter(), time.process_time()
            result = ingest_local(list(paths), settings, ingestor=ingestor, job_id="bench", seal=False)
            seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
            if store_pid and server_cpu is not None:
                server_cpu = process_cpu_seconds(store_pid) - server_cpu
            started = time.perf_counter()
            ingestor.seal()  # once per job, whatever its size: reported apart from the rate
            seal_seconds = time.perf_counter() - started
            decoder = ingestor.step.decoder
            workers = ingestor.step._pool._max_workers
    finally:
        store.close()
    return IngestRun(
        result.done,
        seconds,
        cpu_seconds,
        result.times,
        where,
        ",".join(models),
        decoder,
        workers,
        result.failures,
        server_cpu,
        seal_seconds,
    )


@dataclass
class DecodeRun:
    decoder: str
    workers: int
    images: int
    seconds: float
    cpu_seconds: float
    identical: int  # files whose every model input equals the reference path's, bit for bit
    min_cosine: float  # against the reference path's vectors

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_seconds / self.images if self.images else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 1), "cpu_ms_per_image": round(self.cpu_ms_per_image, 3)}


def compare_decoders(
    paths: Sequence[str],
    models: Mapping[str, Embedder],
    decoders: Sequence[str] = ("pillow", "simplejpeg"),
    workers: Sequence[int] = (1, 0),
) -> list[DecodeRun]:
    """Decode + resize (+ the models) on the same files per decoder and thread count; each against Pillow's inputs."""
    files = [read_file(p, Limits()) for p in paths]
    reference = EmbeddingStep(models, decoder="pillow", workers=1)
    want = {f.path: reference._prepare(f, None) for f in files}
    want_vectors = reference.embed(files)
    reference.close()
    runs = []
    for decoder in decoders:
        for count in workers:
            step = EmbeddingStep(models, decoder=decoder, workers=count)
            step.embed(files[:8])  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            got = step.embed(files)
            seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
            identical = sum(1 for f in files if _same_inputs(step._prepare(f, None), want[f.path]))
            cosine = min(float(np.min(cosines(got.vectors[n], want_vectors.vectors[n]))) for n in models)
            runs.append(
                DecodeRun(step.decoder, step._pool._max_workers, len(got.images), seconds, cpu_seconds, identical, cosine)
            )
            step.close()
    return runs


def _same_inputs(a: Any, b: Any) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return isinstance(a, Exception) and isinstance(b, Exception)
    return all(a.arrays[n].shape == b.arrays[n].shape and np.array_equal(a.arrays[n], b.arrays[n]) for n in a.arrays)


def baseline_embed(model: Any, path: str) -> np.ndarray:
    """The seed-style call: open the file, run the model's own HF processor on it, one forward pass, normalise.

    Models without a Hugging Face processor (VGG16, SSCD, ONNX) run their own recipe on the one image."""
    from PIL import Image

    from .models import embed_images

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    processor = getattr(model, "processor", None)
    if processor is None:
        return embed_images(model, [rgb])[0]
    import torch

    pixels = processor(images=rgb, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    with torch.inference_mode():
        features = model._forward_images(pixels).float()
    return np.asarray(torch.nn.functional.normalize(features, dim=-1)[0].cpu().numpy())


@dataclass
class BaselineRun:
    images: int
    seconds: float
    min_cosine: dict[str, float]  # per model: the fast path's stored vector vs the baseline's, worst image

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def run_baseline(models: Mapping[str, Embedder], paths: Sequence[str], settings: Settings) -> BaselineRun:
    """One image per call per model, one row written per call (to a no-op sink), timed; then the fast path's vectors
    for the same files, to check both paths compute the same embeddings."""
    from .images import load_image

    sink = NullStore()
    collections = {name: sink.ensure_collection(m.info) for name, m in models.items()}
    vectors: dict[str, dict[str, np.ndarray]] = {name: {} for name in models}
    start = time.perf_counter()
    for path in paths:
        facts = load_image(path)
        for name, model in models.items():
            vec = baseline_embed(model, path)
            vectors[name][facts.id] = vec
            sink.upsert_each(collections[name], [make_row(model.info, facts, vec, "bench-baseline")])
    seconds = time.perf_counter() - start
    step = EmbeddingStep.from_settings(settings, models)
    fast = step.embed_paths(list(paths))
    step.close()
    by_id = {path_id(img.path): i for i, img in enumerate(fast.images)}
    cosine = {}
    for name in models:
        ids = list(vectors[name])
        got = fast.vectors[name][[by_id[i] for i in ids]]
        cosine[name] = float(np.min(cosines(got, np.stack([vectors[name][i] for i in ids]))))
    return BaselineRun(len(paths), seconds, cosine)


def corpus(images: str | None, generate: int, size: tuple[int, int], dest: Path, quality: int = 90) -> list[str]:
    """The benchmark's files: a given folder, or ``generate`` JPEGs of ``size`` derived from the bundled real photos."""
    if images:
        return discover([images]).files
    from .synth import write_variants

    samples = Path(__file__).resolve().parent.parent / "samples" / "photos"
    if not samples.is_dir():
        raise ImsimError(f"no bundled sample photos at {samples} (installed without the repository?): pass --images DIR")
    return write_variants([samples], dest, generate, size=size, seed=0, quality=quality)
