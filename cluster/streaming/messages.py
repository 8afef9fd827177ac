"""The WAL message format of a physical channel (one woodpecker log; one entry = one message).

An entry's **properties** (``dict[str, str]``, stored by woodpecker next to the payload) carry the
header, so a reader can route or skip a message without touching its payload:

=======================  =======================================================================
property                 meaning
=======================  =======================================================================
``v``                    format version, decimal (see *Versions* below)
``type``                 a :class:`MessageType` value (``insert``, ``delete``, ``upsert``, ...)
``ts``                   hybrid timestamp (``physical_ms << 18 | logical``), decimal
``vchannel``             virtual channel (shard); absent = every vchannel of the pchannel
``collection_id``        decimal; absent on messages of no collection (time ticks)
``partition_id``         decimal; absent = every partition (a delete, a collection-wide flush)
``segment_id``           decimal; the growing segment an insert was assigned to (so a replay
                         rebuilds the same segments); absent elsewhere
``msg_id``               the producer's idempotency key (a retried request keeps it); optional
``rows``                 row count of an insert/delete payload; an upsert's inserted rows
``delete_rows``          an upsert's count of deleted keys
``delete_partition_id``  an upsert's delete: decimal; absent = every partition
``parts``                an upsert's row groups in payload order, each
                         ``{partition_id}:{segment_id}:{rows}``, joined by ``,`` (absent: no rows)
=======================  =======================================================================

Properties with no value are left out. **Payloads**:

* ``insert``: an Arrow IPC stream of the rows, one column per field (as
  :func:`cluster.milvus.columns.arrow_schema`, field metadata kept) plus the system columns
  ``_row_id`` (int64) and ``_ts`` (uint64, every row = the message ``ts``).
* ``delete``: an Arrow IPC stream of ``pk`` (int64 or string) and ``_ts`` (uint64).
* ``upsert`` (Milvus upsert: delete the keys, insert the rows, as ONE message at ONE ``ts``, so
  a reader applies both or neither): an 8-byte little-endian length ``n``, then ``n`` bytes of
  a delete payload of the keys (``n = 0``: no keys), then an insert payload of every group's
  rows, group after group as ``parts`` lists them (absent: no rows). At least one of the two is
  present. Applying it deletes first, then inserts each group into its segment; both carry
  ``ts``, and a delete at ``ts`` hides only rows stamped below ``ts``
  (:mod:`cluster.streaming.growing`), so the new rows stay visible and the replaced ones are
  hidden from ``ts`` on.
* DDL (``create_collection``, ``drop_collection``, ``create_partition``, ``drop_partition``) and
  ``flush``: a JSON object (:attr:`WalMessage.body`). The body's keys are the producer's contract
  (e.g. the collection schema as :meth:`~cluster.schema.CollectionSchema.to_dict`, the segment ids
  a flush seals); this codec only requires an object.
* ``time_tick``: empty. It promises that no later message of the channel (``vchannel`` absent)
  or of that vchannel carries a ``ts`` at or below its own.

Versions: a message is written with the lowest format version that has its type
(:func:`message_version`: 1 for the original types, 2 for ``upsert``), so a WAL without upserts
stays readable by version-1 code; this module reads every version up to :data:`FORMAT_VERSION`.

Contracts: :func:`encode` refuses a message that would not decode (missing system columns, wrong
types, ``_ts`` other than ``ts``); :func:`decode` raises :class:`UnsupportedMessageVersion` for a
missing or unknown ``v`` (checked first), :class:`UnknownMessageType` for an unknown ``type``,
and :class:`MalformedMessage` for anything else that does not fit (a type newer than its ``v``
included). Decoding an Arrow payload is zero-copy: the tables' buffers point into the payload
bytes. Encoding copies the rows once, into the IPC stream (the payload is a ``memoryview`` of it;
``LogWriter.append`` takes it as is).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.streaming.errors import (
    MalformedMessage,
    UnknownMessageType,
    UnsupportedMessageVersion,
)
from woodpecker.message import Message, MessageId

__all__ = [
    "DDL_TYPES",
    "FORMAT_VERSION",
    "PK_FIELD",
    "ROW_ID_FIELD",
    "SYSTEM_FIELDS",
    "TS_FIELD",
    "EncodedMessage",
    "MessageHeader",
    "MessageType",
    "UpsertPart",
    "WalMessage",
    "ddl_message",
    "decode",
    "decode_header",
    "decode_parts",
    "delete_message",
    "encode",
    "flush_message",
    "insert_message",
    "message_version",
    "time_tick_message",
    "upsert_message",
    "with_system_columns",
]

FORMAT_VERSION = 2  # the newest version this module reads (and writes, for upserts)
ROW_ID_FIELD = "_row_id"
TS_FIELD = "_ts"
SYSTEM_FIELDS = (ROW_ID_FIELD, TS_FIELD)
PK_FIELD = "pk"  # the key column of a delete payload


class MessageType(StrEnum):
    INSERT = "insert"
    DELETE = "delete"
    UPSERT = "upsert"
    CREATE_COLLECTION = "create_collection"
    DROP_COLLECTION = "drop_collection"
    CREATE_PARTITION = "create_partition"
    DROP_PARTITION = "drop_partition"
    FLUSH = "flush"
    TIME_TICK = "time_tick"


DDL_TYPES = frozenset(
    {
        MessageType.CREATE_COLLECTION,
        MessageType.DROP_COLLECTION,
        MessageType.CREATE_PARTITION,
        MessageType.DROP_PARTITION,
    }
)
_ARROW_TYPES = frozenset({MessageType.INSERT, MessageType.DELETE})
_JSON_TYPES = DDL_TYPES | {MessageType.FLUSH}
_OPTIONAL_INTS = (
    "collection_id", "partition_id", "segment_id", "rows", "delete_rows", "delete_partition_id"
)  # fmt: skip
_INTRODUCED = {MessageType.UPSERT: 2}  # format version of each type added after version 1
_VERSIONS = frozenset(str(v) for v in range(1, FORMAT_VERSION + 1))
_LENGTH = struct.Struct("<Q")  # the upsert payload's insert-part length


def message_version(type_: MessageType) -> int:
    """The format version a message of ``type_`` is written with (the first that has it)."""
    return _INTRODUCED.get(type_, 1)


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What the entry properties say; ``None`` = property absent."""

    type: MessageType
    ts: int
    vchannel: str = ""
    collection_id: int | None = None
    partition_id: int | None = None
    segment_id: int | None = None
    msg_id: str = ""
    rows: int | None = None
    delete_rows: int | None = None
    delete_partition_id: int | None = None
    parts: tuple[tuple[int, int, int], ...] = ()  # upsert: (partition_id, segment_id, rows)

    def properties(self) -> dict[str, str]:
        version = message_version(self.type)
        props = {"v": str(version), "type": self.type.value, "ts": str(self.ts)}
        if self.vchannel:
            props["vchannel"] = self.vchannel
        for name in _OPTIONAL_INTS:
            value = getattr(self, name)
            if value is not None:
                props[name] = str(value)
        if self.msg_id:
            props["msg_id"] = self.msg_id
        if self.parts:
            props["parts"] = ",".join(f"{p}:{s}:{n}" for p, s, n in self.parts)
        return props


@dataclass(frozen=True, slots=True)
class UpsertPart:
    """One row group of an upsert: its rows go to ``segment_id`` of ``partition_id``."""

    partition_id: int
    segment_id: int
    table: pa.Table


@dataclass(frozen=True, slots=True)
class WalMessage:
    """A decoded (or to-be-encoded) message: the header plus, by type, ``table`` (insert,
    delete; an upsert's rows, None when it has none), ``deletes`` (an upsert's ``pk``/``_ts``
    table, None when it has no keys) or ``body`` (DDL, flush). ``message_id`` is the WAL
    position once read back."""

    header: MessageHeader
    table: pa.Table | None = None
    body: Mapping[str, Any] | None = None
    message_id: MessageId | None = field(default=None, compare=False)
    deletes: pa.Table | None = None

    def upsert_parts(self) -> list[UpsertPart]:
        """An upsert's rows split into its groups (zero-copy slices of ``table``)."""
        out, start = [], 0
        if self.table is None:
            return []
        for pid, sid, n in self.header.parts:
            out.append(UpsertPart(pid, sid, self.table.slice(start, n)))
            start += n
        return out

    @property
    def type(self) -> MessageType:
        return self.header.type

    @property
    def ts(self) -> int:
        return self.header.ts

    @property
    def vchannel(self) -> str:
        return self.header.vchannel

    @property
    def collection_id(self) -> int | None:
        return self.header.collection_id

    @property
    def partition_id(self) -> int | None:
        return self.header.partition_id

    @property
    def segment_id(self) -> int | None:
        return self.header.segment_id


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """``payload`` and ``properties`` for ``LogWriter.append(payload, properties)``."""

    payload: bytes | memoryview
    properties: dict[str, str]


# --- constructors ---------------------------------------------------------------------------------


def with_system_columns(table: pa.Table, row_ids: np.ndarray, ts: int) -> pa.Table:
    """``table`` plus ``_row_id`` (the given int64 ids, one per row) and ``_ts`` (= ``ts``)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if len(row_ids) != table.num_rows:
        raise ValueError(f"{len(row_ids)} row ids for {table.num_rows} rows")
    table = table.append_column(pa.field(ROW_ID_FIELD, pa.int64(), nullable=False), [row_ids])
    stamps = np.full(table.num_rows, ts, dtype=np.uint64)
    return table.append_column(pa.field(TS_FIELD, pa.uint64(), nullable=False), [stamps])


def insert_message(
    table: pa.Table,
    *,
    ts: int,
    vchannel: str,
    collection_id: int,
    partition_id: int,
    segment_id: int | None = None,
    msg_id: str = "",
) -> WalMessage:
    """An insert of ``table`` (user columns + ``_row_id`` + ``_ts``, see
    :func:`with_system_columns`)."""
    header = MessageHeader(
        MessageType.INSERT,
        ts,
        vchannel,
        collection_id,
        partition_id,
        segment_id,
        msg_id,
        table.num_rows,
    )
    return WalMessage(header, table=table)


Keys = np.ndarray | pa.Array | pa.ChunkedArray | list[int] | list[str]


def _delete_table(pks: Keys, ts: int) -> pa.Table:
    if isinstance(pks, pa.ChunkedArray):
        pks = pks.combine_chunks()
    keys = pks if isinstance(pks, pa.Array) else pa.array(pks)
    if pa.types.is_integer(keys.type) and keys.type != pa.int64():
        keys = keys.cast(pa.int64())
    stamps = pa.array(np.full(len(keys), ts, dtype=np.uint64))
    return pa.table({PK_FIELD: keys, TS_FIELD: stamps})


def delete_message(
    pks: Keys,
    *,
    ts: int,
    vchannel: str,
    collection_id: int,
    partition_id: int | None = None,
    msg_id: str = "",
) -> WalMessage:
    """A delete of ``pks`` at ``ts`` (every partition when ``partition_id`` is None)."""
    table = _delete_table(pks, ts)
    header = MessageHeader(
        MessageType.DELETE, ts, vchannel, collection_id, partition_id, None, msg_id, len(table)
    )
    return WalMessage(header, table=table)


def upsert_message(
    parts: Sequence[UpsertPart],
    pks: Keys,
    *,
    ts: int,
    vchannel: str,
    collection_id: int,
    delete_partition_id: int | None = None,
    msg_id: str = "",
) -> WalMessage:
    """An upsert at ``ts``: delete ``pks`` (in ``delete_partition_id``, every partition when
    None), then insert each part's rows (user columns + ``_row_id`` + ``_ts``, see
    :func:`with_system_columns`) into its segment. Empty parts are dropped; ``pks`` may be
    empty, and so may ``parts`` (not both: :func:`encode` refuses that)."""
    parts = [p for p in parts if p.table.num_rows]
    table = pa.concat_tables([p.table for p in parts]) if parts else None
    deletes = _delete_table(pks, ts) if len(pks) else None
    header = MessageHeader(
        MessageType.UPSERT,
        ts,
        vchannel,
        collection_id,
        msg_id=msg_id,
        rows=table.num_rows if table is not None else 0,
        delete_rows=len(deletes) if deletes is not None else 0,
        delete_partition_id=delete_partition_id,
        parts=tuple((p.partition_id, p.segment_id, p.table.num_rows) for p in parts),
    )
    return WalMessage(header, table=table, deletes=deletes)


def ddl_message(
    type_: MessageType | str,
    body: Mapping[str, Any],
    *,
    ts: int,
    collection_id: int,
    partition_id: int | None = None,
    vchannel: str = "",
    msg_id: str = "",
) -> WalMessage:
    """A DDL message (``type_`` in :data:`DDL_TYPES`) with a JSON-object ``body``."""
    type_ = MessageType(type_)
    if type_ not in DDL_TYPES:
        raise ValueError(f"{type_} is not a DDL message type")
    header = MessageHeader(type_, ts, vchannel, collection_id, partition_id, None, msg_id)
    return WalMessage(header, body=dict(body))


def flush_message(
    *,
    ts: int,
    vchannel: str,
    collection_id: int,
    segment_ids: list[int] | tuple[int, ...] = (),
    partition_id: int | None = None,
    msg_id: str = "",
) -> WalMessage:
    """Seal the growing segments ``segment_ids`` of ``vchannel`` (all of the collection's
    growing segments on it when empty) at ``ts``."""
    header = MessageHeader(
        MessageType.FLUSH, ts, vchannel, collection_id, partition_id, None, msg_id
    )
    return WalMessage(header, body={"segment_ids": [int(s) for s in segment_ids]})


def time_tick_message(ts: int, vchannel: str = "") -> WalMessage:
    """Nothing at or below ``ts`` follows on the channel (or on ``vchannel``)."""
    return WalMessage(MessageHeader(MessageType.TIME_TICK, ts, vchannel))


# --- encode ---------------------------------------------------------------------------------------


def encode(msg: WalMessage, *, compression: str | None = None) -> EncodedMessage:
    """Payload and properties of ``msg``. ``compression`` (``"lz4"`` or ``"zstd"``) compresses
    Arrow payloads (readers need no option; float vectors barely compress)."""
    header = msg.header
    if header.ts < 0:
        raise ValueError(f"negative timestamp {header.ts}")
    if header.type is MessageType.UPSERT:
        payload: bytes | memoryview
        payload, header = _encode_upsert(msg, compression)
    elif header.type in _ARROW_TYPES:
        if msg.table is None:
            raise ValueError(f"{header.type} message without a table")
        _check_table(header.type, header.ts, msg.table, on_encode=True)
        payload = memoryview(_ipc(msg.table, compression))
        if header.rows != msg.table.num_rows:
            header = replace(header, rows=msg.table.num_rows)
    elif header.type in _JSON_TYPES:
        if not isinstance(msg.body, Mapping):
            raise ValueError(f"{header.type} message needs a JSON object body")
        payload = json.dumps(msg.body, separators=(",", ":"), sort_keys=True).encode()
    else:
        payload = b""
    return EncodedMessage(payload, header.properties())


def _write_ipc(sink: pa.BufferOutputStream, table: pa.Table, compression: str | None) -> None:
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def _ipc(table: pa.Table, compression: str | None) -> pa.Buffer:
    """``table`` as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    _write_ipc(sink, table, compression)
    return sink.getvalue()


def _encode_upsert(msg: WalMessage, compression: str | None) -> tuple[memoryview, MessageHeader]:
    """The upsert payload (see the module docstring) and the header with its counts. The rows
    are written once, straight into the payload."""
    header, table, deletes = msg.header, msg.table, msg.deletes
    rows = table.num_rows if table is not None else 0
    keys = deletes.num_rows if deletes is not None else 0
    if rows == 0 and keys == 0:
        raise ValueError("upsert message without rows or keys")
    if sum(n for _, _, n in header.parts) != rows or any(n <= 0 for _, _, n in header.parts):
        raise ValueError(f"upsert parts {header.parts} do not cover its {rows} rows")
    delete_ipc: bytes | pa.Buffer = b""
    if deletes is not None and keys:
        _check_table(MessageType.DELETE, header.ts, deletes, on_encode=True)
        delete_ipc = _ipc(deletes, compression)
    sink = pa.BufferOutputStream()
    sink.write(_LENGTH.pack(len(delete_ipc)))
    sink.write(delete_ipc)
    if table is not None and rows:
        _check_table(MessageType.INSERT, header.ts, table, on_encode=True)
        _write_ipc(sink, table, compression)
    return memoryview(sink.getvalue()), replace(header, rows=rows, delete_rows=keys)


# --- decode ---------------------------------------------------------------------------------------


def decode(message: Message) -> WalMessage:
    """Decode a woodpecker :class:`~woodpecker.message.Message` (keeps its id)."""
    return decode_parts(message.payload, message.properties, message.id)


def decode_header(properties: Mapping[str, str]) -> MessageHeader:
    """The header alone (no payload work): enough to route or skip a message."""
    version = properties.get("v")
    if version not in _VERSIONS:
        raise UnsupportedMessageVersion(version)
    raw_type = properties.get("type")
    try:
        type_ = MessageType(raw_type)
    except ValueError:
        raise UnknownMessageType(str(raw_type)) from None
    if message_version(type_) > int(version):
        raise MalformedMessage(
            f"{type_} message needs format version {message_version(type_)}, has v={version}"
        )
    ints: dict[str, int | None] = {}
    for name in ("ts", *_OPTIONAL_INTS):
        text = properties.get(name)
        if text is None:
            ints[name] = None
            continue
        try:
            ints[name] = int(text)
        except ValueError:
            raise MalformedMessage(
                f"{type_} message: property {name}={text!r} is not an integer"
            ) from None
    ts = ints.pop("ts")
    if ts is None or ts < 0:
        raise MalformedMessage(f"{type_} message without a valid ts")
    return MessageHeader(
        type_,
        ts,
        properties.get("vchannel", ""),
        msg_id=properties.get("msg_id", ""),
        parts=_parse_parts(type_, properties.get("parts")),
        **ints,  # type: ignore[arg-type]
    )


def _parse_parts(type_: MessageType, text: str | None) -> tuple[tuple[int, int, int], ...]:
    if not text:
        return ()
    try:
        parts = tuple(tuple(int(x) for x in p.split(":")) for p in text.split(","))
    except ValueError:
        parts = ()
    if not parts or any(len(p) != 3 or p[2] <= 0 for p in parts):
        raise MalformedMessage(f"{type_} message: property parts={text!r} is malformed")
    return parts  # type: ignore[return-value]


def decode_parts(
    payload: bytes | memoryview | pa.Buffer,
    properties: Mapping[str, str],
    message_id: MessageId | None = None,
) -> WalMessage:
    """Decode a payload and its properties. Arrow tables reference ``payload`` (zero copy)."""
    header = decode_header(properties)
    if header.type is MessageType.UPSERT:
        return _decode_upsert(header, payload, message_id)
    if header.type in _ARROW_TYPES:
        table = _read_ipc(header, payload)
        _check_table(header.type, header.ts, table, on_encode=False)
        if header.rows is not None and header.rows != table.num_rows:
            raise MalformedMessage(
                f"{header.type} message: rows={header.rows} but the payload has "
                f"{table.num_rows} rows"
            )
        return WalMessage(header, table=table, message_id=message_id)
    if header.type in _JSON_TYPES:
        try:
            body = json.loads(bytes(payload))
        except ValueError as exc:
            raise MalformedMessage(f"{header.type} message: payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise MalformedMessage(f"{header.type} message: payload is not a JSON object")
        return WalMessage(header, body=body, message_id=message_id)
    if len(payload):
        raise MalformedMessage(f"{header.type} message with a payload ({len(payload)} bytes)")
    return WalMessage(header, message_id=message_id)


def _decode_upsert(
    header: MessageHeader, payload: bytes | memoryview | pa.Buffer, message_id: MessageId | None
) -> WalMessage:
    buf = payload if isinstance(payload, pa.Buffer) else pa.py_buffer(payload)
    if buf.size < _LENGTH.size:
        raise MalformedMessage(f"upsert message: payload of {buf.size} bytes has no length")
    (n,) = _LENGTH.unpack(buf.slice(0, _LENGTH.size).to_pybytes())
    if n > buf.size - _LENGTH.size:
        raise MalformedMessage(f"upsert message: delete part of {n} bytes overruns the payload")
    table = deletes = None
    if n:
        deletes = _read_ipc(header, buf.slice(_LENGTH.size, n))
        _check_table(MessageType.DELETE, header.ts, deletes, on_encode=False)
    rest = buf.slice(_LENGTH.size + n)
    if rest.size:
        table = _read_ipc(header, rest)
        _check_table(MessageType.INSERT, header.ts, table, on_encode=False)
    rows = table.num_rows if table is not None else 0
    keys = deletes.num_rows if deletes is not None else 0
    if (header.rows or 0) != rows or (header.delete_rows or 0) != keys:
        raise MalformedMessage(
            f"upsert message: rows={header.rows}, delete_rows={header.delete_rows} but the "
            f"payload has {rows} rows and {keys} keys"
        )
    if sum(p[2] for p in header.parts) != rows:
        raise MalformedMessage(f"upsert message: parts {header.parts} do not cover {rows} rows")
    return WalMessage(header, table=table, deletes=deletes, message_id=message_id)


def _read_ipc(header: MessageHeader, payload: bytes | memoryview | pa.Buffer) -> pa.Table:
    buf = payload if isinstance(payload, pa.Buffer) else pa.py_buffer(payload)
    try:
        with pa.ipc.open_stream(buf) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise MalformedMessage(f"{header.type} message: bad Arrow IPC payload: {exc}") from None


def _check_table(kind: MessageType, ts: int, table: pa.Table, *, on_encode: bool) -> None:
    """System columns of an insert (``kind`` INSERT) or delete table present with their types
    (and, when encoding, ``_ts`` == ts)."""
    schema = table.schema
    if kind is MessageType.INSERT:
        required = {ROW_ID_FIELD: pa.int64(), TS_FIELD: pa.uint64()}
    else:
        required = {TS_FIELD: pa.uint64()}
        pk = schema.field(PK_FIELD) if PK_FIELD in schema.names else None
        if pk is None or not (pa.types.is_int64(pk.type) or pa.types.is_string(pk.type)):
            raise MalformedMessage(f"delete message needs a {PK_FIELD} column of int64 or string")
        if schema.names != [PK_FIELD, TS_FIELD]:
            raise MalformedMessage(f"delete message columns must be {PK_FIELD}, {TS_FIELD}")
    for name, type_ in required.items():
        if schema.get_field_index(name) < 0 or schema.field(name).type != type_:
            raise MalformedMessage(f"{kind} message needs a {name} column of {type_}")
    if on_encode:
        if table.num_rows == 0:
            raise ValueError(f"{kind} message without rows")
        if table.column(TS_FIELD).null_count:
            raise ValueError(f"{TS_FIELD} has nulls")
        lo_hi = pc.min_max(table.column(TS_FIELD))
        if lo_hi["min"].as_py() != ts or lo_hi["max"].as_py() != ts:
            raise ValueError(f"every row's {TS_FIELD} must equal the message ts {ts}")
