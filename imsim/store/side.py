"""Side collections: what the store keeps beside the model versions (marks, artifacts, review decisions), each one small
collection per prefix, outside the namespace of versions, with a schema given as data and a 2-d vector Milvus requires
but nothing searches. Created once, by whichever process needs it first (two at once: the loser finds it made)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StoreError

if TYPE_CHECKING:
    from .vector_store import VectorStore

SIDE_VECTOR_DIM = 2
Field = tuple[str, str, dict[str, Any], str]  # name, DataType name, its arguments, the description Attu shows


def ensure(store: VectorStore, name: str, description: str, fields: list[Field]) -> None:
    """Create collection ``name`` with ``fields`` (and the unused vector) if it does not exist, then load it."""
    from pymilvus import DataType, MilvusClient

    if not store.connection.call("has_collection", name):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
        for field, kind, kwargs, doc in fields:
            schema.add_field(field, getattr(DataType, kind), description=doc, **kwargs)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=SIDE_VECTOR_DIM, description="unused (Milvus needs one)")
        index = store.connection.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        try:
            store.connection.call("create_collection", name, schema=schema, index_params=index, consistency_level="Strong")
        except StoreError:
            if not store.connection.call("has_collection", name):  # not another process creating it at the same moment
                raise
    store.connection.call("load_collection", name)


def row(values: dict[str, Any]) -> dict[str, Any]:
    """A side row: its values and the unused vector."""
    return {**values, "vector": [0.0] * SIDE_VECTOR_DIM}
