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
    FieldNotFound,
    IndexDuplicate,
    IndexExists,
    IndexNotFound,
    IndexNotSupported,
    InvalidParameter,
    LimitExceeded,
    NotAllowed,
    PartitionExists,
    PartitionNotFound,
)
from cluster.coordinator.records import (
    CatalogSettings,
    CollectionIndexes,
    CollectionState,
    IndexInfo,
    IndexState,
    LoadInfo,
    LoadState,
    indexes_key,
    load_key,
)

pytestmark = pytest.mark.contract

T = TypeVar("T")

BACKENDS = ["memory", "sqlite", "etcd"]


def schema(name: str, dim: int = 8, *, scalar: bool = False) -> bytes:
    s = schema_pb2.CollectionSchema(name=name, enable_dynamic_field=True)
    s.fields.add(name="id", data_type=schema_pb2.DataType.Int64, is_primary_key=True, fieldID=100)
    vec = s.fields.add(name="vector", data_type=schema_pb2.DataType.FloatVector, fieldID=101)
    vec.type_params.add(key="dim", value=str(dim))
    if scalar:
        s.fields.add(name="tag", data_type=schema_pb2.DataType.Int64, fieldID=102)
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


# --- indexes and load state -----------------------------------------------------------------------

HNSW = {"index_type": "HNSW", "metric_type": "L2", "M": "16", "efConstruction": "200"}


async def test_index_lifecycle_and_idempotent_create(catalog: Catalog) -> None:
    coll = await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    created = await catalog.create_index("default", "c", "vector", "", HNSW, create_ts=5)
    assert (created.index_name, created.field_name, created.field_id) == ("vector", "vector", 101)
    assert (created.index_type, created.metric_type) == ("HNSW", "L2")
    assert created.params == {"M": "16", "efConstruction": "200"}
    assert created.user_params == HNSW and created.state is IndexState.FINISHED
    assert created.create_ts == 5 and created.collection_id == coll.collection_id
    assert created.index_id not in (coll.collection_id, coll.partitions[0].partition_id)
    assert IndexInfo.decode(created.encode()) == created
    # the same definition again (older clients nest build params as JSON): the same record
    nested = {
        "index_type": "HNSW",
        "metric_type": "L2",
        "params": '{"M": 16, "efConstruction": 200}',
    }
    assert await catalog.create_index("default", "c", "vector", "", nested, create_ts=6) == created
    assert (
        await catalog.create_index("default", "c", "vector", "vector", HNSW, create_ts=7) == created
    )
    assert await catalog.list_indexes("default", "c") == [created]
    assert await catalog.list_indexes(None, coll.collection_id) == [created]  # type: ignore[arg-type]
    assert await catalog.describe_index("default", "c", "vector") == created
    assert await catalog.describe_index("default", "c") == created  # the only one
    with pytest.raises(IndexNotFound) as missing:
        await catalog.describe_index("default", "c", "nope")
    assert (missing.value.milvus_code, str(missing.value)) == (
        700,
        "index not found[indexName=nope]",
    )

    with pytest.raises(IndexExists) as dup:
        await catalog.create_index("default", "c", "vector", "", {**HNSW, "M": "32"}, create_ts=8)
    assert dup.value.milvus_code == 65535 and dup.value.existing == created
    assert str(dup.value) == "CreateIndex failed: at most one distinct index is allowed per field"
    with pytest.raises(IndexExists, match="creating multiple indexes on same field"):
        await catalog.create_index("default", "c", "vector", "other", HNSW, create_ts=8)

    assert await catalog.drop_index("default", "c", "vector") == created
    assert await catalog.list_indexes("default", "c") == []
    with pytest.raises(IndexNotFound, match=r"^index not found\[collection=c\]$"):
        await catalog.describe_index("default", "c")
    with pytest.raises(IndexNotFound):
        await catalog.drop_index("default", "c", "vector")
    again = await catalog.create_index(
        "default", "c", "vector", "", {"metric_type": "ip"}, create_ts=9
    )
    assert (again.index_type, again.metric_type, again.params) == ("AUTOINDEX", "IP", {})
    assert again.index_id != created.index_id
    assert again.user_params == {"index_type": "AUTOINDEX", "metric_type": "IP"}


async def test_index_defaults_and_names(catalog: Catalog) -> None:
    await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    auto = await catalog.create_index("default", "c", "vector", "my_idx", {}, create_ts=2)
    assert (auto.index_name, auto.index_type, auto.metric_type) == ("my_idx", "AUTOINDEX", "COSINE")
    # an empty name means the field's existing index: a repeat, not a second index
    assert await catalog.create_index("default", "c", "vector", "", {}, create_ts=3) == auto
    lower = {"index_type": "flat", "metric_type": "cosine"}
    with pytest.raises(IndexExists):
        await catalog.create_index("default", "c", "vector", "", lower, create_ts=4)
    await catalog.drop_index("default", "c")  # empty name: the only index
    flat = await catalog.create_index("default", "c", "vector", "", lower, create_ts=4)
    assert (flat.index_type, flat.metric_type) == ("FLAT", "COSINE")
    for bad in ("1idx", "a-b", "x" * 256):
        with pytest.raises(InvalidParameter):
            await catalog.create_index("default", "c", "vector", bad, HNSW, create_ts=5)


async def test_index_parameter_errors(catalog: Catalog) -> None:
    await catalog.create_collection("default", "c", schema("c", scalar=True), create_ts=1)

    async def create(field: str, params: dict[str, str]) -> None:
        await catalog.create_index("default", "c", field, "", params, create_ts=2)

    for index_type, words in [
        ("IVF_FLAT", "index type IVF_FLAT is not supported yet"),
        ("DISKANN", "index type DISKANN is not supported yet"),
        ("STL_SORT", "scalar index STL_SORT is not supported yet"),
        ("INVERTED", "scalar index INVERTED is not supported yet"),
        ("BITMAP", "scalar index BITMAP is not supported yet"),
        ("FOO", "invalid index type: FOO"),
    ]:
        with pytest.raises(IndexNotSupported) as err:
            await create("vector", {"index_type": index_type, "metric_type": "L2"})
        assert err.value.milvus_code == 701
        assert str(err.value).startswith(words)
        assert str(err.value).endswith(f"index type not supported[indexType={index_type}]")
    for index_type in ("AUTOINDEX", "INVERTED", "STL_SORT", "BITMAP", ""):
        with pytest.raises(IndexNotSupported, match="indexes on scalar fields are not supported"):
            await create("tag", {"index_type": index_type} if index_type else {})
    with pytest.raises(InvalidParameter, match="data type Int64 can't build with this index HNSW"):
        await create("tag", HNSW)
    with pytest.raises(InvalidParameter) as metric:
        await create("vector", {"index_type": "HNSW", "metric_type": "HAMMING"})
    assert metric.value.milvus_code == 1100
    assert str(metric.value) == (
        "metric type HAMMING not found or not supported, supported: [L2 IP COSINE]: "
        "invalid parameter"
    )
    for key, value, words in [
        ("M", "1", "param 'M' (1) should be in range [2, 2048]"),
        ("M", "4096", "param 'M' (4096) should be in range [2, 2048]"),
        ("M", "x", "param 'M' (x) should be integer"),
        ("efConstruction", "0", "param 'efConstruction' (0) should be in range [1, 2147483647]"),
    ]:
        with pytest.raises(InvalidParameter) as bad:
            await create("vector", {**HNSW, key: value})
        assert str(bad.value) == f"{words}: invalid parameter"
    with pytest.raises(InvalidParameter, match="index params should be a JSON object"):
        await create("vector", {"index_type": "HNSW", "params": "[1"})
    with pytest.raises(FieldNotFound) as field:
        await create("zz", HNSW)
    assert (field.value.milvus_code, str(field.value)) == (
        65535,
        "cannot create index on non-exist field: zz",
    )
    with pytest.raises(CollectionNotFound):
        await catalog.create_index("default", "nope", "vector", "", HNSW, create_ts=3)
    with pytest.raises(DatabaseNotFound):
        await catalog.list_indexes("nodb", "c")
    assert await catalog.list_indexes("default", "c") == []  # nothing was created


async def test_load_needs_an_index_and_pins_it(catalog: Catalog) -> None:
    coll = await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    cid = coll.collection_id
    assert await catalog.load_state("default", "c") == LoadInfo(cid, LoadState.NOT_LOAD)
    with pytest.raises(IndexNotFound) as err:
        await catalog.set_load_state("default", "c", True)
    assert (err.value.milvus_code, str(err.value)) == (700, "index not found[collection=c]")
    await catalog.create_index("default", "c", "vector", "", HNSW, create_ts=2)
    loaded = await catalog.set_load_state("default", "c", True)
    assert loaded == LoadInfo(cid, LoadState.LOADED, load_all=True, replicas=1)
    assert LoadInfo.decode(loaded.encode()) == loaded
    assert await catalog.load_state("default", "c") == loaded
    assert await catalog.set_load_state("default", "c", True, replicas=0) == loaded  # again: no-op
    with pytest.raises(InvalidParameter, match="different replica number 1 existed"):
        await catalog.set_load_state("default", "c", True, replicas=2)
    with pytest.raises(NotAllowed) as refused:
        await catalog.drop_index("default", "c", "vector")
    assert refused.value.milvus_code == 65535
    assert str(refused.value) == (
        "index cannot be dropped, collection is loaded, please release it first"
    )
    released = await catalog.set_load_state("default", "c", False)
    assert released == LoadInfo(cid, LoadState.NOT_LOAD)
    assert await catalog.set_load_state("default", "c", False) == released  # again: no-op
    assert (await catalog.load_state("default", "c")).state is LoadState.NOT_LOAD
    await catalog.drop_index("default", "c", "vector")
    with pytest.raises(IndexNotFound):
        await catalog.set_load_state("default", "c", True)
    with pytest.raises(CollectionNotFound):
        await catalog.set_load_state("default", "nope", True)
    with pytest.raises(CollectionNotFound):
        await catalog.load_state("default", "nope")


async def test_partition_loads_and_releases(catalog: Catalog) -> None:
    await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    p1 = await catalog.create_partition("default", "c", "p1", create_ts=2)
    await catalog.create_partition("default", "c", "p2", create_ts=3)
    await catalog.create_index("default", "c", "vector", "", HNSW, create_ts=4)

    async def state(*parts: str) -> LoadState:
        return (await catalog.load_state("default", "c", list(parts) or None)).state

    with pytest.raises(IndexNotFound):  # load partitions also needs the index
        await catalog.create_collection("default", "bare", schema("bare"), create_ts=5)
        await catalog.set_load_state("default", "bare", True, ["_default"])
    loaded = await catalog.set_load_state("default", "c", True, ["p1"])
    assert (loaded.load_all, loaded.partition_ids) == (False, (p1.partition_id,))
    assert await state() is LoadState.LOADED  # something is loaded
    assert await state("p1") is LoadState.LOADED
    assert await state("p2") is LoadState.NOT_LOAD and await state("p1", "p2") is LoadState.NOT_LOAD
    with pytest.raises(PartitionNotFound):
        await state("zz")
    with pytest.raises(PartitionNotFound):
        await catalog.set_load_state("default", "c", True, ["zz"])
    with pytest.raises(InvalidParameter):
        await catalog.set_load_state("default", "c", True, [])
    with pytest.raises(NotAllowed, match="partition cannot be dropped, partition is loaded"):
        await catalog.drop_partition("default", "c", "p1", drop_ts=6)
    await catalog.drop_partition("default", "c", "p2", drop_ts=6)  # not loaded: fine
    with pytest.raises(NotAllowed, match="collection is loaded"):
        await catalog.drop_index("default", "c")

    await catalog.set_load_state("default", "c", True)  # the whole collection now
    await catalog.create_partition("default", "c", "p3", create_ts=7)
    assert await state("p3", "_default", "p1") is LoadState.LOADED  # later partitions too
    after = await catalog.set_load_state("default", "c", False, ["p1"])
    assert not after.load_all and await state("p1") is LoadState.NOT_LOAD
    assert await state("_default", "p3") is LoadState.LOADED
    await catalog.drop_partition("default", "c", "p1", drop_ts=8)  # released: fine
    await catalog.set_load_state("default", "c", False, ["_default", "p3"])  # the last ones
    assert await state() is LoadState.NOT_LOAD
    await catalog.drop_index("default", "c")


async def test_drop_collection_releases_and_hides_its_indexes(catalog: Catalog) -> None:
    coll = await catalog.create_collection("default", "c", schema("c"), create_ts=1)
    cid = coll.collection_id
    await catalog.create_index("default", "c", "vector", "", HNSW, create_ts=2)
    await catalog.set_load_state("default", "c", True)
    await catalog.drop_collection("default", "c", drop_ts=3)  # allowed while loaded, as Milvus
    assert await catalog.meta.get(load_key(cid)) is None
    assert await catalog.meta.get(indexes_key(cid)) is not None  # kept for garbage collection
    for call in (
        catalog.list_indexes("default", "c"),
        catalog.load_state("default", "c"),
        catalog.describe_index("default", "c", "vector"),
        catalog.create_index("default", "c", "vector", "", HNSW, create_ts=4),
        catalog.set_load_state("default", "c", True),
    ):
        with pytest.raises(CollectionNotFound):
            await call
    again = await catalog.create_collection("default", "c", schema("c"), create_ts=5)
    assert await catalog.list_indexes("default", "c") == []
    assert (await catalog.load_state("default", "c")).state is LoadState.NOT_LOAD
    await catalog.purge_dropped_collection(cid)
    assert await catalog.meta.get(indexes_key(cid)) is None
    # renames keep indexes and load state (they are keyed by id)
    await catalog.create_index("default", "c", "vector", "", HNSW, create_ts=6)
    await catalog.set_load_state("default", "c", True)
    await catalog.rename_collection("default", "c", "d")
    assert [i.collection_id for i in await catalog.list_indexes("default", "d")] == [
        again.collection_id
    ]
    assert (await catalog.load_state("default", "d")).state is LoadState.LOADED


async def test_concurrent_index_creates_one_per_field(stores: Stores) -> None:
    catalogs = [Catalog(await stores.concurrent()) for _ in range(5)]
    await catalogs[0].create_collection("default", "c", schema("c"), create_ts=1)
    results = await asyncio.gather(
        *(
            c.create_index("default", "c", "vector", f"idx{i}", HNSW, create_ts=i)
            for i, c in enumerate(catalogs)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, IndexInfo)]
    assert len(winners) == 1, results
    assert all(isinstance(r, IndexExists) for r in results if r not in winners)
    assert await catalogs[1].list_indexes("default", "c") == winners
    # the same definition from everyone at once: all get the one record
    await catalogs[0].create_collection("default", "d", schema("d"), create_ts=1)
    same = await asyncio.gather(
        *(c.create_index("default", "d", "vector", "", HNSW, create_ts=2) for c in catalogs)
    )
    assert len({r.index_id for r in same}) == 1


async def test_load_racing_drop_index_never_loads_without_an_index(stores: Stores) -> None:
    a, b = Catalog(await stores.concurrent()), Catalog(await stores.concurrent())
    outcomes = set()
    for round_ in range(8):
        name = f"race{round_}"
        await a.create_collection("default", name, schema(name), create_ts=1)
        await a.create_index("default", name, "vector", "", HNSW, create_ts=2)
        load, drop = await asyncio.gather(
            _after_yields(round_ % 4, a.set_load_state("default", name, True)),
            _after_yields(0 if round_ % 4 else 2, b.drop_index("default", name)),
            return_exceptions=True,
        )
        indexes = await b.list_indexes("default", name)
        state = (await b.load_state("default", name)).state
        if isinstance(load, BaseException):
            assert isinstance(load, IndexNotFound) and isinstance(drop, IndexInfo), (load, drop)
            assert indexes == [] and state is LoadState.NOT_LOAD
            outcomes.add("drop won")
        else:
            assert isinstance(drop, NotAllowed), drop
            assert len(indexes) == 1 and state is LoadState.LOADED
            outcomes.add("load won")
    if stores.kind == "memory":
        assert outcomes == {"drop won", "load won"}


async def test_restart_sees_indexes_and_load_state(stores: Stores) -> None:
    first = Catalog(await stores.reopen())
    await first.create_collection("default", "c", schema("c"), create_ts=1)
    index = await first.create_index("default", "c", "vector", "", HNSW, create_ts=2)
    loaded = await first.set_load_state("default", "c", True)
    after = Catalog(await stores.reopen())
    assert await after.list_indexes("default", "c") == [index]
    assert await after.load_state("default", "c") == loaded
    raw = await after.meta.get(indexes_key(index.collection_id))
    assert raw is not None and CollectionIndexes.decode(raw.value).indexes == (index,)


def test_index_error_codes_and_messages() -> None:
    cases: list[tuple[CoordinatorError, int, str]] = [
        (IndexNotFound(index_name="i"), 700, "index not found[indexName=i]"),
        (IndexNotFound(collection="c"), 700, "index not found[collection=c]"),
        (
            IndexNotSupported("X", "invalid index type: X"),
            701,
            "invalid index type: X: index type not supported[indexType=X]",
        ),
        (IndexDuplicate("", "ambiguous"), 702, "ambiguous: index duplicates[indexName=]"),
        (IndexExists("why"), 65535, "CreateIndex failed: why"),
        (FieldNotFound("f"), 65535, "cannot create index on non-exist field: f"),
    ]
    for error, code, message in cases:
        assert (error.milvus_code, str(error)) == (code, message)
        assert not error.retryable
