"""Collections and model versions: one collection per model version (``PREFIX_MODEL_TAG``), created with imsim's
schema and index, its dimension checked so existing data is never mixed; the alias ``PREFIX_MODEL`` that names the
version queries use; what each collection says of itself (Attu's descriptions, properties, summaries)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import DimensionMismatch, StoreError, StoreUnavailable
from ..models.base import FamilyConfig, ModelInfo
from . import indexes
from .connection import Connection
from .schema import FIELDS, METRIC, PROPERTY_PREFIX, VECTOR, describe_version, vector_description, version_properties

log = logging.getLogger(__name__)


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


class Versions:
    """Collections, versions and aliases (see the module doc), over one :class:`Connection`."""

    def __init__(self, connection: Connection):
        self.conn = connection
        self._indexes: dict[str, tuple[str, dict[str, Any]]] = {}
        self._fields: dict[str, frozenset[str]] = {}

    # --- collections and versions ---------------------------------------------------
    def collection_name(self, info: ModelInfo) -> str:
        """The collection of one model version: ``PREFIX_MODEL_TAG``. The tag comes right after the model name, so
        two versions differ within the first ~20 characters (what Attu's list shows)."""
        return f"{self.conn.config.collection_prefix}_{info.name}_{info.version_tag}"

    def alias_name(self, model: str) -> str:
        """The alias that names the version of ``model`` queries use: ``PREFIX_MODEL``."""
        return f"{self.conn.config.collection_prefix}_{model}"

    def active_collection(self, model: str) -> str | None:
        """The collection ``model``'s alias points at, or None when it has none yet."""
        try:
            return str(self.conn.call("describe_alias", self.alias_name(model))["collection_name"])
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
            self.conn.call("create_alias", collection, self.alias_name(model))
        else:
            self.conn.call("alter_alias", collection, self.alias_name(model))

    def index_for(self, dim: int) -> tuple[str, dict[str, Any]]:
        """The index (type, build params) a new ``dim``-d collection gets here, under this store's settings."""
        if self.conn.lite_backend and self.conn.config.index_type == "auto":
            return indexes.build("HNSW", dim, self.conn.config)
        return indexes.build(self.conn.config.index_type, dim, self.conn.config)

    def ensure_collection(self, info: ModelInfo) -> str:
        """Create the model version's collection if needed (and the model's alias, if it has none); refuse a dimension clash."""
        name = self.collection_name(info)
        if self.conn.call("has_collection", name):
            stored = self.dimension(name)
            if stored != info.dim:
                raise DimensionMismatch(name, stored, info.dim)
            self.conn.load(name)
            self._ensure_alias(info.name, name)
            return name
        index_type, params = self.index_for(info.dim)
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
        index_params = self.conn.client.prepare_index_params()
        index_params.add_index(field_name=VECTOR, index_type=index[0], metric_type=METRIC, params=index[1])
        self.conn.call(
            "create_collection",
            name,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            properties=properties,
        )
        self.conn.load(name)

    def _ensure_alias(self, model: str, collection: str) -> None:
        """The first version of a model becomes its active one; later versions wait for `imsim models activate`."""
        if self.active_collection(model) is None:
            try:
                self.conn.call("create_alias", collection, self.alias_name(model))
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

    def describe(self, name: str) -> dict[str, Any]:
        return dict(self.conn.call("describe_collection", name))

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
        prefix = self.conn.config.collection_prefix + "_"
        return sorted(c for c in self.conn.call("list_collections") if c.startswith(prefix))

    def drop(self, name: str) -> None:
        """Drop one of imsim's collections (its alias, if it has one, first)."""
        if not name.startswith(self.conn.config.collection_prefix + "_"):
            raise StoreError(f"refusing to drop {name!r}: not one of this prefix's collections")
        model = self.properties(name).get("model", "") if name in self.collections() else ""
        if model and self.active_collection(model) == name:
            self.conn.call("drop_alias", self.alias_name(model))
        self.conn.call("drop_collection", name)
        self.conn.loaded.discard(name)

    def describe_index(self, name: str) -> tuple[str, dict[str, Any]]:
        """The vector index's type and build parameters (cached: an index does not change under a collection)."""
        if name not in self._indexes:
            described = dict(self.conn.call("describe_index", name, VECTOR))
            params = described.get("params")
            if not isinstance(params, dict):  # a server flattens the build parameters into the description
                params = {key: described[key] for key in ("nlist", "M", "efConstruction", "m", "nbits") if key in described}
            self._indexes[name] = (str(described.get("index_type", "")), params)
        return self._indexes[name]

    def index_state(self, name: str) -> dict[str, Any]:
        """The vector index's build state (``indexed_rows``, ``pending_index_rows``, ``total_rows`` on a server)."""
        return dict(self.conn.call("describe_index", name, VECTOR))
