"""What a streaming node needs to know about collections, and checks a write must pass before it
may enter the WAL.

* :class:`CollectionCache`: ``collection_id -> (CollectionInfo, CollectionSchema)`` from the
  coordinator, cached (a record changes only by DDL; :meth:`CollectionCache.get` with
  ``refresh=True`` re-reads it, e.g. for a partition created since).
* :func:`conform_insert` / :func:`conform_pks`: a batch is validated and brought to its
  canonical Arrow form *before* it is appended, because a WAL message that cannot be applied
  would break every later replay of the channel. The canonical insert table has the schema's
  fields in schema order, typed and tagged as :func:`cluster.milvus.columns.arrow_schema`.
* :func:`pchannel_of`: the physical channel of a vchannel name (``{pchannel}_{cid}v{i}``, as
  :meth:`cluster.coordinator.records.CatalogSettings.channels` names them).
"""

from __future__ import annotations

import asyncio

import pyarrow as pa

from cluster.coordinator.records import CollectionInfo
from cluster.interfaces import CoordinatorService
from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, from_request_bytes
from cluster.streaming.errors import SchemaMismatch
from cluster.streaming.growing import stored_schema
from woodpecker.errors import InvalidArgument

__all__ = ["CollectionCache", "conform_insert", "conform_pks", "pchannel_of"]


def pchannel_of(vchannel: str) -> str:
    """``canopy-dml_3_17v0`` -> ``canopy-dml_3``."""
    head, sep, _ = vchannel.rpartition("_")
    if not sep or not head:
        raise InvalidArgument(f"{vchannel!r} is not a vchannel name ({{pchannel}}_{{id}}v{{n}})")
    return head


class CollectionCache:
    """Collection records and parsed schemas by id, from ``coordinator``."""

    def __init__(self, coordinator: CoordinatorService) -> None:
        self.coordinator = coordinator
        # (record, schema, arrow schema of inserts, arrow schema of stored rows)
        self._entries: dict[int, tuple[CollectionInfo, CollectionSchema, pa.Schema, pa.Schema]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(
        self, collection_id: int, *, refresh: bool = False
    ) -> tuple[CollectionInfo, CollectionSchema]:
        """Raises ``CollectionNotFound`` for an unknown or dropped collection."""
        entry = self._entries.get(collection_id)
        if entry is None or refresh:
            lock = self._locks.setdefault(collection_id, asyncio.Lock())
            async with lock:
                entry = self._entries.get(collection_id)
                if entry is None or refresh:
                    info = await self.coordinator.describe_collection_by_id(collection_id)
                    schema = from_request_bytes(info.schema)
                    entry = (info, schema, arrow_schema(schema), stored_schema(schema))
                    self._entries[collection_id] = entry
        return entry[0], entry[1]

    def schema(self, collection_id: int) -> CollectionSchema | None:
        entry = self._entries.get(collection_id)
        return entry[1] if entry is not None else None

    def arrow(self, collection_id: int) -> pa.Schema | None:
        entry = self._entries.get(collection_id)
        return entry[2] if entry is not None else None

    def stored(self, collection_id: int) -> pa.Schema | None:
        """The Arrow schema of the collection's stored rows (``stored_schema``), once
        :meth:`get` has read the collection."""
        entry = self._entries.get(collection_id)
        return entry[3] if entry is not None else None

    def forget(self, collection_id: int) -> None:
        self._entries.pop(collection_id, None)


def conform_insert(table: pa.Table, schema: CollectionSchema, expected: pa.Schema) -> pa.Table:
    """``table`` with exactly the schema's fields, in order, under ``expected`` (the
    :func:`arrow_schema`), one chunk per column. A missing nullable field becomes nulls; a
    missing required field, an unknown column, a type that does not cast safely, a null
    primary key or a null vector raises :class:`SchemaMismatch`. Empty tables are refused
    (``InvalidArgument``)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if table.num_rows == 0:
        raise InvalidArgument("an insert needs at least one row")
    known = set(expected.names)
    extra = [name for name in table.column_names if name not in known]
    if extra:
        raise SchemaMismatch(f"insert batch has column(s) not in the schema: {', '.join(extra)}")
    if len(set(table.column_names)) != table.num_columns:
        raise SchemaMismatch(f"insert batch repeats a column: {table.column_names}")
    columns = []
    for want, fs in zip(expected, schema.fields, strict=True):
        if want.name not in table.column_names:
            if not fs.nullable:
                raise SchemaMismatch(f"insert batch lacks field {want.name}")
            columns.append(pa.nulls(table.num_rows, want.type))
            continue
        col = table.column(want.name)
        if not col.type.equals(want.type):
            try:
                col = col.cast(want.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaMismatch(
                    f"field {want.name}: expected {want.type}, got {col.type} ({exc})"
                ) from None
        if col.null_count and (fs.is_primary or fs.dtype == DataType.FLOAT_VECTOR):
            raise SchemaMismatch(f"field {want.name} has nulls")
        if col.null_count and not fs.nullable:
            raise SchemaMismatch(f"field {want.name} is not nullable but has nulls")
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=expected)
    if any(c.num_chunks != 1 for c in out.columns):
        out = out.combine_chunks()
    return out


def conform_pks(pks: pa.Array | pa.ChunkedArray | list, schema: CollectionSchema) -> pa.Array:
    """Primary keys of a delete as int64 (INT64 pk) or string (VARCHAR pk), without nulls."""
    if isinstance(pks, pa.ChunkedArray):
        pks = pks.combine_chunks()
    arr = pks if isinstance(pks, pa.Array) else pa.array(pks)
    pk = schema.primary_field
    want = pa.int64() if pk.dtype == DataType.INT64 else pa.string()
    ok_kind = (
        pa.types.is_integer(arr.type)
        if want == pa.int64()
        else (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))
    )
    if len(arr) and not ok_kind:
        raise SchemaMismatch(
            f"delete keys must be {want} for primary key {pk.name}, not {arr.type}"
        )
    if arr.null_count:
        raise SchemaMismatch("delete keys must not be null")
    try:
        return arr.cast(want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(f"delete keys: {exc}") from None
