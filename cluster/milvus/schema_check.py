"""Validation of a CreateCollection schema, rule by rule as Milvus' proxy does it.

:func:`build_schema` is the implementation behind :func:`cluster.schema.from_proto`. The checks
run in Milvus' order (``createCollectionTask.PreExecute`` then ``ValidateField`` per field) and
raise with Milvus' messages, so the first error a client sees matches Milvus. Only after the
schema is valid Milvus are the parts Canopy does not implement refused (NotSupportedYet, 3000).

Messages come from Milvus ``internal/proxy/util.go`` and ``task.go`` (including its typos such as
"speficy"). Where Milvus returns a plain Go error (code 65535) we return ParameterInvalid (1100):
the wording is the same, the code says what it is.
"""

from __future__ import annotations

import json
import re

from pymilvus.grpc_gen import schema_pb2

from cluster.milvus.status import IllegalSchema, NotSupportedYet, ParameterInvalid
from cluster.milvus.validate import validate_collection_name, validate_field_name
from cluster.schema import (
    ARRAY_ELEMENT_TYPES,
    DEFAULT_VALUE_SLOT,
    DYNAMIC_FIELD_NAME,
    MAX_ARRAY_CAPACITY,
    MAX_DIM,
    MAX_FIELDS,
    MAX_VARCHAR_LENGTH,
    MAX_VECTOR_FIELDS,
    MIN_DIM,
    START_FIELD_ID,
    SUPPORTED_TYPES,
    CollectionSchema,
    DataType,
    DefaultValue,
    FieldSchema,
)

__all__ = ["build_schema"]

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_INT_RANGES = {DataType.INT8: (-(2**7), 2**7 - 1), DataType.INT16: (-(2**15), 2**15 - 1)}
_SLOT_TYPE_NAME = {
    "bool_data": "DataType_Bool",
    "int_data": "DataType_Int",
    "long_data": "DataType_Int64",
    "float_data": "DataType_Float",
    "double_data": "DataType_Double",
    "string_data": "DataType_VarChar",
    "bytes_data": "DataType_JSON",
}
_WHOLE = frozenset({"int_data", "long_data"})
_ACCEPTED_SLOTS: dict[DataType, frozenset[str]] = {
    DataType.BOOL: frozenset({"bool_data"}),
    DataType.INT8: _WHOLE,
    DataType.INT16: _WHOLE,
    DataType.INT32: _WHOLE,
    DataType.INT64: _WHOLE,
    DataType.FLOAT: _WHOLE | {"float_data", "double_data"},
    DataType.DOUBLE: _WHOLE | {"float_data", "double_data"},
    DataType.VARCHAR: frozenset({"string_data"}),
    DataType.JSON: frozenset({"bytes_data"}),
}
_CLUSTERING_KEY_TYPES = frozenset(
    {
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.FLOAT,
        DataType.DOUBLE,
        DataType.VARCHAR,
    }
)


def _dtype(number: int) -> DataType | None:
    try:
        return DataType(number)
    except ValueError:
        return None


def _type_name(number: int) -> str:
    dtype = _dtype(number)
    return dtype.milvus_name if dtype is not None else str(number)


def build_schema(
    proto: schema_pb2.CollectionSchema, collection_name: str | None = None
) -> CollectionSchema:
    """Validate ``proto`` and build the schema (ids from 100, ``$meta`` appended if dynamic)."""
    name = proto.name.strip()
    if collection_name is not None:
        requested = collection_name.strip()
        if name and name != requested:
            raise ParameterInvalid(
                f"collection name [{requested}] not matches schema name [{name}]"
            )
        name = name or requested
    if len(proto.functions):
        raise NotSupportedYet("functions in a collection schema (BM25, text embedding, ...)")
    if len(proto.struct_array_fields):
        raise NotSupportedYet("struct array fields")
    if proto.external_source or proto.external_spec:
        raise NotSupportedYet("external collections")
    if proto.enable_namespace:
        raise NotSupportedYet("namespaces")

    fields = list(proto.fields)
    if len(fields) > MAX_FIELDS:
        raise ParameterInvalid(f"maximum field's number should be limited to {MAX_FIELDS}")
    n_vectors = sum(1 for f in fields if (d := _dtype(f.data_type)) is not None and d.is_vector)
    if n_vectors > MAX_VECTOR_FIELDS:
        raise ParameterInvalid(
            f"maximum vector field's number should be limited to {MAX_VECTOR_FIELDS}"
        )
    if n_vectors == 0:
        raise ParameterInvalid("schema does not contain vector field")
    name = validate_collection_name(name)

    _check_primary_key(fields)
    if any(f.is_dynamic for f in fields):
        raise ParameterInvalid("cannot explicitly set a field as a dynamic field")
    _check_auto_id(fields)
    _check_field_types(fields)
    _check_partition_key(fields)
    _check_clustering_key(name, fields)

    built = [_build_field(f, START_FIELD_ID + i, name) for i, f in enumerate(fields)]
    seen: set[str] = set()
    for f in built:
        if f.name in seen:
            raise ParameterInvalid(f"duplicated field name {f.name} found")
        seen.add(f.name)

    for f in built:
        if f.dtype not in SUPPORTED_TYPES:
            raise NotSupportedYet(f"data type {f.dtype.milvus_name} (field {f.name})")

    if proto.enable_dynamic_field:
        built.append(
            FieldSchema(
                field_id=START_FIELD_ID + len(built),
                name=DYNAMIC_FIELD_NAME,
                dtype=DataType.JSON,
                is_dynamic=True,
                description="dynamic schema",
            )
        )
    return CollectionSchema(
        name=name,
        fields=tuple(built),
        description=proto.description,
        enable_dynamic_field=proto.enable_dynamic_field,
        properties=tuple((kv.key, kv.value) for kv in proto.properties),
    )


# --- schema-wide rules ----------------------------------------------------------------------------


def _check_primary_key(fields: list[schema_pb2.FieldSchema]) -> None:
    first: schema_pb2.FieldSchema | None = None
    for f in fields:
        if not f.is_primary_key:
            continue
        if first is not None:
            raise ParameterInvalid(
                f"there are more than one primary key, field name = {first.name}, {f.name}"
            )
        if f.data_type not in (DataType.INT64, DataType.VARCHAR):
            raise ParameterInvalid("the data type of primary key should be Int64 or VarChar")
        first = f
    if first is None:
        raise ParameterInvalid("primary key is not specified")


def _check_auto_id(fields: list[schema_pb2.FieldSchema]) -> None:
    first: schema_pb2.FieldSchema | None = None
    for f in fields:
        if not f.autoID:
            continue
        if first is not None:
            raise ParameterInvalid(
                f"only one field can speficy AutoID with true, field name = {first.name}, {f.name}"
            )
        first = f
        if not f.is_primary_key:
            raise ParameterInvalid(
                f"only primary field can speficy AutoID with true, field name = {f.name}"
            )


def _check_field_types(fields: list[schema_pb2.FieldSchema]) -> None:
    for f in fields:
        dtype = _dtype(f.data_type)
        if dtype is None:
            raise ParameterInvalid(f"field data type: {f.data_type} is not supported")
        if dtype == DataType.STRING:
            raise ParameterInvalid(
                "string data type not supported yet, please use VarChar type instead"
            )
        if dtype == DataType.NONE:
            raise ParameterInvalid("data type None is not valid")
        if dtype == DataType.ARRAY:
            element = _dtype(f.element_type)
            if element == DataType.STRING:
                raise ParameterInvalid(
                    "string data type not supported yet, please use VarChar type instead"
                )
            if element == DataType.NONE:
                raise ParameterInvalid("element data type None is not valid")
            if element not in ARRAY_ELEMENT_TYPES:
                raise ParameterInvalid(
                    f"element type {_type_name(f.element_type)} is not supported"
                )


def _check_partition_key(fields: list[schema_pb2.FieldSchema]) -> None:
    first: schema_pb2.FieldSchema | None = None
    for f in fields:
        if not f.is_partition_key:
            continue
        if first is not None:
            raise ParameterInvalid(
                f"there are more than one partition key, field name = {first.name}, {f.name}"
            )
        if f.is_primary_key:
            raise ParameterInvalid("the partition key field must not be primary field")
        if f.nullable:
            raise ParameterInvalid("partition key field not support nullable")
        if f.data_type not in (DataType.INT64, DataType.VARCHAR):
            raise ParameterInvalid("the data type of partition key should be Int64 or VarChar")
        first = f


def _check_clustering_key(collection: str, fields: list[schema_pb2.FieldSchema]) -> None:
    first: schema_pb2.FieldSchema | None = None
    for f in fields:
        if not f.is_clustering_key:
            continue
        dtype = _dtype(f.data_type)
        if dtype is not None and dtype.is_vector:
            raise IllegalSchema(collection, f"vector clustering key not allowed, field {f.name}")
        if dtype not in _CLUSTERING_KEY_TYPES:
            raise IllegalSchema(
                collection,
                f"clustering key field {f.name} has unsupported data type "
                f"{_type_name(f.data_type)}",
            )
        if first is not None:
            raise IllegalSchema(
                collection,
                f"there are more than one clustering key, field name = {first.name}, {f.name}",
            )
        first = f


# --- per-field rules (Milvus ValidateField) -------------------------------------------------------


def _build_field(pf: schema_pb2.FieldSchema, field_id: int, collection: str) -> FieldSchema:
    name = validate_field_name(pf.name)
    dtype = DataType(pf.data_type)
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    for kv in pf.type_params:
        if kv.key in seen:
            raise ParameterInvalid(f"duplicated param key: {kv.key}")
        seen.add(kv.key)
        params.append((kv.key, kv.value))
    raw = dict(params)

    if pf.nullable and pf.is_primary_key:
        raise ParameterInvalid("primary field not support null")
    if pf.nullable and dtype.is_vector:
        raise ParameterInvalid(f"vector type not support null, field name = {name}")

    dim = _check_dim(name, field_id, dtype, raw) if dtype.is_vector else None
    element_type = DataType(pf.element_type) if dtype == DataType.ARRAY else None
    max_length = None
    if dtype == DataType.VARCHAR or element_type == DataType.VARCHAR:
        max_length = _check_max_length(name, collection, raw)
    max_capacity = _check_max_capacity(name, collection, raw) if dtype == DataType.ARRAY else None
    default = _check_default(pf, name, dtype, max_length)

    return FieldSchema(
        field_id=field_id,
        name=name,
        dtype=dtype,
        is_primary=pf.is_primary_key,
        auto_id=pf.autoID,
        max_length=max_length,
        dim=dim,
        element_type=element_type,
        max_capacity=max_capacity,
        nullable=pf.nullable,
        default_value=default,
        is_partition_key=pf.is_partition_key,
        is_clustering_key=pf.is_clustering_key,
        description=pf.description,
        type_params=tuple(params),
    )


def _parse_int(key: str, name: str, value: str) -> int:
    if not _INT_RE.match(value.strip()):
        raise ParameterInvalid(
            f"the value for {key} of field {name} must be an integer, got {value!r}"
        )
    return int(value)


def _check_dim(name: str, field_id: int, dtype: DataType, raw: dict[str, str]) -> int | None:
    value = raw.get("dim")
    if dtype == DataType.SPARSE_FLOAT_VECTOR:
        if value is not None:
            raise ParameterInvalid(
                f"dim should not be specified for sparse vector field {name}({field_id})"
            )
        return None
    if value is None:
        raise ParameterInvalid(
            f"dimension is not defined in field type params of field {name}, "
            "check type param `dim` for vector field"
        )
    dim = _parse_int("dim", name, value)
    if dim < MIN_DIM:
        raise ParameterInvalid(f"invalid dimension: {dim}. should be in range 2 ~ {MAX_DIM}")
    if dtype == DataType.BINARY_VECTOR:
        if dim % 8:
            raise ParameterInvalid(
                f"invalid dimension: {dim} of field {name}. "
                "binary vector dimension should be multiple of 8. "
            )
        if dim > MAX_DIM * 8:
            raise ParameterInvalid(
                f"invalid dimension: {dim} of field {name}. "
                f"binary vector dimension should be in range 2 ~ {MAX_DIM * 8}"
            )
    elif dim > MAX_DIM:
        raise ParameterInvalid(
            f"invalid dimension: {dim} of field {name}. "
            f"float vector dimension should be in range 2 ~ {MAX_DIM}"
        )
    return dim


def _check_max_length(name: str, collection: str, raw: dict[str, str]) -> int:
    value = raw.get("max_length")
    if value is None:
        raise ParameterInvalid(
            f"type param(max_length) should be specified for varChar field({name}) "
            f"of collection {collection}"
        )
    n = _parse_int("max_length", name, value)
    if n <= 0 or n > MAX_VARCHAR_LENGTH:
        raise ParameterInvalid(
            f"the maximum length specified for a VarChar field({name}) should be in "
            f"(0, {MAX_VARCHAR_LENGTH}], but got {n} instead"
        )
    return n


def _check_max_capacity(name: str, collection: str, raw: dict[str, str]) -> int:
    value = raw.get("max_capacity")
    if value is None:
        raise ParameterInvalid(
            f"type param(max_capacity) should be specified for array field {name} "
            f"of collection {collection}"
        )
    n = _parse_int("max_capacity", name, value)
    if n <= 0 or n > MAX_ARRAY_CAPACITY:
        raise ParameterInvalid(
            f"the maximum capacity specified for a Array should be in (0, {MAX_ARRAY_CAPACITY}]"
        )
    return n


def _check_default(
    pf: schema_pb2.FieldSchema, name: str, dtype: DataType, max_length: int | None
) -> DefaultValue:
    """Milvus' default-value rules. More lenient than Milvus in one way: a whole-number default
    for an INT8/16/32/FLOAT/DOUBLE field is accepted from either ``int_data`` or ``long_data``
    (pymilvus sends every Python int as ``long_data``)."""
    if not pf.HasField("default_value"):
        return None
    slot = pf.default_value.WhichOneof("data")
    if slot is None:
        return None
    if pf.is_primary_key:
        raise ParameterInvalid("primary key can't be with default value")
    if dtype.is_vector:
        raise ParameterInvalid("vector type not support default value")
    if dtype == DataType.ARRAY:
        raise ParameterInvalid("array type not support default value")
    if DEFAULT_VALUE_SLOT.get(dtype) is None:  # a type Canopy refuses anyway
        return None
    if slot not in _ACCEPTED_SLOTS[dtype]:
        raise ParameterInvalid(
            "the data type of default value mismatch",
            expected=_SLOT_TYPE_NAME.get(slot, slot),
            actual=dtype.milvus_name,
        )
    value = getattr(pf.default_value, slot)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not low <= value <= high:
            raise ParameterInvalid("default value out of range", bound=(value, low, high))
    elif dtype == DataType.INT32 and not -(2**31) <= value < 2**31:
        raise ParameterInvalid("default value out of range", bound=(value, -(2**31), 2**31 - 1))
    elif dtype in (DataType.FLOAT, DataType.DOUBLE):
        value = float(value)
    elif dtype == DataType.VARCHAR and max_length is not None:
        n = len(value.encode())
        if n > max_length:
            raise ParameterInvalid(f"the length ({n}) of string exceeds max length ({max_length})")
    elif dtype == DataType.JSON:
        try:
            json.loads(value)
        except ValueError as exc:
            raise ParameterInvalid(f"invalid default value of json field ({name})") from exc
    return value
