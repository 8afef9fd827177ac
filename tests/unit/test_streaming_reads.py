"""Streaming-node reads over growing data (cluster.streaming.node search/query and
cluster.streaming.reads): exact results against numpy, MVCC visibility by timestamp (inserts,
deletes, upserts), waiting for the guarantee timestamp, and errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.expr import ExprError
from cluster.interfaces import GrowingQuery, GrowingSearch, visible_ts_of
from cluster.milvus.columns import arrow_schema
from cluster.milvus.shard import hash_pk_to_shard
from cluster.milvus.status import FieldNotFound, Timeout
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.streaming import node as node_module
from cluster.streaming.config import StreamingConfig
from cluster.streaming.growing import GrowingSegment, stored_schema
from cluster.streaming.node import StreamingNode
from cluster.streaming.reads import query_segments, search_segments
from woodpecker import LogStore, WalConfig
from woodpecker.errors import InvalidArgument
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DIM = 4
CONFIG = StreamingConfig(time_tick_interval=0.05, storage_root="segments")


class GatedObjects(MemoryObjectStore):
    """A memory object store whose puts wait while ``gate`` is clear (WAL appends hang)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().put(*args, **kwargs)


@dataclass
class Env:
    objects: GatedObjects
    coordinator: LocalCoordinator
    node: StreamingNode
    info: CollectionInfo
    schema: CollectionSchema

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def vchannels(self) -> tuple[str, ...]:
        return tuple(self.info.vchannels)

    def pid(self, i: int = 0) -> int:
        return self.info.partitions[i].partition_id

    def table(self, pks: list[int], vecs: np.ndarray, tag: str = "t") -> pa.Table:
        n = len(pks)
        columns = [
            pa.array(pks, pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), DIM),
            pa.array([f"{tag}{k}" for k in pks], pa.string()),
            pa.array([json.dumps({"k": k}).encode() for k in pks], pa.binary()),
        ]
        assert len(columns[0]) == n
        return pa.Table.from_arrays(columns, schema=arrow_schema(self.schema))

    async def insert(self, pks: list[int], vecs: np.ndarray, tag: str = "t", part: int = 0) -> int:
        """Insert rows, each into the vchannel its key hashes to; the largest ack ts."""
        table = self.table(pks, vecs, tag)
        shards = hash_pk_to_shard(np.asarray(pks, np.int64), len(self.vchannels))
        ts = 0
        for shard, vchannel in enumerate(self.vchannels):
            rows = np.flatnonzero(shards == shard)
            if len(rows):
                ack = await self.node.insert(
                    self.cid, self.pid(part), vchannel, table.take(pa.array(rows))
                )
                ts = max(ts, ack.timestamp)
        return ts

    def vchannel_of(self, pk: int) -> str:
        return self.vchannels[int(hash_pk_to_shard(np.array([pk], np.int64), 2)[0])]

    def search(self, queries: np.ndarray, k: int, metric: str = "L2", **kw: Any) -> GrowingSearch:
        return GrowingSearch(self.cid, self.vchannels, "vec", metric, k, queries, **kw)

    def query(self, **kw: Any) -> GrowingQuery:
        return GrowingQuery(self.cid, self.vchannels, **kw)

    def segments(self) -> list[GrowingSegment]:
        return [s for v in self.vchannels for s in self.node.growing_segments(self.cid, v)]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    meta, objects = MemoryMetaStore(), GatedObjects()
    coordinator = LocalCoordinator(meta, catalog=Catalog(meta, num_physical_channels=2))
    await coordinator.start()
    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vec", PDataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("tag", PDataType.VARCHAR, max_length=16)
    req = Prepare.create_collection_request("c", s)
    ts = await coordinator.allocate_timestamp()
    info = await coordinator.catalog.create_collection(
        "default", "c", req.schema, create_ts=ts, shards_num=2
    )
    await coordinator.catalog.create_partition("default", "c", "p1", create_ts=ts + 1)
    info = await coordinator.describe_collection_by_id(info.collection_id)
    store = await LogStore.open(objects, meta, WalConfig(max_interval=0.001))
    settings = coordinator.catalog.settings
    node = StreamingNode(
        store,
        objects,
        coordinator,
        channels=[settings.pchannel(i) for i in range(2)],
        config=CONFIG,
    )
    await node.start()
    try:
        yield Env(objects, coordinator, node, info, from_request_bytes(info.schema))
    finally:
        objects.gate.set()
        await node.close()
        await store.close()
        await coordinator.close()


def exact(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Row numbers of the exact top-k (ties are unlikely with random floats)."""
    if metric == "L2":
        scores = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    elif metric == "IP":
        scores = -(queries @ base.T)
    else:
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        bn = base / np.linalg.norm(base, axis=1, keepdims=True)
        scores = -(qn @ bn.T)
    return np.argsort(scores, axis=1, kind="stable")[:, :k]


def as_dict(table: pa.Table) -> dict[int, str]:
    return dict(zip(table.column("id").to_pylist(), table.column("tag").to_pylist(), strict=True))


def hits_per_query(result: Any) -> list[list[int]]:
    out, start = [], 0
    for k in result.topks.tolist():
        out.append(result.pks[start : start + k].tolist())
        start += k
    return out


# --- exact search -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
async def test_search_equals_numpy_over_shards_and_partitions(env: Env, metric: str) -> None:
    rng = np.random.default_rng(1)
    base = rng.random((300, DIM), dtype=np.float32)
    await env.insert(list(range(0, 150)), base[:150], part=0)
    await env.insert(list(range(150, 300)), base[150:], part=1)
    assert len(env.segments()) == 4  # 2 vchannels x 2 partitions
    queries = rng.random((3, DIM), dtype=np.float32)
    result = await env.node.search(env.search(queries, 7, metric, output_fields=("tag", "$meta")))
    assert hits_per_query(result.hits) == exact(base, queries, 7, metric).tolist()
    assert result.hits.fields is not None
    tags = result.hits.fields.column("tag").to_pylist()
    assert tags == [f"t{pk}" for pk in result.hits.pks.tolist()]
    metas = [json.loads(m)["k"] for m in result.hits.fields.column("$meta").to_pylist()]
    assert metas == result.hits.pks.tolist()
    # one partition only
    only = await env.node.search(env.search(queries, 5, metric, partition_ids=(env.pid(1),)))
    want = (exact(base[150:], queries, 5, metric) + 150).tolist()
    assert hits_per_query(only.hits) == want and only.hits.fields is None


async def test_big_searches_run_in_a_thread_with_the_same_result(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(2)
    base = rng.random((400, DIM), dtype=np.float32)
    await env.insert(list(range(400)), base)
    queries = rng.random((5, DIM), dtype=np.float32)
    inline = await env.node.search(env.search(queries, 4))
    monkeypatch.setattr(node_module, "THREAD_READ_WORK", 10)
    threaded = await env.node.search(env.search(queries, 4))
    assert hits_per_query(threaded.hits) == hits_per_query(inline.hits)
    assert hits_per_query(inline.hits) == exact(base, queries, 4, "L2").tolist()
    counted = await env.node.query(env.query(count=True))
    assert counted.column("count(*)").to_pylist() == [400]


async def test_filter_by_primary_keys_and_query_order_and_limit(env: Env) -> None:
    rng = np.random.default_rng(3)
    base = rng.random((50, DIM), dtype=np.float32)
    await env.insert(list(range(50)), base)
    got = await env.node.query(env.query(filter="id in [42, 7, 99, 3]", output_fields=("tag",)))
    assert got.column_names == ["id", "tag", "_ts"]
    assert got.column("id").to_pylist() == [3, 7, 42]  # key order; 99 does not exist
    assert got.column("tag").to_pylist() == ["t3", "t7", "t42"]
    first = await env.node.query(env.query(limit=5))
    assert first.column("id").to_pylist() == [0, 1, 2, 3, 4]
    result = await env.node.search(env.search(base[[1, 5]], 3, filter="id in [1, 5, 9, 77]"))
    first, second = hits_per_query(result.hits)
    assert first[0] == 1 and second[0] == 5 and set(first) == set(second) == {1, 5, 9}


# --- visibility -------------------------------------------------------------------------------


async def test_reads_see_exactly_the_writes_up_to_the_visible_ts(env: Env) -> None:
    vecs = np.eye(DIM, dtype=np.float32)
    ts1 = await env.insert([1, 2], vecs[:2], tag="a")
    ts2 = await env.insert([3, 4], vecs[2:4], tag="a")
    # delete key 2 and upsert key 1 (one message per vchannel, as the proxy sends them)
    ts3 = (await env.node.delete(env.cid, None, env.vchannel_of(2), pa.array([2]))).timestamp
    new_row = env.table([1], vecs[3:4], tag="new")
    ts4 = (
        await env.node.upsert(
            env.cid, env.vchannel_of(1), [(env.pid(), new_row)], pa.array([1]), None
        )
    ).timestamp
    assert ts1 < ts2 < ts3 < ts4
    schema, stored = env.schema, stored_schema(env.schema)

    def rows_at(ts: int) -> dict[int, str]:
        table = query_segments(
            env.segments(), env.query(output_fields=("tag",)), None, ts, schema, stored
        )
        return as_dict(table)

    def nearest_at(ts: int, query: np.ndarray) -> list[int]:
        hits = search_segments(env.segments(), env.search(query, 10), None, ts, schema, stored)
        return hits_per_query(hits)[0]

    assert rows_at(ts1 - 1) == {}
    assert rows_at(ts1) == {1: "a1", 2: "a2"}
    assert rows_at(ts2) == {1: "a1", 2: "a2", 3: "a3", 4: "a4"}
    assert rows_at(ts3) == {1: "a1", 3: "a3", 4: "a4"}  # deleted at ts3
    assert rows_at(ts4) == {1: "new1", 3: "a3", 4: "a4"}  # the upsert's new version only
    assert nearest_at(ts1, vecs[3:4]) == [1, 2]  # row 4 was not there yet
    assert nearest_at(ts4, vecs[3:4])[:2] in ([1, 4], [4, 1])  # key 1 now has vec 3
    assert len(nearest_at(ts4, vecs[3:4])) == 3
    # the node reads at the latest: the same as at ts4
    latest = await env.node.query(env.query(output_fields=("tag",)))
    assert visible_ts_of(latest) >= ts4
    assert as_dict(latest) == {1: "new1", 3: "a3", 4: "a4"}
    result = await env.node.search(env.search(vecs[3:4], 10, output_fields=("tag",)))
    assert result.visible_ts >= ts4
    assert sorted(result.hits.pks.tolist()) == [1, 3, 4]
    assert result.hits.fields is not None
    assert "a1" not in result.hits.fields.column("tag").to_pylist()


async def test_count_distinct_keys_across_segments(env: Env) -> None:
    vecs = np.ones((3, DIM), np.float32)
    await env.insert([1, 2, 3], vecs, part=0)
    await env.insert([3], vecs[:1], tag="again", part=1)  # a plain re-insert of key 3
    count = await env.node.query(env.query(count=True))
    assert count.column("count(*)").to_pylist() == [3]
    rows = await env.node.query(env.query(output_fields=("tag",)))
    assert rows.column("tag").to_pylist() == ["t1", "t2", "again3"]  # newest version of 3


# --- guarantee timestamp ------------------------------------------------------------------------


async def _in_flight(env: Env, pks: list[int]) -> asyncio.Task[int]:
    """Start an insert whose WAL append hangs (the gate is closed) and wait until it is
    appended but not applied."""
    env.objects.gate.clear()
    task = asyncio.create_task(env.insert(pks, np.ones((len(pks), DIM), np.float32)))
    owners = [env.node.owner(p) for p in env.node.channels]
    for _ in range(200):
        if any(not o.quiescent for o in owners):
            return task
        await asyncio.sleep(0.005)
    raise AssertionError("the insert never got in flight")


async def test_a_read_waits_for_writes_in_flight_below_its_guarantee(env: Env) -> None:
    await env.insert([1], np.ones((1, DIM), np.float32))
    writing = await _in_flight(env, [2])
    guarantee = await env.coordinator.allocate_timestamp()  # after the write took its ts
    reading = asyncio.create_task(env.node.query(env.query(guarantee_ts=guarantee)))
    await asyncio.sleep(0.2)
    assert not reading.done()  # the write is not applied yet
    env.objects.gate.set()
    ack_ts = await writing
    table = await reading
    assert table.column("id").to_pylist() == [1, 2]
    assert visible_ts_of(table) >= guarantee > ack_ts
    # without a guarantee nothing waits: a read at the latest applied state
    writing = await _in_flight(env, [3])
    quick = await asyncio.wait_for(env.node.query(env.query()), 1)
    assert quick.column("id").to_pylist() == [1, 2]
    env.objects.gate.set()
    await writing


async def test_a_read_times_out_when_the_guarantee_is_not_reached(env: Env) -> None:
    writing = await _in_flight(env, [5])
    guarantee = await env.coordinator.allocate_timestamp()
    started = time.monotonic()
    with pytest.raises(Timeout) as err:
        await env.node.search(env.search(np.ones((1, DIM), np.float32), 1, guarantee_ts=guarantee,
                                         wait_timeout=0.2))  # fmt: skip
    assert 0.15 < time.monotonic() - started < 2
    assert err.value.to_status().code == 10001 and "guarantee timestamp" in str(err.value)
    env.objects.gate.set()
    await writing


async def test_a_quiescent_channel_does_not_wait_for_a_time_tick(env: Env) -> None:
    await env.node.close()
    slow = StreamingNode(
        env.node.log_store,
        env.objects,
        env.coordinator,
        channels=env.node._explicit,
        config=replace(CONFIG, time_tick_interval=60.0),
    )
    await slow.start()
    try:
        env.node = slow
        ack = await env.insert([1, 2], np.ones((2, DIM), np.float32))
        guarantee = await env.coordinator.allocate_timestamp()
        assert all(slow.service_ts(v) < guarantee for v in env.vchannels)  # no tick since
        started = time.monotonic()
        table = await env.node.query(env.query(guarantee_ts=guarantee))
        assert time.monotonic() - started < 0.5
        assert visible_ts_of(table) >= guarantee > ack
        assert table.column("id").to_pylist() == [1, 2]
    finally:
        await slow.close()


async def test_a_time_tick_in_flight_does_not_delay_a_read(env: Env) -> None:
    """On S3 a time tick waits up to the WAL's group-commit interval for its ack; a read must
    not wait for it (it carries no rows)."""
    await env.insert([1], np.ones((1, DIM), np.float32))
    env.objects.gate.clear()  # every append from now on stays in flight
    owners = [env.node.owner(p) for p in env.node.channels]
    for _ in range(400):
        if all(o._queue for o in owners):
            break
        await asyncio.sleep(0.005)
    assert all(o._queue for o in owners), "no time tick got in flight"
    assert all(o.quiescent for o in owners)
    guarantee = await env.coordinator.allocate_timestamp()
    assert all(env.node.service_ts(v) < guarantee for v in env.vchannels)
    # the gate stays closed: a read that waited for the tick would never finish
    table = await asyncio.wait_for(env.node.query(env.query(guarantee_ts=guarantee)), 5)
    assert visible_ts_of(table) >= guarantee
    assert table.column("id").to_pylist() == [1]
    env.objects.gate.set()


# --- errors -----------------------------------------------------------------------------------


async def test_bad_read_requests_are_refused(env: Env) -> None:
    q = np.ones((1, DIM), np.float32)
    with pytest.raises(FieldNotFound):
        await env.node.search(env.search(q, 1, output_fields=("nope",)))
    with pytest.raises(FieldNotFound):
        await env.node.query(env.query(output_fields=("nope",)))
    with pytest.raises(InvalidArgument, match="float vector"):
        await env.node.search(replace(env.search(q, 1), anns_field="tag"))
    with pytest.raises(InvalidArgument, match="queries must be"):
        await env.node.search(env.search(np.ones((1, DIM + 1), np.float32), 1))
    with pytest.raises(InvalidArgument, match="metric"):
        await env.node.search(env.search(q, 1, "HAMMING"))
    with pytest.raises(InvalidArgument, match="k must be positive"):
        await env.node.search(env.search(q, 0))
    with pytest.raises(InvalidArgument, match="not a vchannel"):
        await env.node.query(replace(env.query(), vchannels=("canopy-dml_0_1v9",)))


async def test_filters_select_rows_in_search_and_query(env: Env) -> None:
    rng = np.random.default_rng(4)
    base = rng.random((60, DIM), dtype=np.float32)
    await env.insert(list(range(60)), base)

    async def ids(expr: str, **templates: Any) -> list[int]:
        table = await env.node.query(env.query(filter=expr, template_values=templates))
        return table.column("id").to_pylist()

    assert await ids("id >= 10 and id < 13") == [10, 11, 12]
    assert await ids('tag like "t5%"') == [5, *range(50, 60)]
    assert await ids("k in [3, 4] or id == 59") == [3, 4, 59]  # dynamic key of $meta
    assert await ids('$meta["k"] > 57') == [58, 59]
    assert await ids("id in {keys} and k > {low}", keys=[1, 2, 40], low=1) == [2, 40]
    assert await ids("id < 0") == []
    queries = base[[20, 21]]
    result = await env.node.search(env.search(queries, 3, filter="id >= 20 and id % 2 == 1"))
    first, second = hits_per_query(result.hits)
    assert second[0] == 21 and all(k >= 20 and k % 2 == 1 for k in first + second)
    count = await env.node.query(env.query(filter="id < 30", count=True))
    assert count.column("count(*)").to_pylist() == [30]


async def test_a_bad_filter_is_a_1100_error(env: Env) -> None:
    with pytest.raises(ExprError) as err:
        await env.node.query(env.query(filter="id >>> 3"))
    assert err.value.to_status().code == 1100
    with pytest.raises(ExprError):
        await env.node.search(env.search(np.ones((1, DIM), np.float32), 1, filter="nope("))
