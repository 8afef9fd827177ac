"""Proxy writes: Insert, Upsert, Delete, Flush, GetFlushState -- what reaches the streaming
nodes (columns, shard routing, partitions, order), the replies, and each validation error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.milvus.shard import hash_pk_to_shard
from cluster.proxy.routing import MappingRouter
from cluster.proxy.testing import FakeContext, MemoryStreamingService, ProxyHarness
from woodpecker.errors import Unavailable

DT = schema_pb2.DataType


@pytest.fixture
async def h() -> AsyncIterator[ProxyHarness]:
    harness = await ProxyHarness.start()
    try:
        yield harness
    finally:
        await harness.close()


# --- request builders ----------------------------------------------------------------------------


def int64(name: str, values: list[int]) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(type=DT.Int64, field_name=name)
    fd.scalars.long_data.data.extend(values)
    return fd


def varchar(name: str, values: list[str]) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(type=DT.VarChar, field_name=name)
    fd.scalars.string_data.data.extend(values)
    return fd


def vectors(name: str, rows: int, dim: int = 4, start: float = 0.0) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(type=DT.FloatVector, field_name=name)
    fd.vectors.dim = dim
    fd.vectors.float_vector.data.extend((np.arange(rows * dim) + start).tolist())
    return fd


def meta(rows: list[dict]) -> schema_pb2.FieldData:
    fd = schema_pb2.FieldData(type=DT.JSON, field_name="$meta", is_dynamic=True)
    fd.scalars.json_data.data.extend(json.dumps(r).encode() for r in rows)
    return fd


def make_schema(
    *,
    pk_type: int = DT.Int64,
    auto_id: bool = False,
    dim: int = 4,
    dynamic: bool = True,
    partition_key: bool = False,
    varchar_len: int = 8,
) -> bytes:
    s = schema_pb2.CollectionSchema(enable_dynamic_field=dynamic)
    pk = s.fields.add(name="id", data_type=pk_type, is_primary_key=True, autoID=auto_id)
    if pk_type == DT.VarChar:
        pk.type_params.add(key="max_length", value="64")
    s.fields.add(name="vec", data_type=DT.FloatVector).type_params.add(key="dim", value=str(dim))
    s.fields.add(name="tag", data_type=DT.VarChar).type_params.add(
        key="max_length", value=str(varchar_len)
    )
    if partition_key:
        s.fields.add(name="tenant", data_type=DT.Int64, is_partition_key=True)
    return s.SerializeToString()


async def create(h: ProxyHarness, name: str = "c", shards: int = 2, **kw: object) -> int:
    req = milvus_pb2.CreateCollectionRequest(
        collection_name=name,
        schema=make_schema(**kw),  # type: ignore[arg-type]
        shards_num=shards,
    )
    if kw.get("partition_key"):
        req.num_partitions = 4
    status = await h.servicer.CreateCollection(req, FakeContext())
    assert status.code == 0, status.reason
    return (await describe(h, name)).collectionID


async def describe(h: ProxyHarness, name: str) -> milvus_pb2.DescribeCollectionResponse:
    return await h.servicer.DescribeCollection(
        milvus_pb2.DescribeCollectionRequest(collection_name=name), FakeContext()
    )


def insert_req(
    fields: list[schema_pb2.FieldData], n: int, name: str = "c", **kw: object
) -> milvus_pb2.InsertRequest:
    return milvus_pb2.InsertRequest(collection_name=name, fields_data=fields, num_rows=n, **kw)


def rows(n: int, start: int = 0) -> list[schema_pb2.FieldData]:
    ids = list(range(start, start + n))
    return [
        int64("id", ids),
        vectors("vec", n, start=float(start)),
        varchar("tag", [f"t{i}" for i in ids]),
        meta([{"color": f"c{i}"} for i in ids]),
    ]


# --- insert --------------------------------------------------------------------------------------


async def test_insert_routes_rows_by_shard(h: ProxyHarness) -> None:
    cid = await create(h, shards=2)
    info = await describe(h, "c")
    reply = await h.servicer.Insert(insert_req(rows(50), 50), FakeContext())
    assert reply.status.code == 0, reply.status.reason
    assert list(reply.IDs.int_id.data) == list(range(50))
    assert list(reply.succ_index) == list(range(50)) and reply.insert_cnt == 50
    inserts = h.streaming.of("insert", cid)
    assert reply.timestamp == max(c.ts for c in inserts)
    assert len(inserts) == 2  # both shards got rows, one call each
    shards = hash_pk_to_shard(np.arange(50), 2)
    for call in inserts:
        shard = list(info.virtual_channel_names).index(call.vchannel)
        table = call.data
        assert isinstance(table, pa.Table)
        assert table.column_names == ["id", "vec", "tag", "$meta"]
        ids = table.column("id").to_pylist()
        assert ids == [i for i in range(50) if shards[i] == shard]  # order kept within a shard
        assert table.column("tag").to_pylist() == [f"t{i}" for i in ids]
        assert [json.loads(m) for m in table.column("$meta").to_pylist()] == [
            {"color": f"c{i}"} for i in ids
        ]
        vec = np.asarray(table.column("vec").combine_chunks().flatten()).reshape(-1, 4)
        assert vec[:, 0].tolist() == [4.0 * i for i in ids]
        partitions = (await h.catalog.describe_collection("default", "c")).partitions
        assert call.partition_id == partitions[0].partition_id


async def test_insert_auto_id_and_varchar_pk(h: ProxyHarness) -> None:
    cid = await create(h, "auto", auto_id=True)
    fields = [f for f in rows(5) if f.field_name != "id"]
    reply = await h.servicer.Insert(insert_req(fields, 5, "auto"), FakeContext())
    assert reply.status.code == 0, reply.status.reason
    ids = list(reply.IDs.int_id.data)
    assert len(set(ids)) == 5 and ids == sorted(ids)
    got = sorted(i for c in h.streaming.of("insert", cid) for i in c.data.column("id").to_pylist())
    assert got == ids

    cid = await create(h, "vc", pk_type=DT.VarChar)
    fields = rows(6)
    fields[0] = varchar("id", [f"k{i}" for i in range(6)])
    reply = await h.servicer.Insert(insert_req(fields, 6, "vc"), FakeContext())
    assert reply.status.code == 0, reply.status.reason
    assert list(reply.IDs.str_id.data) == [f"k{i}" for i in range(6)]
    shards = hash_pk_to_shard(pa.array([f"k{i}" for i in range(6)]), 2)
    vchannels = list((await describe(h, "vc")).virtual_channel_names)
    for call in h.streaming.of("insert", cid):
        keys = call.data.column("id").to_pylist()
        assert all(shards[int(k[1:])] == vchannels.index(call.vchannel) for k in keys)


async def test_insert_into_partition_and_partition_key(h: ProxyHarness) -> None:
    cid = await create(h)
    await h.servicer.CreatePartition(
        milvus_pb2.CreatePartitionRequest(collection_name="c", partition_name="p1"), FakeContext()
    )
    reply = await h.servicer.Insert(insert_req(rows(4), 4, partition_name="p1"), FakeContext())
    assert reply.status.code == 0
    p1 = (await h.catalog.describe_collection("default", "c")).partition("p1")
    assert p1 is not None
    assert {c.partition_id for c in h.streaming.of("insert", cid)} == {p1.partition_id}
    missing = await h.servicer.Insert(insert_req(rows(4), 4, partition_name="zz"), FakeContext())
    assert (missing.status.code, missing.status.reason) == (
        200,
        "partition not found[partition=zz]",
    )

    cid = await create(h, "pk", partition_key=True)
    fields = [*rows(40), int64("tenant", [i % 7 for i in range(40)])]
    reply = await h.servicer.Insert(insert_req(fields, 40, "pk"), FakeContext())
    assert reply.status.code == 0, reply.status.reason
    parts = [
        p.partition_id for p in (await h.catalog.describe_collection("default", "pk")).partitions
    ]
    for call in h.streaming.of("insert", cid):
        tenants = call.data.column("tenant").to_pylist()
        expected = hash_pk_to_shard(np.asarray(tenants), 4)
        assert {parts[i] for i in expected} == {call.partition_id}
    assert sum(c.data.num_rows for c in h.streaming.of("insert", cid)) == 40
    named = await h.servicer.Insert(
        insert_req(fields, 40, "pk", partition_name="_default_0"), FakeContext()
    )
    assert named.status.code == 1100
    assert named.status.reason == (
        "not support manually specifying the partition names if partition key mode is used: "
        "invalid parameter"
    )


async def test_insert_schema_timestamp(h: ProxyHarness) -> None:
    await create(h)
    ts = (await describe(h, "c")).update_timestamp
    ok = await h.servicer.Insert(insert_req(rows(2), 2, schema_timestamp=ts), FakeContext())
    assert ok.status.code == 0
    # dropped and recreated by someone else: the cached schema is stale
    await h.servicer.DropCollection(
        milvus_pb2.DropCollectionRequest(collection_name="c"), FakeContext()
    )
    await create(h)
    stale = await h.servicer.Insert(insert_req(rows(2), 2, schema_timestamp=ts), FakeContext())
    assert stale.status.code == 109
    assert stale.status.error_code == common_pb2.SchemaMismatch
    assert stale.status.reason == "collection schema mismatch[collection=c]"


@pytest.mark.parametrize(
    ("mutate", "n", "code", "reason"),
    [
        (
            lambda f: [f[0], vectors("vec", 3, dim=8), f[2], f[3]],
            3,
            1100,
            "the dim (8) of field data(vec) is not equal to schema dim (4): "
            "invalid parameter[expected=4][actual=8]",
        ),
        (
            lambda f: [f[0], f[1], f[3]],
            3,
            1100,
            "fieldSchema(tag) has no corresponding fieldData pass in: invalid parameter",
        ),
        (
            lambda f: [*f, int64("extra", [1, 2, 3])],
            3,
            1100,
            "fieldName extra not exist in collection schema: invalid parameter",
        ),
        (
            lambda f: [f[0], f[1], int64("tag", [1, 2, 3]), f[3]],
            3,
            1100,
            "field 'tag' is illegal, data type mismatch: "
            "invalid parameter[expected=VarChar][actual=Int64]",
        ),
        (
            lambda f: [f[0], f[1], varchar("tag", ["a", "b", "way-too-long"]), f[3]],
            3,
            1100,
            "length of varchar field tag exceeds max length, row number: 2, length: 12, "
            "max length: 8: invalid parameter",
        ),
        (
            lambda f: [*f, int64("id", [1, 2, 3])],
            3,
            1100,
            "duplicated field id found: invalid parameter",
        ),
        (
            lambda f: f,
            4,
            1100,
            "the num_rows (3) of field (id) is not equal to passed num_rows (4): "
            "invalid parameter[expected=4][actual=3]",
        ),
    ],
)
async def test_insert_validation_errors(
    h: ProxyHarness, mutate, n: int, code: int, reason: str
) -> None:
    cid = await create(h)
    reply = await h.servicer.Insert(insert_req(mutate(rows(3)), n), FakeContext())
    assert (reply.status.code, reply.status.reason) == (code, reason)
    assert reply.status.extra_info["is_input_error"] == "true"
    assert not h.streaming.of("insert", cid)  # nothing was sent


async def test_insert_unknown_collection_and_database(h: ProxyHarness) -> None:
    reply = await h.servicer.Insert(insert_req(rows(1), 1, "zz"), FakeContext())
    assert (reply.status.code, reply.status.reason) == (
        100,
        "collection not found[database=default][collection=zz]",
    )
    reply = await h.servicer.Insert(insert_req(rows(1), 1), FakeContext("nodb"))
    assert reply.status.code == 800


async def test_insert_in_other_database_via_header(h: ProxyHarness) -> None:
    await h.servicer.CreateDatabase(milvus_pb2.CreateDatabaseRequest(db_name="db1"), FakeContext())
    req = milvus_pb2.CreateCollectionRequest(collection_name="c", schema=make_schema())
    assert (await h.servicer.CreateCollection(req, FakeContext("db1"))).code == 0
    reply = await h.servicer.Insert(insert_req(rows(3), 3), FakeContext("db1"))
    assert reply.status.code == 0
    assert (await h.servicer.Insert(insert_req(rows(3), 3), FakeContext())).status.code == 100


async def test_insert_failure_of_a_shard_is_a_status(h: ProxyHarness) -> None:
    await create(h)
    h.streaming.fail_with = Unavailable("wal down")
    reply = await h.servicer.Insert(insert_req(rows(10), 10), FakeContext())
    assert reply.status.code == 2 and reply.status.retriable
    assert "wal down" in reply.status.reason
    h.streaming.fail_with = RuntimeError("boom")
    reply = await h.servicer.Insert(insert_req(rows(10), 10), FakeContext())
    assert (reply.status.code, reply.status.reason) == (
        65535,
        "RuntimeError: boom: unexpected error",
    )


async def test_insert_fans_out_to_owning_nodes(h: ProxyHarness) -> None:
    await create(h, shards=2)
    vchannels = list((await describe(h, "c")).virtual_channel_names)
    a = MemoryStreamingService(h.coordinator)
    b = MemoryStreamingService(h.coordinator)
    router = MappingRouter({vchannels[0]: a, vchannels[1]: b})
    h.servicer.router = h.servicer.dml.router = h.servicer.ddl.router = router
    reply = await h.servicer.Insert(insert_req(rows(30), 30), FakeContext())
    assert reply.status.code == 0
    assert {c.vchannel for c in a.of("insert")} == {vchannels[0]}
    assert {c.vchannel for c in b.of("insert")} == {vchannels[1]}
    assert reply.timestamp == max(c.ts for c in a.calls + b.calls)
    # flush reaches both nodes; the reply merges their tickets
    flushed = await h.servicer.Flush(milvus_pb2.FlushRequest(collection_names=["c"]), FakeContext())
    assert len(flushed.coll_segIDs["c"].data) == 2
    state = await h.servicer.GetFlushState(
        milvus_pb2.GetFlushStateRequest(
            collection_name="c",
            segmentIDs=flushed.coll_segIDs["c"].data,
            flush_ts=flushed.coll_flush_ts["c"],
        ),
        FakeContext(),
    )
    assert state.flushed
    # an unassigned vchannel is a retryable status
    h.servicer.dml.router = MappingRouter({})
    reply = await h.servicer.Insert(insert_req(rows(30), 30), FakeContext())
    assert reply.status.code == 2 and "no streaming node serves vchannel" in reply.status.reason


# --- upsert --------------------------------------------------------------------------------------


async def test_upsert_is_one_call_per_vchannel_with_its_keys_and_rows(h: ProxyHarness) -> None:
    cid = await create(h)
    vchannels = list((await describe(h, "c")).virtual_channel_names)
    await h.servicer.Insert(insert_req(rows(10), 10), FakeContext())
    fields = rows(4, start=8)  # keys 8, 9 exist; 10, 11 are new
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(collection_name="c", fields_data=fields, num_rows=4),
        FakeContext(),
    )
    assert reply.status.code == 0, reply.status.reason
    assert list(reply.IDs.int_id.data) == [8, 9, 10, 11]
    assert reply.upsert_cnt == 4 and list(reply.succ_index) == [0, 1, 2, 3]
    upserts = h.streaming.of("upsert", cid)
    assert len(h.streaming.of("insert", cid)) == 2 and not h.streaming.of("delete", cid)
    shards = hash_pk_to_shard(np.arange(8, 12), 2)
    assert sorted(c.vchannel for c in upserts) == sorted({vchannels[s] for s in shards})
    default = (await h.catalog.describe_collection("default", "c")).partitions[0].partition_id
    for call in upserts:  # one call per vchannel: its keys and its rows, one timestamp
        keys = call.data.delete_pks.to_pylist()
        assert keys == [k for k, s in zip(range(8, 12), shards, strict=True)
                        if vchannels[s] == call.vchannel]  # fmt: skip
        [(pid, table)] = call.data.inserts
        assert table.column("id").to_pylist() == keys and pid == default
        assert call.partition_id is None  # no partition named: the delete is everywhere
    assert reply.timestamp == max(c.ts for c in upserts)
    live = h.streaming.live_rows(cid, "id")
    assert sorted(live.column("id").to_pylist()) == list(range(12))
    assert live.num_rows == 12


async def test_upsert_into_a_named_partition_deletes_there(h: ProxyHarness) -> None:
    cid = await create(h)
    await h.servicer.CreatePartition(
        milvus_pb2.CreatePartitionRequest(collection_name="c", partition_name="p1"), FakeContext()
    )
    p1 = (await h.catalog.describe_collection("default", "c")).partition("p1")
    assert p1 is not None
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(
            collection_name="c", fields_data=rows(6), num_rows=6, partition_name="p1"
        ),
        FakeContext(),
    )
    assert reply.status.code == 0, reply.status.reason
    for call in h.streaming.of("upsert", cid):
        assert call.partition_id == p1.partition_id  # the delete: in p1 only
        assert {pid for pid, _ in call.data.inserts} == {p1.partition_id}


async def test_upsert_with_a_partition_key_sends_every_partition_of_a_vchannel_at_once(
    h: ProxyHarness,
) -> None:
    cid = await create(h, "pk", partition_key=True)
    fields = [*rows(40), int64("tenant", [i % 7 for i in range(40)])]
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(collection_name="pk", fields_data=fields, num_rows=40),
        FakeContext(),
    )
    assert reply.status.code == 0, reply.status.reason
    upserts = h.streaming.of("upsert", cid)
    assert len(upserts) == 2 and len({c.vchannel for c in upserts}) == 2
    parts = [
        p.partition_id for p in (await h.catalog.describe_collection("default", "pk")).partitions
    ]
    for call in upserts:
        assert call.partition_id is None and len(call.data.inserts) > 1  # several partitions
        keys = sorted(call.data.delete_pks.to_pylist())
        assert sorted(k for _, t in call.data.inserts for k in t.column("id").to_pylist()) == keys
        for pid, table in call.data.inserts:
            tenants = hash_pk_to_shard(np.asarray(table.column("tenant").to_pylist()), 4)
            assert {parts[i] for i in tenants} == {pid}
    assert sum(len(c.data.delete_pks) for c in upserts) == 40


async def test_upsert_auto_id_sends_keys_and_new_rows_where_they_hash(h: ProxyHarness) -> None:
    cid = await create(h, "auto", auto_id=True)
    vchannels = list((await describe(h, "auto")).virtual_channel_names)
    fields = rows(3, start=500)
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(collection_name="auto", fields_data=fields, num_rows=3),
        FakeContext(),
    )
    assert reply.status.code == 0, reply.status.reason
    new_ids = list(reply.IDs.int_id.data)
    assert len(set(new_ids)) == 3 and not set(new_ids) & {500, 501, 502}
    upserts = h.streaming.of("upsert", cid)
    assert not h.streaming.of("insert", cid) and not h.streaming.of("delete", cid)
    assert len({c.vchannel for c in upserts}) == len(upserts)  # one call per vchannel
    old_shards = hash_pk_to_shard(np.array([500, 501, 502]), 2)
    new_shards = hash_pk_to_shard(np.array(new_ids), 2)
    for call in upserts:
        shard = vchannels.index(call.vchannel)
        keys = call.data.delete_pks.to_pylist()
        ids = [i for _, t in call.data.inserts for i in t.column("id").to_pylist()]
        assert keys == [k for k, s in zip([500, 501, 502], old_shards, strict=True) if s == shard]
        assert ids == [i for i, s in zip(new_ids, new_shards, strict=True) if s == shard]
    deleted = sorted(k for c in upserts for k in c.data.delete_pks.to_pylist())
    assert deleted == [500, 501, 502]
    inserted = sorted(i for c in upserts for _, t in c.data.inserts for i in t["id"].to_pylist())
    assert inserted == sorted(new_ids)

    # one row at a time: when the new id hashes to the other vchannel than the old key, the old
    # key's vchannel gets an upsert of keys only and the new id's one of rows only
    split = 0
    for k in range(600, 620):
        before = len(h.streaming.calls)
        reply = await h.servicer.Upsert(
            milvus_pb2.UpsertRequest(collection_name="auto", fields_data=rows(1, k), num_rows=1),
            FakeContext(),
        )
        calls = h.streaming.calls[before:]
        if len(calls) == 1:
            [(_, table)] = calls[0].data.inserts
            assert calls[0].data.delete_pks.to_pylist() == [k] and table.num_rows == 1
            continue
        split += 1
        [keys_only] = [c for c in calls if not c.data.inserts]
        [rows_only] = [c for c in calls if not len(c.data.delete_pks)]
        assert keys_only.data.delete_pks.to_pylist() == [k]
        [(_, table)] = rows_only.data.inserts
        assert table.column("id").to_pylist() == list(reply.IDs.int_id.data)
    assert 0 < split < 20


async def test_upsert_failure_of_a_vchannel_is_a_status(h: ProxyHarness) -> None:
    cid = await create(h)
    h.streaming.fail_with = Unavailable("wal down")
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(collection_name="c", fields_data=rows(10), num_rows=10),
        FakeContext(),
    )
    assert reply.status.code == 2 and "wal down" in reply.status.reason
    assert len(h.streaming.of("upsert", cid)) == 1  # the other vchannel's upsert went through


async def test_upsert_errors(h: ProxyHarness) -> None:
    await create(h)
    fields = [f for f in rows(2) if f.field_name != "id"]
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(collection_name="c", fields_data=fields, num_rows=2),
        FakeContext(),
    )
    assert (reply.status.code, reply.status.reason) == (
        1100,
        "must assign pk when upsert, primary field: id: invalid parameter",
    )
    reply = await h.servicer.Upsert(
        milvus_pb2.UpsertRequest(
            collection_name="c", fields_data=rows(2), num_rows=2, partial_update=True
        ),
        FakeContext(),
    )
    assert reply.status.code == 3000


# --- delete --------------------------------------------------------------------------------------


async def test_delete_by_ids(h: ProxyHarness) -> None:
    cid = await create(h)
    await h.servicer.Insert(insert_req(rows(10), 10), FakeContext())
    reply = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(collection_name="c", expr="id in [1,2,3,42]"), FakeContext()
    )
    assert reply.status.code == 0, reply.status.reason
    assert reply.delete_cnt == 4 and not reply.IDs.int_id.data  # like Milvus >= 2.3.2
    deletes = h.streaming.of("delete", cid)
    assert sorted(k for c in deletes for k in c.data.to_pylist()) == [1, 2, 3, 42]
    assert all(c.partition_id is None for c in deletes)  # every partition
    assert reply.timestamp == max(c.ts for c in deletes)
    vchannels = list((await describe(h, "c")).virtual_channel_names)
    shards = hash_pk_to_shard(np.asarray([1, 2, 3, 42]), 2)
    for c in deletes:
        assert all(
            shards[[1, 2, 3, 42].index(k)] == vchannels.index(c.vchannel)
            for k in c.data.to_pylist()
        )
    live = h.streaming.live_rows(cid, "id").column("id").to_pylist()
    assert sorted(live) == [0, 4, 5, 6, 7, 8, 9]


async def test_delete_varchar_ids_and_partition(h: ProxyHarness) -> None:
    cid = await create(h, "vc", pk_type=DT.VarChar)
    reply = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(
            collection_name="vc", expr="id in ['a', \"b\", 'it\\'s']", partition_name="_default"
        ),
        FakeContext(),
    )
    assert reply.status.code == 0, reply.status.reason
    deletes = h.streaming.of("delete", cid)
    assert sorted(k for c in deletes for k in c.data.to_pylist()) == ["a", "b", "it's"]
    default = (await h.catalog.describe_collection("default", "vc")).partition("_default")
    assert default is not None and {c.partition_id for c in deletes} == {default.partition_id}


@pytest.mark.parametrize(
    ("expr", "code", "fragment"),
    [
        # a filter is a query of the keys (tests/unit/test_proxy_delete_filter.py): loaded only
        ("id > 3", 101, "collection not loaded"),
        ("tag in ['a']", 101, "collection not loaded"),
        ("id in [1, 2] and id > 0", 101, "collection not loaded"),
        ("", 1100, "expr cannot be empty"),
        ("id in ['x']", 1100, "cannot be casted to Int64"),
        ("id in [99999999999999999999]", 1100, "out of range of Int64"),
    ],
)
async def test_delete_errors(h: ProxyHarness, expr: str, code: int, fragment: str) -> None:
    cid = await create(h)
    reply = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(collection_name="c", expr=expr), FakeContext()
    )
    assert reply.status.code == code and fragment in reply.status.reason, reply.status.reason
    assert not h.streaming.of("delete", cid)


async def test_delete_template_and_missing_targets(h: ProxyHarness) -> None:
    await create(h)
    req = milvus_pb2.DeleteRequest(collection_name="c", expr="id in {ids}")
    req.expr_template_values["ids"].int64_val = 1
    assert (await h.servicer.Delete(req, FakeContext())).status.code == 101  # a filter: not loaded
    missing = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(collection_name="zz", expr="id in [1]"), FakeContext()
    )
    assert missing.status.code == 100
    bad_part = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(collection_name="c", expr="id in [1]", partition_name="p9"),
        FakeContext(),
    )
    assert bad_part.status.code == 200
    empty = await h.servicer.Delete(
        milvus_pb2.DeleteRequest(collection_name="c", expr="id in []"), FakeContext()
    )
    assert empty.status.code == 0 and empty.delete_cnt == 0 and empty.timestamp > 0


# --- flush ---------------------------------------------------------------------------------------


async def test_flush_and_flush_state(h: ProxyHarness) -> None:
    cid = await create(h, shards=2)
    await create(h, "empty")
    await h.servicer.Insert(insert_req(rows(20), 20), FakeContext())
    h.streaming.polls_until_flushed = 2
    reply = await h.servicer.Flush(
        milvus_pb2.FlushRequest(collection_names=["c", "empty"]), FakeContext()
    )
    assert reply.status.code == 0 and reply.db_name == "default"
    segments = list(reply.coll_segIDs["c"].data)
    assert len(segments) == 2  # one per vchannel holding data
    assert reply.coll_flush_ts["c"] > 0 and reply.coll_seal_times["c"] > 0
    assert list(reply.coll_segIDs["empty"].data) == [] and reply.coll_flush_ts["empty"] > 0
    flush_calls = h.streaming.of("flush", cid)
    assert len(flush_calls) == 1 and len(flush_calls[0].data) == 2

    req = milvus_pb2.GetFlushStateRequest(
        collection_name="c", segmentIDs=segments, flush_ts=reply.coll_flush_ts["c"]
    )
    first = await h.servicer.GetFlushState(req, FakeContext())
    assert first.status.code == 0 and not first.flushed
    assert (await h.servicer.GetFlushState(req, FakeContext())).flushed
    empty = await h.servicer.GetFlushState(
        milvus_pb2.GetFlushStateRequest(collection_name="empty", flush_ts=1), FakeContext()
    )
    assert empty.flushed
    # a ticket this proxy did not issue is asked of every owner as a whole
    h.servicer.dml._tickets.clear()
    assert (await h.servicer.GetFlushState(req, FakeContext())).flushed

    missing = await h.servicer.Flush(
        milvus_pb2.FlushRequest(collection_names=["zz"]), FakeContext()
    )
    assert missing.status.code == 100
    missing_state = await h.servicer.GetFlushState(
        milvus_pb2.GetFlushStateRequest(collection_name="zz", segmentIDs=[1]), FakeContext()
    )
    assert missing_state.status.code == 100
