"""The DDL catalog on every MetaStore backend: memory://, sqlite:// and a real etcd.

Several ``Catalog`` objects on one meta (for etcd: separate clients) play concurrent
coordinators; a ``Catalog`` on a reopened store is a restarted one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from meta_handles import Stores
from pymilvus.grpc_gen import schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import (
    CollectionExists,
    CollectionNotFound,
    CoordinatorError,
    DatabaseExists,
    DatabaseNotEmpty,
    DatabaseNotFound,
    InvalidParameter,
    LimitExceeded,
    NotAllowed,
    PartitionExists,
    PartitionNotFound,
)
from cluster.coordinator.records import CatalogSettings, CollectionState

pytestmark = pytest.mark.contract

T = TypeVar("T")

BACKENDS = ["memory", "sqlite", "etcd"]


def schema(name: str, dim: int = 8) -> bytes:
    s = schema_pb2.CollectionSchema(name=name, enable_dynamic_field=True)
    s.fields.add(name="id", data_type=schema_pb2.DataType.Int64, is_primary_key=True, fieldID=100)
    vec = s.fields.add(name="vector", data_type=schema_pb2.DataType.FloatVector, fieldID=101)
    vec.type_params.add(key="dim", value=str(dim))
    return s.SerializeToString()


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest, meta_uri: Callable[[str], str]
) -> AsyncIterator[Stores]:
    uri = meta_uri(request.param)
    result = Stores(request.param, uri)
    yield result
    for store in result.opened:
        await store.close()


@pytest.fixture
async def catalog(stores: Stores) -> Catalog:
    cat = Catalog(await stores.reopen(), num_physical_channels=4, cluster_prefix="test")
    await cat.start()
    return cat


async def test_default_database_and_persisted_settings(stores: Stores, catalog: Catalog) -> None:
    assert [d.name for d in await catalog.list_databases()] == ["default"]
    assert await catalog.list_collections("default") == []
    again = Catalog(await stores.concurrent(), num_physical_channels=99, cluster_prefix="other")
    assert await again.start() == CatalogSettings(4, "test")  # the first start's settings win


async def test_collection_lifecycle_and_recreate(catalog: Catalog) -> None:
    created = await catalog.create_collection(
        "default",
        "books",
        schema("books"),
        create_ts=1000,
        shards_num=2,
        consistency_level=0,
        properties={"collection.ttl.seconds": "60"},
    )
    cid = created.collection_id
    assert created.state is CollectionState.CREATED
    assert (created.create_ts, created.update_ts, created.drop_ts) == (1000, 1000, 0)
    assert created.pchannels == tuple(f"test-dml_{(cid + i) % 4}" for i in range(2))
    assert created.vchannels == tuple(f"test-dml_{(cid + i) % 4}_{cid}v{i}" for i in range(2))
    assert [p.name for p in created.partitions] == ["_default"]
    assert created.partitions[0].partition_id not in (0, cid)
    assert await catalog.describe_collection("default", "books") == created
    assert await catalog.describe_collection(None, cid) == created
    assert await catalog.has_collection("default", "books")
    assert [c.name for c in await catalog.list_collections("default")] == ["books"]

    tomb = await catalog.drop_collection("default", "books", drop_ts=2000)
    assert (tomb.state, tomb.drop_ts, tomb.collection_id) == (CollectionState.DROPPING, 2000, cid)
    with pytest.raises(CollectionNotFound) as err:
        await catalog.describe_collection("default", "books")
    assert str(err.value) == "collection not found[database=default][collection=books]"
    assert err.value.milvus_code == 100
    with pytest.raises(CollectionNotFound, match=rf"^collection not found\[collection={cid}\]$"):
        await catalog.describe_collection(None, cid)
    with pytest.raises(CollectionNotFound):
        await catalog.drop_collection("default", "books", drop_ts=2001)
    assert not await catalog.has_collection("default", "books")
    assert await catalog.list_collections("default") == []
    assert [c.collection_id for c in await catalog.list_dropped_collections()] == [cid]

    again = await catalog.create_collection("default", "books", schema("books"), create_ts=3000)
    assert again.collection_id != cid and again.shards_num == 1 and again.consistency_level == 2
    assert await catalog.purge_dropped_collection(cid)
    assert not await catalog.purge_dropped_collection(cid)
    assert await catalog.list_dropped_collections() == []


async def test_duplicates_and_invalid_parameters(catalog: Catalog) -> None:
    first = await catalog.create_collection("default", "c1", schema("c1"), create_ts=1)
    with pytest.raises(CollectionExists) as err:
        await catalog.create_collection("default", "c1", schema("c1", 16), create_ts=2)
    assert err.value.existing == first
    assert "create duplicate collection with different parameters, collection: c1" in str(err.value)
    for bad in ("", "1abc", "a-b", "a/b", "x" * 256, "é"):
        with pytest.raises(InvalidParameter) as bad_err:
            await catalog.create_collection("default", bad, schema("x"), create_ts=1)
        assert bad_err.value.milvus_code == 1100
    for shards in (-1, 5, 17):  # 4 physical channels
        with pytest.raises(InvalidParameter):
            await catalog.create_collection("default", "c2", b"", create_ts=1, shards_num=shards)
    with pytest.raises(InvalidParameter):
        await catalog.create_collection("default", "c2", b"", create_ts=1, partitions=["a", "a"])
    with pytest.raises(DatabaseNotFound, match=r"^database not found\[database=nope\]$"):
        await catalog.create_collection("nope", "c1", schema("c1"), create_ts=1)
    with pytest.raises(DatabaseNotFound):
        await catalog.describe_collection("nope", "c1")


async def test_database_lifecycle(catalog: Catalog) -> None:
    db = await catalog.create_database("shop", {"database.replica.number": "1"}, create_ts=7)
    assert db.properties == {"database.replica.number": "1"} and db.create_ts == 7
    with pytest.raises(DatabaseExists, match="database already exist: shop"):
        await catalog.create_database("shop")
    assert sorted(d.name for d in await catalog.list_databases()) == ["default", "shop"]
    altered = await catalog.alter_database(
        "shop", {"k": "v"}, delete_keys=["database.replica.number"]
    )
    assert altered.properties == {"k": "v"} == (await catalog.describe_database("shop")).properties

    await catalog.create_collection("shop", "items", schema("items"), create_ts=8)
    with pytest.raises(DatabaseNotEmpty) as err:
        await catalog.drop_database("shop")
    assert "must drop all collections before drop database" in str(err.value)
    # the refused drop left the database fully usable
    await catalog.create_collection("shop", "more", schema("more"), create_ts=9)
    assert [c.name for c in await catalog.list_collections("shop")] == ["items", "more"]
    assert await catalog.list_collections("default") == []
    for name in ("items", "more"):
        await catalog.drop_collection("shop", name, drop_ts=10)
    await catalog.drop_database("shop")
    assert [d.name for d in await catalog.list_databases()] == ["default"]
    with pytest.raises(DatabaseNotFound):
        await catalog.describe_database("shop")
    with pytest.raises(DatabaseNotFound):
        await catalog.drop_database("shop")
    with pytest.raises(NotAllowed, match="can not drop default database"):
        await catalog.drop_database("default")
    recreated = await catalog.create_database("shop")
    assert recreated.db_id != db.db_id and recreated.properties == {}
    with pytest.raises(InvalidParameter):
        await catalog.create_database("bad-name")


async def test_partitions(stores: Stores) -> None:
    catalog = Catalog(await stores.reopen(), max_partitions=4)
    coll = await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    p1 = await catalog.create_partition("default", "c", "p1", create_ts=2)
    p2 = await catalog.create_partition("default", "c", "p2", create_ts=3)
    ids = {coll.collection_id, coll.partitions[0].partition_id, p1.partition_id, p2.partition_id}
    assert len(ids) == 4
    assert [p.name for p in await catalog.list_partitions("default", "c")] == [
        "_default",
        "p1",
        "p2",
    ]
    assert await catalog.has_partition("default", "c", "p1")
    assert await catalog.describe_partition("default", "c", "p2") == p2
    with pytest.raises(PartitionExists):
        await catalog.create_partition("default", "c", "p1", create_ts=4)
    await catalog.create_partition("default", "c", "p3", create_ts=5)
    with pytest.raises(LimitExceeded, match=r"partition number \(4\) exceeds max configuration"):
        await catalog.create_partition("default", "c", "p4", create_ts=6)
    with pytest.raises(NotAllowed, match="default partition cannot be deleted"):
        await catalog.drop_partition("default", "c", "_default", drop_ts=7)
    with pytest.raises(PartitionNotFound, match=r"^partition not found\[partition=zz\]$"):
        await catalog.drop_partition("default", "c", "zz", drop_ts=7)
    tomb = await catalog.drop_partition("default", "c", "p1", drop_ts=8)
    assert (tomb.partition_id, tomb.collection_id, tomb.drop_ts) == (
        p1.partition_id,
        coll.collection_id,
        8,
    )
    assert not await catalog.has_partition("default", "c", "p1")
    with pytest.raises(PartitionNotFound):
        await catalog.describe_partition("default", "c", "p1")
    assert [p.partition_id for p in await catalog.list_dropped_partitions()] == [p1.partition_id]
    recreated = await catalog.create_partition("default", "c", "p1", create_ts=9)
    assert recreated.partition_id not in ids
    with pytest.raises(CollectionNotFound):
        await catalog.create_partition("default", "missing", "p", create_ts=1)
    await catalog.drop_collection("default", "c", drop_ts=10)
    await catalog.purge_dropped_collection(coll.collection_id)  # takes its partitions along
    assert await catalog.list_dropped_partitions() == []


async def test_partition_key_collection_gets_its_partitions(catalog: Catalog) -> None:
    names = [f"_default_{i}" for i in range(16)]
    coll = await catalog.create_collection("default", "pk", b"", create_ts=1, partitions=names)
    assert [p.name for p in coll.partitions] == names
    assert len({p.partition_id for p in coll.partitions} | {coll.collection_id}) == 17


async def test_rename(catalog: Catalog) -> None:
    await catalog.create_database("other")
    a = await catalog.create_collection("default", "a", schema("a"), create_ts=1)
    await catalog.create_collection("default", "b", schema("b"), create_ts=1)
    renamed = await catalog.rename_collection("default", "a", "a2")
    assert (renamed.name, renamed.collection_id, renamed.partitions) == (
        "a2",
        a.collection_id,
        a.partitions,
    )
    assert not await catalog.has_collection("default", "a")
    assert (await catalog.describe_collection(None, a.collection_id)).name == "a2"
    with pytest.raises(CollectionExists, match="duplicated new collection name b"):
        await catalog.rename_collection("default", "a2", "b")
    with pytest.raises(CollectionNotFound):
        await catalog.rename_collection("default", "a", "z")
    with pytest.raises(DatabaseNotFound):
        await catalog.rename_collection("default", "a2", "z", new_db="nope")
    moved = await catalog.rename_collection("default", "a2", "a3", new_db="other")
    assert (moved.db, moved.db_id) == ("other", (await catalog.describe_database("other")).db_id)
    assert [c.name for c in await catalog.list_collections("other")] == ["a3"]
    assert [c.name for c in await catalog.list_collections("default")] == ["b"]
    assert (await catalog.describe_collection(None, a.collection_id)).db == "other"
    await catalog.create_collection("default", "a", schema("a"), create_ts=2)  # the name is free


async def test_alter_collection_properties(catalog: Catalog) -> None:
    await catalog.create_collection("default", "c", b"", create_ts=5, properties={"a": "1"})
    altered = await catalog.alter_collection("default", "c", {"b": "2"})
    assert altered.properties == {"a": "1", "b": "2"} and altered.update_ts == 5
    altered = await catalog.alter_collection("default", "c", {}, delete_keys=["a"], update_ts=9)
    assert altered.properties == {"b": "2"} and altered.update_ts == 9
    assert await catalog.describe_collection("default", "c") == altered
    with pytest.raises(CollectionNotFound):
        await catalog.alter_collection("default", "nope", {"a": "1"})


async def test_concurrent_creates_of_one_name_exactly_one_wins(stores: Stores) -> None:
    catalogs = [Catalog(await stores.concurrent()) for _ in range(6)]
    results = await asyncio.gather(
        *(
            c.create_collection("default", "dup", schema("dup"), create_ts=i)
            for i, c in enumerate(catalogs)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(r, CollectionExists) for r in results if r not in winners)
    assert await catalogs[0].describe_collection("default", "dup") == winners[0]


async def test_ids_unique_across_50_concurrent_creates(stores: Stores) -> None:
    catalogs = [
        Catalog(await stores.concurrent(), num_physical_channels=16, id_batch=8) for _ in range(5)
    ]
    created = await asyncio.gather(
        *(
            catalogs[i % 5].create_collection("default", f"c{i}", b"", create_ts=i)
            for i in range(50)
        )
    )
    ids = [c.collection_id for c in created] + [c.partitions[0].partition_id for c in created]
    assert len(set(ids)) == 100
    assert len(await catalogs[0].list_collections("default")) == 50


async def test_consecutive_collections_spread_over_physical_channels(catalog: Catalog) -> None:
    used = set()
    for i in range(4):  # 4 physical channels
        coll = await catalog.create_collection("default", f"c{i}", b"", create_ts=i)
        used.add(coll.pchannels[0])
    assert used == {f"test-dml_{i}" for i in range(4)}


async def _after_yields(n: int, aw: Awaitable[T]) -> T:
    for _ in range(n):
        await asyncio.sleep(0)
    return await aw


async def test_drop_database_racing_creates_never_orphans(stores: Stores) -> None:
    a, b = Catalog(await stores.concurrent()), Catalog(await stores.concurrent())
    outcomes = set()
    for round_ in range(10):  # stagger the two sides to vary the interleaving
        db = f"race{round_}"
        await a.create_database(db)
        drop, create = await asyncio.gather(
            _after_yields(round_ % 5, a.drop_database(db)),
            _after_yields(0 if round_ % 5 else 3, b.create_collection(db, "c", b"", create_ts=1)),
            return_exceptions=True,
        )
        if isinstance(drop, BaseException):
            assert isinstance(drop, DatabaseNotEmpty) and not isinstance(create, BaseException)
            assert [c.name for c in await a.list_collections(db)] == ["c"]
            await a.drop_collection(db, "c", drop_ts=2)
            await a.drop_database(db)
            outcomes.add("create won")
        else:
            assert isinstance(create, DatabaseNotFound), create
            outcomes.add("drop won")
        assert db not in [d.name for d in await b.list_databases()]
    if stores.kind == "memory":  # deterministic scheduling: both orders happened
        assert outcomes == {"create won", "drop won"}


async def test_restart_sees_everything(stores: Stores) -> None:
    first = Catalog(await stores.reopen(), num_physical_channels=8)
    await first.create_database("db1", {"p": "1"})
    coll = await first.create_collection("db1", "c", schema("c"), create_ts=1, shards_num=3)
    await first.create_partition("db1", "c", "p", create_ts=2)
    await first.create_collection("default", "gone", b"", create_ts=3)
    await first.drop_collection("default", "gone", drop_ts=4)
    after = Catalog(await stores.reopen())
    assert await after.start() == CatalogSettings(8, "canopy")
    assert (await after.describe_database("db1")).properties == {"p": "1"}
    again = await after.describe_collection("db1", "c")
    assert again.schema == schema("c") and again.vchannels == coll.vchannels
    assert [p.name for p in again.partitions] == ["_default", "p"]
    assert [c.name for c in await after.list_dropped_collections()] == ["gone"]
    fresh = await after.create_collection("default", "new", b"", create_ts=5)
    assert fresh.collection_id > max(p.partition_id for p in again.partitions)


def test_error_codes_and_messages() -> None:
    cases: list[tuple[CoordinatorError, int, str]] = [
        (CollectionNotFound("db", "x"), 100, "collection not found[database=db][collection=x]"),
        (CollectionNotFound(None, 7), 100, "collection not found[collection=7]"),
        (PartitionNotFound("p"), 200, "partition not found[partition=p]"),
        (DatabaseNotFound("x"), 800, "database not found[database=x]"),
        (InvalidParameter("bad"), 1100, "bad: invalid parameter"),
        (DatabaseExists("x"), 65535, "database already exist: x"),
    ]
    for error, code, message in cases:
        assert (error.milvus_code, str(error)) == (code, message)
        assert not error.retryable


async def test_empty_database_name_means_default(catalog: Catalog) -> None:
    created = await catalog.create_collection("", "c", b"", create_ts=1)
    assert created.db == "default"
    assert await catalog.describe_collection("", "c") == created
    assert await catalog.has_collection("", "c")
    await catalog.create_partition("", "c", "p", create_ts=2)
    await catalog.drop_partition("", "c", "p", drop_ts=3)
    await catalog.alter_collection("", "c", {"k": "v"})
    await catalog.rename_collection("", "c", "d")
    assert [c.name for c in await catalog.list_collections("")] == ["d"]
    await catalog.drop_collection("", "d", drop_ts=4)
