"""Health checks of a deployment, in plain words: is Redis there and persistent, is Milvus there, do the
configured models load, and do the stored collections match them.

Each check returns :class:`Check` results (ok / warn / fail with a sentence a user can act on);
``imsim doctor`` prints them and exits non-zero when anything failed. Nothing here changes state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, cast

from .errors import ImsimError
from .settings import Settings, redact

if TYPE_CHECKING:
    from .store import VectorStore

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def check_redis(settings: Settings) -> list[Check]:
    from .jobs.health import redis_health

    url = settings.redis_url.get_secret_value()
    checks = [Check(name, cast(Status, status), detail) for name, status, detail in redis_health(url, redact(url))]
    if checks[0].status == "fail":
        return checks
    from .jobs.queue import queue_length

    queued = queue_length(settings)
    checks.append(Check("queue", "ok", f"{queued} chunks waiting on queue '{settings.queue}'"))
    checks.append(_check_workers(settings))
    return checks


def check_fleet(settings: Settings, store: VectorStore | None = None) -> list[Check]:
    """Every worker of the queue embeds with the models (and model settings) this configuration queues jobs for: a
    worker that does not refuses their chunks (they wait, then fail), so a split fleet is a failed check. And each
    worker's settings are compared with those of the version queries use (its model's alias in the store): a worker
    that writes another version writes rows no search reads until that version is activated."""
    from .jobs.queue import Chunk, fleet_identity, worker_answers

    answers = worker_answers(settings)
    if not answers:
        return []
    found = {name: dict(a.get("models") or {}) for name, a in answers.items()}
    wanted = fleet_identity(settings)
    probe = Chunk("", "", [], models=wanted)
    active = _active_identities(store, {m for models in found.values() for m in models}) if store is not None else {}
    checks = []
    for name, models in sorted(found.items()):
        why = probe.mismatch(models)
        if why:
            checks.append(
                Check(
                    f"worker {name}",
                    "fail",
                    f"embeds with {', '.join(models) or 'nothing'}, but jobs queued here use {', '.join(wanted)}: {why}. "
                    f"It refuses their chunks (they wait IMSIM_FLEET_WAIT={settings.fleet_wait}s for another worker, then "
                    "fail); give every worker of a queue the same IMSIM_MODELS and model settings",
                )
            )
        else:
            checks.append(Check(f"worker {name}", "ok", f"embeds with {', '.join(models)}, as jobs queued here do"))
        for root, reason in sorted((answers[name].get("s3") or {}).items()):
            checks.append(Check(f"worker {name} s3 {root}", "fail" if reason else "ok", reason or f"lists {root}"))
        for model, digest in sorted(models.items()):
            collection, stored = active.get(model, ("", ""))
            if stored and stored != digest:
                checks.append(
                    Check(
                        f"worker {name} {model}",
                        "warn",
                        f"its {model} settings differ from those of {collection}, the version queries use: the rows it "
                        f"writes go to another version, searched only once activated (`imsim models activate {model} ...`)",
                    )
                )
    return checks


def _active_identities(store: VectorStore, models: set[str]) -> dict[str, tuple[str, str]]:
    """model -> (its active collection, the settings digest of the config stored on it), as fleet_identity computes."""
    from . import models as registry

    out = {}
    for model in sorted(models):
        collection = store.versions.active_collection(model)
        if collection is None:
            continue
        try:
            config = store.versions.model_config(collection, registry.config_class(model))
        except ImsimError:
            continue
        if config is not None:
            out[model] = (collection, config.digest())
    return out


def _check_workers(settings: Settings) -> Check:
    from .jobs.queue import workers_on_queue

    names = workers_on_queue(settings, timeout=1.5)
    if names is None:
        return Check("workers", "warn", "could not ask the workers over the broker")
    if not names:
        return Check(
            "workers", "warn", f"no worker consumes queue '{settings.queue}': queued jobs wait until one starts (`imsim worker`)"
        )
    return Check("workers", "ok", f"{len(names)} worker(s) on queue '{settings.queue}': {', '.join(names)}")


def check_settings(settings: Settings) -> list[Check]:
    """IMSIM_* variables in the environment that are no setting (a typo silently does nothing)."""
    from .settings import unknown_variables

    return [
        Check("setting " + name, "warn", f"{name} is not an imsim setting{hint}; it is ignored")
        for name, hint in sorted(unknown_variables().items())
    ]


def check_store(settings: Settings) -> tuple[list[Check], VectorStore | None]:
    """Milvus checks; returns (checks, store or None)."""
    from .store import open_store

    try:
        store = open_store(settings)
        names = store.versions.collections()
    except ImsimError as exc:
        return [Check("milvus", "fail", str(exc))], None
    checks = [Check("milvus", "ok", f"Milvus at {store.where} answers; {len(names)} imsim collection(s)")]
    if store.connection.is_lite:
        checks.append(
            Check(
                "milvus lite",
                "warn",
                "a Milvus Lite file can be open in one process only: workers and the CLI "
                "together need `imsim store serve` or a Milvus server (IMSIM_MILVUS_URI)",
            )
        )
    if store.lite_backend:
        warning = lite_envelope_warning({n: store.rows.count(n) for n in names}, settings.lite_warn_rows)
        if warning:
            checks.append(Check("milvus lite size", "warn", warning))
    return checks, store


def lite_envelope_warning(rows: dict[str, int], limit: int) -> str | None:
    """A sentence for Milvus Lite collections past ``limit`` rows (``IMSIM_LITE_WARN_ROWS``, its measured envelope:
    docs/operations.md, `python benchmarks/scale.py lite`), with the way out; None when all fit."""
    over = {name: n for name, n in rows.items() if n > limit}
    if not over:
        return None
    listed = ", ".join(f"{name} ({n:,} rows)" for name, n in sorted(over.items()))
    return (
        f"past Milvus Lite's envelope of {limit:,} rows per collection: {listed}. There, writes fall to "
        "~100-150 rows/s, a search takes 0.1 s or more and memory grows ~1.6 GB per 100k images (docs/operations.md). "
        "Move to a Milvus server without re-embedding: `imsim store copy --to http://HOST:19530`"
    )


def check_models(settings: Settings, store: VectorStore | None) -> list[Check]:
    from .models import load_model
    from .models.base import random_weights

    checks = []
    existing = set(store.versions.collections()) if store is not None else set()
    for name in settings.model_names:
        try:
            info = load_model(name, settings).info
        except ImsimError as exc:
            checks.append(Check(f"model {name}", "fail", str(exc)))
            continue
        except OSError as exc:  # from_pretrained: not found locally and the hub is unreachable
            checks.append(Check(f"model {name}", "fail", f"cannot load {name!r}: {exc}"))
            continue
        checks.append(Check(f"model {name}", "ok", f"{info.source} (revision {info.revision}) loads: {info.dim}-d"))
        if random_weights(info.source):
            checks.append(
                Check(
                    f"model {name} weights",
                    "warn",
                    "RANDOM weights (a demo model built where the model hub was unreachable): every similarity it gives "
                    "means nothing; point IMSIM_" + name.upper() + "_MODEL at real weights",
                )
            )
        if store is None:
            continue
        collection = store.versions.collection_name(info)
        active = store.versions.active_collection(name)
        if collection in existing:
            stored_dim = store.versions.dimension(collection)
            if stored_dim != info.dim:
                checks.append(
                    Check(
                        f"collection {collection}",
                        "fail",
                        f"holds {stored_dim}-d vectors but {name} now produces "
                        f"{info.dim}-d: ingest and search with this model will be refused; use another "
                        "IMSIM_COLLECTION_PREFIX or the model the collection was made with",
                    )
                )
                continue
            checks.append(
                Check(
                    f"collection {collection}",
                    "ok",
                    f"{store.rows.count(collection):,} rows, {stored_dim}-d, written by the configured model version",
                )
            )
        else:
            checks.append(
                Check(f"collection {collection}", "ok", "not created yet: the first ingest with this model version creates it")
            )
        if active is not None and active != collection and store.versions.properties(active).get("derived_from") == collection:
            checks.append(
                Check(
                    f"model {name} version",
                    "ok",
                    f"queries use {active}, whitened from {collection}: ingest writes to both",
                )
            )
        elif active is not None and active != collection:
            props = store.versions.properties(active)
            checks.append(
                Check(
                    f"model {name} version",
                    "warn",
                    f"queries use {active} ({props.get('dim', '?')}-d, {props.get('source', '?')} revision "
                    f"{props.get('revision', '?')}); new ingests go to {collection}. When it holds your images: "
                    f"`imsim models activate {name} {collection}`",
                )
            )
    return checks


def check_sources(settings: Settings) -> list[Check]:
    """Each ``s3://`` allowed root: one LIST of one key from here, with the credentials this process finds (workers
    answer the same check for themselves: ``imsim_identity``)."""
    from .sources import s3

    config = s3.S3Config.from_settings(settings)
    checks = []
    for root in settings.allowed_root_paths:
        if s3.is_uri(root):
            why = s3.check_listable(root, config)
            checks.append(Check(f"s3 {root}", "fail" if why else "ok", why or f"{config.where()} lists {root}"))
    return checks


def run_checks(settings: Settings, *, queue: bool = True, models: bool = True) -> list[Check]:
    """Every check, in order: Redis and workers (unless ``queue`` is False), object-store roots, Milvus, models vs
    collections."""
    checks = check_settings(settings)
    checks += check_redis(settings) if queue else []
    checks += check_sources(settings)
    store_checks, store = check_store(settings)
    checks += store_checks
    if queue:
        checks += check_fleet(settings, store)
    if models:
        checks += check_models(settings, store)
    if store is not None:
        store.close()
    return checks
