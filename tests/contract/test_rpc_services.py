"""The gRPC pairs of the role interfaces (``cluster.rpc``) against the in-process ones.

A real :class:`~cluster.rpc.server.RpcServer` on 127.0.0.1 (port 0) serves a ``LocalCoordinator``
+ ``Catalog`` over memory:// meta, another serves a ``StreamingNode`` over a memory LogStore (the
node itself talks to the coordinator through a ``CoordinatorClient``, as in a deployment). Every
RPC is exercised through the clients: results equal the in-process answers, errors arrive as the
same class with the same Milvus status, a stopped server gives ``Unavailable``, and the
coordinator client rides over a coordinator restart. The last test serves pymilvus's
``MilvusClient`` from a ``ProxyServicer`` built on the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from polling import until
from pymilvus import DataType, MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import (
    CollectionExists,
    CollectionNotFound,
    DatabaseExists,
    DatabaseNotEmpty,
    DatabaseNotFound,
    IndexNotFound,
    InvalidParameter,
    NotAllowed,
    PartitionExists,
    PartitionNotFound,
)
from cluster.coordinator.index_builds import BuildResult, IndexBuildProgress, ProgressState
from cluster.coordinator.records import CollectionInfo, LoadState
from cluster.coordinator.service import LocalCoordinator
from cluster.interfaces import FlushTicket, GrowingQuery, GrowingSearch, WriteAck, visible_ts_of
from cluster.milvus.columns import arrow_schema
from cluster.milvus.status import status_for
from cluster.proxy.routing import StaticRouter
from cluster.proxy.rpc import status_of
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer
from cluster.rpc import (
    CoordinatorClient,
    CoordinatorServicer,
    RpcServer,
    StreamingClient,
    StreamingServicer,
)
from cluster.schema import from_request_bytes
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from woodpecker import LogStore, WalConfig
from woodpecker.clock import RealClock
from woodpecker.errors import CanopyError, InvalidArgument, Unavailable
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

pytestmark = [pytest.mark.contract, pytest.mark.timeout(60)]

DIM = 8
HOST = "127.0.0.1"
FAST = StreamingConfig(
    time_tick_interval=0.05,
    storage_root="segments",
    maintenance_interval=0.05,
    checkpoint_interval=0.2,
    retry_delay=0.05,
)


class Recorder:
    """A StreamingService in front of the node that keeps what reached the server."""

    def __init__(self, node: StreamingNode) -> None:
        self.node = node
        self.inserted: list[pa.Table] = []
        self.deleted: list[pa.Array] = []
        self.upserted: list[tuple[list[tuple[int, pa.Table]], pa.Array, int | None]] = []

    async def insert(self, cid: int, pid: int, vchannel: str, table: pa.Table) -> WriteAck:
        self.inserted.append(table)
        return await self.node.insert(cid, pid, vchannel, table)

    async def delete(self, cid: int, pid: int | None, vchannel: str, pks: pa.Array) -> WriteAck:
        self.deleted.append(pks)
        return await self.node.delete(cid, pid, vchannel, pks)

    async def upsert(
        self,
        cid: int,
        vchannel: str,
        inserts: list[tuple[int, pa.Table]],
        pks: pa.Array,
        delete_pid: int | None,
    ) -> WriteAck:
        self.upserted.append((list(inserts), pks, delete_pid))
        return await self.node.upsert(cid, vchannel, inserts, pks, delete_pid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


@dataclass
class Cluster:
    meta: MemoryMetaStore
    objects: MemoryObjectStore
    catalog: Catalog
    coordinator: LocalCoordinator
    coord_server: RpcServer
    coord: CoordinatorClient
    stream_server: RpcServer | None = None
    stream: StreamingClient | None = None
    node: StreamingNode | None = None
    recorder: Recorder | None = None
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def start_coordinator(self, port: int = 0) -> None:
        """(Re)start the coordinator process: a fresh LocalCoordinator on the same meta."""
        self.catalog = Catalog(self.meta, num_physical_channels=2)
        self.coordinator = LocalCoordinator(self.meta, RealClock(), catalog=self.catalog)
        await self.catalog.start()
        await self.coordinator.start()
        servicer = CoordinatorServicer(self.coordinator, self.catalog)
        self.coord_server = RpcServer(HOST, port, [servicer])
        await self.coord_server.start()

    async def stop_coordinator(self) -> None:
        await self.coord_server.stop(0)
        await self.coordinator.close()

    async def start_streaming(self) -> None:
        store = await LogStore.open(self.objects, self.meta, WalConfig(max_interval=0.005))
        self.closers.append(store.close)
        node_coord = CoordinatorClient(self.coord_server.address, retry_for=10)
        self.closers.append(node_coord.close)
        settings = self.catalog.settings
        self.node = StreamingNode(
            store,
            self.objects,
            node_coord,
            channels=[settings.pchannel(i) for i in range(settings.num_physical_channels)],
            meta=self.meta,
            config=FAST,
        )
        await self.node.start()
        self.closers.append(self.node.close)
        self.recorder = Recorder(self.node)
        self.stream_server = RpcServer(HOST, 0, [StreamingServicer(self.recorder)])
        await self.stream_server.start()
        self.closers.append(self.stream_server.stop)
        self.stream = StreamingClient(self.stream_server.address)
        self.closers.append(self.stream.close)

    async def create_collection(self, name: str = "coll") -> CollectionInfo:
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
        s.add_field("title", DataType.VARCHAR, max_length=64)
        s.add_field("doc", DataType.JSON)
        s.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
        schema = Prepare.create_collection_request(name, s).schema
        ts = await self.coord.allocate_timestamp()
        return await self.coord.catalog.create_collection(
            "default", name, schema, create_ts=ts, shards_num=2
        )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    meta = MemoryMetaStore()
    objects = MemoryObjectStore()
    c = Cluster(meta, objects, None, None, None, None)  # type: ignore[arg-type]
    await c.start_coordinator()
    c.coord = CoordinatorClient(c.coord_server.address, retry_for=10)
    await c.coord.catalog.start()
    try:
        yield c
    finally:
        for close in reversed(c.closers):
            with contextlib.suppress(Exception):
                await close()
        await c.coord.close()
        await c.stop_coordinator()
        await objects.close()
        await meta.close()


@pytest.fixture
async def streaming(cluster: Cluster) -> Cluster:
    await cluster.start_streaming()
    return cluster


async def same_error(
    local: Callable[[], Awaitable[Any]], remote: Callable[[], Awaitable[Any]]
) -> BaseException:
    """Both calls fail with the same class, message and Milvus status; returns the remote one."""
    with pytest.raises(CanopyError) as want:
        await local()
    with pytest.raises(CanopyError) as got:
        await remote()
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)
    assert status_for(got.value) == status_for(want.value)
    assert status_of(got.value) == status_of(want.value)
    return got.value


# --- coordinator ---------------------------------------------------------------------------------


async def test_coordinator_service_matches_in_process(cluster: Cluster) -> None:
    local, remote = cluster.coordinator, cluster.coord
    t0 = await local.allocate_timestamp()
    t1 = await remote.allocate_timestamp()
    t2 = await remote.allocate_timestamp(5)
    assert t0 < t1 < t2 < await local.allocate_timestamp()
    first = await remote.allocate_ids(1000)
    assert await remote.allocate_ids() >= first + 1000

    info = await cluster.create_collection()
    assert await remote.describe_collection_by_id(info.collection_id) == info
    assert await local.describe_collection_by_id(info.collection_id) == info
    await same_error(
        lambda: local.describe_collection_by_id(999_999),
        lambda: remote.describe_collection_by_id(999_999),
    )

    pid, vch = info.partitions[0].partition_id, info.vchannels[0]
    await remote.report_flushed_segment(info.collection_id, pid, 11, vch, 100)
    await remote.report_flushed_segment(info.collection_id, pid, 11, vch, 100)  # idempotent
    await local.report_flushed_segment(info.collection_id, pid, 12, info.vchannels[1], 5)
    segments = await remote.list_segments(info.collection_id)
    assert segments == await local.list_segments(info.collection_id)
    assert [(s.segment_id, s.rows, s.state) for s in segments] == [
        (11, 100, "flushed"),
        (12, 5, "flushed"),
    ]
    assert await remote.list_segments(123456) == []


async def test_index_build_progress_matches_in_process(cluster: Cluster) -> None:
    local, remote = cluster.coordinator, cluster.coord
    info = await cluster.create_collection()
    cid, pid, vch = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    index = await remote.catalog.create_index(
        "default",
        info.name,
        "vec",
        "",
        {"index_type": "HNSW", "metric_type": "L2"},
        create_ts=await remote.allocate_timestamp(),
    )
    iid = index.index_id

    async def same(as_of_ts: int) -> IndexBuildProgress:
        got = await remote.index_build_progress(cid, iid, as_of_ts)
        assert got == await local.index_build_progress(cid, iid, as_of_ts)
        return got

    assert await same(0) == IndexBuildProgress(0, 0, 0, ProgressState.FINISHED)
    await remote.report_flushed_segment(cid, pid, 21, vch, 70)
    await remote.report_flushed_segment(cid, pid, 22, vch, 30)
    now = await remote.allocate_timestamp()
    assert await same(index.create_ts) == IndexBuildProgress(0, 100, 100, ProgressState.FINISHED)
    assert await same(now) == IndexBuildProgress(0, 100, 100, ProgressState.IN_PROGRESS)

    first = await local.claim_index_build(1)
    assert first is not None
    await local.finish_index_build(first, BuildResult("k", first.rows, "HNSW", 0.1))
    second = await local.claim_index_build(1)
    assert second is not None
    await local.fail_index_build(second, "SegmentCorrupt: bad page", False)
    failed = await same(now)
    assert (failed.indexed_rows, failed.pending_rows, failed.state) == (
        first.rows,
        second.rows,
        ProgressState.FAILED,
    )
    assert failed.fail_reason == f"{second.segment_id}: SegmentCorrupt: bad page;"
    assert await same(0) == failed
    unknown = IndexBuildProgress(0, 0, 0, ProgressState.FINISHED)  # no segments, no builds
    assert await remote.index_build_progress(123456, iid) == unknown


async def test_catalog_matches_in_process(cluster: Cluster) -> None:
    local, remote = cluster.catalog, cluster.coord.catalog
    assert remote.settings == await remote.start() == local.settings

    db = await remote.create_database("db1", {"k": "v", "n": 1}, create_ts=5)  # type: ignore[dict-item]
    assert db == await local.describe_database("db1") == await remote.describe_database("db1")
    assert db.properties == {"k": "v", "n": "1"} and db.create_ts == 5
    assert await remote.list_databases() == await local.list_databases()
    altered = await remote.alter_database("db1", {"x": "y"}, delete_keys=["k"])
    assert altered == await local.describe_database("db1") and altered.properties == {
        "n": "1",
        "x": "y",
    }

    info = await cluster.create_collection("c1")
    assert info == await local.describe_collection("default", "c1")
    assert await remote.describe_collection("default", "c1") == info
    assert await remote.describe_collection(None, info.collection_id) == info
    assert await remote.has_collection("default", "c1") and await remote.has_collection("", "c1")
    assert not await remote.has_collection("default", "nope")
    assert await remote.list_collections("default") == await local.list_collections("default")

    props = await remote.alter_collection("default", "c1", {"p": "1"}, update_ts=77)
    assert props == await local.describe_collection("default", "c1")
    assert props.properties == {"p": "1"} and props.update_ts == 77
    props = await remote.alter_collection("default", "c1", {}, delete_keys=["p"])
    assert props.properties == {} and props.update_ts == 77

    part = await remote.create_partition("default", "c1", "p1", create_ts=9)
    assert part == await local.describe_partition("default", "c1", "p1")
    assert await remote.describe_partition("default", "c1", "p1") == part
    assert await remote.has_partition("default", "c1", "p1")
    assert not await remote.has_partition("default", "c1", "p2")
    assert await remote.list_partitions("default", "c1") == await local.list_partitions(
        "default", "c1"
    )
    dropped = await remote.drop_partition("default", "c1", "p1", drop_ts=10)
    assert dropped in await local.list_dropped_partitions()
    assert [p.name for p in await remote.list_partitions("default", "c1")] == ["_default"]

    renamed = await remote.rename_collection("default", "c1", "c2", new_db="db1")
    assert renamed == await local.describe_collection("db1", "c2")
    assert (renamed.db, renamed.name, renamed.collection_id) == ("db1", "c2", info.collection_id)

    tomb = await remote.drop_collection("db1", "c2", drop_ts=99)
    assert tomb in await local.list_dropped_collections() and tomb.drop_ts == 99
    await remote.drop_database("db1")
    assert [d.name for d in await remote.list_databases()] == ["default"]

    many = await remote.create_collection(
        "",
        "c3",
        info.schema,
        create_ts=await cluster.coord.allocate_timestamp(),
        shards_num=1,
        consistency_level=0,
        properties={"a": "b"},
        partitions=["_default", "extra"],
    )
    assert many == await local.describe_collection("default", "c3")
    assert [p.name for p in many.partitions] == ["_default", "extra"]
    assert many.consistency_level == 0 and many.properties == {"a": "b"}


async def test_index_and_load_records_match_in_process(cluster: Cluster) -> None:
    local, remote = cluster.catalog, cluster.coord.catalog
    await cluster.create_collection("c1")
    with pytest.raises(IndexNotFound):
        await remote.describe_index("default", "c1")
    created = await remote.create_index(
        "default",
        "c1",
        "vec",
        "",
        {"index_type": "HNSW", "metric_type": "L2", "M": "16"},
        create_ts=await cluster.coord.allocate_timestamp(),
    )
    assert created == await local.describe_index("default", "c1", created.index_name)
    assert await remote.describe_index("default", "c1") == created
    assert await remote.list_indexes("default", "c1") == [created]
    assert (await remote.load_state("default", "c1")).state is LoadState.NOT_LOAD
    loaded = await remote.set_load_state("", "c1", True, replicas=1)
    assert loaded == await local.load_state("default", "c1")
    assert (await remote.load_state("default", "c1", ["_default"])).state is LoadState.LOADED
    assert (await remote.set_load_state("default", "c1", True)).state is LoadState.LOADED
    with pytest.raises(CanopyError) as refused:  # dropping the index of a loaded collection
        await remote.drop_index("default", "c1")
    assert type(refused.value) is type(await _drop_index_error(local))
    released = await remote.set_load_state("default", "c1", False)
    assert released.state is LoadState.NOT_LOAD
    assert await remote.drop_index("default", "c1") == created
    assert await remote.list_indexes("default", "c1") == []


async def _drop_index_error(local: Catalog) -> BaseException:
    try:
        await local.drop_index("default", "c1")
    except CanopyError as exc:
        return exc
    raise AssertionError("the in-process catalog dropped the index of a loaded collection")


async def test_catalog_errors_arrive_as_the_same_class(cluster: Cluster) -> None:
    local, remote = cluster.catalog, cluster.coord.catalog
    info = await cluster.create_collection("c1")
    await remote.create_database("full")
    await remote.create_collection("full", "x", info.schema, create_ts=1)

    exists = await same_error(
        lambda: local.create_collection("default", "c1", info.schema, create_ts=1),
        lambda: remote.create_collection("default", "c1", info.schema, create_ts=1),
    )
    assert isinstance(exists, CollectionExists) and exists.existing == info
    # fmt: off
    cases: list[tuple[type[BaseException], Callable[[Catalog], Awaitable[Any]]]] = [
        (CollectionNotFound, lambda c: c.describe_collection("default", "nope")),
        (CollectionNotFound, lambda c: c.describe_collection(None, 123_456)),
        (DatabaseNotFound, lambda c: c.describe_collection("nodb", "c1")),
        (DatabaseNotFound, lambda c: c.describe_database("nodb")),
        (DatabaseNotFound, lambda c: c.list_collections("nodb")),
        (DatabaseExists, lambda c: c.create_database("full")),
        (DatabaseNotEmpty, lambda c: c.drop_database("full")),
        (NotAllowed, lambda c: c.drop_database("default")),
        (NotAllowed, lambda c: c.drop_partition("default", "c1", "_default", drop_ts=1)),
        (InvalidParameter, lambda c: c.create_database("1bad")),
        (InvalidParameter, lambda c: c.create_collection("default", "z", b"", create_ts=1,
                                                          shards_num=99)),
        (PartitionExists, lambda c: c.create_partition("default", "c1", "_default", create_ts=1)),
        (PartitionNotFound, lambda c: c.describe_partition("default", "c1", "nope")),
        (PartitionNotFound, lambda c: c.drop_partition("default", "c1", "nope", drop_ts=1)),
        (CollectionNotFound, lambda c: c.drop_collection("default", "nope", drop_ts=1)),
        (CollectionNotFound, lambda c: c.rename_collection("default", "nope", "n2")),
        (CollectionExists, lambda c: c.rename_collection("default", "c1", "c1")),
        (CollectionNotFound, lambda c: c.alter_collection("default", "nope", {})),
    ]
    # fmt: on
    for kind, fn in cases:
        got = await same_error(lambda fn=fn: fn(local), lambda fn=fn: fn(remote))  # type: ignore[misc]
        assert isinstance(got, kind), (kind, got)
    assert await remote.list_collections("full") == await local.list_collections("full")


# --- streaming node ------------------------------------------------------------------------------


def rich_rows(info: CollectionInfo, start: int, n: int) -> pa.Table:
    schema = arrow_schema(from_request_bytes(info.schema))
    rng = np.random.default_rng(start)
    pks = np.arange(start, start + n, dtype=np.int64)
    columns = {
        "id": pa.array(pks),
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * DIM, np.float32)), DIM),
        "title": pa.array([f"row {p} ✓" for p in pks]),
        "doc": pa.array([json.dumps({"i": int(p), "n": [1, 2]}).encode() for p in pks]),
        "tags": pa.array([[int(p), int(p) + 1] for p in pks], pa.list_(pa.int64())),
        "$meta": pa.array([json.dumps({"color": f"c{p}"}).encode() for p in pks]),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


async def test_insert_round_trips_arrow_rows_exactly(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    assert streaming.stream is not None and streaming.recorder is not None
    table = rich_rows(info, 0, 300)
    pid, vch = info.partitions[0].partition_id, info.vchannels[0]
    ack = await streaming.stream.insert(info.collection_id, pid, vch, table)
    assert ack.rows == 300 and ack.timestamp > 0
    (received,) = streaming.recorder.inserted
    assert received.equals(table) and received.schema.equals(table.schema, check_metadata=True)
    assert received.schema.field("vec").metadata == {b"field_id": b"101"}
    # acknowledged = visible in the node's growing segment
    rows = sum(s.num_rows for s in streaming.node.growing_segments(info.collection_id, vch))  # type: ignore[union-attr]
    assert rows == 300
    empty, stream, node = table.slice(0, 0), streaming.stream, streaming.node
    await same_error(
        lambda: node.insert(info.collection_id, pid, vch, empty),  # type: ignore[union-attr]
        lambda: stream.insert(info.collection_id, pid, vch, empty),
    )
    assert streaming.recorder.inserted[-1].equals(empty)  # arrived, with its schema


async def test_delete_flush_flush_state_and_drop(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    stream, cid = streaming.stream, info.collection_id
    assert stream is not None and streaming.recorder is not None
    pid = info.partitions[0].partition_id
    acks = [
        await stream.insert(cid, pid, vch, rich_rows(info, 1000 * i, 50))
        for i, vch in enumerate(info.vchannels)
    ]
    pks = pa.array([1, 2, 3], pa.int64())
    deleted = await stream.delete(cid, None, info.vchannels[0], pks)
    assert deleted.rows == 3 and deleted.timestamp > max(a.timestamp for a in acks)
    assert streaming.recorder.deleted[-1].equals(pks)
    by_partition = await stream.delete(cid, pid, info.vchannels[1], pa.chunked_array([[1000]]))
    assert by_partition.rows == 1 and streaming.recorder.deleted[-1].to_pylist() == [1000]

    ticket = await stream.flush(cid, list(info.vchannels))
    assert isinstance(ticket, FlushTicket) and len(ticket.segment_ids) == 2
    assert ticket.flush_ts >= deleted.timestamp
    await until(lambda: stream.flush_state(ticket))
    assert await streaming.node.flush_state(ticket)  # type: ignore[union-attr]
    # the node reported its segments through its own CoordinatorClient
    segments = await streaming.coord.list_segments(cid)
    assert sorted(s.segment_id for s in segments) == sorted(ticket.segment_ids)
    assert sum(s.rows for s in segments) == 100
    again = await stream.flush(cid, list(info.vchannels))  # nothing new to seal
    assert again.segment_ids == () and again.collection_id == cid

    await stream.drop_collection(cid, list(info.vchannels))
    assert streaming.node.growing_segments(cid, info.vchannels[0]) == []  # type: ignore[union-attr]


async def test_upsert_round_trips_as_one_call(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    stream, node, recorder = streaming.stream, streaming.node, streaming.recorder
    assert stream is not None and node is not None and recorder is not None
    cid, pid, vch = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    old = await stream.insert(cid, pid, vch, rich_rows(info, 0, 10))
    new = rich_rows(info, 5, 10)  # keys 5..14: 5..9 replace rows, 10..14 are new
    keys = pa.array(range(5, 15), pa.int64())
    ack = await stream.upsert(cid, vch, [(pid, new.slice(0, 4)), (pid, new.slice(4))], keys, None)
    assert ack.rows == 10 and ack.timestamp > old.timestamp
    [(groups, pks, delete_pid)] = recorder.upserted
    assert [(g_pid, g.num_rows) for g_pid, g in groups] == [(pid, 4), (pid, 6)]
    assert pa.concat_tables([g for _, g in groups]).equals(new) and delete_pid is None
    assert groups[0][1].schema.equals(new.schema, check_metadata=True)
    assert pks.equals(keys)
    visible = {}
    for seg in node.growing_segments(cid, vch):
        t = seg.query(ack.timestamp, columns=["id", "_ts", "title"])
        visible.update({r["id"]: (r["_ts"], r["title"]) for r in t.to_pylist()})
    assert visible == {i: (old.timestamp, f"row {i} ✓") for i in range(5)} | {
        i: (ack.timestamp, f"row {i} ✓") for i in range(5, 15)
    }
    # one side empty: the keys of another vchannel (auto id), in one partition
    keys_only = await stream.upsert(cid, info.vchannels[1], [], pa.array([3]), pid)
    assert keys_only.rows == 0 and recorder.upserted[-1][2] == pid
    assert recorder.upserted[-1][0] == [] and recorder.upserted[-1][1].to_pylist() == [3]
    await same_error(
        lambda: node.upsert(cid, vch, [(424242, new)], keys, None),
        lambda: stream.upsert(cid, vch, [(424242, new)], keys, None),
    )
    await same_error(
        lambda: node.upsert(cid, vch, [], pa.array(["x"]), None),
        lambda: stream.upsert(cid, vch, [], pa.array(["x"]), None),
    )


async def test_search_and_query_round_trip(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    node, stream = streaming.node, streaming.stream
    assert node is not None and stream is not None
    cid, pid = info.collection_id, info.partitions[0].partition_id
    for i, vch in enumerate(info.vchannels):
        await stream.insert(cid, pid, vch, rich_rows(info, 100 * i, 60))
    await stream.delete(cid, None, info.vchannels[0], pa.array([7]))
    rng = np.random.default_rng(9)
    queries = rng.random((3, DIM), dtype=np.float32)
    outputs = ("title", "doc", "tags", "$meta", "vec")
    search = GrowingSearch(
        cid, tuple(info.vchannels), "vec", "IP", 6, queries,
        filter="id not in {skip} and tags[0] >= 0", template_values={"skip": [1, 2]},
        output_fields=outputs, guarantee_ts=await streaming.coord.allocate_timestamp(),
        params={"ef": 32},
    )  # fmt: skip
    local, remote = await node.search(search), await stream.search(search)
    assert remote.visible_ts >= search.guarantee_ts
    for name in ("topks", "pks", "scores", "ts"):
        assert np.array_equal(getattr(remote.hits, name), getattr(local.hits, name)), name
    assert remote.hits.topks.tolist() == [6, 6, 6]
    assert not {1, 2, 7} & set(remote.hits.pks.tolist())
    assert remote.hits.fields is not None and local.hits.fields is not None
    assert remote.hits.fields.equals(local.hits.fields)
    bare = await stream.search(dataclasses.replace(search, output_fields=(), partition_ids=(pid,)))
    assert bare.hits.fields is None and np.array_equal(bare.hits.pks, local.hits.pks)

    query = GrowingQuery(
        cid, tuple(info.vchannels), filter='title like "row 1%"', output_fields=("doc", "tags"),
        limit=5,
    )  # fmt: skip
    rows_local, rows_remote = await node.query(query), await stream.query(query)
    assert rows_remote.column("id").to_pylist() == [1, 10, 11, 12, 13]
    assert rows_remote.select(["id", "doc", "tags"]).equals(
        rows_local.select(["id", "doc", "tags"])
    )
    assert visible_ts_of(rows_remote) > 0
    count = await stream.query(dataclasses.replace(query, limit=None, count=True, filter=""))
    assert count.column("count(*)").to_pylist() == [119]
    await same_error(
        lambda: node.query(dataclasses.replace(query, filter="id >>> 1")),
        lambda: stream.query(dataclasses.replace(query, filter="id >>> 1")),
    )
    await same_error(
        lambda: node.search(dataclasses.replace(search, output_fields=("nope",))),
        lambda: stream.search(dataclasses.replace(search, output_fields=("nope",))),
    )
    await same_error(
        lambda: node.search(dataclasses.replace(search, vchannels=("canopy-dml_9_1v0",))),
        lambda: stream.search(dataclasses.replace(search, vchannels=("canopy-dml_9_1v0",))),
    )


async def test_streaming_errors_arrive_as_the_same_class(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    node, stream = streaming.node, streaming.stream
    assert node is not None and stream is not None
    cid, pid = info.collection_id, info.partitions[0].partition_id
    table = rich_rows(info, 0, 3)
    bad = await same_error(
        lambda: node.insert(cid, pid, "not-a-vchannel", table),
        lambda: stream.insert(cid, pid, "not-a-vchannel", table),
    )
    assert isinstance(bad, InvalidArgument)
    await same_error(
        lambda: node.insert(999_999, pid, info.vchannels[0], table),
        lambda: stream.insert(999_999, pid, info.vchannels[0], table),
    )
    await same_error(
        lambda: node.delete(cid, 424242, info.vchannels[0], pa.array([1])),
        lambda: stream.delete(cid, 424242, info.vchannels[0], pa.array([1])),
    )
    await same_error(
        lambda: node.flush(cid, ["canopy-dml_9_1v0"]),
        lambda: stream.flush(cid, ["canopy-dml_9_1v0"]),
    )


# --- failures ------------------------------------------------------------------------------------


async def test_stopped_servers_give_unavailable(streaming: Cluster) -> None:
    info = await streaming.create_collection()
    assert streaming.stream_server is not None and streaming.stream is not None
    table = rich_rows(info, 0, 3)
    await streaming.stream_server.stop(0)
    with pytest.raises(Unavailable) as err:
        await streaming.stream.insert(info.collection_id, 1, info.vchannels[0], table)
    assert err.value.retryable
    with pytest.raises(Unavailable):
        await streaming.stream.delete(info.collection_id, None, info.vchannels[0], pa.array([1]))
    with pytest.raises(Unavailable):  # not retried either: the caller decides
        await streaming.stream.upsert(
            info.collection_id, info.vchannels[0], [(1, table)], pa.array([1]), None
        )

    await streaming.coord_server.stop(0)
    quick = CoordinatorClient(streaming.coord_server.address, retry_for=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await quick.allocate_timestamp()  # retried for 0.3 s, then given up
        assert 0.25 <= time.monotonic() - started < 5
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await streaming.coord.catalog.create_database("later")  # DDL: never retried
        assert time.monotonic() - started < 2
    finally:
        await quick.close()


async def test_coordinator_client_rides_over_a_restart(cluster: Cluster) -> None:
    client = cluster.coord
    before = await client.allocate_timestamp()
    info = await cluster.create_collection()
    port = cluster.coord_server.port
    await cluster.stop_coordinator()

    pending = asyncio.ensure_future(client.allocate_timestamp())
    described = asyncio.ensure_future(client.describe_collection_by_id(info.collection_id))
    await asyncio.sleep(0.5)  # the calls are retrying against a closed port
    assert not pending.done() and not described.done()
    await cluster.start_coordinator(port)  # the restarted process, same port, same meta
    async with asyncio.timeout(10):
        after = await pending
        assert await described == info
    assert after > before
    assert await client.allocate_timestamp() > after
    assert await client.catalog.describe_collection("default", "coll") == info


# --- end to end: pymilvus -> proxy -> rpc clients -> coordinator / streaming node ----------------


async def test_pymilvus_through_a_proxy_on_the_rpc_clients(streaming: Cluster) -> None:
    assert streaming.stream is not None
    coord = CoordinatorClient(streaming.coord_server.address)
    stream = StreamingClient(streaming.stream_server.address)  # type: ignore[union-attr]
    servicer = ProxyServicer(coord, coord.catalog, StaticRouter(stream), RealClock())  # type: ignore[arg-type]
    proxy = ProxyServer(servicer, HOST, 0)
    await proxy.start()

    def scenario() -> dict[str, Any]:
        client = MilvusClient(uri=f"http://{proxy.address}")
        try:
            schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
            schema.add_field("title", DataType.VARCHAR, max_length=32)
            client.create_collection("e2e", schema=schema, shards_num=2)
            rows = [
                {"id": i, "vec": [float(i)] * DIM, "title": f"t{i}", "extra": i} for i in range(200)
            ]
            inserted = client.insert("e2e", rows)
            upsert = [{**r, "id": r["id"] + 5, "title": "u"} for r in rows[190:]]  # 195..204
            upserted = client.upsert("e2e", upsert)
            deleted = client.delete("e2e", ids=[1, 2, 3])
            client.create_index(
                "e2e", client.prepare_index_params("vec", metric_type="L2", index_type="AUTOINDEX")
            )
            client.load_collection("e2e")
            found = client.search("e2e", [[2.0] * DIM], limit=3, output_fields=["title", "extra"])
            fetched = client.query("e2e", filter="id in [0, 1, 200]", output_fields=["title"])
            counted = client.query("e2e", filter="", output_fields=["count(*)"])
            client.release_collection("e2e")
            client.flush("e2e", timeout=20)  # waits until GetFlushState says flushed
            described = client.describe_collection("e2e")
            client.drop_collection("e2e")
            return {
                "inserted": inserted["insert_count"],
                "upserted": upserted["upsert_count"],
                "deleted": deleted["delete_count"],
                "fields": [f["name"] for f in described["fields"]],
                "listed": client.list_collections(),
                "collection_id": described["collection_id"],
                "found": [(h["id"], h["entity"]) for h in found[0]],
                "fetched": [(r["id"], r["title"]) for r in fetched],
                "counted": counted[0]["count(*)"],
            }
        finally:
            client.close()

    try:
        result = await asyncio.wait_for(asyncio.to_thread(scenario), 30)
        assert result["inserted"] == 200 and result["deleted"] == 3
        assert result["upserted"] == 10
        assert result["fields"] == ["id", "vec", "title"] and result["listed"] == []
        # 2 was deleted; 0 is at distance 4 * 2^2, 4 at 4 * 2^2 too (ties by key)
        assert result["found"] == [
            (0, {"title": "t0", "extra": 0}),
            (4, {"title": "t4", "extra": 4}),
            (5, {"title": "t5", "extra": 5}),
        ]
        assert result["fetched"] == [(0, "t0"), (200, "u")] and result["counted"] == 202
        segments = await streaming.coord.list_segments(result["collection_id"])
        assert sum(s.rows for s in segments) == 210  # 5 of the upsert's rows replace old ones
        recorder = streaming.recorder
        assert recorder is not None and len(recorder.inserted) == 2  # the insert, per shard
        # the upsert: one call per shard, its keys and rows together (no auto id: same shard)
        assert len(recorder.upserted) == 2
        for groups, keys, delete_pid in recorder.upserted:
            assert delete_pid is None  # no partition named: every partition
            [(_, table)] = groups
            assert sorted(table.column("id").to_pylist()) == sorted(keys.to_pylist())
        assert sorted(k for _, keys, _ in recorder.upserted for k in keys.to_pylist()) == list(
            range(195, 205)
        )
        assert not await streaming.catalog.has_collection("default", "e2e")
    finally:
        await proxy.stop(1)
        await stream.close()
        await coord.close()
