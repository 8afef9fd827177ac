"""WAL messages of a collection -> ``feed_pb2.Change`` (``cluster/FEED.md``, "What is
delivered"). Rows travel as an Arrow IPC stream of the user fields (the WAL table without
``_row_id`` and ``_ts``; JSON and ``$meta`` columns as their raw JSON bytes); deleted keys as
``int_pks`` or ``str_pks``."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from cluster.proto import feed_pb2
from cluster.streaming.messages import (
    PK_FIELD,
    SYSTEM_FIELDS,
    MessageType,
    WalMessage,
    decode,
)
from woodpecker.message import Message

__all__ = ["OPS", "to_change"]

OPS = {
    MessageType.INSERT: feed_pb2.INSERT,
    MessageType.DELETE: feed_pb2.DELETE,
    MessageType.UPSERT: feed_pb2.UPSERT,
}

PartitionNames = Callable[[int], str]


def _rows_ipc(table: pa.Table) -> bytes:
    table = table.drop_columns([c for c in SYSTEM_FIELDS if c in table.column_names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _set_pks(change: feed_pb2.Change, deletes: pa.Table | None) -> None:
    if deletes is None or deletes.num_rows == 0:
        return
    keys = deletes.column(PK_FIELD)
    if pa.types.is_integer(keys.type):
        change.int_pks.extend(keys.to_numpy().tolist())
    else:
        change.str_pks.extend(keys.to_pylist())


def _upsert_partition(msg: WalMessage) -> int:
    """The one partition of the upsert's rows (of its delete when it has no rows); 0 when
    several or none."""
    ids = {pid for pid, _, _ in msg.header.parts}
    if not ids:
        return msg.header.delete_partition_id or 0
    return ids.pop() if len(ids) == 1 else 0


def to_change(message: Message, partition_name: PartitionNames) -> feed_pb2.Change:
    """The change of an insert, delete or upsert message (token left empty)."""
    msg = decode(message)
    change = feed_pb2.Change(op=OPS[msg.type], ts=msg.ts, vchannel=msg.vchannel)
    if msg.type is MessageType.INSERT:
        pid = msg.partition_id or 0
    elif msg.type is MessageType.DELETE:
        pid = msg.partition_id or 0
        _set_pks(change, msg.table)
    else:
        pid = _upsert_partition(msg)
        _set_pks(change, msg.deletes)
    rows = msg.table if msg.type is not MessageType.DELETE else None
    if rows is not None and rows.num_rows:
        change.rows_arrow = _rows_ipc(rows)
        change.num_rows = rows.num_rows
    if pid:
        change.partition_id = pid
        change.partition = partition_name(pid)
    return change
