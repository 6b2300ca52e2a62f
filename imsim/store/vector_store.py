"""The connection to Milvus and the operations imsim needs, the same on a Milvus Lite file, a Milvus Lite server
and a real Milvus server.

Owns index choice, the dimension check that protects existing data, model versions (each version its own
collection ``PREFIX_MODEL_TAG``; the alias ``PREFIX_MODEL`` names the version queries use), the backend's
filter dialect and top-k cap, paging past the cap, and turning every pymilvus error into a typed one
(:mod:`imsim.store.failures`). The schema is :mod:`imsim.store.schema`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .. import expr
from ..errors import DimensionMismatch, ImsimError, StoreError, StoreUnavailable
from ..models.base import FamilyConfig, ModelInfo
from ..settings import Consistency, Settings, redact
from .failures import is_released, is_transient, message, quiet_clients
from .schema import FIELDS, METRIC, PK, PROPERTY_PREFIX, VECTOR, describe_version, vector_description, version_properties

# gRPC's C core prints keepalive notices ("GOAWAY ... too_many_pings") from Milvus Lite's server to stderr;
# failed calls still raise, so they are silenced unless the user asks for gRPC logs.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

log = logging.getLogger(__name__)
SEARCH_CAP = 16_384  # Milvus's top-k limit per search; deeper result lists page with a search iterator
ITERATOR_BATCH = 4_000  # hits per iterator page (larger pages were slower on Milvus Lite)
ITERATOR_V2 = (2, 5, 2)  # first Milvus with the server-side search iterator; v1 (client-side range searches)
# stopped early on HNSW: 2,718 of 17,000 hits on Milvus 2.3.5, measured
GET_BATCH = 1_000  # ids per get request (a request carries an "id in [...]" expression)
UPSERT_BATCH = 1_000


@dataclass(frozen=True)
class StoredHit:
    id: str
    score: float
    fields: dict[str, Any]


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    rows: int
    dim: int
    model: str
    source: str
    revision: str
    index: str
    variant: str = ""
    version: str = ""
    active: bool = False  # the model's alias points at this collection: queries use it


class VectorStore:
    """A connection to Milvus plus imsim's conventions for its collections. Use it as a context manager."""

    def __init__(self, settings: Settings):
        from pymilvus import MilvusClient

        quiet_clients()
        self.settings = settings
        self.uri = settings.resolved_milvus_uri  # may hold credentials: messages use self.where
        self.where = redact(self.uri)
        self.is_lite = settings.is_milvus_lite_file
        kwargs: dict[str, Any] = {}
        if settings.milvus_token.get_secret_value():
            kwargs["token"] = settings.milvus_token.get_secret_value()
        if settings.milvus_db:
            kwargs["db_name"] = settings.milvus_db
        if self.is_lite:
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A server's channel can be refused for a moment (restart, gRPC GOAWAY): three short retries, then give up.
        for delay in (0.5, 1.0, 2.0, None):
            try:
                self.client = MilvusClient(self.uri, **kwargs)
                break
            except Exception as exc:  # pymilvus raises several unrelated types here
                if self.is_lite:
                    raise StoreError(
                        f"cannot open the Milvus Lite store {self.where}: {message(exc)}. A Milvus Lite store "
                        "can be open in one process only: is another imsim (a worker, `imsim store serve`) using "
                        "it? Then point IMSIM_MILVUS_URI at that server."
                    ) from None
                if delay is None or not is_transient(exc):
                    kind = StoreUnavailable if is_transient(exc) else StoreError
                    raise kind(f"cannot open Milvus at {self.where}: {message(exc)}") from None
                time.sleep(delay)
        self._loaded: set[str] = set()
        self._index_types: dict[str, str] = {}
        self._fields: dict[str, frozenset[str]] = {}
        self._version: str | None = None

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, operation: str, *args: Any, _reload: bool = True, **kwargs: Any) -> Any:
        """Run one MilvusClient call; its errors become :class:`StoreError` (or :class:`StoreUnavailable`)."""
        try:
            return getattr(self.client, operation)(*args, **kwargs)
        except Exception as exc:  # pymilvus and grpc errors; everything else is a bug and is re-raised below
            import grpc
            from pymilvus.exceptions import MilvusException

            if not isinstance(exc, (MilvusException, grpc.RpcError)):
                raise
            if _reload and is_released(exc) and args and operation != "load_collection":
                # A restarted Milvus (Lite especially) comes back with collections released: load, try once more.
                self._loaded.discard(args[0])
                self._load(args[0])
                return self._call(operation, *args, _reload=False, **kwargs)
            if is_transient(exc):
                raise StoreUnavailable(
                    f"Milvus at {self.where} is unreachable or restarting during {operation}: {message(exc)}"
                ) from None
            raise StoreError(f"Milvus refused {operation}: {message(exc)}") from None

    # --- collections and versions ---------------------------------------------------
    def collection_name(self, info: ModelInfo) -> str:
        """The collection of one model version: ``PREFIX_MODEL_TAG``. The tag comes right after the model name, so
        two versions differ within the first ~20 characters (what Attu's list shows)."""
        return f"{self.settings.collection_prefix}_{info.name}_{info.version_tag}"

    def alias_name(self, model: str) -> str:
        """The alias that names the version of ``model`` queries use: ``PREFIX_MODEL``."""
        return f"{self.settings.collection_prefix}_{model}"

    def active_collection(self, model: str) -> str | None:
        """The collection ``model``'s alias points at, or None when it has none yet."""
        try:
            return str(self._call("describe_alias", self.alias_name(model))["collection_name"])
        except StoreUnavailable:
            raise
        except StoreError:
            return None  # no such alias

    def activate(self, model: str, collection: str) -> None:
        """Point ``model``'s alias at ``collection`` (queries switch at once; nothing is re-ingested or deleted)."""
        if collection not in self.collections():
            raise StoreError(f"no collection {collection!r} (see `imsim models`)")
        owner = self.properties(collection).get("model")
        if owner != model:
            raise StoreError(f"collection {collection!r} holds {owner!r} vectors, not {model!r}")
        if self.active_collection(model) is None:
            self._call("create_alias", collection, self.alias_name(model))
        else:
            self._call("alter_alias", collection, self.alias_name(model))

    def _index_params(self) -> tuple[str, dict[str, Any]]:
        index = self.settings.index_type
        if index == "auto":
            index = "HNSW"
        if index == "HNSW":
            return index, {"M": self.settings.hnsw_m, "efConstruction": self.settings.hnsw_ef_construction}
        if index == "IVF_FLAT":
            return index, {"nlist": 1024}
        return index, {}

    def ensure_collection(self, info: ModelInfo) -> str:
        """Create the model version's collection if needed (and the model's alias, if it has none); refuse a dimension clash."""
        name = self.collection_name(info)
        if self._call("has_collection", name):
            stored = self.dimension(name)
            if stored != info.dim:
                raise DimensionMismatch(name, stored, info.dim)
            self._load(name)
            self._ensure_alias(info.name, name)
            return name
        index_type, params = self._index_params()
        self.create_version(
            name,
            info.dim,
            description=describe_version(info, index_type, params),
            vector_doc=vector_description(info, index_type),
            index=(index_type, params),
            properties=version_properties(info, index_type, params),
        )
        self._ensure_alias(info.name, name)
        return name

    def create_version(
        self,
        name: str,
        dim: int,
        *,
        description: str,
        vector_doc: str,
        index: tuple[str, dict[str, Any]],
        properties: dict[str, str],
    ) -> None:
        """Create one version's collection with imsim's schema (:data:`~imsim.store.schema.FIELDS` + the vector), its
        description, index and ``imsim.*`` properties, and load it."""
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True, description=description)
        for field, dtype, kwargs, field_doc in FIELDS:
            schema.add_field(field, getattr(DataType, dtype), description=field_doc, **kwargs)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim, description=vector_doc)
        index_params = self.client.prepare_index_params()
        index_params.add_index(field_name=VECTOR, index_type=index[0], metric_type=METRIC, params=index[1])
        self._call(
            "create_collection",
            name,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            properties=properties,
        )
        self._load(name)

    def _ensure_alias(self, model: str, collection: str) -> None:
        """The first version of a model becomes its active one; later versions wait for `imsim models activate`."""
        if self.active_collection(model) is None:
            try:
                self._call("create_alias", collection, self.alias_name(model))
            except StoreError:
                if self.active_collection(model) is None:  # not a race with another process: a real failure
                    raise

    def model_config(self, collection: str, config_class: type[FamilyConfig]) -> FamilyConfig | None:
        """The family config that reloads the model ``collection`` was written with (validated), or None if unknown.

        Collections written before configs were per family stored flat ``IMSIM_*`` fields (``clip_model`` ...)."""
        props = self.properties(collection)
        try:
            if props.get("config"):
                return config_class.model_validate(json.loads(props["config"]))
            if props.get("settings"):  # the older, flat form
                model = props.get("model", "")
                flat = json.loads(props["settings"])
                return config_class.model_validate({k[len(model) + 1 :]: v for k, v in flat.items() if k.startswith(model + "_")})
        except ValueError as exc:
            raise StoreError(f"collection {collection!r} stores a model config imsim cannot read: {exc}") from None
        return None

    def _load(self, name: str) -> None:
        if name not in self._loaded:
            self._call("load_collection", name)  # a reopened Lite file starts unloaded
            self._loaded.add(name)

    def describe(self, name: str) -> dict[str, Any]:
        return dict(self._call("describe_collection", name))

    def properties(self, name: str) -> dict[str, str]:
        props = self.describe(name).get("properties", {}) or {}
        return {k[len(PROPERTY_PREFIX) :]: v for k, v in props.items() if k.startswith(PROPERTY_PREFIX)}

    def fields(self, name: str) -> frozenset[str]:
        """The collection's field names (filters may name only these)."""
        if name not in self._fields:
            self._fields[name] = frozenset(f["name"] for f in self.describe(name)["fields"])
        return self._fields[name]

    def dimension(self, name: str) -> int:
        for field in self.describe(name)["fields"]:
            if field["name"] == VECTOR:
                return int(field["params"]["dim"])
        raise StoreError(f"collection {name!r} has no {VECTOR!r} field; it was not created by imsim")

    def collections(self) -> list[str]:
        prefix = self.settings.collection_prefix + "_"
        return sorted(c for c in self._call("list_collections") if c.startswith(prefix))

    def drop(self, name: str) -> None:
        """Drop one of imsim's collections (its alias, if it has one, first)."""
        if not name.startswith(self.settings.collection_prefix + "_"):
            raise StoreError(f"refusing to drop {name!r}: not one of this prefix's collections")
        model = self.properties(name).get("model", "") if name in self.collections() else ""
        if model and self.active_collection(model) == name:
            self._call("drop_alias", self.alias_name(model))
        self._call("drop_collection", name)
        self._loaded.discard(name)

    def summaries(self) -> list[CollectionSummary]:
        """Every imsim collection (every model version) with its row count and whether queries use it."""
        out = []
        active: dict[str, str | None] = {}
        for name in self.collections():
            props = self.properties(name)
            model = props.get("model", "?")
            if model not in active:
                active[model] = self.active_collection(model)
            out.append(
                CollectionSummary(
                    name,
                    self.count(name),
                    self.dimension(name),
                    model,
                    props.get("source", "?"),
                    props.get("revision", "?"),
                    props.get("index", "?"),
                    props.get("variant", ""),
                    props.get("version", ""),
                    active[model] == name,
                )
            )
        return out

    # --- rows --------------------------------------------------------------------
    def upsert(self, name: str, rows: Sequence[dict[str, Any]], batch: int = UPSERT_BATCH) -> int:
        """Insert or overwrite rows by primary key (never a second row for the same image)."""
        written = 0
        for start in range(0, len(rows), batch):
            part = list(rows[start : start + batch])
            written += int(self._call("upsert", name, part)["upsert_count"])
        return written

    def upsert_each(self, name: str, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Upsert ``rows``; a batch Milvus refuses (not an outage) is split until the rows it refuses are found, so
        one bad row fails alone. Returns {path: reason} for the rows not stored; outages raise StoreUnavailable."""
        try:
            self.upsert(name, rows)
            return {}
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if len(rows) == 1:
                return {str(rows[0].get("path", rows[0].get(PK))): f"the store refused the row: {exc}"}
        half = len(rows) // 2
        return {**self.upsert_each(name, rows[:half]), **self.upsert_each(name, rows[half:])}

    def count(self, name: str, filter: str = "", consistency: Consistency = "Strong") -> int:
        """Rows in the collection (matching ``filter``), counted server-side."""
        self._load(name)
        res = self._call("query", name, filter=filter, output_fields=["count(*)"], consistency_level=consistency)
        return int(res[0]["count(*)"])

    def query(
        self,
        name: str,
        filter: str,
        output_fields: Sequence[str] = ("path",),
        *,
        limit: int = 10,
        consistency: Consistency = "Strong",
    ) -> list[dict[str, Any]]:
        """At most ``limit`` rows matching ``filter`` (a bounded query: samples, existence checks)."""
        self._load(name)
        rows = self._call(
            "query", name, filter=filter, output_fields=list(output_fields), limit=limit, consistency_level=consistency
        )
        return [dict(r) for r in rows]

    def delete_where(self, name: str, filter: str) -> int:
        """Delete every row matching ``filter`` server-side (nothing streamed to the client); returns how many there
        were (counted first: Milvus Lite and a server report deletes differently)."""
        present = self.count(name, filter)
        if present:
            self._call("delete", name, filter=filter)
        return present

    @property
    def lite_backend(self) -> bool:
        """Whether the other end is Milvus Lite (a file or its server): no top-k cap there, but its search
        iterator (v1) stops early on HNSW, so imsim pages with plain searches on Lite. Milvus Lite 3 reports
        ``milvus_lite-3.x``; the PyPI ``milvus`` package's embedded standalone server reports ``v2.3.5-lite``
        but is a real Milvus server in every way that matters here (top-k cap, time ticks, duplicating insert)."""
        return self.server_version.lower().startswith("milvus_lite")

    @property
    def server_version(self) -> str:
        """What the other end reports: ``milvus_lite-3.2.2``, ``v2.5.4``, ``v2.3.5-lite`` (PyPI ``milvus``) ..."""
        if self._version is None:
            self._version = str(self._call("get_server_version"))
        return self._version

    @property
    def like_dialect(self) -> expr.LikeDialect:
        """How this backend reads LIKE: Milvus Lite and Milvus >= 2.4 take ``%``/``_`` wildcards with ``\\`` escapes;
        Milvus 2.3 only a trailing ``%`` (prefix match), ``_`` literal, no escapes."""
        if self.lite_backend:
            return "escape"
        found = re.match(r"v?(\d+)\.(\d+)", self.server_version)
        return "prefix" if found and (int(found.group(1)), int(found.group(2))) < (2, 4) else "escape"

    def check_filter(self, name: str, expression: str) -> str:
        """A user's raw expression made safe to AND with imsim's own: one balanced expression naming only fields of
        ``name`` (a :class:`FilterError` otherwise), returned parenthesised."""
        return expr.check_raw(expression, self.fields(name) - {VECTOR})

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        *,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        consistency: Consistency = "Strong",
        ef: int | None = None,
    ) -> list[list[StoredHit]]:
        """Top-k rows per query vector, best first; ``score`` is the cosine similarity. ``ef``: HNSW's search breadth
        (default ``IMSIM_HNSW_EF_SEARCH``; at least k).

        ``k`` above Milvus's cap (16,384) pages through a search iterator on a server (one query vector at
        a time); Milvus Lite has no cap and answers in one search. ``consistency``: every read here defaults
        to Strong (read-your-writes); the query client passes ``IMSIM_SEARCH_CONSISTENCY``."""
        self._load(name)
        vectors = np.asarray(vectors, np.float32)
        if k > SEARCH_CAP:  # never ask for more rows than there are: Milvus Lite allocates for k (k=1e9 was OOM-killed)
            k = max(1, min(k, self.count(name)))
        if k > SEARCH_CAP and not self.lite_backend:
            if not self.has_search_iterator:
                raise StoreError(self._past_cap(k))
            return [
                list(self.search_iter(name, v, limit=k, filter=filter, output_fields=output_fields, consistency=consistency))
                for v in vectors
            ]
        found = self._search(name, vectors, k, filter, output_fields, consistency, ef)
        return self._complete(name, vectors, k, filter, output_fields, consistency, found)

    def _complete(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str,
        output_fields: Sequence[str],
        consistency: Consistency,
        found: list[list[StoredHit]],
    ) -> list[list[StoredHit]]:
        """Exactly k hits wherever k rows match: an HNSW search under a filter that keeps few rows can stop short
        (Milvus Lite returned 2-9 of 10 for a folder of 26 images). A short answer is checked against the count of
        matching rows (one query, only then) and completed by an exact scan of those rows."""
        short = [q for q, hits in enumerate(found) if len(hits) < k]
        if not short:
            return found
        matching = self.count(name, filter, consistency)
        redo = [q for q in short if len(found[q]) < min(k, matching)]
        if redo:
            exact = self.exact_search(name, vectors[redo], k, filter, output_fields, consistency=consistency)
            for q, hits in zip(redo, exact, strict=True):
                found[q] = hits
        return found

    def _search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str,
        output_fields: Sequence[str],
        consistency: Consistency,
        ef: int | None = None,
    ) -> list[list[StoredHit]]:
        params: dict[str, Any] = {"metric_type": METRIC}
        if self.describe_index_type(name) == "HNSW":
            params["params"] = {"ef": max(ef or self.settings.hnsw_ef_search, k)}
        results = self._call(
            "search",
            name,
            data=[v.tolist() for v in vectors],
            limit=k,
            filter=filter,
            output_fields=list(output_fields),
            search_params=params,
            anns_field=VECTOR,
            consistency_level=consistency,
        )
        return [[StoredHit(str(h["id"]), cosine(h["distance"]), dict(h.get("entity") or {})) for h in hits] for hits in results]

    def search_iter(
        self,
        name: str,
        vector: np.ndarray,
        *,
        limit: int = -1,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        batch: int = ITERATOR_BATCH,
        consistency: Consistency = "Strong",
    ) -> Iterator[StoredHit]:
        """Every row (or the first ``limit``) by similarity to ``vector``, best first, fetched page by page:
        a Milvus search iterator on a server (v2: Milvus >= 2.5.2), deepening plain searches on Milvus Lite and
        on older servers (which stop with a clear error at the 16,384 cap rather than return a short list)."""
        self._load(name)
        vector = np.asarray(vector, np.float32)
        if self.lite_backend or not self.has_search_iterator:
            cap = None if self.lite_backend else SEARCH_CAP
            yield from self._deepening(name, vector, limit, filter, output_fields, batch, consistency, cap)
            return
        params: dict[str, Any] = {"metric_type": METRIC}
        if self.describe_index_type(name) == "HNSW":
            params["params"] = {"ef": max(self.settings.hnsw_ef_search, min(batch, SEARCH_CAP))}
        iterator = self._call(
            "search_iterator",
            name,
            data=[vector.tolist()],
            batch_size=batch,
            limit=limit,
            filter=filter,
            output_fields=list(output_fields),
            anns_field=VECTOR,
            search_params=params,
            consistency_level=consistency,
        )
        for page in _pages(iterator, f"Milvus search iterator over {name!r}"):
            for h in page:
                yield StoredHit(str(h["id"]), cosine(h["distance"]), dict(h.get("entity") or {}))

    def _deepening(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        filter: str,
        output_fields: Sequence[str],
        batch: int,
        consistency: Consistency,
        cap: int | None,
    ) -> Iterator[StoredHit]:
        """Pages of plain searches, each deeper than the last (batch, 2 x batch, 4 x batch ... at most ``cap``): what a
        search returns that was not yielded before is yielded, best first, so every row comes once (a deeper
        approximate search does not return the same first rows in the same order: slicing it by position repeated
        some and dropped others). When the searches run dry, the rows the filter matches are counted, and any the
        index never returned are found by an exact scan and yielded last, so every matching row comes."""
        seen: set[str] = set()
        depth = batch
        while True:
            want = depth if limit < 0 else min(depth, limit)
            if cap is not None and want > cap:
                if len(seen) < cap:
                    want = cap
                else:
                    raise StoreError(self._past_cap(limit))
            hits = self._search(name, vector[None], want, filter, output_fields, consistency, ef=2 * want)[0]
            exhausted = len(hits) < want
            # the tail of an approximate search is its least reliable part: yield the first half of each search (the
            # next, twice as deep, confirms the rest) and everything once the searches run dry
            sure = hits if exhausted or (limit >= 0 and want >= limit) else hits[: max(len(hits) // 2, len(seen) + 1)]
            for hit in sure:
                if hit.id not in seen:
                    seen.add(hit.id)
                    yield hit
                    if 0 <= limit <= len(seen):
                        return
            if exhausted or (limit >= 0 and want >= limit):
                break
            depth *= 2
        missing = self.count(name, filter, consistency) - len(seen)
        if missing > 0:
            wanted = missing if limit < 0 else min(missing, limit - len(seen))
            yield from self.exact_search(name, vector[None], wanted, filter, output_fields, exclude=seen)[0]

    def exact_search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        *,
        exclude: set[str] | frozenset[str] = frozenset(),
        consistency: Consistency = "Strong",
    ) -> list[list[StoredHit]]:
        """Top-k rows per query vector by an exact scan of the rows ``filter`` matches (streamed, one batch in memory):
        what an approximate index missed. Rows in ``exclude`` are left out. Cost: reading those rows' vectors."""
        vectors = np.asarray(vectors, np.float32)
        best: list[list[tuple[float, str, dict[str, Any]]]] = [[] for _ in vectors]
        fields = [f for f in output_fields if f != VECTOR]
        for rows in self.iter_rows(name, filter, output_fields=[*fields, VECTOR], batch=4000, consistency=consistency):
            rows = [r for r in rows if str(r[PK]) not in exclude]
            if not rows:
                continue
            scores = vectors @ np.asarray([r[VECTOR] for r in rows], np.float32).T
            for q, row_scores in enumerate(scores):
                top = np.argsort(-row_scores, kind="stable")[:k]
                merged = best[q] + [(float(row_scores[j]), str(rows[j][PK]), rows[j]) for j in top]
                best[q] = sorted(merged, key=lambda t: (-t[0], t[1]))[:k]
        return [
            [StoredHit(i, cosine(score), {f: row[f] for f in fields if f in row}) for score, i, row in found] for found in best
        ]

    @property
    def search_cap(self) -> int | None:
        """The largest k one search may ask for (None: no cap, Milvus Lite)."""
        return None if self.lite_backend else SEARCH_CAP

    @property
    def has_search_iterator(self) -> bool:
        """Whether the server pages past the top-k cap with a server-side search iterator (Milvus >= 2.5.2)."""
        return not self.lite_backend and has_iterator_v2(self.server_version)

    def _past_cap(self, k: int) -> str:
        more = "every result" if k < 0 else f"{k:,} results"
        return (
            f"{more} asked for, past Milvus's top-k cap of {SEARCH_CAP:,}: this server ({self.server_version}) "
            f"has no search iterator v2 (Milvus >= {'.'.join(map(str, ITERATOR_V2))}); upgrade it, or ask for fewer"
        )

    def describe_index_type(self, name: str) -> str:
        if name not in self._index_types:
            self._index_types[name] = str(self._call("describe_index", name, VECTOR).get("index_type", ""))
        return self._index_types[name]

    def index_state(self, name: str) -> dict[str, Any]:
        """The vector index's build state (``indexed_rows``, ``pending_index_rows``, ``total_rows`` on a server)."""
        return dict(self._call("describe_index", name, VECTOR))

    def flush(self, name: str) -> None:
        """Seal the collection's growing segments so they are indexed: searches over unsealed rows are
        brute force on Milvus Lite (2.5 s vs 0.26 s per search at 30k × 768 rows, measured)."""
        self._call("flush", name)

    def get(
        self, name: str, ids: Sequence[str], output_fields: Sequence[str] = ("path",), consistency: Consistency = "Strong"
    ) -> dict[str, dict[str, Any]]:
        """Stored rows by primary key (absent ids are left out), read Strong unless told otherwise."""
        if not ids:
            return {}
        self._load(name)
        ids = list(ids)
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), GET_BATCH):  # bounded requests, however many ids are asked for
            rows = self._call(
                "get", name, ids=ids[start : start + GET_BATCH], output_fields=list(output_fields), consistency_level=consistency
            )
            out.update((str(r[PK]), dict(r)) for r in rows)
        return out

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete rows by primary key; returns how many ids were asked for (Lite and server report differently)."""
        for start in range(0, len(ids), 1000):
            self._call("delete", name, ids=list(ids[start : start + 1000]))
        return len(ids)

    def iter_rows(
        self,
        name: str,
        filter: str = "",
        output_fields: Sequence[str] = ("path",),
        batch: int = 2000,
        consistency: Consistency = "Strong",
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``filter``, in batches of dicts, in primary-key order (a query iterator: no top-k or
        offset cap; its one Strong read is at the start)."""
        self._load(name)
        iterator = self._call(
            "query_iterator",
            name,
            batch_size=batch,
            filter=filter,
            output_fields=list(output_fields),
            consistency_level=consistency,
        )
        for rows in _pages(iterator, f"Milvus query over {name!r}"):
            yield [dict(r) for r in rows]

    def get_vectors(self, name: str, ids: Sequence[str], consistency: Consistency = "Strong") -> dict[str, np.ndarray]:
        rows = self.get(name, ids, output_fields=[VECTOR], consistency=consistency)
        return {i: np.asarray(r[VECTOR], np.float32) for i, r in rows.items()}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection is not an error worth raising
            log.debug("closing the Milvus client failed", exc_info=True)


def cosine(value: float) -> float:
    """A cosine as Milvus reports it, within [-1, 1] (float32 rounding gave 1.0000001 for an image against itself)."""
    return min(1.0, max(-1.0, float(value)))


def has_iterator_v2(version: str) -> bool:
    """Whether a Milvus server reporting ``version`` has the server-side search iterator (>= 2.5.2); a version
    that does not parse (a managed service's own string) is taken to be current."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    return found is None or tuple(int(g) for g in found.groups()) >= ITERATOR_V2


def _pages(iterator: Any, what: str) -> Iterator[list[Any]]:
    """The pages of a pymilvus search or query iterator until it runs dry; its errors become StoreError; always closed."""
    from pymilvus.exceptions import MilvusException

    try:
        while True:
            try:
                page = iterator.next()
            except MilvusException as exc:
                kind = StoreUnavailable if is_transient(exc) else StoreError
                raise kind(f"{what} failed: {exc.message}") from None
            if not page:
                return
            yield page
    finally:
        iterator.close()


def open_store(settings: Settings) -> VectorStore:
    """A :class:`VectorStore`, or the reason it cannot be opened as an :class:`~imsim.errors.ImsimError`."""
    try:
        return VectorStore(settings)
    except ImsimError:
        raise
    except Exception as exc:  # a malformed URI and the like, from pymilvus's own checks
        raise StoreError(f"cannot open Milvus at {redact(settings.resolved_milvus_uri)}: {message(exc)}") from None
