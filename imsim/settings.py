"""Typed configuration: every knob imsim has, read from ``IMSIM_*`` environment variables.

This module is the one place where configuration is read. Everything else receives a
:class:`Settings` instance (or calls :func:`get_settings`) instead of reading the environment
itself, so a worker, the CLI and the Python client agree by construction.

Settings are the platform's own fields (below) plus one config per model family, owned by the
family's module (:class:`~imsim.models.base.FamilyConfig`): field ``pooling`` of family ``dinov2``
is ``IMSIM_DINOV2_POOLING`` in the environment and ``dinov2_pooling=`` as a keyword. Values come
from, highest first: keywords (``Settings(...)``, ``Client(...)``), the environment, the env file
(``IMSIM_ENV_FILE``, default ``~/.imsim/imsim.env``: ``IMSIM_X=value`` lines, written e.g. by the
quickstart), then the defaults. Every value is validated, also in :meth:`Settings.replace`; an
unknown name is an error naming it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from . import models as registry
from .errors import ConfigError
from .models.base import FamilyConfig, Precision, Runtime

DEFAULT_DATA_DIR = Path.home() / ".imsim"
DEFAULT_ENV_FILE = DEFAULT_DATA_DIR / "imsim.env"
PREFIX = "IMSIM_"

Fusion = Literal["rrf", "weighted", "calibrated", "none"]
Consistency = Literal["Strong", "Bounded", "Session", "Eventually"]


def split_family_key(key: str) -> tuple[str, str] | None:
    """``"dinov2_pooling"`` → ``("dinov2", "pooling")`` for a registered family (longest name first), else None."""
    for name in sorted(registry.names(), key=len, reverse=True):
        if key.startswith(name + "_") and len(key) > len(name) + 1:
            return name, key[len(name) + 1 :]
    return None


class Settings(BaseSettings):
    """imsim settings; each field ``foo`` is read from ``IMSIM_FOO``; family fields from ``IMSIM_<FAMILY>_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    # --- storage -------------------------------------------------------------------
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
    index_type: Literal["auto", "FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = Field(
        "auto", description="Vector index. auto: HNSW on a server and on Milvus Lite (Lite's HNSW beats FLAT past ~10k rows)."
    )
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

    # --- queue -----------------------------------------------------------------------
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

    # --- models ----------------------------------------------------------------------
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
    families: dict[str, SerializeAsAny[FamilyConfig]] = Field(
        default_factory=dict, description="Each model family's own settings (IMSIM_<FAMILY>_<FIELD>), from the family's module."
    )

    # --- images ----------------------------------------------------------------------
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

    # --- query -----------------------------------------------------------------------
    fusion: Fusion = Field(
        "rrf",
        description="Default fusion of per-model results: rrf, weighted, calibrated (a match probability fitted by "
        "`imsim eval run` on your images, applied with `imsim eval apply`) or none.",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k.")
    fusion_weights: str = Field("", description="Weights for weighted fusion, e.g. 'clip=0.3,dinov2=0.7' (default equal).")

    # --- the HTTP API (imsim serve) ---------------------------------------------------
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
    api_host: str = Field("127.0.0.1", description="Address `imsim serve` binds; anything but loopback requires IMSIM_API_TOKEN.")
    api_port: int = Field(8080, ge=1, le=65535, description="Port `imsim serve` listens on.")
    api_token: SecretStr = Field(
        SecretStr(""), description="Bearer token every API request must carry (required when binding beyond loopback)."
    )
    api_url: str = Field(
        "",
        description="A running `imsim serve` (http://host:8080): `imsim search`, `compare` and `duplicates` ask it "
        "(its models are loaded already).",
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file = Path(os.environ.get(PREFIX + "ENV_FILE") or DEFAULT_ENV_FILE).expanduser()
        return (
            init_settings,
            _VariablesSource(settings_cls, dict(os.environ), "the environment"),
            _VariablesSource(settings_cls, read_env_file(file), str(file)),
        )

    @model_validator(mode="before")
    @classmethod
    def _family_configs(cls, data: Any) -> Any:
        """Fold ``family_field`` keys into each family's config and validate every family by its own class."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        raw: dict[str, dict[str, Any]] = {}
        for name, value in dict(data.pop("families", None) or {}).items():
            raw[name] = value.model_dump() if isinstance(value, FamilyConfig) else dict(value)
        for key in [k for k in data if k not in cls.model_fields]:
            found = split_family_key(key)
            if found:
                raw.setdefault(found[0], {})[found[1]] = data.pop(key)
        unknown = set(raw) - set(registry.names())
        if unknown:
            raise ValueError(f"unknown model famil{'ies' if len(unknown) > 1 else 'y'}: {', '.join(sorted(unknown))}")
        built: dict[str, FamilyConfig] = {}
        for name in registry.names():
            config_cls = registry.config_class(name)
            try:
                built[name] = config_cls.model_validate(raw.get(name, {}))
            except ValidationError as exc:
                raise ValueError("; ".join(_describe(err, name) for err in exc.errors())) from None
        data["families"] = built
        return data

    @field_validator("job_retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("data_dir", "env_file")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

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

    # --- derived -----------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def family(self, name: str) -> FamilyConfig:
        """Family ``name``'s config (its defaults, for a family registered after these settings were made)."""
        if name in self.families:
            return self.families[name]
        return registry.config_class(name)()

    @property
    def runtime(self) -> Runtime:
        return Runtime(
            device=self.device,
            batch_size=self.batch_size,
            cpu_batch_size=self.cpu_batch_size,
            precision=self.precision,
            cache_dir=self.data_dir / "models",
        )

    @property
    def allowed_root_paths(self) -> list[str]:
        """``allowed_roots`` resolved to real absolute paths (symlinks followed); ``s3://bucket/prefix`` roots kept as
        URIs (the scheme in lower case)."""
        roots = [r.strip() for r in self.allowed_roots.split(",") if r.strip()]
        return ["s3://" + r[5:] if r[:5].lower() == "s3://" else os.path.realpath(os.path.expanduser(r)) for r in roots]

    @property
    def redelivery_interval(self) -> int:
        return self.redelivery_check_interval or max(1, min(60, self.visibility_timeout // 5))

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

    @property
    def weights(self) -> dict[str, float]:
        """Parsed ``fusion_weights`` (validated when the settings are made); an empty dict means equal weights."""
        return parse_weights(self.fusion_weights)

    @model_validator(mode="after")
    def _check_weights(self) -> Settings:
        weights = parse_weights(self.fusion_weights)
        unknown = sorted(set(weights) - set(registry.names()))
        if unknown:
            raise ValueError(f"fusion_weights names {unknown[0]!r}, which is no model (known: {', '.join(registry.names())})")
        if weights and not any(w > 0 for n, w in weights.items() if n in self.model_names):
            raise ValueError(
                f"fusion_weights {self.fusion_weights!r} gives no positive weight to any of the models "
                f"{self.models!r}: weighted fusion would divide by zero"
            )
        return self

    # --- copies ------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """Every setting under its keyword name (``clip_model`` ...), values as typed (secrets stay SecretStr)."""
        out = {name: getattr(self, name) for name in type(self).model_fields if name != "families"}
        for family, config in self.families.items():
            out.update({f"{family}_{key}": value for key, value in config.model_dump().items()})
        return out

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (keyword names); an unknown name or a bad value is a :class:`ConfigError`."""
        return load({**self.flat(), **changes})


class _VariablesSource(PydanticBaseSettingsSource):
    """``IMSIM_*`` variables (the environment, or the env file) as settings values, family fields nested."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str], where: str):
        super().__init__(settings_cls)
        self.variables, self.where = variables, where

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        families: dict[str, dict[str, Any]] = {}
        for key, value in self.variables.items():
            if not key.startswith(PREFIX) or key == PREFIX + "ENV_FILE":
                continue
            name = key[len(PREFIX) :].lower()
            if name in Settings.model_fields and name != "families":
                out[name] = value
            elif found := split_family_key(name):
                families.setdefault(found[0], {})[found[1]] = value
        if families:
            out["families"] = families
        return out


def read_env_file(path: Path) -> dict[str, str]:
    """``IMSIM_X=value`` lines (``export`` and quotes allowed, ``#`` comments); a missing file is empty.

    A name that is not a setting is an error naming the file and line: the file is imsim's own."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the env file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{where}: byte 0x{data[exc.start]:02x} is not UTF-8 (the env file is UTF-8 text); fix or remove that line"
        ) from None
    out: dict[str, str] = {}
    known = set(known_variables())
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise ConfigError(f"{path}:{number}: not a KEY=value line: {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not key.startswith(PREFIX):
            continue
        if key not in known:
            raise ConfigError(f"{path}:{number}: {key} is not an imsim setting{_did_you_mean(key, known)}")
        out[key] = value
    return out


def known_variables() -> list[str]:
    """Every ``IMSIM_*`` variable imsim reads."""
    names = [PREFIX + n.upper() for n in Settings.model_fields if n != "families"]
    for family in registry.names():
        names += [f"{PREFIX}{family.upper()}_{f.upper()}" for f in registry.config_class(family).model_fields]
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``IMSIM_*`` variables in the environment that are no setting, each with a hint (``imsim doctor`` reports them)."""
    known = set(known_variables())
    return {
        k: _did_you_mean(k, known)
        for k in (environ if environ is not None else os.environ)
        if k.startswith(PREFIX) and k not in known
    }


def _did_you_mean(name: str, known: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(error: Any, family: str = "") -> str:
    """One pydantic error as ``IMSIM_NAME: message``."""
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    if loc and loc[0] == "families":
        loc = loc[1:]
    name = "_".join([family, *loc] if family else loc)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        keywords = [v[len(PREFIX) :].lower() for v in known_variables()]
        close = difflib.get_close_matches(name, keywords, n=1)
        return f"unknown setting {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    return f"{PREFIX}{name.upper()}: {message}" if name else message


def load(values: Mapping[str, Any] | None = None) -> Settings:
    """:class:`Settings` from keyword ``values`` over the environment and env file; errors as one :class:`ConfigError`."""
    try:
        return Settings(**dict(values or {}))
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + "; ".join(_describe(e) for e in exc.errors())) from None


SERVED_FILE = "served.json"


def served_store(data_dir: Path, store: Path) -> dict[str, Any] | None:
    """The record `imsim store serve` wrote for ``store`` in ``data_dir`` when that server still runs, else None."""
    import json
    import socket

    try:
        record = json.loads((data_dir / SERVED_FILE).read_text())
        pid, host, port = int(record["pid"]), str(record["host"]), int(record["port"])
        if os.path.realpath(record["store"]) != os.path.realpath(store):
            return None
        os.kill(pid, 0)  # still running (an error if not)
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else host, port), timeout=0.3):
            pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def parse_weights(text: str) -> dict[str, float]:
    """``"clip=0.3,dinov2=0.7"`` → weights; a malformed entry, a weight that is no number, negative or not finite is a
    ValueError naming it."""
    import math

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"fusion_weights entry {part!r} is not name=weight")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"fusion_weights entry {part!r}: {value!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"fusion_weights entry {part!r}: a weight must be a number >= 0")
        out[name.strip()] = weight
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``"3600"``, ``"90m"``, ``"12h"``, ``"7d"``, ``"2w"`` → seconds; anything else is a ValueError."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration: seconds, or a number with s, m, h, d or w (7d)")
    return int(float(found.group(1)) * _SECONDS[found.group(2).lower()])


SECRET_PARAMETERS = frozenset({"password", "token", "secret", "key", "access_key", "secret_key", "api_key", "apikey"})


def redact(url: str) -> str:
    """``url`` with its secrets replaced by ``**`` (for messages, logs and ``imsim config``): the password of the
    userinfo, read up to the *last* ``@`` as redis-py does (``redis://:p@ss@host`` holds the password ``p@ss``),
    a bare token as userinfo, and query parameters that carry secrets (``?password=``, ``?token=`` ...)."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^/]*:)[^/]*@", r"\1**@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:**@{host}" if sep else f"**@{host}"
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode([(k, "**" if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read from the environment and the env file (cached)."""
    return load()
