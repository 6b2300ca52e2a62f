"""Typed configuration: every knob imsim has, read from ``IMSIM_*`` environment variables.

This module is the one place where configuration lives. Everything else receives a
:class:`Settings` instance (or calls :func:`get_settings`) instead of reading the
environment itself, so a worker, the CLI and the Python client agree by construction.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".imsim"

Pooling = Literal["cls", "mean", "cls+mean", "cls+gem"]
Fusion = Literal["rrf", "weighted", "none"]
Consistency = Literal["Strong", "Bounded", "Session", "Eventually"]


class Settings(BaseSettings):
    """imsim settings; each field ``foo`` is read from ``IMSIM_FOO``."""

    model_config = SettingsConfigDict(env_prefix="IMSIM_", extra="ignore", frozen=True)

    # --- storage -------------------------------------------------------------------
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where the embedded store and local state live.")
    milvus_uri: str = Field(
        "",
        description=(
            "Milvus URI. Empty: the Milvus Lite file DATA_DIR/milvus.db (one process at a time). "
            "http://host:port: a Milvus server, or a Milvus Lite server started with `imsim store serve`."
        ),
    )
    milvus_token: SecretStr = Field(SecretStr(""), description="Milvus token or 'user:password'; never logged.")
    milvus_db: str = Field("", description="Milvus database name (server only; empty = default).")
    collection_prefix: str = Field("imsim", description="Prefix of every collection imsim creates.")
    index_type: Literal["auto", "FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = Field(
        "auto", description="Vector index. auto: HNSW on a server and on Milvus Lite (Lite's HNSW beats FLAT past ~10k rows)."
    )
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree M.")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW efConstruction.")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW ef at query time (raised to k when k is larger).")
    search_consistency: Consistency = Field(
        "Bounded",
        description=(
            "Consistency level of interactive searches (Client, `imsim search`). Bounded: a Milvus server answers "
            "at once from data up to ~0.2 s old (Strong waits for the next time tick: ~200 ms per search, measured). "
            "Strong: read-your-writes. Milvus Lite sees every write at once at any level. Ingest, maintenance, "
            "duplicates and eval always read Strong."
        ),
    )

    # --- queue -----------------------------------------------------------------------
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL for the Celery broker, results and job records."
    )
    queue: str = Field("imsim", description="Celery queue the ingest tasks go to.")
    chunk_size: int = Field(256, ge=1, le=100_000, description="Images per queued task (one message = one chunk).")
    skip_unchanged: bool = Field(
        True, description="Skip files whose content hash and model revision are already stored (cheap resume)."
    )
    visibility_timeout: int = Field(
        3600, ge=10, description="Seconds before an unacknowledged chunk is redelivered; must exceed the longest chunk."
    )
    redelivery_check_interval: int = Field(
        0, ge=0, description="Seconds between a worker's sweeps for chunks whose worker died; 0 = visibility_timeout/5, at most 60."
    )
    task_max_retries: int = Field(
        20, ge=0, description="Retries of a chunk while Milvus or Redis is unreachable (exponential backoff with jitter, at most 30 s apart)."
    )
    allowed_roots: str = Field(
        "", description="Comma-separated directories workers may read; files elsewhere fail with a reason. Empty = any path."
    )

    # --- models ----------------------------------------------------------------------
    models: str = Field("clip,dinov2", description="Comma-separated registry names of the models to embed with.")
    clip_model: str = Field("openai/clip-vit-base-patch32", description="CLIP hub id or local directory.")
    clip_revision: str = Field("main", description="Hub revision (branch, tag or commit) of the CLIP model.")
    dinov2_model: str = Field("facebook/dinov2-base", description="DINOv2 hub id or local directory.")
    dinov2_revision: str = Field("main", description="Hub revision of the DINOv2 model.")
    dinov2_pooling: Pooling = Field("cls", description="DINOv2 embedding: CLS token, mean of patch tokens, CLS+mean or CLS+GeM (p=3) concatenated.")
    vit_model: str = Field("google/vit-large-patch16-224-in21k", description="ViT hub id or local directory.")
    vit_revision: str = Field("main", description="Hub revision of the ViT model.")
    vit_pooling: Literal["cls", "mean", "pooler"] = Field("cls", description="ViT embedding: CLS token (write-ups), mean of patch tokens, or the pooler.")
    efficientnet_model: str = Field("google/efficientnet-b7", description="EfficientNet hub id or local directory.")
    efficientnet_revision: str = Field("main", description="Hub revision of the EfficientNet model.")
    efficientnet_pooling: Literal["mean", "max", "gem"] = Field("mean", description="EfficientNet embedding: mean, max or GeM over the last feature map.")
    blip2_model: str = Field("Salesforce/blip2-opt-2.7b", description="BLIP-2 hub id or local directory (only the vision encoder and Q-Former are loaded).")
    blip2_revision: str = Field("main", description="Hub revision of the BLIP-2 model.")
    blip2_pooling: Literal["mean", "vision"] = Field("mean", description="BLIP-2 embedding: mean of the Q-Former query outputs, or the ViT-g pooled CLS.")
    vgg16_model: str = Field("timm/vgg16.tv_in1k", description="VGG16 weights: a hub repo or local directory in timm's layout, or 'torchvision'.")
    vgg16_revision: str = Field("main", description="Hub revision of the VGG16 weights.")
    vgg16_pooling: Literal["fc7", "gap"] = Field("fc7", description="VGG16 embedding: fc7 after ReLU (4096-d) or global average of the last conv block (512-d).")
    sscd_model: str = Field("https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt",
                            description="SSCD TorchScript file: a URL (downloaded once into DATA_DIR/models) or a local path.")
    sscd_resize: Literal["short288", "skew320"] = Field("short288", description="SSCD preprocessing: short edge 288 (documented) or a 320x320 square.")
    onnx_model: str = Field("", description="Path of an ONNX image-embedding model (model name 'onnx').")
    onnx_name: str = Field("", description="A label for the ONNX model (default: the file name).")
    onnx_input_layout: Literal["nchw", "nhwc"] = Field("nchw", description="ONNX input layout.")
    onnx_input_dtype: Literal["float32", "float16", "uint8"] = Field("float32", description="ONNX input dtype; uint8 = raw pixels, the graph normalises.")
    onnx_resize: Literal["crop", "exact", "short"] = Field("crop", description="ONNX resize: short edge + centre crop, exact square, or short edge only.")
    onnx_size: int = Field(224, ge=8, description="ONNX input side (crop or square), or the short edge for resize 'short'.")
    onnx_resize_short: int = Field(0, ge=0, description="Short edge before the crop for resize 'crop' (0 = size x 8/7, e.g. 256 for 224).")
    onnx_mean: str = Field("0.485,0.456,0.406", description="Per-channel mean for float inputs.")
    onnx_std: str = Field("0.229,0.224,0.225", description="Per-channel std for float inputs.")
    onnx_rescale: float = Field(1 / 255, gt=0, description="Pixel scale before mean/std for float inputs.")
    onnx_input_name: str = Field("", description="ONNX input name (default: the first input).")
    onnx_output_name: str = Field("", description="ONNX output name (default: the first output).")
    device: str = Field("auto", description="Torch device: auto (cuda if present, else cpu), cpu, cuda, cuda:1 ...")
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per model forward pass on a GPU.")
    cpu_batch_size: int = Field(
        8, ge=1, le=65_536, description="Images per forward pass on CPU (ViTs run slower per image at 32 than at 4-8 on CPU)."
    )
    decode_workers: int = Field(0, ge=0, le=256, description="Threads decoding images; 0 = one per CPU core.")

    # --- images ----------------------------------------------------------------------
    max_image_pixels: int = Field(
        178_956_970, ge=1, description="Refuse images with more pixels than this (decompression-bomb guard)."
    )
    decode_size: int = Field(
        256, ge=32, description="JPEGs are decoded at the smallest scale whose short edge stays >= this (and >= every model's input)."
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Refuse files larger than this many bytes.")

    # --- query -----------------------------------------------------------------------
    fusion: Fusion = Field("rrf", description="Default fusion of per-model results: rrf, weighted or none.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k.")
    fusion_weights: str = Field("", description="Weights for weighted fusion, e.g. 'clip=0.3,dinov2=0.7' (default equal).")

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("models")
    @classmethod
    def _models_not_empty(cls, value: str) -> str:
        if not [m for m in value.split(",") if m.strip()]:
            raise ValueError("IMSIM_MODELS must name at least one model")
        return value

    # --- derived -----------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    @property
    def allowed_root_paths(self) -> list[str]:
        """``allowed_roots`` resolved to real absolute paths (symlinks followed)."""
        return [os.path.realpath(os.path.expanduser(r.strip())) for r in self.allowed_roots.split(",") if r.strip()]

    @property
    def redelivery_interval(self) -> int:
        return self.redelivery_check_interval or max(1, min(60, self.visibility_timeout // 5))

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def is_milvus_lite_file(self) -> bool:
        uri = self.resolved_milvus_uri
        return not uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def weights(self) -> dict[str, float]:
        """Parsed ``fusion_weights``; an empty dict means equal weights."""
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in self.fusion_weights.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"IMSIM_FUSION_WEIGHTS entry {part!r} is not name=weight")
            out[name.strip()] = float(value)
        return out


def redact(url: str) -> str:
    """``url`` with any password replaced by ``**`` (for messages and logs)."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1**@", url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read from the environment (cached)."""
    return Settings()


# --- configuration reference, generated from the fields above (deploy/.env.example, docs/configuration.md) ---
def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if name == "data_dir":
        return "~/.imsim"
    return "true" if value is True else "false" if value is False else str(value)


def env_example() -> str:
    """Every setting as a commented ``IMSIM_*=default`` line (the text of deploy/.env.example)."""
    lines = ["# Every imsim setting with its default, commented out. Generated by `imsim config --env`.",
             "# Copy to .env, uncomment and edit the lines you change.", ""]
    for name, field in Settings.model_fields.items():
        lines.append(f"# {field.description}")
        lines.append(f"# IMSIM_{name.upper()}={_default_text(name)}")
        lines.append("")
    return "\n".join(lines)


def markdown_reference() -> str:
    """Every setting as a Markdown table (the text of docs/configuration.md)."""
    rows = ["# Configuration reference", "",
            "Every setting is an environment variable read by `imsim/settings.py` (docker compose passes",
            "the lines of `deploy/.env` to its containers as variables). Generated by",
            "`imsim config --markdown`; a test keeps this page and `deploy/.env.example` equal to the code.", "",
            "| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = _default_text(name) or "(empty)"
        rows.append(f"| `IMSIM_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows) + "\n"
