"""The one typed vocabulary of imsim's requests and answers, declared once and spoken by every door.

A search's filters, its parameters, ingest options, a duplicates query and what comes back (a hit, a page of hits, a
job's status, duplicate groups) are Pydantic models here. The CLI builds them from its options (whose names and help
are these fields'), the HTTP API takes them whole (query, form and JSON bodies: FastAPI's parameter models) and answers
with them (``response_model``: the OpenAPI document in docs/openapi.json is generated from them), and the
:class:`~imsim.client.Client` and :class:`~imsim.client.RemoteClient` take and return them. So a field exists once,
validates the same way everywhere (one message naming it: the CLI exits 2, the API answers 422 ``invalid``), and a
date is a date at every door. ``tests/test_vocabulary.py`` walks the doors and fails on a name only one of them has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from .errors import InvalidInput
from .expr import TAG_KEY, Where, check_tags

Fusion = Literal["auto", "rrf", "weighted", "calibrated", "none"]
MAX_PATH = 4096  # bytes a stored path holds (the store's VARCHAR): longer filters can match nothing
MAX_K = 1000  # results one request may ask for (the CLI and the Client page further with search_iter)


def when(value: Any) -> float | None:
    """A moment as every door takes it: an ISO date or date-time (``2026-12-01``, ``2026-12-01T08:30``), or Unix seconds
    (a number, or digits), → Unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                return datetime.fromisoformat(text).timestamp()
            except ValueError:
                raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD, YYYY-MM-DDTHH:MM or Unix seconds)") from None
    if not math.isfinite(number):
        raise ValueError(f"not a date: {value!r}")
    return number


def _names(value: Any) -> Any:
    """``"clip, dinov2"`` (as the CLI writes it), ``["clip,dinov2"]`` or ``["clip", "dinov2"]`` (a query string, once or
    repeated) → ``["clip", "dinov2"]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        parts = [part for item in value for part in (item.split(",") if isinstance(item, str) else [item])]
        return [p.strip() if isinstance(p, str) else p for p in parts if not isinstance(p, str) or p.strip()]
    return value


def _page_size(value: int) -> int:
    if value > MAX_K:
        raise ValueError(
            f"at most {MAX_K} results a page: page on with offset, or stream every stored image by similarity with "
            "Client.search_iter"
        )
    return value


Moment = Annotated[float | None, BeforeValidator(when)]
Names = Annotated[list[str], BeforeValidator(_names)]


class Model(BaseModel):
    """A request or answer: unknown fields are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- search ---------------------------------------------------------------------------------------------------------
class Filters(Model):
    """Metadata conditions a search (and duplicates) must meet, ANDed; every value is quoted, never pasted."""

    under: str = Field("", max_length=MAX_PATH, description="Only images at or below this folder (or s3:// prefix).")
    glob: str = Field(
        "", max_length=MAX_PATH, description="Only images whose path matches this glob (* stays in a folder, ** crosses)."
    )
    job: str = Field("", max_length=128, description="Only images written by this ingest job.")
    tag: list[str] = Field(default_factory=list, description="Only images ingested with this key=value tag (repeatable).")
    min_width: int | None = Field(None, ge=0, description="Only images at least this many pixels wide.")
    min_height: int | None = Field(None, ge=0, description="Only images at least this many pixels high.")
    after: Moment = Field(None, description="Only images ingested at or after this moment: YYYY-MM-DD[THH:MM] or Unix seconds.")
    before: Moment = Field(None, description="Only images ingested before this moment: YYYY-MM-DD[THH:MM] or Unix seconds.")
    cluster: int | None = Field(None, ge=0, description="Only images in this topic of a clustering (`imsim clusters`).")
    clustering: str = Field("", max_length=200, description="The clustering cluster= refers to (default: the newest).")
    filter: str = Field(
        "",
        max_length=MAX_PATH,
        description="A raw Milvus expression over the stored fields, ANDed with the above (the API: IMSIM_API_RAW_FILTERS).",
    )

    @field_validator("tag")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for item in value:
            key, sep, _ = item.partition("=")
            if not sep or not TAG_KEY.match(key.strip()):
                raise ValueError(f"tag {item!r} is not key=value (key: letters, digits, '_', '.', '-')")
        return value

    @property
    def tags(self) -> dict[str, str]:
        return {k.strip(): v for k, _, v in (item.partition("=") for item in self.tag)}

    def where(self, ids: Sequence[str] | None = None) -> Where | None:
        """The structured conditions as a :class:`~imsim.expr.Where` (None when there are none); the raw ``filter``
        is passed beside it. ``ids``: the members of ``cluster`` (the client reads them from the store)."""
        if not (self.under or self.glob or self.job or self.tag or self.min_width is not None or self.min_height is not None):
            if self.after is None and self.before is None and self.cluster is None:
                return None
        return Where(
            path_prefix=self.under,
            path_glob=self.glob,
            job=self.job,
            tags=self.tags,
            min_width=self.min_width,
            min_height=self.min_height,
            ingested_after=self.after,
            ingested_before=self.before,
            ids=tuple(ids) if ids is not None else None,
        )


class SearchOptions(Filters):
    """How to search: how many, which models, how to fuse, which page; and the filters."""

    k: Annotated[int, AfterValidator(_page_size)] = Field(
        10,
        ge=1,
        description=f"How many results (a page: at most {MAX_K}; the next page starts at offset).",
        json_schema_extra={"maximum": MAX_K},
    )
    models: Names = Field(default_factory=list, description="Comma-separated model names (default: IMSIM_MODELS).")
    fusion: Fusion | None = Field(
        None, description="auto, rrf, weighted, calibrated or none (default: IMSIM_FUSION, auto: see docs/configuration.md)."
    )
    offset: int = Field(0, ge=0, le=10 * MAX_K, description="Results to skip: the next page starts where the last ended.")


class Hit(Model):
    """One result: the fused score, every model's cosine and rank, and what is stored about the image."""

    id: str
    path: str
    score: float = Field(description="The fused score (the model's cosine when one model answers).")
    scores: dict[str, float] = Field(default_factory=dict, description="Every model's cosine similarity.")
    ranks: dict[str, int | None] = Field(default_factory=dict, description="Every model's own rank (None: not in its top k).")
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    mtime: float | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Hits(Model):
    """A page of results, and how they were made."""

    hits: list[Hit]
    models: list[str]
    fusion: str = Field(description="The fusion used (auto resolved).")
    offset: int = 0
    k: int = 10
    more: bool = Field(False, description="Whether another page may follow (as many results as asked for came back).")
    random_weights: list[str] = Field(default_factory=list, description="Models whose weights are random: meaningless.")
    ms: float | None = None


class Compared(Model):
    """Two images compared: each model's cosine similarity."""

    scores: dict[str, float]
    random_weights: list[str] = Field(default_factory=list)


# --- ingest and jobs ------------------------------------------------------------------------------------------------
class IngestOptions(Model):
    """How to ingest: what to re-embed, and the tags every row of the job gets."""

    force: bool = Field(False, description="Re-embed even files stored unchanged.")
    checksum: bool = Field(False, description="Compare contents, never trust size and mtime.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Tags stored with every image of the job, merged into its tags (a key given replaces its value, other "
        "keys stay); images stored unchanged are re-tagged without being re-embedded. Filter with search's tag.",
    )

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> dict[str, str]:
        try:
            return check_tags(value)
        except InvalidInput as exc:
            raise ValueError(str(exc).removeprefix("tags: ")) from None


class IngestRequest(IngestOptions):
    """Server-side paths to queue (the API: only under IMSIM_ALLOWED_ROOTS)."""

    paths: list[str] = Field(min_length=1, max_length=10_000, description="Files, folders, globs or s3:// prefixes.")


class Queued(Model):
    job: str = Field(description="The job id (`imsim status JOB`, GET /v1/jobs/JOB).")


class Retried(Model):
    job: str | None = Field(description="The new job holding the failed files (None: nothing failed).")


class Failure(Model):
    path: str
    reason: str


class JobStatus(Model):
    """A job as a user reads it: counts (O(1) whatever its size), summaries and state."""

    id: str
    total: int
    done: int
    failed: int
    skipped: int
    chunks: int
    chunks_done: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    inputs: list[str] = Field(description="The first inputs by name (inputs_count in all).")
    models: list[str]
    failures: dict[str, str] = Field(default_factory=dict, description="path -> reason: the first failures read.")
    retry_of: str = ""
    retried_by: str = ""
    collections: dict[str, str] = Field(default_factory=dict, description="model -> the collection the workers wrote.")
    cancelled: int = 0
    cancelled_at: float | None = None
    in_progress: int = 0
    skipped_files: dict[str, int] = Field(default_factory=dict, description="Files left out of the inputs, by reason.")
    unmatched: list[str] = Field(default_factory=list)
    splits: int = 0
    running: dict[str, dict[str, Any]] = Field(default_factory=dict)
    inputs_count: int = 0
    unmatched_count: int = 0
    path_list: dict[str, Any] = Field(default_factory=dict)
    queuing: bool = False
    enqueue_error: str = ""
    read_bytes: int = 0
    updated: int = 0
    reasons_folded: int = Field(
        0, description="Failures whose reason was kept by its kind only: past the job's cap on distinct reason texts."
    )
    expires_at: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.failed - self.skipped - self.cancelled, 0)

    @property
    def settled(self) -> int:
        """Files with an outcome, including those settled inside running chunks (for progress displays)."""
        return min(self.total, self.done + self.failed + self.skipped + self.cancelled + self.in_progress)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> str:
        if self.cancelled_at:
            return "cancelled" if self.finished_at else "cancelling"
        if self.finished_at:
            return "finished" if not self.failed else "finished_with_failures"
        if self.queuing:
            return "queuing"
        return "running" if self.started_at else "queued"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


# --- duplicates -----------------------------------------------------------------------------------------------------
class DuplicatesOptions(Model):
    """Which near-duplicate groups: the model, the threshold (or where it comes from), the folder, a page."""

    model: str = Field("", description="A model, or 'fused' (default: the copy model: sscd, else dinov2, else fused).")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, allow_inf_nan=False, description="Similarity at or above which two images are duplicates."
    )
    precision: float = Field(0.95, description="Which calibrated threshold to use: 0.9 or 0.95.")
    under: str = Field("", max_length=MAX_PATH, description="Only images under this folder.")
    neighbours: int = Field(16, ge=1, le=256, description="Nearest images checked per image.")
    show: Literal["open", "decided", "all"] = Field(
        "open", description="Which groups: open (not every member decided yet), decided, or all."
    )
    order: Literal["size", "score"] = Field("size", description="Largest groups first, or the most similar first.")
    keep: Literal["largest", "oldest", "newest", "smallest"] = Field(
        "largest",
        description="Which member to suggest keeping: the most pixels (then bytes), the oldest, the newest, the smallest.",
    )
    offset: int = Field(0, ge=0, description="Groups to skip.")
    limit: int = Field(50, ge=1, le=500, description="Groups per page.")

    @field_validator("precision")
    @classmethod
    def _calibrated(cls, value: float) -> float:
        if value not in (0.9, 0.95):
            raise ValueError(f"{value!r}: the calibrated precisions are 0.9 and 0.95")
        return value


class Member(Model):
    """An image in a group, with what a person decides by (when the store holds it)."""

    id: str
    path: str
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    mtime: float | None = Field(None, description="The file's modification time, Unix seconds.")
    ingested_at: int | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    decision: str | None = Field(None, description="keep or duplicate, once the group was resolved.")
    keeper: str | None = Field(None, description="The id kept, once the group was resolved.")


class Link(Model):
    a: str
    b: str
    score: float


class Group(Model):
    size: int
    best_score: float
    members: list[Member]
    edges: list[Link]
    suggested: str | None = Field(None, description="The member the keep rule suggests keeping.")
    decided: bool = Field(False, description="Every member has a decision.")


class ResolveRequest(Model):
    """Resolve a group: keep one member; the others are recorded as its duplicates (no file is touched)."""

    keep: str = Field(pattern=r"^[0-9a-f]{32}$", description="The id kept.")
    members: list[str] = Field(min_length=2, max_length=1000, description="Every member of the group, the keeper included.")

    @model_validator(mode="after")
    def _member(self) -> ResolveRequest:
        if self.keep not in self.members:
            raise ValueError("keep must be one of the members")
        if any(len(m) != 32 or any(c not in "0123456789abcdef" for c in m) for m in self.members):
            raise ValueError("members are stored image ids (32 hex characters)")
        return self


class Decided(Model):
    id: str
    decision: str
    keeper: str
    path: str
    keeper_path: str
    sha256: str
    decided_at: int


class Resolved(Model):
    decisions: list[Decided]


class UndoRequest(Model):
    keep: str = Field(pattern=r"^[0-9a-f]{32}$", description="The keeper of the group to reopen.")


class Undone(Model):
    forgotten: int


class Groups(Model):
    model: str
    threshold: float
    threshold_source: str
    total: int
    groups: list[Group]
    random_weights: list[str] = Field(default_factory=list, description="Models whose weights are random: meaningless.")


class MarkRequest(Model):
    a: str = Field(pattern=r"^[0-9a-f]{32}$", description="A stored image's id.")
    b: str = Field(pattern=r"^[0-9a-f]{32}$", description="Another stored image's id.")

    @model_validator(mode="after")
    def _two(self) -> MarkRequest:
        if self.a == self.b:
            raise ValueError("a and b are the same image: a mark is between two")
        return self


class Marked(Model):
    marked: list[str]


# --- topics ---------------------------------------------------------------------------------------------------------
class ClusterRequest(Model):
    """Cluster a model's stored images into topics (k-means over its active version's vectors)."""

    model: str = Field("", description="The model whose vectors are clustered (default: the first of IMSIM_MODELS).")
    k: int | None = Field(None, ge=2, le=10_000, description="How many topics (default: about the square root of half the rows).")
    seed: int = Field(0, ge=0, description="The k-means seed: the same rows, k and seed give the same topics.")
    sample: int = Field(100_000, ge=100, le=2_000_000, description="Rows the centres are learned from, at most.")
    prompts: list[str] = Field(
        default_factory=list, description="Labels to name topics by, for a model with a text tower (default: a built-in list)."
    )


class TopicImage(Model):
    id: str
    path: str
    similarity: float = Field(description="Cosine to the topic's centre.")


class Topic(Model):
    cluster: int
    size: int
    label: str = Field("", description="The nearest label, when a model has a text tower: a guess.")
    nearest: list[TopicImage] = Field(description="The images nearest the centre: what the topic is.")
    outliers: list[TopicImage] = Field(description="Its farthest members: the odd ones out.")


class Topics(Model):
    name: str = Field(description="The clustering: COLLECTION:kK:sSEED (filter a search with clustering= and cluster=).")
    collection: str
    k: int
    seed: int
    rows: int
    sample: int
    fit: dict[int, float] = Field(default_factory=dict, description="k -> mean cosine of the sample to its centre.")
    seconds: float = 0.0
    made_at: str = ""
    labelled: bool = False
    map: list[list[float]] = Field(default_factory=list, description="Each centre in two dimensions (PCA), by cluster.")
    topics: list[Topic] = Field(description="Largest first.")


# --- errors -------------------------------------------------------------------------------------------------------
class ErrorBody(Model):
    """Every error the API answers: one line, and its kind (invalid, not_found, too_large, unauthorized, timeout ...)."""

    error: str
    kind: str


# --- health ---------------------------------------------------------------------------------------------------------
class Alive(Model):
    status: Literal["ok"] = "ok"


class Readiness(Model):
    ready: bool = Field(description="Ready for what this deployment needs (IMSIM_API_READY_NEEDS).")
    search: bool = Field(description="Models loaded and the store reachable: searches answer.")
    queueing: bool = Field(description="Redis reachable: jobs can be queued and followed.")
    models: str
    store: str
    redis: str
    checked_at: float = Field(default_factory=time.time)


def check(model: type[Model], values: dict[str, Any], door: str = "") -> Any:
    """``model`` made from ``values``, or an :class:`~imsim.errors.InvalidInput` naming the first field that is wrong, in
    one line (how the CLI and the Client report what the API answers as 422)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidInput(f"{door}{field}: {message}" if field else message) from None
