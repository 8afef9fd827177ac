"""Schemas and index parameters, shaped like pymilvus' ``create_schema()`` / ``add_field`` /
``prepare_index_params()`` / ``add_index``, and their protobuf forms.

:class:`CollectionSchema` builds a ``schema_pb2.CollectionSchema``; ``create_collection`` also
accepts a pymilvus ``CollectionSchema`` (anything with ``fields`` whose items have ``name``,
``dtype``, ``params`` ...). :func:`describe_dict` turns a ``DescribeCollectionResponse`` into the
dict pymilvus' ``describe_collection`` returns, key for key. :class:`SchemaInfo` is what the
encoders need to know about a collection (fields by name, primary key, dynamic field).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymilvus import DataType  # pymilvus is already imported by pymilvus.grpc_gen
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from sdk.errors import InvalidArgument

__all__ = [
    "CollectionSchema",
    "DataType",
    "FieldSchema",
    "IndexParams",
    "SchemaInfo",
    "describe_dict",
]

_INT_PARAMS = ("dim", "max_length", "max_capacity")
DYNAMIC_FIELD = "$meta"


@dataclass
class FieldSchema:
    """One field; ``params`` holds type params (``dim``, ``max_length``, ``max_capacity``)."""

    name: str
    dtype: DataType
    is_primary: bool = False
    auto_id: bool = False
    description: str = ""
    nullable: bool = False
    is_partition_key: bool = False
    is_clustering_key: bool = False
    element_type: DataType | None = None
    default_value: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_proto(self) -> schema_pb2.FieldSchema:
        fs = schema_pb2.FieldSchema(
            name=self.name,
            data_type=int(self.dtype),
            description=self.description,
            is_primary_key=self.is_primary,
            autoID=self.auto_id,
            nullable=self.nullable,
            is_partition_key=self.is_partition_key,
            is_clustering_key=self.is_clustering_key,
        )
        if self.element_type is not None:
            fs.element_type = int(self.element_type)
        if self.default_value is not None:
            fs.default_value.CopyFrom(_value_field(self.dtype, self.default_value))
        for k, v in self.params.items():
            key = "mmap.enabled" if k == "mmap_enabled" else str(k)
            fs.type_params.append(common_pb2.KeyValuePair(key=key, value=_param_str(v)))
        return fs


def _param_str(v: Any) -> str:
    if isinstance(v, dict):
        return orjson.dumps(v).decode()
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _value_field(dtype: DataType, value: Any) -> schema_pb2.ValueField:
    kind = {
        DataType.BOOL: "bool_data",
        DataType.INT8: "int_data",
        DataType.INT16: "int_data",
        DataType.INT32: "int_data",
        DataType.INT64: "long_data",
        DataType.FLOAT: "float_data",
        DataType.DOUBLE: "double_data",
        DataType.VARCHAR: "string_data",
    }.get(DataType(dtype))
    if kind is None:
        raise InvalidArgument(f"default_value is not supported for {DataType(dtype).name}")
    return schema_pb2.ValueField(**{kind: value})


class CollectionSchema:
    """A collection schema builder: ``add_field(name, datatype, **kwargs)`` like pymilvus."""

    def __init__(
        self,
        fields: list[FieldSchema] | None = None,
        *,
        auto_id: bool = False,
        enable_dynamic_field: bool = False,
        description: str = "",
        **kwargs: Any,
    ) -> None:
        self.fields: list[FieldSchema] = list(fields or [])
        self.auto_id = auto_id
        self.enable_dynamic_field = enable_dynamic_field
        self.description = description

    def add_field(self, field_name: str, datatype: DataType, **kwargs: Any) -> CollectionSchema:
        """Append a field; returns the schema (chainable, as pymilvus)."""
        known = {
            "is_primary",
            "auto_id",
            "description",
            "nullable",
            "is_partition_key",
            "is_clustering_key",
            "element_type",
            "default_value",
        }
        attrs = {k: v for k, v in kwargs.items() if k in known}
        params = {k: v for k, v in kwargs.items() if k not in known}
        if attrs.get("is_primary") and "auto_id" not in attrs:
            attrs["auto_id"] = self.auto_id
        if "element_type" in attrs and attrs["element_type"] is not None:
            attrs["element_type"] = DataType(attrs["element_type"])
        self.fields.append(FieldSchema(field_name, DataType(datatype), params=params, **attrs))
        return self

    def to_proto(self, collection_name: str) -> schema_pb2.CollectionSchema:
        pb = schema_pb2.CollectionSchema(
            name=collection_name,
            description=self.description,
            autoID=self.auto_id,
            enable_dynamic_field=self.enable_dynamic_field,
        )
        pb.fields.extend(f.to_proto() for f in self.fields)
        return pb


def schema_proto(schema: Any, collection_name: str) -> schema_pb2.CollectionSchema:
    """A protobuf schema from ours or from a pymilvus ``CollectionSchema`` (duck-typed)."""
    if isinstance(schema, CollectionSchema):
        return schema.to_proto(collection_name)
    pb = schema_pb2.CollectionSchema(
        name=collection_name,
        description=getattr(schema, "description", "") or "",
        autoID=bool(getattr(schema, "auto_id", False)),
        enable_dynamic_field=bool(getattr(schema, "enable_dynamic_field", False)),
    )
    for f in schema.fields:
        if getattr(f, "is_dynamic", False):
            continue
        elem = getattr(f, "element_type", None)
        ours = FieldSchema(
            f.name,
            DataType(f.dtype),
            is_primary=bool(f.is_primary),
            auto_id=bool(getattr(f, "auto_id", False)),
            description=getattr(f, "description", "") or "",
            nullable=bool(getattr(f, "nullable", False)),
            is_partition_key=bool(getattr(f, "is_partition_key", False)),
            is_clustering_key=bool(getattr(f, "is_clustering_key", False)),
            element_type=DataType(elem) if elem not in (None, DataType.UNKNOWN) else None,
            params=dict(getattr(f, "params", {}) or {}),
        )
        fpb = ours.to_proto()
        default = getattr(f, "default_value", None)
        if isinstance(default, schema_pb2.ValueField):  # pymilvus keeps a ValueField
            fpb.default_value.CopyFrom(default)
        pb.fields.append(fpb)
    return pb


class IndexParams(list):
    """``prepare_index_params()``: a list of index definitions, filled with ``add_index``."""

    def add_index(
        self, field_name: str, index_type: str = "", index_name: str = "", **kwargs: Any
    ) -> None:
        params = kwargs.pop("params", None) or {}
        if not isinstance(params, dict):
            raise InvalidArgument(f"params must be a dict, got {type(params).__name__}")
        configs = {**params, **kwargs}
        if index_type:
            configs["index_type"] = index_type
        self.append(IndexSpec(field_name, index_name, configs))

    def __iter__(self) -> Iterator[IndexSpec]:
        return super().__iter__()


@dataclass(frozen=True)
class IndexSpec:
    field_name: str
    index_name: str
    configs: dict[str, Any]


def index_specs(index_params: Any) -> list[IndexSpec]:
    """Ours, or pymilvus' ``IndexParams`` (items with ``field_name``/``get_index_configs()``)."""
    out = []
    for p in index_params:
        if isinstance(p, IndexSpec):
            out.append(p)
        else:
            out.append(IndexSpec(p.field_name, p.index_name or "", dict(p.get_index_configs())))
    return out


# --- described schemas --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldInfo:
    name: str
    dtype: int
    field_id: int
    is_primary: bool
    auto_id: bool
    nullable: bool
    has_default: bool
    dim: int
    element_type: int
    is_function_output: bool


@dataclass(frozen=True)
class SchemaInfo:
    """What the request builders need about a collection (from DescribeCollection)."""

    name: str
    fields: tuple[FieldInfo, ...]
    enable_dynamic_field: bool
    update_timestamp: int
    consistency_level: int

    @property
    def by_name(self) -> dict[str, FieldInfo]:
        return {f.name: f for f in self.fields}

    @property
    def primary(self) -> FieldInfo:
        return next(f for f in self.fields if f.is_primary)

    def vector_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields if f.dim > 0]

    @classmethod
    def from_describe(cls, resp: milvus_pb2.DescribeCollectionResponse) -> SchemaInfo:
        fields = []
        for f in resp.schema.fields:
            if f.is_dynamic:
                continue
            tp = {kv.key: kv.value for kv in f.type_params}
            fields.append(
                FieldInfo(
                    name=f.name,
                    dtype=f.data_type,
                    field_id=f.fieldID,
                    is_primary=f.is_primary_key,
                    auto_id=f.autoID,
                    nullable=f.nullable,
                    has_default=f.HasField("default_value")
                    and f.default_value.WhichOneof("data") is not None,
                    dim=int(tp.get("dim", 0) or 0),
                    element_type=f.element_type,
                    is_function_output=f.is_function_output,
                )
            )
        return cls(
            name=resp.collection_name or resp.schema.name,
            fields=tuple(fields),
            enable_dynamic_field=resp.schema.enable_dynamic_field,
            update_timestamp=resp.update_timestamp,
            consistency_level=resp.consistency_level,
        )


def _field_dict(f: schema_pb2.FieldSchema) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for kv in f.type_params:
        if kv.key == "params":
            params["params"] = orjson.loads(kv.value)
        elif kv.key == "mmap.enabled":
            params["mmap_enabled"] = kv.value.lower() != "false"
        elif kv.key in _INT_PARAMS and (
            kv.key == "dim" or f.data_type in (DataType.VARCHAR, DataType.ARRAY)
        ):
            params[kv.key] = int(kv.value)
        else:
            params[kv.key] = kv.value
    d: dict[str, Any] = {
        "field_id": f.fieldID,
        "name": f.name,
        "description": f.description,
        "type": DataType(f.data_type),
        "params": params,
    }
    if f.HasField("default_value") and f.default_value.WhichOneof("data") is not None:
        d["default_value"] = f.default_value
    if f.element_type:
        d["element_type"] = DataType(f.element_type)
    flags = [
        ("is_partition_key", f.is_partition_key),
        ("is_dynamic", f.is_dynamic),
        ("auto_id", f.autoID),
        ("nullable", f.nullable),
        ("is_primary", f.is_primary_key),
        ("is_clustering_key", f.is_clustering_key),
        ("is_function_output", f.is_function_output),
    ]
    d.update({k: True for k, v in flags if v})
    if f.external_field:
        d["external_field"] = f.external_field
    return d


def describe_dict(resp: milvus_pb2.DescribeCollectionResponse) -> dict[str, Any]:
    """The dict pymilvus' ``describe_collection`` returns for this response."""
    fields = [_field_dict(f) for f in resp.schema.fields]
    d: dict[str, Any] = {
        "collection_name": resp.schema.name,
        "auto_id": False,
        "num_shards": resp.shards_num,
        "description": resp.schema.description,
        "fields": fields,
        "functions": [],
        "aliases": list(resp.aliases),
        "collection_id": resp.collectionID,
        "consistency_level": resp.consistency_level,
        "consistency_level_name": common_pb2.ConsistencyLevel.Name(resp.consistency_level),
        "properties": {p.key: p.value for p in resp.properties},
        "num_partitions": resp.num_partitions,
        "enable_dynamic_field": resp.schema.enable_dynamic_field,
        "enable_namespace": resp.schema.enable_namespace,
        "schema_version": resp.schema.version,
    }
    if resp.created_timestamp:
        d["created_timestamp"] = resp.created_timestamp
    if resp.update_timestamp:
        d["update_timestamp"] = resp.update_timestamp
    for f in fields:
        if "auto_id" in f:
            d["auto_id"] = True
            break
    return d
