"""cluster.streaming.messages: the WAL message format (round trips, versions, errors, zero
copy)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.errors import (
    MalformedMessage,
    MessageError,
    UnknownMessageType,
    UnsupportedMessageVersion,
)
from cluster.streaming.messages import (
    DDL_TYPES,
    FORMAT_VERSION,
    PK_FIELD,
    ROW_ID_FIELD,
    TS_FIELD,
    MessageHeader,
    MessageType,
    UpsertPart,
    WalMessage,
    ddl_message,
    decode,
    decode_header,
    decode_parts,
    delete_message,
    encode,
    flush_message,
    insert_message,
    message_version,
    time_tick_message,
    upsert_message,
    with_system_columns,
)
from woodpecker import LogStore
from woodpecker.errors import CanopyError
from woodpecker.message import Message, MessageId

DIM = 8
SCHEMA = CollectionSchema(
    "c",
    (
        FieldSchema(100, "id", DataType.INT64, is_primary=True),
        FieldSchema(101, "vec", DataType.FLOAT_VECTOR, dim=DIM),
        FieldSchema(102, "tag", DataType.VARCHAR, max_length=16, nullable=True),
        FieldSchema(103, "score", DataType.DOUBLE),
    ),
)


def _rows(n: int, ts: int, dim: int = DIM, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    schema = SCHEMA if dim == DIM else _schema(dim)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    table = pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            pa.array([None if i % 5 == 0 else f"t{i % 3}" for i in range(n)], pa.string()),
            pa.array(rng.random(n)),
        ],
        schema=arrow_schema(schema),
    )
    return with_system_columns(table, np.arange(1000, 1000 + n), ts)


def _schema(dim: int) -> CollectionSchema:
    return CollectionSchema(
        "c",
        tuple(
            FieldSchema(f.field_id, f.name, f.dtype, is_primary=f.is_primary, dim=dim)
            if f.dtype == DataType.FLOAT_VECTOR
            else f
            for f in SCHEMA.fields
        ),
    )


def _insert(n: int = 10, ts: int = 7 << 18) -> WalMessage:
    return insert_message(
        _rows(n, ts),
        ts=ts,
        vchannel="by-dml_0_5v0",
        collection_id=5,
        partition_id=6,
        segment_id=77,
        msg_id="req-1",
    )


def _round_trip(msg: WalMessage, mid: MessageId | None = None) -> WalMessage:
    enc = encode(msg)
    payload = bytes(enc.payload)
    return decode(Message(mid or MessageId(3, 4), payload, dict(enc.properties)))


# --- round trips ----------------------------------------------------------------------------------


def test_insert_round_trip_keeps_columns_system_columns_and_header() -> None:
    msg = _insert()
    enc = encode(msg)
    assert enc.properties == {
        "v": "1",  # written with the first version that has inserts: old readers read it
        "type": "insert",
        "ts": str(7 << 18),
        "vchannel": "by-dml_0_5v0",
        "collection_id": "5",
        "partition_id": "6",
        "segment_id": "77",
        "msg_id": "req-1",
        "rows": "10",
    }
    out = _round_trip(msg, MessageId(3, 4))
    assert out.message_id == MessageId(3, 4)
    assert out.header == msg.header
    assert out.table is not None and msg.table is not None
    assert out.table.equals(msg.table)
    assert out.table.schema.equals(msg.table.schema, check_metadata=True)
    assert out.table.schema.field("id").metadata == {b"field_id": b"100"}
    assert out.table.column(ROW_ID_FIELD).type == pa.int64()
    assert out.table.column(TS_FIELD).type == pa.uint64()
    assert out.table.column(ROW_ID_FIELD).to_pylist() == list(range(1000, 1010))
    assert set(out.table.column(TS_FIELD).to_pylist()) == {7 << 18}
    assert out.table.column("tag").null_count == 2
    assert (out.type, out.ts, out.vchannel, out.collection_id, out.partition_id) == (
        MessageType.INSERT,
        7 << 18,
        "by-dml_0_5v0",
        5,
        6,
    )
    assert out.segment_id == 77


def test_insert_decode_is_zero_copy() -> None:
    enc = encode(_insert(n=64))
    payload = pa.py_buffer(bytes(enc.payload))
    out = decode_parts(payload, enc.properties)
    assert out.table is not None
    values = out.table.column("vec").chunk(0).flatten()
    data = values.buffers()[1]
    assert payload.address <= data.address < payload.address + payload.size
    matrix = values.to_numpy(zero_copy_only=True)
    assert matrix.__array_interface__["data"][0] == data.address + values.offset * 4


@pytest.mark.parametrize("keys", [[3, 1, 2], ["a", "bb", "ccc"]])
def test_delete_round_trip(keys: list) -> None:  # type: ignore[type-arg]
    msg = delete_message(keys, ts=99, vchannel="v", collection_id=5)
    out = _round_trip(msg)
    assert out.type is MessageType.DELETE
    assert out.partition_id is None  # every partition
    assert out.header.rows == 3
    assert out.table is not None
    assert out.table.column_names == [PK_FIELD, TS_FIELD]
    assert out.table.column(PK_FIELD).to_pylist() == keys
    assert out.table.column(TS_FIELD).to_pylist() == [99, 99, 99]
    assert encode(msg).properties.get("partition_id") is None


def test_delete_accepts_numpy_and_narrow_ints() -> None:
    out = _round_trip(
        delete_message(np.array([1, 2], np.int32), ts=5, vchannel="v", collection_id=1)
    )
    assert out.table is not None and out.table.column(PK_FIELD).type == pa.int64()


@pytest.mark.parametrize("type_", sorted(DDL_TYPES))
def test_ddl_round_trip(type_: MessageType) -> None:
    body = {"name": "c", "schema": SCHEMA.to_dict(), "partition_ids": [6, 7]}
    msg = ddl_message(type_, body, ts=123, collection_id=5, partition_id=6, msg_id="x")
    out = _round_trip(msg)
    assert out.type is type_
    assert out.body == body
    assert CollectionSchema.from_dict(out.body["schema"]) == SCHEMA  # type: ignore[index]
    assert (out.ts, out.collection_id, out.partition_id, out.header.msg_id) == (123, 5, 6, "x")


def test_flush_and_time_tick_round_trip() -> None:
    flush = _round_trip(flush_message(ts=5, vchannel="v", collection_id=1, segment_ids=[3, 4]))
    assert flush.type is MessageType.FLUSH and flush.body == {"segment_ids": [3, 4]}
    tick = encode(time_tick_message(1 << 40))
    assert tick.properties == {"v": "1", "type": "time_tick", "ts": str(1 << 40)}
    assert tick.payload == b""
    out = _round_trip(time_tick_message(1 << 40, vchannel="v1"))
    assert (out.type, out.ts, out.vchannel, out.table, out.body) == (
        MessageType.TIME_TICK,
        1 << 40,
        "v1",
        None,
        None,
    )


def _upsert(ts: int = 9 << 18, keys: list | None = None, groups: int = 2) -> WalMessage:  # type: ignore[type-arg]
    """An upsert of ``groups`` row groups (partitions 6, 7, ...; segments 70, 71, ...) deleting
    ``keys`` (default: the rows' own keys 0..) in every partition."""
    rows = _rows(4 * groups, ts) if groups else None
    parts = [
        UpsertPart(6 + g, 70 + g, rows.slice(4 * g, 4))  # type: ignore[union-attr]
        for g in range(groups)
    ]
    keys = list(range(4 * groups)) if keys is None else keys
    return upsert_message(parts, keys, ts=ts, vchannel="v0", collection_id=5, msg_id="u")


def test_upsert_round_trip_keeps_both_parts_under_one_timestamp() -> None:
    msg = _upsert(keys=[0, 1, 2, 3, 4, 5, 6, 7, 99])
    enc = encode(msg)
    assert enc.properties == {
        "v": "2",
        "type": "upsert",
        "ts": str(9 << 18),
        "vchannel": "v0",
        "collection_id": "5",
        "msg_id": "u",
        "rows": "8",
        "delete_rows": "9",
        "parts": "6:70:4,7:71:4",
    }
    assert message_version(MessageType.UPSERT) == 2 == FORMAT_VERSION
    out = _round_trip(msg)
    assert out.header == msg.header and out.type is MessageType.UPSERT
    assert out.header.delete_partition_id is None  # every partition
    assert out.deletes is not None and out.table is not None and msg.table is not None
    assert out.deletes.column(PK_FIELD).to_pylist() == [0, 1, 2, 3, 4, 5, 6, 7, 99]
    assert set(out.deletes.column(TS_FIELD).to_pylist()) == {9 << 18}
    assert set(out.table.column(TS_FIELD).to_pylist()) == {9 << 18}  # one timestamp
    assert out.table.equals(msg.table)
    assert out.table.schema.equals(msg.table.schema, check_metadata=True)
    parts = out.upsert_parts()
    assert [(p.partition_id, p.segment_id, p.table.num_rows) for p in parts] == [
        (6, 70, 4),
        (7, 71, 4),
    ]
    assert parts[1].table.column("id").to_pylist() == [4, 5, 6, 7]
    assert all(p.table.column("vec").num_chunks == 1 for p in parts)


def test_upsert_decode_is_zero_copy() -> None:
    enc = encode(_upsert())
    payload = pa.py_buffer(bytes(enc.payload))
    out = decode_parts(payload, enc.properties)
    for part in out.upsert_parts():
        data = part.table.column("vec").chunk(0).flatten().buffers()[1]
        assert payload.address <= data.address < payload.address + payload.size
    assert out.deletes is not None
    keys = out.deletes.column(PK_FIELD).chunk(0).buffers()[1]
    assert payload.address <= keys.address < payload.address + payload.size


@pytest.mark.parametrize(
    ("keys", "groups", "delete_partition_id"),
    [([], 1, None), ([1, 2], 0, 6), (["a", "bb"], 0, None), ([3], 1, 6)],
    ids=["rows only", "keys only", "string keys only", "both, one partition"],
)
def test_upsert_with_one_part_empty_round_trips(
    keys: list,
    groups: int,
    delete_partition_id: int | None,  # type: ignore[type-arg]
) -> None:
    rows = _rows(3, 11) if groups else None
    parts = [UpsertPart(6, 70, rows)] if rows is not None else []
    msg = upsert_message(
        parts, keys, ts=11, vchannel="v", collection_id=1, delete_partition_id=delete_partition_id
    )
    out = _round_trip(msg)
    assert out.header == msg.header
    assert out.header.delete_partition_id == delete_partition_id
    assert (out.table is None) == (not groups) and (out.deletes is None) == (not keys)
    if keys:
        assert out.deletes is not None and out.deletes.column(PK_FIELD).to_pylist() == keys
    assert [p.table.num_rows for p in out.upsert_parts()] == [3] * groups
    assert encode(msg).properties.get("parts") == ("6:70:3" if groups else None)


def test_upsert_drops_empty_groups_and_refuses_an_empty_upsert() -> None:
    rows = _rows(2, 11)
    msg = upsert_message(
        [UpsertPart(6, 70, rows.slice(0, 0)), UpsertPart(7, 71, rows)], [],
        ts=11, vchannel="v", collection_id=1,
    )  # fmt: skip
    assert msg.header.parts == ((7, 71, 2),)
    with pytest.raises(ValueError, match="without rows or keys"):
        encode(upsert_message([], [], ts=11, vchannel="v", collection_id=1))
    with pytest.raises(ValueError, match="must equal the message ts"):
        encode(upsert_message([UpsertPart(6, 70, rows)], [1], ts=12, vchannel="v", collection_id=1))
    bad_parts = WalMessage(
        MessageHeader(MessageType.UPSERT, 11, "v", 1, parts=((6, 70, 5),)), table=rows
    )
    with pytest.raises(ValueError, match="do not cover"):
        encode(bad_parts)


def test_malformed_upserts_are_refused() -> None:
    enc = encode(_upsert(keys=[1, 2]))
    props, payload = enc.properties, bytes(enc.payload)
    with pytest.raises(MalformedMessage, match="needs format version 2"):  # not in v1
        decode_parts(payload, {**props, "v": "1"})
    with pytest.raises(MalformedMessage, match="no length"):
        decode_parts(payload[:4], props)
    with pytest.raises(MalformedMessage, match="overruns"):
        decode_parts(b"\xff" * 8 + payload[8:], props)
    with pytest.raises(MalformedMessage, match="parts"):
        decode_parts(payload, {**props, "parts": "6:70:4,7:71:3"})
    with pytest.raises(MalformedMessage, match="parts"):
        decode_parts(payload, {**props, "parts": "6:70"})
    with pytest.raises(MalformedMessage, match="delete_rows"):
        decode_parts(payload, {**props, "delete_rows": "3"})
    with pytest.raises(MalformedMessage, match="Arrow IPC"):
        decode_parts(payload[:-9], props)


def test_every_message_type_round_trips() -> None:
    samples = {
        MessageType.INSERT: _insert(),
        MessageType.DELETE: delete_message([1], ts=1, vchannel="v", collection_id=1),
        MessageType.UPSERT: _upsert(),
        MessageType.FLUSH: flush_message(ts=1, vchannel="v", collection_id=1),
        MessageType.TIME_TICK: time_tick_message(1),
        **{t: ddl_message(t, {}, ts=1, collection_id=1) for t in DDL_TYPES},
    }
    assert set(samples) == set(MessageType)
    for type_, msg in samples.items():
        out = _round_trip(msg)
        assert out.header == msg.header, type_
        assert out.body == msg.body
        assert (out.table is None) == (msg.table is None)
        assert (out.deletes is None) == (msg.deletes is None)
        assert encode(msg).properties["v"] == str(message_version(type_))


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_payload_decodes_without_options(codec: str) -> None:
    if not pa.Codec.is_available(codec):
        pytest.skip(f"{codec} not built into pyarrow")
    msg = _insert(n=200)
    out = decode_parts(bytes(encode(msg, compression=codec).payload), encode(msg).properties)
    assert out.table is not None and msg.table is not None and out.table.equals(msg.table)


def test_header_decodes_without_the_payload() -> None:
    header = decode_header(encode(_insert()).properties)
    assert header == _insert().header


async def test_round_trip_through_the_wal() -> None:
    store = await LogStore.open("memory://", "memory://")
    try:
        log = await store.create_log("pchannel")
        writer = await log.open_writer()
        msgs = [
            _insert(n=5),
            delete_message([1, 2], ts=8 << 18, vchannel="v", collection_id=5),
            _upsert(ts=9 << 18),
        ]
        mids = []
        for msg in msgs:
            enc = encode(msg)
            mids.append(await writer.append(enc.payload, enc.properties))
        await writer.close()
        reader = await log.open_reader(MessageId.EARLIEST)
        for msg, mid in zip(msgs, mids, strict=True):
            out = decode(await reader.read_next(timeout=5))  # type: ignore[arg-type]
            assert out.message_id == mid
            assert out.header == msg.header
            assert out.table is not None and msg.table is not None
            assert out.table.equals(msg.table)
            assert (out.deletes is None) == (msg.deletes is None)
        await reader.close()
    finally:
        await store.close()


# --- errors ---------------------------------------------------------------------------------------


def _props(**changes: str | None) -> dict[str, str]:
    props = dict(encode(time_tick_message(5)).properties)
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    return props


@pytest.mark.parametrize("version", [None, "0", str(FORMAT_VERSION + 1), "x", "", "01"])
def test_unknown_or_missing_version_is_refused(version: str | None) -> None:
    with pytest.raises(UnsupportedMessageVersion) as info:
        decode_parts(b"", _props(v=version))
    assert info.value.version == version
    assert isinstance(info.value, MessageError) and isinstance(info.value, CanopyError)
    assert not info.value.retryable


def test_every_known_version_decodes_the_original_types() -> None:
    """Version-1 messages (every WAL written before upserts) still decode, and so do the
    original types under a newer ``v``."""
    enc = encode(_insert())
    assert enc.properties["v"] == "1"
    for version in range(1, FORMAT_VERSION + 1):
        out = decode_parts(bytes(enc.payload), {**enc.properties, "v": str(version)})
        assert out.header == _insert().header


def test_version_is_checked_before_type() -> None:
    with pytest.raises(UnsupportedMessageVersion):
        decode_parts(b"", _props(v="9", type="from_the_future"))


@pytest.mark.parametrize("type_", ["from_the_future", "", None, "INSERT"])
def test_unknown_type_is_refused(type_: str | None) -> None:
    with pytest.raises(UnknownMessageType):
        decode_parts(b"", _props(type=type_))


@pytest.mark.parametrize(
    "changes",
    [{"ts": None}, {"ts": "-1"}, {"ts": "soon"}, {"collection_id": "x"}, {"rows": "1.5"}],
)
def test_bad_header_properties_are_malformed(changes: dict[str, str | None]) -> None:
    with pytest.raises(MalformedMessage):
        decode_parts(b"", _props(**changes))


def test_bad_payloads_are_malformed() -> None:
    enc = encode(_insert())
    with pytest.raises(MalformedMessage, match="Arrow IPC"):
        decode_parts(b"not arrow", enc.properties)
    with pytest.raises(MalformedMessage, match="rows=3"):
        decode_parts(enc.payload, {**enc.properties, "rows": "3"})
    with pytest.raises(MalformedMessage, match="payload"):
        decode_parts(b"x", _props())  # a time tick carries nothing
    ddl = encode(ddl_message("drop_collection", {}, ts=1, collection_id=1))
    with pytest.raises(MalformedMessage, match="JSON object"):
        decode_parts(b"[1, 2]", ddl.properties)
    with pytest.raises(MalformedMessage, match="not JSON"):
        decode_parts(b"{", ddl.properties)
    # a delete payload under an insert header: no system columns
    dele = encode(delete_message([1], ts=5, vchannel="v", collection_id=1))
    with pytest.raises(MalformedMessage, match=ROW_ID_FIELD):
        decode_parts(dele.payload, {**enc.properties, "rows": "1"})
    with pytest.raises(MalformedMessage, match=PK_FIELD):
        decode_parts(enc.payload, {**dele.properties, "rows": "10"})


def test_encode_refuses_messages_that_would_not_decode() -> None:
    rows = _rows(4, ts=10)
    with pytest.raises(MalformedMessage, match=ROW_ID_FIELD):
        encode(
            insert_message(
                rows.drop_columns([ROW_ID_FIELD]),
                ts=10,
                vchannel="v",
                collection_id=1,
                partition_id=1,
            )
        )
    with pytest.raises(ValueError, match="must equal the message ts"):
        encode(insert_message(rows, ts=11, vchannel="v", collection_id=1, partition_id=1))
    with pytest.raises(ValueError, match="without rows"):
        encode(
            insert_message(rows.slice(0, 0), ts=10, vchannel="v", collection_id=1, partition_id=1)
        )
    with pytest.raises(ValueError, match="not a DDL"):
        ddl_message(MessageType.INSERT, {}, ts=1, collection_id=1)
    with pytest.raises(MalformedMessage, match=PK_FIELD):
        encode(delete_message([1.5], ts=1, vchannel="v", collection_id=1))


# --- cost -----------------------------------------------------------------------------------------


def test_print_encode_decode_cost_5000x128() -> None:
    """Prints (asserts nothing about) the cost of one 5,000 x 128-d insert message."""
    table = _rows(5000, ts=1 << 30, dim=128)
    msg = insert_message(table, ts=1 << 30, vchannel="v", collection_id=1, partition_id=1)
    runs = 20
    enc = encode(msg)  # warm up
    start = time.perf_counter()
    for _ in range(runs):
        enc = encode(msg)
    encode_ms = (time.perf_counter() - start) / runs * 1e3
    payload = bytes(enc.payload)
    start = time.perf_counter()
    for _ in range(runs):
        out = decode_parts(payload, enc.properties)
        assert out.table is not None
        out.table.column("vec").chunk(0).flatten().to_numpy(zero_copy_only=True)
    decode_ms = (time.perf_counter() - start) / runs * 1e3
    start = time.perf_counter()
    for _ in range(runs):
        bytes(encode(msg).payload)
    as_bytes_ms = (time.perf_counter() - start) / runs * 1e3
    print(
        f"\ninsert message 5000x128: payload {len(payload) / 2**20:.2f} MiB, encode "
        f"{encode_ms:.2f} ms (to bytes {as_bytes_ms:.2f} ms), decode {decode_ms:.3f} ms"
    )
