"""Proxy index and load RPCs: quick setup's calls, Milvus codes and messages.

The servicer is called directly (no network) over a real Catalog + TimestampOracle on
memory://, with the in-memory streaming node of ``cluster.proxy.testing``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.proxy.testing import FakeContext, ProxyHarness

DT = schema_pb2.DataType
LOADED = common_pb2.LoadState.LoadStateLoaded
NOT_LOAD = common_pb2.LoadState.LoadStateNotLoad
FINISHED = common_pb2.IndexState.Finished


@pytest.fixture
async def h() -> AsyncIterator[ProxyHarness]:
    harness = await ProxyHarness.start()
    try:
        yield harness
    finally:
        await harness.close()


def kv(**params: str) -> list[common_pb2.KeyValuePair]:
    return [common_pb2.KeyValuePair(key=k, value=v) for k, v in params.items()]


async def create_collection(h: ProxyHarness, name: str = "c", *, scalar: bool = False) -> int:
    s = schema_pb2.CollectionSchema(name=name, enable_dynamic_field=True)
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="vector", data_type=DT.FloatVector).type_params.add(key="dim", value="8")
    if scalar:
        s.fields.add(name="tag", data_type=DT.Int64)
    status = await h.servicer.CreateCollection(
        milvus_pb2.CreateCollectionRequest(collection_name=name, schema=s.SerializeToString()),
        FakeContext(),
    )
    assert status.code == 0, status.reason
    return (await h.catalog.describe_collection("default", name)).collection_id


async def create_index(
    h: ProxyHarness, name: str = "c", field: str = "vector", index_name: str = "", **params: str
) -> common_pb2.Status:
    req = milvus_pb2.CreateIndexRequest(
        collection_name=name, field_name=field, index_name=index_name, extra_params=kv(**params)
    )
    return await h.servicer.CreateIndex(req, FakeContext())


async def describe_index(h: ProxyHarness, name: str = "c", index_name: str = "", field: str = ""):
    req = milvus_pb2.DescribeIndexRequest(
        collection_name=name, index_name=index_name, field_name=field
    )
    return await h.servicer.DescribeIndex(req, FakeContext())


async def load(h: ProxyHarness, name: str = "c", *partitions: str, replicas: int = 0):
    if partitions:
        return await h.servicer.LoadPartitions(
            milvus_pb2.LoadPartitionsRequest(
                collection_name=name, partition_names=partitions, replica_number=replicas
            ),
            FakeContext(),
        )
    return await h.servicer.LoadCollection(
        milvus_pb2.LoadCollectionRequest(collection_name=name, replica_number=replicas),
        FakeContext(),
    )


async def release(h: ProxyHarness, name: str = "c", *partitions: str) -> common_pb2.Status:
    if partitions:
        return await h.servicer.ReleasePartitions(
            milvus_pb2.ReleasePartitionsRequest(collection_name=name, partition_names=partitions),
            FakeContext(),
        )
    return await h.servicer.ReleaseCollection(
        milvus_pb2.ReleaseCollectionRequest(collection_name=name), FakeContext()
    )


async def load_state(h: ProxyHarness, name: str = "c", *partitions: str):
    return await h.servicer.GetLoadState(
        milvus_pb2.GetLoadStateRequest(collection_name=name, partition_names=partitions),
        FakeContext(),
    )


async def progress(h: ProxyHarness, name: str = "c", *partitions: str):
    return await h.servicer.GetLoadingProgress(
        milvus_pb2.GetLoadingProgressRequest(collection_name=name, partition_names=partitions),
        FakeContext(),
    )


async def drop_index(h: ProxyHarness, name: str = "c", index_name: str = "") -> common_pb2.Status:
    return await h.servicer.DropIndex(
        milvus_pb2.DropIndexRequest(collection_name=name, index_name=index_name), FakeContext()
    )


# --- quick setup ---------------------------------------------------------------------------------


async def test_quick_setup_calls(h: ProxyHarness) -> None:
    """What ``create_collection(name, dimension=d)`` sends after CreateCollection."""
    await create_collection(h)
    status = await create_index(h, index_type="AUTOINDEX", metric_type="COSINE")
    assert (status.code, status.reason) == (0, "")
    reply = await describe_index(h, index_name="")
    assert reply.status.code == 0 and len(reply.index_descriptions) == 1
    index = reply.index_descriptions[0]
    assert (index.index_name, index.field_name, index.state) == ("vector", "vector", FINISHED)
    assert index.indexID > 0
    assert [(p.key, p.value) for p in index.params] == [
        ("index_type", "AUTOINDEX"),
        ("metric_type", "COSINE"),
    ]
    assert (index.total_rows, index.indexed_rows, index.pending_index_rows) == (0, 0, 0)
    assert (await load(h)).code == 0
    done = await progress(h)
    assert (done.status.code, done.progress, done.refresh_progress) == (0, 100, 100)
    state = await load_state(h)
    assert state.status.code == 0 and state.state == LOADED


async def test_describe_index_reports_rows_truthfully(h: ProxyHarness) -> None:
    cid = await create_collection(h)
    assert (await create_index(h, index_type="HNSW", metric_type="L2", M="16")).code == 0
    pid = (await h.catalog.describe_collection("default", "c")).partitions[0].partition_id
    await h.coordinator.report_flushed_segment(cid, pid, 1, "v0", 10)
    await h.coordinator.report_flushed_segment(cid, pid, 2, "v0", 5)
    index = (await describe_index(h, index_name="vector")).index_descriptions[0]
    # no index builds exist yet: nothing is indexed, the definition itself is finished
    assert (index.total_rows, index.indexed_rows, index.pending_index_rows) == (15, 0, 15)
    assert index.state == FINISHED
    assert {p.key: p.value for p in index.params} == {
        "index_type": "HNSW",
        "metric_type": "L2",
        "M": "16",
    }
    built = await h.servicer.GetIndexBuildProgress(
        milvus_pb2.GetIndexBuildProgressRequest(collection_name="c"), FakeContext()
    )
    assert (built.status.code, built.indexed_rows, built.total_rows) == (0, 0, 15)
    state = await h.servicer.GetIndexState(
        milvus_pb2.GetIndexStateRequest(collection_name="c", field_name="vector"), FakeContext()
    )
    assert (state.status.code, state.state) == (0, FINISHED)
    by_field = await describe_index(h, field="vector")
    assert [i.index_name for i in by_field.index_descriptions] == ["vector"]


async def test_create_index_repeat_and_errors(h: ProxyHarness) -> None:
    await create_collection(h, scalar=True)
    assert (await create_index(h, index_type="HNSW", metric_type="L2", M="16")).code == 0
    # the same definition again (older clients nest the build params as JSON): success
    again = await create_index(h, index_type="HNSW", metric_type="L2", params='{"M": 16}')
    assert again.code == 0
    dup = await create_index(h, index_type="HNSW", metric_type="L2", M="32")
    assert (dup.code, dup.reason) == (
        65535,
        "CreateIndex failed: at most one distinct index is allowed per field",
    )
    ivf = await create_index(h, field="vector", index_name="x", index_type="IVF_FLAT")
    assert ivf.code == 701 and "IVF_FLAT is not supported yet" in ivf.reason
    scalar = await create_index(h, field="tag", index_type="INVERTED")
    assert scalar.code == 701 and "scalar fields are not supported yet" in scalar.reason
    metric = await create_index(h, index_name="y", index_type="FLAT", metric_type="HAMMING")
    assert metric.code == 1100 and "metric type HAMMING not found" in metric.reason
    big_m = await create_index(h, index_name="y", index_type="HNSW", M="4096")
    assert big_m.code == 1100 and "should be in range [2, 2048]" in big_m.reason
    field = await create_index(h, field="zz", index_type="FLAT")
    assert (field.code, field.reason) == (65535, "cannot create index on non-exist field: zz")
    missing = await create_index(h, "nope", index_type="FLAT")
    assert (missing.code, missing.reason) == (
        100,
        "collection not found[database=default][collection=nope]",
    )
    name = await create_index(h, index_name="1bad", index_type="FLAT")
    assert name.code == 1100


async def test_describe_and_drop_missing_index(h: ProxyHarness) -> None:
    await create_collection(h)
    none = await describe_index(h)
    assert (none.status.code, none.status.reason) == (700, "index not found[collection=c]")
    named = await describe_index(h, index_name="idx")
    assert (named.status.code, named.status.reason) == (700, "index not found[indexName=idx]")
    assert named.status.error_code == common_pb2.ErrorCode.IndexNotExist
    assert (await drop_index(h, index_name="idx")).code == 0  # Milvus: missing is success
    state = await h.servicer.GetIndexState(
        milvus_pb2.GetIndexStateRequest(collection_name="c", index_name="idx"), FakeContext()
    )
    assert state.status.code == 700
    gone = await describe_index(h, "nope")
    assert gone.status.code == 100


# --- load and release ----------------------------------------------------------------------------


async def test_load_needs_an_index_and_blocks_drop_index(h: ProxyHarness) -> None:
    await create_collection(h)
    refused = await load(h)
    assert (refused.code, refused.reason) == (700, "index not found[collection=c]")
    assert (await load_state(h)).state == NOT_LOAD
    not_loaded = await progress(h)
    assert (not_loaded.status.code, not_loaded.status.reason) == (
        101,
        "collection not loaded[collection=c]",
    )
    assert (await create_index(h, metric_type="L2")).code == 0  # metric only: AUTOINDEX
    index = (await describe_index(h)).index_descriptions[0]
    assert {p.key: p.value for p in index.params}["index_type"] == "AUTOINDEX"
    assert (await load(h)).code == 0
    assert (await load(h)).code == 0  # again: fine
    replicas = await load(h, replicas=3)
    assert replicas.code == 1100 and "different replica number 1 existed" in replicas.reason
    blocked = await drop_index(h)
    assert (blocked.code, blocked.reason) == (
        65535,
        "index cannot be dropped, collection is loaded, please release it first",
    )
    assert (await release(h)).code == 0
    assert (await release(h)).code == 0  # not loaded: fine
    assert (await load_state(h)).state == NOT_LOAD
    assert (await drop_index(h)).code == 0
    assert (await describe_index(h)).status.code == 700
    for reply in (await load(h, "nope"), await release(h, "nope")):
        assert reply.code == 100
    assert (await load_state(h, "nope")).status.code == 100


async def test_partitions_load_and_release(h: ProxyHarness) -> None:
    await create_collection(h)
    for name in ("p1", "p2"):
        await h.servicer.CreatePartition(
            milvus_pb2.CreatePartitionRequest(collection_name="c", partition_name=name),
            FakeContext(),
        )
    assert (await create_index(h, index_type="FLAT", metric_type="IP")).code == 0
    assert (await load(h, "c", "p1")).code == 0
    assert (await load_state(h)).state == LOADED
    assert (await load_state(h, "c", "p1")).state == LOADED
    assert (await load_state(h, "c", "p2")).state == NOT_LOAD
    assert (await progress(h, "c", "p1")).progress == 100
    p2 = await progress(h, "c", "p1", "p2")
    assert (p2.status.code, p2.status.reason) == (201, "partition not loaded[partition=p2]")
    unknown = await load(h, "c", "zz")
    assert (unknown.code, unknown.reason) == (200, "partition not found[partition=zz]")
    assert (await load_state(h, "c", "zz")).status.code == 200
    dropped = await h.servicer.DropPartition(
        milvus_pb2.DropPartitionRequest(collection_name="c", partition_name="p1"), FakeContext()
    )
    assert dropped.code == 65535 and "partition is loaded" in dropped.reason
    assert (await release(h, "c", "p1")).code == 0  # the last loaded one: collection released
    assert (await load_state(h)).state == NOT_LOAD
    assert (await release(h, "c", "zz")).code == 200


async def test_unsupported_load_options_fail_clearly(h: ProxyHarness) -> None:
    await create_collection(h)
    await create_index(h, index_type="FLAT", metric_type="L2")
    partial = await h.servicer.LoadCollection(
        milvus_pb2.LoadCollectionRequest(collection_name="c", load_fields=["vector"]),
        FakeContext(),
    )
    assert partial.code == 3000 and "partial load" in partial.reason
    groups = await h.servicer.LoadPartitions(
        milvus_pb2.LoadPartitionsRequest(
            collection_name="c", partition_names=["_default"], resource_groups=["rg"]
        ),
        FakeContext(),
    )
    assert groups.code == 3000 and "resource groups" in groups.reason
    assert (await load_state(h)).state == NOT_LOAD


async def test_drop_collection_while_loaded_and_recreate(h: ProxyHarness) -> None:
    await create_collection(h)
    await create_index(h, index_type="FLAT", metric_type="L2")
    assert (await load(h)).code == 0
    status = await h.servicer.DropCollection(
        milvus_pb2.DropCollectionRequest(collection_name="c"), FakeContext()
    )
    assert status.code == 0
    await create_collection(h)
    assert (await load_state(h)).state == NOT_LOAD
    assert (await describe_index(h)).status.code == 700


async def test_index_calls_in_another_database(h: ProxyHarness) -> None:
    await h.servicer.CreateDatabase(milvus_pb2.CreateDatabaseRequest(db_name="db1"), FakeContext())
    s = schema_pb2.CollectionSchema(name="c")
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="v", data_type=DT.FloatVector).type_params.add(key="dim", value="4")
    ctx = FakeContext("db1")
    req = milvus_pb2.CreateCollectionRequest(collection_name="c", schema=s.SerializeToString())
    assert (await h.servicer.CreateCollection(req, ctx)).code == 0
    index = milvus_pb2.CreateIndexRequest(collection_name="c", field_name="v")
    assert (await h.servicer.CreateIndex(index, ctx)).code == 0
    loaded = await h.servicer.LoadCollection(
        milvus_pb2.LoadCollectionRequest(collection_name="c"), ctx
    )
    assert loaded.code == 0
    state = await h.servicer.GetLoadState(milvus_pb2.GetLoadStateRequest(collection_name="c"), ctx)
    assert state.state == LOADED
    other = await h.servicer.GetLoadState(
        milvus_pb2.GetLoadStateRequest(collection_name="c"), FakeContext()
    )
    assert other.status.code == 100  # not in default
