"""Milvus ``FieldData`` columns <-> Arrow: decode Insert/Upsert, encode query/search results.

:func:`decode_insert` checks an Insert/Upsert request's ``fields_data`` + ``num_rows`` against a
:class:`~cluster.schema.CollectionSchema` as the Milvus proxy does and returns a
:class:`RowBatch` (an Arrow table with one column per field, in schema order). Every failure is a
:class:`~cluster.milvus.status.MilvusError` with Milvus' wording, ParameterInvalid (1100) unless
noted. Column mapping (:func:`arrow_type`):

=============  ==========================  ==============================================
Milvus         FieldData payload           Arrow column
=============  ==========================  ==============================================
BOOL           scalars.bool_data           bool
INT8/16/32     scalars.int_data (int32)    int8 / int16 / int32 (range-checked)
INT64          scalars.long_data           int64
FLOAT/DOUBLE   scalars.float/double_data   float32 / float64 (NaN and Inf refused)
VARCHAR        scalars.string_data         string (max_length counted in UTF-8 bytes)
JSON, $meta    scalars.json_data           binary (raw JSON bytes, at most 65536 each)
ARRAY          scalars.array_data          list<element> (max_capacity checked)
FLOAT_VECTOR   vectors{dim, float_vector}  fixed_size_list<float32, dim>
=============  ==========================  ==============================================

Contract notes:

* Nullable / default-value fields arrive compressed: the payload holds the valid values only and
  ``valid_data`` has ``num_rows`` flags (pymilvus and Milvus both do this; an all-true or empty
  ``valid_data`` means every row is valid). Invalid rows become null, or the default value when
  the field has one (Milvus: the default wins). A missing nullable/default column is all
  null/default.
* Auto-id primary key on Insert: the client must not send it; the batch has no pk column until
  :meth:`RowBatch.with_auto_ids` (the proxy allocates ids after validation). On Upsert the pk is
  required even when auto-id; what to do with it is the proxy's decision.
* Duplicate primary keys inside one batch are allowed (as in Milvus; the last one wins at
  query time).
* ``$meta`` (dynamic collections): each value must be a JSON object without the key ``$meta`` or
  any static field name; a missing ``$meta`` column means ``{}`` for every row.
* No Python loop over rows, except where the protobuf itself holds one message per row (ARRAY
  cells) and the per-value JSON parse of ``$meta`` (values that are exactly ``{}`` are not
  parsed).

:func:`encode_field_data` is the reverse for Query/Search results: Arrow columns -> FieldData
(full-length scalars with ``valid_data`` for nullable fields, as pymilvus expects).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pymilvus.grpc_gen import schema_pb2

from cluster.milvus.shard import hash_pk_to_shard, rows_by_shard
from cluster.milvus.status import NotSupportedYet, ParameterInvalid
from cluster.milvus.validate import (
    check_array_capacity,
    check_array_varchar_length,
    check_finite,
    check_int_range,
    check_json_length,
    check_varchar_length,
)
from cluster.schema import DYNAMIC_FIELD_NAME, CollectionSchema, DataType, FieldSchema

__all__ = [
    "RowBatch",
    "arrow_schema",
    "arrow_type",
    "decode_ids",
    "decode_insert",
    "encode_field_data",
    "encode_ids",
]

_ARROW_SCALAR: dict[DataType, pa.DataType] = {
    DataType.BOOL: pa.bool_(),
    DataType.INT8: pa.int8(),
    DataType.INT16: pa.int16(),
    DataType.INT32: pa.int32(),
    DataType.INT64: pa.int64(),
    DataType.FLOAT: pa.float32(),
    DataType.DOUBLE: pa.float64(),
    DataType.VARCHAR: pa.string(),
    DataType.JSON: pa.binary(),
}
# ScalarField oneof member, numpy dtype of the protobuf payload, Milvus' name in messages.
_SLOT: dict[DataType, tuple[str, type | None, str]] = {
    DataType.BOOL: ("bool_data", np.bool_, "bool"),
    DataType.INT8: ("int_data", np.int32, "int"),
    DataType.INT16: ("int_data", np.int32, "int"),
    DataType.INT32: ("int_data", np.int32, "int"),
    DataType.INT64: ("long_data", np.int64, "long int"),
    DataType.FLOAT: ("float_data", np.float32, "float32"),
    DataType.DOUBLE: ("double_data", np.float64, "float64(double)"),
    DataType.VARCHAR: ("string_data", None, "string"),
    DataType.JSON: ("json_data", None, "json"),
}
_EMPTY_OBJECT = pa.scalar(b"{}", pa.binary())
_INT_RANGE = {DataType.INT8: (-(2**7), 2**7 - 1), DataType.INT16: (-(2**15), 2**15 - 1)}
_ZERO: dict[DataType, object] = {
    DataType.BOOL: False,
    DataType.INT8: 0,
    DataType.INT16: 0,
    DataType.INT32: 0,
    DataType.INT64: 0,
    DataType.FLOAT: 0.0,
    DataType.DOUBLE: 0.0,
    DataType.VARCHAR: "",
    DataType.JSON: b"",
}


def arrow_type(f: FieldSchema) -> pa.DataType:
    """The Arrow type of field ``f``'s column."""
    if f.dtype in _ARROW_SCALAR:
        return _ARROW_SCALAR[f.dtype]
    if f.dtype == DataType.ARRAY and f.element_type in _ARROW_SCALAR:
        return pa.list_(_ARROW_SCALAR[f.element_type])
    if f.dtype == DataType.FLOAT_VECTOR and f.dim:
        return pa.list_(pa.float32(), f.dim)
    raise NotSupportedYet(f"data type {f.dtype.milvus_name} (field {f.name})")


def arrow_field(f: FieldSchema) -> pa.Field:
    return pa.field(
        f.name, arrow_type(f), nullable=f.nullable, metadata={b"field_id": str(f.field_id).encode()}
    )


def arrow_schema(schema: CollectionSchema) -> pa.Schema:
    """Arrow schema of a full batch: every field (pk and ``$meta`` included) in schema order,
    each with ``field_id`` metadata (also what segment Parquet files use)."""
    return pa.schema([arrow_field(f) for f in schema.fields])


# --- the decoded batch ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Decoded rows of one Insert/Upsert: ``table`` has a column per field, in schema order
    (without the pk column while an auto-id insert waits for :meth:`with_auto_ids`)."""

    schema: CollectionSchema
    table: pa.Table

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def has_pks(self) -> bool:
        return self.schema.primary_field.name in self.table.column_names

    def column(self, name: str) -> pa.Array:
        return self.table.column(name).combine_chunks()

    def pks(self) -> np.ndarray | pa.Array:
        """Primary keys: an int64 numpy array, or an Arrow string array for VARCHAR keys."""
        col = self.column(self.schema.primary_field.name)
        if pa.types.is_integer(col.type):
            return col.to_numpy(zero_copy_only=False)
        return col

    def vectors(self, name: str) -> np.ndarray:
        """The ``(num_rows, dim)`` float32 matrix of a FLOAT_VECTOR field (zero copy)."""
        col = self.column(name)
        dim = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)

    def with_auto_ids(self, ids: np.ndarray) -> RowBatch:
        """Insert the allocated auto ids (int64, one per row) as the pk column. VARCHAR auto-id
        keys are the decimal strings of the ids, as Milvus generates them."""
        pk = self.schema.primary_field
        if self.has_pks:
            raise ValueError("batch already has primary keys")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != self.num_rows:
            raise ValueError(f"{len(ids)} ids for {self.num_rows} rows")
        arr: pa.Array = pa.array(ids)
        if pk.dtype == DataType.VARCHAR:
            arr = pc.cast(arr, pa.string())
        index = [f.name for f in self.schema.fields].index(pk.name)
        return RowBatch(self.schema, self.table.add_column(index, arrow_field(pk), arr))

    def take(self, indices: np.ndarray) -> RowBatch:
        return RowBatch(self.schema, self.table.take(pa.array(indices)))

    def split_by_shard(self, num_shards: int) -> list[RowBatch]:
        """One batch per shard (index = shard number), rows hashed by primary key with
        :func:`~cluster.milvus.shard.hash_pk_to_shard`; row order is kept within a shard."""
        shards = hash_pk_to_shard(self.pks(), num_shards)
        return [self.take(rows) for rows in rows_by_shard(shards, num_shards)]


# --- decode ---------------------------------------------------------------------------------------


def _type_name(number: int) -> str:
    try:
        return DataType(number).milvus_name
    except ValueError:
        return str(number)


def _rows_mismatch(name: str, actual: int, num_rows: int) -> ParameterInvalid:
    return ParameterInvalid(
        f"the num_rows ({actual}) of field ({name}) is not equal to passed num_rows ({num_rows})",
        expected=num_rows,
        actual=actual,
    )


def _type_mismatch(f: FieldSchema, kind: str) -> ParameterInvalid:
    return ParameterInvalid(
        f"field '{f.name}' is illegal, array type mismatch",
        expected=f"need {kind} array",
        actual="got nil",
    )


def decode_insert(
    fields_data: Sequence[schema_pb2.FieldData],
    num_rows: int,
    schema: CollectionSchema,
    *,
    upsert: bool = False,
) -> RowBatch:
    """Validate and decode an Insert (or Upsert, ``upsert=True``) request's columns."""
    if num_rows <= 0:
        raise ParameterInvalid(
            "num_rows should be greater than 0", expected="invalid num_rows", actual=num_rows
        )
    dyn = schema.dynamic_field
    given: dict[str, schema_pb2.FieldData] = {}
    for fd in fields_data:
        name = fd.field_name
        if fd.is_dynamic and dyn is not None:
            name = dyn.name
        if name in given:
            raise ParameterInvalid(f"duplicated field {name} found")
        given[name] = fd
        if name == DYNAMIC_FIELD_NAME and dyn is None:
            raise ParameterInvalid(
                f"without dynamic schema enabled, the field name cannot be set to "
                f"{DYNAMIC_FIELD_NAME}"
            )
        if schema.get_field(name) is None:
            raise ParameterInvalid(f"fieldName {name} not exist in collection schema")

    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for f in schema.fields:
        fd = given.get(f.name)
        if f.is_dynamic:
            arr = _decode_dynamic(fd, num_rows, schema)
        elif f.is_primary and f.auto_id and not upsert:
            if fd is not None:
                raise ParameterInvalid(
                    f"can not assign primary field data when auto id enabled {f.name}"
                )
            continue
        elif fd is None:
            if f.is_primary and upsert:
                raise ParameterInvalid(f"must assign pk when upsert, primary field: {f.name}")
            if f.default_value is not None:
                arr = pa.repeat(pa.scalar(f.default_value, arrow_type(f)), num_rows)
            elif f.nullable:
                arr = pa.nulls(num_rows, arrow_type(f))
            else:
                raise ParameterInvalid(
                    f"fieldSchema({f.name}) has no corresponding fieldData pass in"
                )
        else:
            arr = _decode_column(fd, f, num_rows)
        arrays.append(arr)
        fields.append(arrow_field(f))
    return RowBatch(schema, pa.Table.from_arrays(arrays, schema=pa.schema(fields)))


def _decode_column(fd: schema_pb2.FieldData, f: FieldSchema, num_rows: int) -> pa.Array:
    if fd.type and fd.type != f.dtype:
        raise ParameterInvalid(
            f"field '{f.name}' is illegal, data type mismatch",
            expected=f.dtype.milvus_name,
            actual=_type_name(fd.type),
        )
    if f.dtype == DataType.FLOAT_VECTOR:
        return _decode_float_vector(fd, f, num_rows)

    valid: np.ndarray | None = None
    if len(fd.valid_data):
        valid = np.asarray(fd.valid_data, dtype=bool)
        if len(valid) != num_rows:
            raise ParameterInvalid(
                f"the length of valid_data of field({f.name}) is wrong",
                expected=num_rows,
                actual=len(valid),
            )
        if valid.all():
            valid = None
        elif not (f.nullable or f.default_value is not None):
            raise ParameterInvalid(
                f"the length of valid_data of field({f.name}) is wrong",
                expected=0,
                actual=len(fd.valid_data),
            )
    n_valid = num_rows if valid is None else int(valid.sum())

    if f.dtype == DataType.ARRAY:
        data = _decode_array(fd, f, n_valid)
    else:
        data = _decode_scalar(fd, f, n_valid)

    m = len(data)
    if valid is None:
        if m != num_rows:
            raise _rows_mismatch(f.name, m, num_rows)
        return data
    if m != n_valid:  # the payload holds the valid values only
        raise ParameterInvalid("the length of field is wrong", expected=n_valid, actual=m)
    positions = np.cumsum(valid, dtype=np.int64) - 1
    full = data.take(pa.array(positions, mask=~valid))
    if f.default_value is not None:
        full = pc.fill_null(full, pa.scalar(f.default_value, full.type))
    return full


def _decode_float_vector(fd: schema_pb2.FieldData, f: FieldSchema, num_rows: int) -> pa.Array:
    if fd.WhichOneof("field") != "vectors" or fd.vectors.WhichOneof("data") != "float_vector":
        raise ParameterInvalid(
            f"float vector field '{f.name}' is illegal, array type mismatch",
            expected="need float vector",
            actual="got nil",
        )
    dim = f.dim or 0
    if fd.vectors.dim != dim:
        raise ParameterInvalid(
            f"the dim ({fd.vectors.dim}) of field data({f.name}) is not equal to schema dim "
            f"({dim})",
            expected=dim,
            actual=fd.vectors.dim,
        )
    flat = np.asarray(fd.vectors.float_vector.data, dtype=np.float32)
    if flat.size % dim:
        raise ParameterInvalid(
            f"the length({flat.size}) of float data should divide the dim({dim})"
        )
    if flat.size // dim != num_rows:
        raise _rows_mismatch(f.name, flat.size // dim, num_rows)
    check_finite(flat)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)


def _decode_scalar(fd: schema_pb2.FieldData, f: FieldSchema, n_valid: int) -> pa.Array:
    slot, np_type, kind = _SLOT[f.dtype]
    which = fd.scalars.WhichOneof("data") if fd.WhichOneof("field") == "scalars" else None
    if which != slot:
        if which is None and n_valid == 0:  # an all-null column may carry no payload
            return pa.array([], _ARROW_SCALAR[f.dtype])
        raise _type_mismatch(f, kind)
    values = getattr(fd.scalars, slot).data
    if np_type is not None:
        arr = np.asarray(values, dtype=np_type)
        if f.dtype in _INT_RANGE:
            check_int_range(arr, *_INT_RANGE[f.dtype])
        elif f.dtype in (DataType.FLOAT, DataType.DOUBLE):
            check_finite(arr)
        return pa.array(arr, type=_ARROW_SCALAR[f.dtype])
    out = pa.array(list(values), _ARROW_SCALAR[f.dtype])
    if f.dtype == DataType.VARCHAR and f.max_length is not None and not f.auto_id:
        check_varchar_length(out, f.max_length, f.name)
    elif f.dtype == DataType.JSON:
        check_json_length(out, f.name, dynamic=False)
    return out


def _decode_array(fd: schema_pb2.FieldData, f: FieldSchema, n_valid: int) -> pa.Array:
    assert f.element_type is not None
    element = f.element_type
    slot, np_type, kind = _SLOT[element]
    value_type = _ARROW_SCALAR[element]
    which = fd.scalars.WhichOneof("data") if fd.WhichOneof("field") == "scalars" else None
    if which != "array_data":
        if which is None and n_valid == 0:
            return pa.array([], pa.list_(value_type))
        raise ParameterInvalid(
            f"array field '{f.name}' is illegal, array type mismatch",
            expected=f"need {element.milvus_name} array",
            actual="got nil",
        )
    cells = fd.scalars.array_data.data
    # One protobuf message per row: these comprehensions are the only way in.
    kinds = {c.WhichOneof("data") for c in cells}
    wrong = kinds - {slot, None}
    if wrong:
        raise ParameterInvalid(
            "insert data does not match", expected=f"{kind} array", actual=f"{wrong.pop()} array"
        )
    parts = [getattr(c, slot).data for c in cells]
    lengths = np.fromiter(map(len, parts), dtype=np.int32, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(chain.from_iterable(parts))
    if np_type is not None:
        values_np = np.asarray(flat, dtype=np_type)
        if element in _INT_RANGE:
            check_int_range(values_np, *_INT_RANGE[element])
        elif element in (DataType.FLOAT, DataType.DOUBLE):
            check_finite(values_np)
        values = pa.array(values_np, value_type)
    else:
        values = pa.array(flat, value_type)
    out = pa.ListArray.from_arrays(pa.array(offsets), values)
    if f.max_capacity is not None:
        check_array_capacity(out, f.max_capacity)
    if element == DataType.VARCHAR and f.max_length is not None:
        check_array_varchar_length(out, f.max_length, f.name)
    return out


def _decode_dynamic(
    fd: schema_pb2.FieldData | None, num_rows: int, schema: CollectionSchema
) -> pa.Array:
    if fd is None:
        return pa.array([b"{}"] * num_rows, pa.binary())
    if fd.WhichOneof("field") != "scalars" or fd.scalars.WhichOneof("data") != "json_data":
        raise ParameterInvalid(
            f"json field '{DYNAMIC_FIELD_NAME}' is illegal, array type mismatch",
            expected="need json array",
            actual="got nil",
        )
    raw = list(fd.scalars.json_data.data)
    if len(raw) != num_rows:
        raise _rows_mismatch(DYNAMIC_FIELD_NAME, len(raw), num_rows)
    out = pa.array(raw, pa.binary())
    check_json_length(out, DYNAMIC_FIELD_NAME, dynamic=True)
    # One parse per value other than the literal ``{}`` (what clients send for a row without
    # dynamic keys: a valid object without keys, nothing to check), driven by C-level
    # map/union; the Python loop below runs only to name the offending row of a bad request.
    given = np.flatnonzero(pc.not_equal(out, _EMPTY_OBJECT).to_numpy(zero_copy_only=False))
    if len(given) == 0:
        return out
    rows = given.tolist()
    if len(rows) < num_rows:
        raw = [raw[i] for i in rows]
    try:
        objs = list(map(orjson.loads, raw))
    except orjson.JSONDecodeError:
        objs = None
    if objs is None or set(map(type, objs)) - {dict}:
        for i, value in zip(rows, raw, strict=True):
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ParameterInvalid(
                    f"insert invalid dynamic data, milvus only support json map, row {i}: {exc}"
                ) from exc
            if not isinstance(obj, dict):
                raise ParameterInvalid(
                    f"insert invalid dynamic data, milvus only support json map, row {i}"
                )
    keys: set[str] = set().union(*objs) if objs else set()
    if DYNAMIC_FIELD_NAME in keys:
        raise ParameterInvalid(f"cannot set json key to: {DYNAMIC_FIELD_NAME}")
    clash = keys.intersection(f.name for f in schema.fields)
    if clash:
        raise ParameterInvalid(
            f"dynamic field name cannot include the static field name: {min(clash)}"
        )
    return out


# --- encode ---------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _packed(raw: bytes) -> bytes:
    """Wire bytes of a message whose field 1 is a packed fixed-width repeated field."""
    return b"\x0a" + _varint(len(raw)) + raw


def encode_field_data(
    table: pa.Table,
    fields: Iterable[FieldSchema],
    dynamic_fields: Sequence[str] = (),
) -> list[schema_pb2.FieldData]:
    """Result columns as ``FieldData`` (Query ``fields_data``, Search ``results.fields_data``).

    ``fields``: the static output fields, in order; the dynamic field ``$meta`` among them means
    the whole ``$meta`` object. ``dynamic_fields``: dynamic keys asked for by name in
    ``output_fields``; unless ``$meta`` is already in ``fields`` they produce a ``$meta``
    column holding only those keys (per-row JSON filtering: result sets are small). ``table``
    must hold a column for each field, and ``$meta`` when dynamic keys are asked for.
    """
    out: list[schema_pb2.FieldData] = []
    meta: FieldSchema | None = None
    for f in fields:
        if f.is_dynamic:
            meta = f
            continue
        out.append(_encode_column(table.column(f.name).combine_chunks(), f))
    if meta is not None:
        out.append(_encode_dynamic(table.column(meta.name).combine_chunks(), meta, None))
    elif dynamic_fields:
        f = FieldSchema(field_id=0, name=DYNAMIC_FIELD_NAME, dtype=DataType.JSON, is_dynamic=True)
        col = table.column(DYNAMIC_FIELD_NAME).combine_chunks()
        out.append(_encode_dynamic(col, f, set(dynamic_fields)))
    return out


def _encode_column(col: pa.Array, f: FieldSchema) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(type=int(f.dtype), field_name=f.name, field_id=f.field_id)
    if f.dtype == DataType.FLOAT_VECTOR:
        dim = f.dim or col.type.list_size
        flat = col.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False)
        fd.vectors.dim = dim
        fd.vectors.float_vector.MergeFromString(_packed(flat.tobytes()))
        return fd
    if col.null_count or f.nullable:
        fd.valid_data.extend(pc.is_valid(col).to_numpy(zero_copy_only=False).tolist())
    if f.dtype == DataType.ARRAY:
        _encode_array(col, f, fd)
        return fd
    if col.null_count:
        col = pc.fill_null(col, pa.scalar(_ZERO[f.dtype], col.type))
    slot = getattr(fd.scalars, _SLOT[f.dtype][0])
    if f.dtype == DataType.FLOAT:
        slot.MergeFromString(_packed(col.to_numpy(zero_copy_only=False).astype("<f4").tobytes()))
    elif f.dtype == DataType.DOUBLE:
        slot.MergeFromString(_packed(col.to_numpy(zero_copy_only=False).astype("<f8").tobytes()))
    elif f.dtype in (DataType.VARCHAR, DataType.JSON):
        slot.data.extend(col.to_pylist())
    else:
        slot.data.extend(col.to_numpy(zero_copy_only=False).tolist())
    return fd


def _encode_array(col: pa.Array, f: FieldSchema, fd: schema_pb2.FieldData) -> None:
    assert f.element_type is not None
    array_data = fd.scalars.array_data
    array_data.element_type = int(f.element_type)
    slot = _SLOT[f.element_type][0]
    # One ScalarField message per row (the protobuf shape); nulls become empty cells.
    for cell in col.to_pylist():
        getattr(array_data.data.add(), slot).data.extend(cell or ())


def _encode_dynamic(col: pa.Array, f: FieldSchema, keys: set[str] | None) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(
        type=int(DataType.JSON), field_name=f.name, field_id=f.field_id, is_dynamic=True
    )
    values = pc.fill_null(col, b"{}").to_pylist()
    if keys is not None:
        values = [
            orjson.dumps({k: v for k, v in orjson.loads(b).items() if k in keys}) for b in values
        ]
    fd.scalars.json_data.data.extend(values)
    return fd


# --- primary key lists ----------------------------------------------------------------------------


def encode_ids(pks: np.ndarray | pa.Array | Sequence[int] | Sequence[str]) -> schema_pb2.IDs:
    """``schema_pb2.IDs`` (``int_id`` or ``str_id``) for MutationResult / SearchResultData."""
    ids = schema_pb2.IDs()
    if isinstance(pks, pa.ChunkedArray):
        pks = pks.combine_chunks()
    if isinstance(pks, pa.Array):
        if pa.types.is_integer(pks.type):
            ids.int_id.data.extend(pks.to_numpy(zero_copy_only=False).tolist())
        else:
            ids.str_id.data.extend(pks.to_pylist())
        return ids
    arr = np.asarray(pks)
    if arr.dtype.kind in "iu":
        ids.int_id.data.extend(arr.astype(np.int64, copy=False).tolist())
    else:
        ids.str_id.data.extend(arr.tolist())
    return ids


def decode_ids(ids: schema_pb2.IDs) -> np.ndarray | pa.Array:
    """The keys of ``schema_pb2.IDs``: int64 numpy array, or Arrow string array."""
    if ids.WhichOneof("id_field") == "str_id":
        return pa.array(list(ids.str_id.data), pa.string())
    return np.asarray(ids.int_id.data, dtype=np.int64)
