"""Proxy DDL: databases, collections, partitions -- happy paths and Milvus codes/messages.

The servicer is called directly (no network) over a real Catalog + TimestampOracle on
memory://, with the in-memory streaming node of ``cluster.proxy.testing``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.proxy.testing import FakeContext, ProxyHarness

DT = schema_pb2.DataType
BOUNDED = common_pb2.ConsistencyLevel.Bounded
STRONG = common_pb2.ConsistencyLevel.Strong


@pytest.fixture
async def h() -> AsyncIterator[ProxyHarness]:
    harness = await ProxyHarness.start()
    try:
        yield harness
    finally:
        await harness.close()


def schema(
    name: str = "",
    *,
    dim: int = 8,
    dynamic: bool = True,
    pk_type: int = DT.Int64,
    partition_key: bool = False,
) -> bytes:
    s = schema_pb2.CollectionSchema(name=name, enable_dynamic_field=dynamic)
    pk = s.fields.add(name="id", data_type=pk_type, is_primary_key=True)
    if pk_type == DT.VarChar:
        pk.type_params.add(key="max_length", value="64")
    vec = s.fields.add(name="vector", data_type=DT.FloatVector)
    vec.type_params.add(key="dim", value=str(dim))
    if partition_key:
        s.fields.add(name="tenant", data_type=DT.Int64, is_partition_key=True)
    return s.SerializeToString()


def create_req(name: str = "c", **kw: object) -> milvus_pb2.CreateCollectionRequest:
    req = milvus_pb2.CreateCollectionRequest(
        collection_name=name,
        schema=kw.pop("schema", None) or schema(name),  # type: ignore[arg-type]
        consistency_level=kw.pop("consistency_level", BOUNDED),  # type: ignore[arg-type]
    )
    for k, v in kw.items():
        if k == "properties":
            req.properties.extend(
                common_pb2.KeyValuePair(key=a, value=b)
                for a, b in v.items()  # type: ignore[attr-defined]
            )
        else:
            setattr(req, k, v)
    return req


async def create(h: ProxyHarness, name: str = "c", db: str | None = None, **kw: object) -> None:
    status = await h.servicer.CreateCollection(create_req(name, **kw), FakeContext(db))
    assert (status.code, status.reason) == (0, "")


async def describe(h: ProxyHarness, name: str, db: str | None = None):
    return await h.servicer.DescribeCollection(
        milvus_pb2.DescribeCollectionRequest(collection_name=name), FakeContext(db)
    )


# --- connection ----------------------------------------------------------------------------------


async def test_connect_version_health_timestamp(h: ProxyHarness) -> None:
    ctx = FakeContext()
    first = await h.servicer.Connect(milvus_pb2.ConnectRequest(), ctx)
    second = await h.servicer.Connect(milvus_pb2.ConnectRequest(), ctx)
    assert first.status.code == 0 and second.identifier > first.identifier > 0
    assert first.server_info.build_tags.startswith("canopy-")
    version = await h.servicer.GetVersion(milvus_pb2.GetVersionRequest(), ctx)
    assert version.status.code == 0 and version.version.startswith("v2.")
    health = await h.servicer.CheckHealth(milvus_pb2.CheckHealthRequest(), ctx)
    assert health.isHealthy
    t1 = await h.servicer.AllocTimestamp(milvus_pb2.AllocTimestampRequest(), ctx)
    t2 = await h.servicer.AllocTimestamp(milvus_pb2.AllocTimestampRequest(), ctx)
    assert 0 < t1.timestamp < t2.timestamp


# --- databases -----------------------------------------------------------------------------------


async def test_database_lifecycle(h: ProxyHarness) -> None:
    s, ctx = h.servicer, FakeContext()
    status = await s.CreateDatabase(
        milvus_pb2.CreateDatabaseRequest(
            db_name="db1", properties=[common_pb2.KeyValuePair(key="k", value="v")]
        ),
        ctx,
    )
    assert status.code == 0
    listed = await s.ListDatabases(milvus_pb2.ListDatabasesRequest(), ctx)
    assert list(listed.db_names) == ["default", "db1"]
    assert len(listed.db_ids) == 2 and listed.created_timestamp[1] > 0
    desc = await s.DescribeDatabase(milvus_pb2.DescribeDatabaseRequest(db_name="db1"), ctx)
    assert desc.db_name == "db1" and {p.key: p.value for p in desc.properties} == {"k": "v"}
    status = await s.AlterDatabase(
        milvus_pb2.AlterDatabaseRequest(
            db_name="db1",
            properties=[common_pb2.KeyValuePair(key="x", value="1")],
            delete_keys=["k"],
        ),
        ctx,
    )
    assert status.code == 0
    desc = await s.DescribeDatabase(milvus_pb2.DescribeDatabaseRequest(db_name="db1"), ctx)
    assert {p.key: p.value for p in desc.properties} == {"x": "1"}

    dup = await s.CreateDatabase(milvus_pb2.CreateDatabaseRequest(db_name="db1"), ctx)
    assert (dup.code, dup.reason) == (65535, "database already exist: db1")

    # a collection in db1 (the dbname header picks the database) blocks the drop
    await create(h, "c", db="db1")
    busy = await s.DropDatabase(milvus_pb2.DropDatabaseRequest(db_name="db1"), ctx)
    assert busy.code == 65535 and "not empty" in busy.reason
    await s.DropCollection(
        milvus_pb2.DropCollectionRequest(collection_name="c"), FakeContext("db1")
    )
    assert (await s.DropDatabase(milvus_pb2.DropDatabaseRequest(db_name="db1"), ctx)).code == 0
    # dropping a missing database succeeds, as in Milvus
    assert (await s.DropDatabase(milvus_pb2.DropDatabaseRequest(db_name="db1"), ctx)).code == 0
    listed = await s.ListDatabases(milvus_pb2.ListDatabasesRequest(), ctx)
    assert list(listed.db_names) == ["default"]


async def test_database_errors(h: ProxyHarness) -> None:
    s, ctx = h.servicer, FakeContext()
    bad = await s.CreateDatabase(milvus_pb2.CreateDatabaseRequest(db_name="1db"), ctx)
    assert bad.code == 802
    assert bad.reason == (
        "the first character of a database name must be an underscore or letter: "
        "invalid database name[database=1db]"
    )
    missing = await s.DescribeDatabase(milvus_pb2.DescribeDatabaseRequest(db_name="nope"), ctx)
    assert (missing.status.code, missing.status.reason) == (
        800,
        "database not found[database=nope]",
    )
    default = await s.DropDatabase(milvus_pb2.DropDatabaseRequest(db_name="default"), ctx)
    assert (default.code, default.reason) == (65535, "can not drop default database")
    # a collection call against a missing database (dbname header)
    reply = await describe(h, "c", db="nope")
    assert (reply.status.code, reply.status.reason) == (800, "database not found[database=nope]")
    shown = await s.ShowCollections(milvus_pb2.ShowCollectionsRequest(), FakeContext("nope"))
    assert shown.status.code == 800


# --- collections ---------------------------------------------------------------------------------


async def test_create_and_describe_collection(h: ProxyHarness) -> None:
    await create(
        h,
        "c",
        schema=schema(""),  # a schema without a name takes the collection's
        shards_num=2,
        consistency_level=STRONG,
        properties={"collection.ttl.seconds": "60"},
    )
    reply = await describe(h, "c")
    assert reply.status.code == 0
    assert reply.collection_name == "c" and reply.schema.name == "c"
    assert [(f.name, f.fieldID) for f in reply.schema.fields] == [("id", 100), ("vector", 101)]
    assert reply.schema.enable_dynamic_field
    assert reply.consistency_level == STRONG
    assert reply.shards_num == 2 and len(reply.virtual_channel_names) == 2
    assert all(v.startswith("canopy-dml_") for v in reply.virtual_channel_names)
    assert len(reply.physical_channel_names) == 2
    assert reply.collectionID > 0 and reply.db_name == "default" and not reply.aliases
    assert reply.created_timestamp == reply.update_timestamp > 0
    assert reply.created_utc_timestamp == reply.created_timestamp >> 18
    assert {p.key: p.value for p in reply.properties} == {"collection.ttl.seconds": "60"}
    assert reply.num_partitions == 1
    # by id
    by_id = await h.servicer.DescribeCollection(
        milvus_pb2.DescribeCollectionRequest(collectionID=reply.collectionID), FakeContext()
    )
    assert by_id.collection_name == "c"


async def test_create_collection_defaults_and_idempotence(h: ProxyHarness) -> None:
    await create(h, "c")
    reply = await describe(h, "c")
    assert reply.shards_num == 1 and reply.consistency_level == BOUNDED
    # same parameters again: success, same collection
    await create(h, "c")
    assert (await describe(h, "c")).collectionID == reply.collectionID
    # different parameters: refused
    status = await h.servicer.CreateCollection(
        create_req("c", schema=schema("c", dim=16)), FakeContext()
    )
    assert status.code == 65535
    assert status.reason == "create duplicate collection with different parameters, collection: c"
    status = await h.servicer.CreateCollection(create_req("c", shards_num=2), FakeContext())
    assert status.code == 65535


@pytest.mark.parametrize(
    ("req_kw", "code", "reason"),
    [
        (
            {"name": "1c"},
            1100,
            "Invalid collection name: 1c.  the first character of a collection name must be an "
            "underscore or letter: invalid parameter",
        ),
        (
            {"name": "a-b"},
            1100,
            "Invalid collection name: a-b.  collection name can only contain numbers, letters "
            "and underscores: invalid parameter",
        ),
        ({"name": ""}, 1100, "collection name should not be empty: invalid parameter"),
        (
            {"name": "c", "schema": schema("other")},
            1100,
            "collection name [c] not matches schema name [other]: invalid parameter",
        ),
        (
            {"name": "c", "schema": b"\xff\xff"},
            1100,
            None,
        ),
        (
            {"name": "c", "num_partitions": 4},
            1100,
            "num_partitions should only be specified with partition key field enabled: "
            "invalid parameter",
        ),
        (
            {"name": "c", "shards_num": 99},
            1100,
            "shards number 99 must be in [1, 4]: invalid parameter",
        ),
    ],
)
async def test_create_collection_errors(
    h: ProxyHarness, req_kw: dict, code: int, reason: str | None
) -> None:
    name = req_kw.pop("name")
    if "schema" not in req_kw:
        req_kw["schema"] = schema(name if name and name[0].isalpha() and "-" not in name else "")
    status = await h.servicer.CreateCollection(create_req(name, **req_kw), FakeContext())
    assert status.code == code, status.reason
    if reason is not None:
        assert status.reason == reason
    else:
        assert status.reason.startswith("failed to unmarshal collection schema")
    assert status.extra_info["is_input_error"] == "true"


async def test_create_collection_schema_errors_surface(h: ProxyHarness) -> None:
    bad_dim = schema("c", dim=1)
    status = await h.servicer.CreateCollection(create_req("c", schema=bad_dim), FakeContext())
    assert status.code == 1100 and "dim" in status.reason
    s = schema_pb2.CollectionSchema(name="c")
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="v", data_type=DT.BinaryVector).type_params.add(key="dim", value="16")
    status = await h.servicer.CreateCollection(
        create_req("c", schema=s.SerializeToString()), FakeContext()
    )
    assert status.code == 3000 and "not supported yet" in status.reason


async def test_describe_has_show_missing(h: ProxyHarness) -> None:
    reply = await describe(h, "xyz")
    assert reply.status.code == 100
    assert reply.status.error_code == common_pb2.CollectionNotExists
    assert reply.status.reason == "collection not found[database=default][collection=xyz]"
    has = await h.servicer.HasCollection(
        milvus_pb2.HasCollectionRequest(collection_name="xyz"), FakeContext()
    )
    assert has.status.code == 0 and has.value is False
    await create(h, "c")
    has = await h.servicer.HasCollection(
        milvus_pb2.HasCollectionRequest(collection_name="c"), FakeContext()
    )
    assert has.value is True
    await create(h, "b")
    shown = await h.servicer.ShowCollections(milvus_pb2.ShowCollectionsRequest(), FakeContext())
    assert list(shown.collection_names) == ["b", "c"]
    assert len(shown.collection_ids) == 2 and all(shown.created_timestamps)
    some = await h.servicer.ShowCollections(
        milvus_pb2.ShowCollectionsRequest(collection_names=["c"]), FakeContext()
    )
    assert list(some.collection_names) == ["c"]
    none = await h.servicer.ShowCollections(
        milvus_pb2.ShowCollectionsRequest(collection_names=["zz"]), FakeContext()
    )
    assert none.status.code == 100


async def test_drop_collection(h: ProxyHarness) -> None:
    await create(h, "c")
    cid = (await describe(h, "c")).collectionID
    drop = milvus_pb2.DropCollectionRequest(collection_name="c")
    assert (await h.servicer.DropCollection(drop, FakeContext())).code == 0
    assert (await describe(h, "c")).status.code == 100
    assert h.streaming.dropped == {cid}
    # dropping again (missing) succeeds, as in Milvus
    assert (await h.servicer.DropCollection(drop, FakeContext())).code == 0
    # a recreated collection gets a new id
    await create(h, "c")
    assert (await describe(h, "c")).collectionID != cid


async def test_alter_and_rename_collection(h: ProxyHarness) -> None:
    await create(h, "c")
    before = await describe(h, "c")
    status = await h.servicer.AlterCollection(
        milvus_pb2.AlterCollectionRequest(
            collection_name="c",
            properties=[common_pb2.KeyValuePair(key="mmap.enabled", value="true")],
        ),
        FakeContext(),
    )
    assert status.code == 0
    after = await describe(h, "c")
    assert {p.key: p.value for p in after.properties} == {"mmap.enabled": "true"}
    assert after.update_timestamp == before.update_timestamp  # properties are not the schema
    status = await h.servicer.AlterCollection(
        milvus_pb2.AlterCollectionRequest(collection_name="c", delete_keys=["mmap.enabled"]),
        FakeContext(),
    )
    assert status.code == 0 and not (await describe(h, "c")).properties

    rename = milvus_pb2.RenameCollectionRequest(oldName="c", newName="d")
    assert (await h.servicer.RenameCollection(rename, FakeContext())).code == 0
    renamed = await describe(h, "d")
    assert renamed.collectionID == before.collectionID
    assert renamed.collection_name == "d" and renamed.schema.name == "d"
    assert (await describe(h, "c")).status.code == 100
    await create(h, "e")
    taken = await h.servicer.RenameCollection(
        milvus_pb2.RenameCollectionRequest(oldName="d", newName="e"), FakeContext()
    )
    assert taken.code == 65535 and "duplicated new collection name e" in taken.reason
    missing = await h.servicer.RenameCollection(
        milvus_pb2.RenameCollectionRequest(oldName="zz", newName="y"), FakeContext()
    )
    assert missing.code == 100
    bad = await h.servicer.RenameCollection(
        milvus_pb2.RenameCollectionRequest(oldName="d", newName="9x"), FakeContext()
    )
    assert bad.code == 1100
    missing_alter = await h.servicer.AlterCollection(
        milvus_pb2.AlterCollectionRequest(collection_name="zz"), FakeContext()
    )
    assert missing_alter.code == 100


async def test_rename_into_other_database(h: ProxyHarness) -> None:
    await h.servicer.CreateDatabase(milvus_pb2.CreateDatabaseRequest(db_name="db2"), FakeContext())
    await create(h, "c")
    status = await h.servicer.RenameCollection(
        milvus_pb2.RenameCollectionRequest(oldName="c", newName="c2", newDBName="db2"),
        FakeContext(),
    )
    assert status.code == 0
    assert (await describe(h, "c2", db="db2")).db_name == "db2"


# --- partitions ----------------------------------------------------------------------------------


async def test_partition_lifecycle(h: ProxyHarness) -> None:
    s, ctx = h.servicer, FakeContext()
    await create(h, "c")
    req = milvus_pb2.CreatePartitionRequest(collection_name="c", partition_name="p1")
    assert (await s.CreatePartition(req, ctx)).code == 0
    assert (await s.CreatePartition(req, ctx)).code == 0  # existing: success, as in Milvus
    shown = await s.ShowPartitions(milvus_pb2.ShowPartitionsRequest(collection_name="c"), ctx)
    assert list(shown.partition_names) == ["_default", "p1"]
    assert len(set(shown.partitionIDs)) == 2 and all(shown.created_timestamps)
    has = await s.HasPartition(
        milvus_pb2.HasPartitionRequest(collection_name="c", partition_name="p1"), ctx
    )
    assert has.value is True
    drop = milvus_pb2.DropPartitionRequest(collection_name="c", partition_name="p1")
    assert (await s.DropPartition(drop, ctx)).code == 0
    assert (await s.DropPartition(drop, ctx)).code == 0  # missing: success
    has = await s.HasPartition(
        milvus_pb2.HasPartitionRequest(collection_name="c", partition_name="p1"), ctx
    )
    assert has.status.code == 0 and has.value is False


async def test_partition_errors(h: ProxyHarness) -> None:
    s, ctx = h.servicer, FakeContext()
    await create(h, "c")
    bad = await s.CreatePartition(
        milvus_pb2.CreatePartitionRequest(collection_name="c", partition_name="1p"), ctx
    )
    assert bad.code == 1100
    assert bad.reason == (
        "Invalid partition name: 1p. The first character of a partition name must be an "
        "underscore or letter.: invalid parameter"
    )
    default = await s.DropPartition(
        milvus_pb2.DropPartitionRequest(collection_name="c", partition_name="_default"), ctx
    )
    assert (default.code, default.reason) == (65535, "default partition cannot be deleted")
    missing = await s.CreatePartition(
        milvus_pb2.CreatePartitionRequest(collection_name="zz", partition_name="p"), ctx
    )
    assert (missing.code, missing.reason) == (
        100,
        "collection not found[database=default][collection=zz]",
    )
    shown = await s.ShowPartitions(
        milvus_pb2.ShowPartitionsRequest(collection_name="c", partition_names=["nope"]), ctx
    )
    assert (shown.status.code, shown.status.reason) == (200, "partition not found[partition=nope]")
    has = await s.HasPartition(
        milvus_pb2.HasPartitionRequest(collection_name="zz", partition_name="p"), ctx
    )
    assert has.status.code == 100


async def test_partition_key_collection(h: ProxyHarness) -> None:
    s, ctx = h.servicer, FakeContext()
    await create(h, "pk", schema=schema("pk", partition_key=True), num_partitions=4)
    shown = await s.ShowPartitions(milvus_pb2.ShowPartitionsRequest(collection_name="pk"), ctx)
    assert list(shown.partition_names) == [f"_default_{i}" for i in range(4)]
    assert (await describe(h, "pk")).num_partitions == 4
    refused = await s.CreatePartition(
        milvus_pb2.CreatePartitionRequest(collection_name="pk", partition_name="p"), ctx
    )
    assert refused.code == 1100 and "partition key mode" in refused.reason
    refused = await s.DropPartition(
        milvus_pb2.DropPartitionRequest(collection_name="pk", partition_name="_default_0"), ctx
    )
    assert refused.code == 1100
    await create(h, "pk16", schema=schema("pk16", partition_key=True))
    shown = await s.ShowPartitions(milvus_pb2.ShowPartitionsRequest(collection_name="pk16"), ctx)
    assert len(shown.partition_names) == 16
