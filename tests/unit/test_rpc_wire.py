"""cluster.rpc.streaming's hand-made insert and upsert wire formats are plain protobuf, and
Arrow data survives the IPC round trip (types, metadata, chunks, empty tables, row groups)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cluster.proto import canopy_pb2 as pb
from cluster.rpc.streaming import (
    decode_array,
    decode_table,
    decode_upsert_groups,
    encode_array,
    encode_insert,
    encode_table,
    encode_upsert,
    split_insert,
    split_upsert,
)
from woodpecker.errors import InvalidArgument


def table(n: int = 100, dim: int = 4) -> pa.Table:
    rng = np.random.default_rng(n)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, np.float32)), dim)
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False, metadata={b"field_id": b"100"}),
            pa.field("vec", vec.type, metadata={b"field_id": b"101"}),
            pa.field("doc", pa.binary()),
            pa.field("tags", pa.list_(pa.int64())),
        ],
        metadata={b"k": b"v"},
    )
    return pa.table(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            vec,
            pa.array([b'{"a": 1}'] * n),
            pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int64())),
        ],
        schema=schema,
    )


def test_encode_insert_is_an_ordinary_insert_request() -> None:
    t = table()
    wire = encode_insert(7, 8, "v0", t)
    parsed = pb.InsertRequest.FromString(wire)
    assert (parsed.collection_id, parsed.partition_id, parsed.vchannel) == (7, 8, "v0")
    assert decode_table(parsed.table).equals(t)
    assert parsed.table == encode_table(t)


@pytest.mark.parametrize("rows", [0, 1, 5000])
def test_split_insert_reads_any_field_order_without_copying(rows: int) -> None:
    t = table(rows)
    ordinary = pb.InsertRequest(
        collection_id=1, partition_id=2, vchannel="v", table=encode_table(t)
    ).SerializeToString()
    # the payload first, then the header: field order does not matter
    reordered = (
        pb.InsertRequest(table=encode_table(t)).SerializeToString()
        + pb.InsertRequest(collection_id=1, partition_id=2, vchannel="v").SerializeToString()
    )
    for wire in (ordinary, reordered, encode_insert(1, 2, "v", t)):
        parts = split_insert(wire)
        assert parts.error is None
        assert (parts.header.collection_id, parts.header.partition_id) == (1, 2)
        assert parts.header.vchannel == "v" and not parts.header.table
        got = decode_table(parts.table)
        assert got.equals(t) and got.schema.equals(t.schema, check_metadata=True)
        if rows:  # the column buffers point into the received bytes
            base = np.frombuffer(wire, np.uint8).ctypes.data
            address = got.column("vec").chunk(0).values.buffers()[1].address
            assert base <= address < base + len(wire)


@pytest.mark.parametrize("wire", [b"\x22\xff\xff\xff\x0f", b"\x0a\x05ab", b"\xff", b"\x0f"])
def test_split_insert_reports_malformed_bytes(wire: bytes) -> None:
    parts = split_insert(wire)
    assert parts.error is not None and parts.header == pb.InsertRequest()


@pytest.mark.parametrize(
    "pks",
    [
        pa.array([1, 2, 3], pa.int64()),
        pa.array(["a", "b"]),
        pa.array([], pa.int64()),
        pa.chunked_array([[1, 2], [3]], pa.int64()),
        pa.chunked_array([], pa.string()),
    ],
    ids=repr,
)
def test_primary_keys_round_trip(pks: pa.Array | pa.ChunkedArray) -> None:
    got = decode_array(encode_array(pks))
    assert isinstance(got, pa.Array) and got.type == pks.type
    assert got.to_pylist() == pks.to_pylist()


def test_encode_upsert_is_an_ordinary_upsert_request_split_into_groups() -> None:
    t = table(12)
    inserts = [(5, t.slice(0, 4)), (6, t.slice(4, 0)), (7, t.slice(4, 8))]  # an empty group
    wire = encode_upsert(3, "v1", inserts, pa.array([1, 2], pa.int64()), 5)
    parsed = pb.UpsertRequest.FromString(wire)
    assert (parsed.collection_id, parsed.vchannel, parsed.delete_partition_id) == (3, "v1", 5)
    assert list(parsed.partition_ids) == [5, 7] and list(parsed.group_rows) == [4, 8]
    assert decode_table(parsed.table).equals(t)
    assert decode_array(parsed.delete_pks).to_pylist() == [1, 2]
    parts = split_upsert(wire)
    assert parts.error is None and not parts.header.table
    groups = decode_upsert_groups(parts)
    assert [(pid, g.num_rows) for pid, g in groups] == [(5, 4), (7, 8)]
    assert groups[1][1].equals(t.slice(4, 8))
    assert groups[1][1].schema.equals(t.schema, check_metadata=True)
    base = np.frombuffer(wire, np.uint8).ctypes.data  # zero copy: views of the received bytes
    address = groups[1][1].column("vec").chunk(0).values.buffers()[1].address
    assert base <= address < base + len(wire)


def test_an_upsert_of_keys_only_or_rows_only() -> None:
    keys_only = split_upsert(encode_upsert(3, "v", [], pa.array(["a"]), None))
    assert keys_only.error is None and decode_upsert_groups(keys_only) == []
    assert not keys_only.header.HasField("delete_partition_id")  # every partition
    rows_only = split_upsert(encode_upsert(3, "v", [(5, table(3))], pa.array([], pa.int64()), None))
    assert [pid for pid, _ in decode_upsert_groups(rows_only)] == [5]
    assert decode_array(rows_only.header.delete_pks).to_pylist() == []


def test_upsert_groups_that_do_not_fit_the_table_are_refused() -> None:
    wire = encode_upsert(3, "v", [(5, table(4))], pa.array([1]), None)
    for change in ({"group_rows": [5]}, {"group_rows": [4, 0], "partition_ids": [5, 6]},
                   {"partition_ids": [5, 6]}):  # fmt: skip
        head = pb.UpsertRequest.FromString(wire)
        for name, values in change.items():
            del getattr(head, name)[:]
            getattr(head, name).extend(values)
        with pytest.raises(InvalidArgument, match="upsert"):
            decode_upsert_groups(split_upsert(head.SerializeToString()))
