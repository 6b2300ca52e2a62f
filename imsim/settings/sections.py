"""The platform's settings in sections, each the fields of one component with its own validators and derived
values: the store, the queue and its workers, running the models, image limits, queries, object storage, the HTTP
API. :class:`imsim.settings.Settings` composes them (with every model family's config) into one typed place; a
field ``foo`` of any section is ``IMSIM_FOO``. The components take what they need from it: the store a
:class:`StoreSection` itself (the settings are one), the queue a :class:`~imsim.jobs.queue.QueueConfig` made from
:class:`QueueSection` and the models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from .. import models as registry
from ..models.base import Precision
from .values import parse_duration, parse_weights, served_store

DEFAULT_DATA_DIR = Path.home() / ".imsim"
DEFAULT_ENV_FILE = DEFAULT_DATA_DIR / "imsim.env"

Fusion = Literal["auto", "rrf", "weighted", "calibrated", "none"]
Consistency = Literal["Strong", "Bounded", "Session", "Eventually"]


class Section(BaseModel):
    """A section of the settings: a component's fields (its docstring's first paragraph heads it in the reference)."""

    title: ClassVar[str]


class StoreSection(Section):
    """Where vectors live: the data dir, the Milvus URI and credentials, collection names, the index."""

    title: ClassVar[str] = "Store (Milvus) and local state"

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where the embedded store and local state live.")
    env_file: Path = Field(
        DEFAULT_ENV_FILE,
        description="A file of IMSIM_*=value lines, read under the environment (set this one in the environment only).",
    )
    milvus_uri: str = Field(
        "",
        description=(
            "Milvus URI. Empty: the Milvus Lite store DATA_DIR/milvus.db (one process at a time; `imsim store serve` serves "
            "the same store to several). http://host:port: a Milvus server, or the store served by `imsim store serve`."
        ),
    )
    milvus_token: SecretStr = Field(SecretStr(""), description="Milvus token or 'user:password'; never logged.")
    milvus_db: str = Field("", description="Milvus database name (server only; empty = default).")
    collection_prefix: str = Field(
        "imsim", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$", description="Prefix of every collection imsim creates."
    )
    index_type: Literal["auto", "FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "SCANN", "DISKANN", "AUTOINDEX"] = Field(
        "auto",
        description="Vector index of a new version's collection. auto: HNSW on Milvus Lite; on a server the most accurate "
        "kind whose memory at IMSIM_EXPECTED_ROWS fits IMSIM_INDEX_MEMORY_GB (measured table: docs/operations.md, "
        "Sizing). DISKANN needs queryNode.enableDisk on the server.",
    )
    expected_rows: int = Field(
        1_000_000,
        ge=1,
        description="Rows a model version's collection is expected to reach: sizes auto's index choice and the "
        "inverted-file lists of IVF indexes (nlist ~ 4·sqrt(rows of one segment), a segment holding at most "
        "512 MB of vectors).",
    )
    index_memory_gb: float = Field(
        16.0, gt=0, description="Query-node memory one collection's index may take (GiB), for auto's choice."
    )
    ivf_nprobe: int = Field(0, ge=0, description="Lists an IVF/SCANN search probes; 0: nlist/32, at least 16.")
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree M.")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW efConstruction.")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW ef at query time (raised to k when k is larger).")
    lite_warn_rows: int = Field(
        100_000,
        ge=1,
        description="Rows per collection past which `imsim doctor` and `imsim collections` warn that Milvus Lite is "
        "outgrown (its measured envelope: docs/operations.md) and name `imsim store copy`.",
    )
    search_consistency: Consistency = Field(
        "Bounded",
        description=(
            "Consistency level of interactive searches (Client, `imsim search`). Bounded: a Milvus server answers "
            "at once from data up to ~0.2 s old (Strong waits for the next time tick: ~200 ms per search, measured). "
            "Strong: read-your-writes. Milvus Lite sees every write at once at any level. Ingest, maintenance, "
            "duplicates and eval always read Strong."
        ),
    )

    @field_validator("data_dir", "env_file")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def lite_store(self) -> Path:
        """The embedded Milvus Lite store: ``DATA_DIR/milvus.db``."""
        return self.data_dir / "milvus.db"

    @property
    def served_store(self) -> dict[str, Any] | None:
        """With ``milvus_uri`` unset: the running `imsim store serve` of this data dir's Lite store (its ``uri`` and
        ``pid``, from ``DATA_DIR/served.json``), so every process uses it instead of failing on the file's lock;
        None when nothing serves it (the record is checked: the process alive and its port answering)."""
        if self.milvus_uri:
            return None
        return served_store(self.data_dir, self.lite_store)

    @property
    def resolved_milvus_uri(self) -> str:
        if self.milvus_uri:
            return self.milvus_uri
        served = self.served_store
        return str(served["uri"]) if served else str(self.lite_store)

    @property
    def is_milvus_lite_file(self) -> bool:
        uri = self.resolved_milvus_uri
        return not uri.startswith(("http://", "https://", "tcp://", "unix:", "grpc://"))


class QueueSection(Section):
    """The Redis broker, queued chunks and their redelivery, job records, the fleet, what workers may read."""

    title: ClassVar[str] = "Queue, workers and job records"

    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL for the Celery broker, results and job records."
    )
    queue: str = Field("imsim", description="Celery queue the ingest tasks go to.")
    chunk_size: int = Field(256, ge=1, le=100_000, description="Images per queued task (one message = one chunk).")
    skip_unchanged: bool = Field(
        True, description="Skip files whose content hash and model version are already stored (cheap resume)."
    )
    visibility_timeout: int = Field(
        3600, ge=10, description="Seconds before an unacknowledged chunk is redelivered; must exceed the longest chunk."
    )
    redelivery_check_interval: int = Field(
        0,
        ge=0,
        description="Seconds between a worker's sweeps for chunks whose worker died; 0 = visibility_timeout/5, at most 60.",
    )
    task_max_retries: int = Field(
        20,
        ge=0,
        description="Retries of a chunk while Milvus or Redis is unreachable "
        "(exponential backoff with jitter, at most 30 s apart).",
    )
    task_events: bool = Field(
        True,
        description="Workers send task events and queued chunks a task-sent event, so Flower shows waiting and running "
        "chunks (a few small messages per chunk).",
    )
    max_deliveries: int = Field(
        3,
        ge=1,
        le=100,
        description="Deliveries of a chunk that never finished (its worker died: out of memory, killed) before it is split "
        "in halves; a single file that still kills its worker is recorded as failed, so the job ends.",
    )
    job_retention: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="How long a finished job's record (counts, failures) stays in Redis: seconds, or 90m, 12h, 7d. "
        "0 keeps records forever (they grow with every job).",
    )
    fleet_wait: int = Field(
        300,
        ge=0,
        description="Seconds a chunk waits for a worker that embeds with the models and model settings its job was "
        "queued for (workers with others refuse it and put it back); then its files fail with the reason.",
    )
    allowed_roots: str = Field(
        "", description="Comma-separated directories workers may read; files elsewhere fail with a reason. Empty = any path."
    )

    @field_validator("job_retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @property
    def allowed_root_paths(self) -> list[str]:
        """``allowed_roots`` resolved to real absolute paths (symlinks followed); ``s3://bucket/prefix`` roots kept as
        URIs (the scheme in lower case)."""
        roots = [r.strip() for r in self.allowed_roots.split(",") if r.strip()]
        return ["s3://" + r[5:] if r[:5].lower() == "s3://" else os.path.realpath(os.path.expanduser(r)) for r in roots]

    @property
    def redelivery_interval(self) -> int:
        return self.redelivery_check_interval or max(1, min(60, self.visibility_timeout // 5))


class ModelsSection(Section):
    """Which models embed, on which device and precision, in what batches, with how many decode threads."""

    title: ClassVar[str] = "Models and the embedding pipeline"

    models: str = Field("clip,dinov2", description="Comma-separated registry names of the models to embed with.")
    device: str = Field("auto", description="Torch device: auto (cuda if present, else cpu), cpu, cuda, cuda:1 ...")
    precision: Precision = Field("auto", description="Inference precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per model forward pass on a GPU (and per pipeline slice).")
    cpu_batch_size: int = Field(
        8, ge=1, le=65_536, description="Images per forward pass on CPU (ViTs run slower per image at 32 than at 4-8 on CPU)."
    )
    decode_workers: int = Field(
        0, ge=0, le=256, description="Threads reading, decoding and resizing images; 0 = one per CPU core."
    )
    decoder: Literal["auto", "pillow", "simplejpeg"] = Field(
        "auto",
        description="JPEG decoder: simplejpeg (libjpeg-turbo; the same pixels as Pillow at the same DCT scale, tested; less CPU) "
        "or pillow; auto = simplejpeg where installed. Other formats always decode with Pillow.",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if isinstance(value, str):
            names = [m.strip() for m in value.split(",") if m.strip()]
            if not names:
                raise ValueError("must name at least one model")
            unknown = [n for n in names if n not in registry.names()]
            if unknown:
                raise ValueError(f"unknown model {unknown[0]!r}; known models: {', '.join(registry.names())}")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(
                    f"{repeated[0]!r} is named twice: one family embeds with one configuration per run (to compare two "
                    "wirings of one family, use `imsim eval run --models A=onnx@...,B=onnx@...`)"
                )
        return value

    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]


class ImagesSection(Section):
    """What a file may cost before it is refused: bytes, pixels, decode memory, elongation."""

    title: ClassVar[str] = "Image limits"

    max_image_pixels: int = Field(
        178_956_970, ge=1, description="Refuse images with more pixels than this (decompression-bomb guard)."
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Refuse files larger than this many bytes.")
    decode_memory_mb: int = Field(
        2048,
        ge=64,
        description="Megabytes of decoded pixels one worker process may hold at once, across its decode threads: a file "
        "waits until its decode fits, and one that alone needs more (pixels x bytes per pixel of its mode: a 13000x13000 "
        "RGBA PNG needs ~1.2 GB) fails with that reason.",
    )
    max_aspect_ratio: float = Field(
        32.0,
        ge=1.0,
        description="Refuse images more elongated than this for models that keep the aspect ratio without a crop (SSCD): "
        "their input would grow with the ratio (a 50000x1 PNG would become gigabytes).",
    )


class QuerySection(Section):
    """How per-model results merge when nothing else is asked for."""

    title: ClassVar[str] = "Queries and fusion"

    fusion: Fusion = Field(
        "auto",
        description="Default fusion of per-model results: auto (one model: its own cosine; several: the calibrated "
        "fusion where one was fitted for exactly these versions and applied, else rrf), rrf, weighted, calibrated (a "
        "match probability fitted by `imsim eval run` on your images, applied with `imsim eval apply`) or none.",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k.")
    fusion_weights: str = Field("", description="Weights for weighted fusion, e.g. 'clip=0.3,dinov2=0.7' (default equal).")
    duplicate_link_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Duplicate groups join only when at least this share of the pairs between them are links (0: every "
        "connected component, which chains copies of different originals through one shared overlay).",
    )

    @property
    def weights(self) -> dict[str, float]:
        """Parsed ``fusion_weights`` (validated when the settings are made); an empty dict means equal weights."""
        return parse_weights(self.fusion_weights)


class S3Section(Section):
    """Images in object storage (``s3://`` paths): endpoint, region, timeouts, GETs in flight."""

    title: ClassVar[str] = "Object storage (s3://)"

    s3_endpoint: str = Field(
        "",
        description="S3-compatible endpoint for s3:// paths (MinIO, SeaweedFS, Ceph: http://host:9000); empty: AWS. "
        "Credentials come from the standard AWS places (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
        "~/.aws, instance roles), never from imsim's settings.",
    )
    s3_region: str = Field("", description="S3 region (empty: AWS_DEFAULT_REGION or the AWS config's).")
    s3_addressing: Literal["auto", "path", "virtual"] = Field(
        "auto", description="S3 addressing style: auto = path-style with IMSIM_S3_ENDPOINT, virtual-hosted on AWS."
    )
    s3_timeout: float = Field(30.0, gt=0, description="Seconds an S3 connection or read may take before it is retried.")
    s3_concurrency: int = Field(
        32, ge=1, le=512, description="GETs in flight per worker process, overlapped with decoding (more for a distant store)."
    )
    s3_max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts per S3 request (throttling, 5xx, timeouts), with adaptive backoff."
    )


MIN_TOKEN = 16


class ApiSection(Section):
    """`imsim serve`: where it listens, who may call it, uploads, micro-batching, thumbnails."""

    title: ClassVar[str] = "HTTP API (imsim serve)"

    api_host: str = Field("127.0.0.1", description="Address `imsim serve` binds; anything but loopback requires IMSIM_API_TOKEN.")
    api_port: int = Field(8080, ge=1, le=65535, description="Port `imsim serve` listens on.")
    api_token: SecretStr = Field(
        SecretStr(""), description="Bearer token every API request must carry (required when binding beyond loopback)."
    )
    api_url: str = Field(
        "",
        description="A running `imsim serve` (http://host:8080): `imsim search`, `compare` and `duplicates` ask it "
        "(its models are loaded already). Unset: the serve this data dir runs on the same store and models, if any; "
        "'off': never ask one.",
    )
    api_max_upload_mb: int = Field(32, ge=1, le=1024, description="Largest image the API accepts in one upload (MB).")
    api_timeout: float = Field(60.0, gt=0, description="Seconds an API request may take before it fails (504).")
    api_cors_origins: str = Field("", description="Comma-separated origins allowed to call the API from a browser; empty: none.")
    api_raw_filters: bool = Field(False, description="Accept raw Milvus filter expressions in API searches.")
    api_batch_window_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Extra wait (ms) for more image queries before a forward pass; 0: none (queries that arrive while "
        "a pass runs go together in the next one).",
    )
    api_max_batch: int = Field(32, ge=1, le=1024, description="Most image queries the API embeds in one forward pass.")
    api_thumbnail_cache_mb: int = Field(64, ge=0, description="Memory for thumbnails the API has made (MB; LRU).")
    api_max_query_megapixels: int = Field(
        50,
        ge=1,
        le=1000,
        description="Largest query image the API decodes (megapixels; a JPEG counts at its 1/8 draft): a query is resized "
        "to the model's input anyway, and a 13000x13000 PNG took 1.8 GB and a minute to decode.",
    )
    api_ready_needs: Literal["search", "search,queueing"] = Field(
        "search",
        description="What /readyz waits for: 'search' (models loaded, store reachable) or 'search,queueing' (Redis too, "
        "for a deployment that queues jobs through the API).",
    )

    @field_validator("api_token")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        """A token guards an API that may bind beyond loopback: ``" "`` or one character let anyone in (and a token with
        whitespace locked every client out: headers are stripped)."""
        token = value.get_secret_value()
        if token and (len(token) < MIN_TOKEN or any(c.isspace() for c in token)):
            raise ValueError(
                f"must be at least {MIN_TOKEN} characters without whitespace (e.g. `openssl rand -hex 24`), "
                f"or empty (loopback only)"
            )
        return value


SECTIONS: tuple[type[Section], ...] = (
    StoreSection,
    QueueSection,
    ModelsSection,
    ImagesSection,
    QuerySection,
    S3Section,
    ApiSection,
)
