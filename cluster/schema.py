"""Canopy's collection schema model: frozen dataclasses, Milvus-compatible in and out.

* :class:`DataType` has Milvus' numbers (``schema_pb2.DataType``), named like pymilvus
  (``DataType.INT64``); ``DataType.X.milvus_name`` is Milvus' own spelling (``"Int64"``) used in
  messages.
* :func:`from_proto` turns the ``schema_pb2.CollectionSchema`` of a CreateCollection request into
  a :class:`CollectionSchema`, validating it as the Milvus proxy does (same rules, same messages,
  see :mod:`cluster.milvus.schema_check`) and assigning field ids from 100 in field order. With
  ``enable_dynamic_field`` it appends the hidden dynamic field ``$meta`` (JSON, ``is_dynamic``)
  with the next id, as Milvus' root coordinator does.
* :meth:`CollectionSchema.to_proto` is what DescribeCollection returns: the fields as sent
  (type params such as ``dim`` / ``max_length`` as key-value strings, in the order sent) plus
  field ids; the dynamic field is left out unless asked for, as Milvus does.
* :meth:`CollectionSchema.to_json` / :meth:`CollectionSchema.from_json` store a schema
  (``"format": 1``); loading does not re-validate.

Canopy serves BOOL, INT8/16/32/64, FLOAT, DOUBLE, VARCHAR, JSON, ARRAY and FLOAT_VECTOR. Other
Milvus types (binary/float16/bfloat16/int8/sparse vectors, TEXT, GEOMETRY, TIMESTAMPTZ, ...),
functions and struct fields are validated where Milvus has rules and then refused with
:class:`~cluster.milvus.status.NotSupportedYet` (code 3000), never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pymilvus.grpc_gen import common_pb2, schema_pb2

from cluster.milvus.status import FieldNotFound, ParameterInvalid

__all__ = [
    "DYNAMIC_FIELD_NAME",
    "MAX_ARRAY_CAPACITY",
    "MAX_DIM",
    "MAX_VARCHAR_LENGTH",
    "MIN_DIM",
    "START_FIELD_ID",
    "SUPPORTED_TYPES",
    "CollectionSchema",
    "DataType",
    "DefaultValue",
    "FieldSchema",
    "from_proto",
    "from_request_bytes",
]

DYNAMIC_FIELD_NAME = "$meta"
START_FIELD_ID = 100  # Milvus common.StartOfUserFieldID
MIN_DIM = 2  # Milvus refuses dim 1 ("should be in range 2 ~ 32768")
MAX_DIM = 32768  # proxy.maxDimension
MAX_VARCHAR_LENGTH = 65535  # proxy.maxVarCharLength
MAX_ARRAY_CAPACITY = 4096
MAX_FIELDS = 64  # proxy.maxFieldNum
MAX_VECTOR_FIELDS = 4  # proxy.maxVectorFieldNum

DefaultValue = bool | int | float | str | bytes | None


class DataType(IntEnum):
    """Milvus data types (numbers of ``schema_pb2.DataType``)."""

    NONE = 0
    BOOL = 1
    INT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    FLOAT = 10
    DOUBLE = 11
    STRING = 20
    VARCHAR = 21
    ARRAY = 22
    JSON = 23
    GEOMETRY = 24
    TEXT = 25
    TIMESTAMPTZ = 26
    MOL = 27
    DATE = 28
    TIME = 29
    DECIMAL = 30
    BINARY_VECTOR = 100
    FLOAT_VECTOR = 101
    FLOAT16_VECTOR = 102
    BFLOAT16_VECTOR = 103
    SPARSE_FLOAT_VECTOR = 104
    INT8_VECTOR = 105
    ARRAY_OF_VECTOR = 106
    ARRAY_OF_STRUCT = 200
    STRUCT = 201

    @property
    def milvus_name(self) -> str:
        """Milvus' spelling (``schemapb.DataType.String()``): ``"Int64"``, ``"FloatVector"``."""
        return schema_pb2.DataType.Name(self.value)

    @property
    def is_vector(self) -> bool:
        return 100 <= self.value < 200

    @property
    def is_dense_vector(self) -> bool:
        return self.is_vector and self not in (
            DataType.SPARSE_FLOAT_VECTOR,
            DataType.ARRAY_OF_VECTOR,
        )


SUPPORTED_TYPES: frozenset[DataType] = frozenset(
    {
        DataType.BOOL,
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.FLOAT,
        DataType.DOUBLE,
        DataType.VARCHAR,
        DataType.JSON,
        DataType.ARRAY,
        DataType.FLOAT_VECTOR,
    }
)
"""Types Canopy stores and serves today."""

ARRAY_ELEMENT_TYPES: frozenset[DataType] = frozenset(
    {
        DataType.BOOL,
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.FLOAT,
        DataType.DOUBLE,
        DataType.VARCHAR,
    }
)

# ValueField oneof member that carries a default value of each type.
DEFAULT_VALUE_SLOT: Mapping[DataType, str] = {
    DataType.BOOL: "bool_data",
    DataType.INT8: "int_data",
    DataType.INT16: "int_data",
    DataType.INT32: "int_data",
    DataType.INT64: "long_data",
    DataType.FLOAT: "float_data",
    DataType.DOUBLE: "double_data",
    DataType.VARCHAR: "string_data",
    DataType.JSON: "bytes_data",
}

_TYPED_PARAMS = ("dim", "max_length", "max_capacity")


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """One field. ``type_params`` keeps every key-value type param as received (in order);
    ``dim`` / ``max_length`` / ``max_capacity`` are their parsed values."""

    field_id: int
    name: str
    dtype: DataType
    is_primary: bool = False
    auto_id: bool = False
    max_length: int | None = None
    dim: int | None = None
    element_type: DataType | None = None
    max_capacity: int | None = None
    nullable: bool = False
    default_value: DefaultValue = None
    is_dynamic: bool = False
    is_partition_key: bool = False
    is_clustering_key: bool = False
    description: str = ""
    type_params: tuple[tuple[str, str], ...] = ()

    @property
    def is_vector(self) -> bool:
        return self.dtype.is_vector

    def param(self, key: str) -> str | None:
        """The raw type param ``key`` (as a string) or None."""
        for k, v in self.type_params:
            if k == key:
                return v
        return None

    def to_proto(self) -> schema_pb2.FieldSchema:
        """The ``schema_pb2.FieldSchema`` (with ``fieldID``) DescribeCollection returns."""
        proto = schema_pb2.FieldSchema(
            fieldID=self.field_id,
            name=self.name,
            is_primary_key=self.is_primary,
            description=self.description,
            data_type=int(self.dtype),
            autoID=self.auto_id,
            is_dynamic=self.is_dynamic,
            is_partition_key=self.is_partition_key,
            is_clustering_key=self.is_clustering_key,
            nullable=self.nullable,
        )
        if self.element_type is not None:
            proto.element_type = int(self.element_type)
        params = list(self.type_params)
        present = {k for k, _ in params}
        for key in _TYPED_PARAMS:
            value = getattr(self, key)
            if value is not None and key not in present:
                params.append((key, str(value)))
        proto.type_params.extend(common_pb2.KeyValuePair(key=k, value=v) for k, v in params)
        if self.default_value is not None:
            slot = DEFAULT_VALUE_SLOT[self.dtype]
            setattr(proto.default_value, slot, self.default_value)
        return proto

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (storage); inverse of :meth:`from_dict`."""
        default = self.default_value
        if isinstance(default, bytes):
            default = default.decode()
        return {
            "field_id": self.field_id,
            "name": self.name,
            "dtype": int(self.dtype),
            "is_primary": self.is_primary,
            "auto_id": self.auto_id,
            "max_length": self.max_length,
            "dim": self.dim,
            "element_type": None if self.element_type is None else int(self.element_type),
            "max_capacity": self.max_capacity,
            "nullable": self.nullable,
            "default_value": default,
            "is_dynamic": self.is_dynamic,
            "is_partition_key": self.is_partition_key,
            "is_clustering_key": self.is_clustering_key,
            "description": self.description,
            "type_params": [list(kv) for kv in self.type_params],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldSchema:
        dtype = DataType(d["dtype"])
        default = d.get("default_value")
        if dtype == DataType.JSON and isinstance(default, str):
            default = default.encode()
        element_type = d.get("element_type")
        return cls(
            field_id=int(d["field_id"]),
            name=d["name"],
            dtype=dtype,
            is_primary=bool(d.get("is_primary", False)),
            auto_id=bool(d.get("auto_id", False)),
            max_length=d.get("max_length"),
            dim=d.get("dim"),
            element_type=None if element_type is None else DataType(element_type),
            max_capacity=d.get("max_capacity"),
            nullable=bool(d.get("nullable", False)),
            default_value=default,
            is_dynamic=bool(d.get("is_dynamic", False)),
            is_partition_key=bool(d.get("is_partition_key", False)),
            is_clustering_key=bool(d.get("is_clustering_key", False)),
            description=d.get("description", ""),
            type_params=tuple((str(k), str(v)) for k, v in d.get("type_params", ())),
        )


@dataclass(frozen=True, slots=True)
class CollectionSchema:
    """A collection's schema. ``fields`` are in id order and include the hidden dynamic field
    ``$meta`` (last) when ``enable_dynamic_field`` is set."""

    name: str
    fields: tuple[FieldSchema, ...]
    description: str = ""
    enable_dynamic_field: bool = False
    properties: tuple[tuple[str, str], ...] = ()
    _by_name: dict[str, FieldSchema] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _by_id: dict[int, FieldSchema] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        self._by_name.update((f.name, f) for f in self.fields)
        self._by_id.update((f.field_id, f) for f in self.fields)

    # --- lookups -------------------------------------------------------------------------------

    @property
    def primary_field(self) -> FieldSchema:
        for f in self.fields:
            if f.is_primary:
                return f
        raise ParameterInvalid("primary key is not specified")

    @property
    def dynamic_field(self) -> FieldSchema | None:
        f = self._by_name.get(DYNAMIC_FIELD_NAME)
        return f if f is not None and f.is_dynamic else None

    @property
    def user_fields(self) -> tuple[FieldSchema, ...]:
        """Every field except the hidden dynamic field."""
        return tuple(f for f in self.fields if not f.is_dynamic)

    @property
    def vector_fields(self) -> tuple[FieldSchema, ...]:
        return tuple(f for f in self.fields if f.dtype.is_vector)

    def get_field(self, name: str) -> FieldSchema | None:
        return self._by_name.get(name)

    def require_field(self, name: str) -> FieldSchema:
        """The field called ``name``; FieldNotFound (1700) otherwise."""
        f = self._by_name.get(name)
        if f is None:
            raise FieldNotFound(name)
        return f

    def field_by_id(self, field_id: int) -> FieldSchema | None:
        return self._by_id.get(field_id)

    # --- Milvus protobuf -------------------------------------------------------------------------

    @classmethod
    def from_proto(
        cls, proto: schema_pb2.CollectionSchema, collection_name: str | None = None
    ) -> CollectionSchema:
        return from_proto(proto, collection_name)

    def to_proto(self, *, include_dynamic: bool = False) -> schema_pb2.CollectionSchema:
        """The schema for DescribeCollection (``autoID`` false at collection level, as Milvus)."""
        proto = schema_pb2.CollectionSchema(
            name=self.name,
            description=self.description,
            enable_dynamic_field=self.enable_dynamic_field,
        )
        proto.fields.extend(
            f.to_proto() for f in self.fields if include_dynamic or not f.is_dynamic
        )
        proto.properties.extend(common_pb2.KeyValuePair(key=k, value=v) for k, v in self.properties)
        return proto

    # --- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.name,
            "description": self.description,
            "enable_dynamic_field": self.enable_dynamic_field,
            "properties": [list(kv) for kv in self.properties],
            "fields": [f.to_dict() for f in self.fields],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollectionSchema:
        if d.get("format", 1) != 1:
            raise ValueError(f"unknown collection schema format {d.get('format')!r}")
        return cls(
            name=d["name"],
            fields=tuple(FieldSchema.from_dict(f) for f in d["fields"]),
            description=d.get("description", ""),
            enable_dynamic_field=bool(d.get("enable_dynamic_field", False)),
            properties=tuple((str(k), str(v)) for k, v in d.get("properties", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> CollectionSchema:
        return cls.from_dict(json.loads(text))


def from_proto(
    proto: schema_pb2.CollectionSchema, collection_name: str | None = None
) -> CollectionSchema:
    """Validate a CreateCollection schema like Milvus and build the :class:`CollectionSchema`.

    ``collection_name`` is the request's ``collection_name``; when given, the schema's own name
    must be empty or equal to it. Raises a :class:`~cluster.milvus.status.MilvusError`
    (ParameterInvalid 1100 for most rules, FieldNameInvalid 1701, NotSupportedYet 3000).
    """
    from cluster.milvus.schema_check import build_schema  # it imports this module

    return build_schema(proto, collection_name)


def from_request_bytes(schema: bytes, collection_name: str | None = None) -> CollectionSchema:
    """:func:`from_proto` on the serialized schema of a ``CreateCollectionRequest``."""
    proto = schema_pb2.CollectionSchema()
    try:
        proto.ParseFromString(schema)
    except Exception as exc:  # protobuf's DecodeError; message varies by backend
        raise ParameterInvalid(f"failed to unmarshal collection schema: {exc}") from exc
    return from_proto(proto, collection_name)
