"""A streaming node serving reads over the SEALED segments of its vchannels
(cluster.streaming.sealed): flushed rows stay searchable and queryable, deletes and upserts reach
them by timestamp (delete buffer and delete logs), and a new owner serves them after a takeover."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from polling import until as _until
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.index_builds import BuildOutcome, BuildRecord, BuildState, build_key
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.datanode import IndexBuildWorker
from cluster.interfaces import GrowingQuery, GrowingSearch
from cluster.milvus.columns import arrow_schema
from cluster.query.plan import Strategy
from cluster.query.testing import clustered_vectors
from cluster.schema import from_request_bytes
from cluster.storage import append_deltas, list_segments
from cluster.streaming.config import StreamingConfig
from cluster.streaming.growing import stored_schema
from cluster.streaming.node import StreamingNode
from cluster.streaming.sealed import SealedReader, query_sealed, search_ef
from woodpecker import LogStore, WalConfig
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

until = partial(_until, within=10.0)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DIM = 4
ROOT = "segments"
CONFIG = StreamingConfig(
    time_tick_interval=0.05,
    storage_root=ROOT,
    maintenance_interval=0.05,
    checkpoint_interval=0.1,
    delete_flush_interval=3600.0,  # deletes stay in the buffer unless a flush persists them
)


@dataclass
class Env:
    meta: MemoryMetaStore
    objects: MemoryObjectStore
    coordinator: LocalCoordinator
    info: CollectionInfo | None = None
    stores: list[LogStore] = field(default_factory=list)
    nodes: list[StreamingNode] = field(default_factory=list)

    @property
    def cid(self) -> int:
        assert self.info is not None
        return self.info.collection_id

    @property
    def vchannel(self) -> str:
        assert self.info is not None
        return self.info.vchannels[0]

    @property
    def pid(self) -> int:
        assert self.info is not None
        return self.info.partitions[0].partition_id

    async def node(self, **config: Any) -> StreamingNode:
        assert self.info is not None
        store = await LogStore.open(self.objects, self.meta, WalConfig(max_interval=0.001))
        self.stores.append(store)
        node = StreamingNode(
            store,
            self.objects,
            self.coordinator,
            channels=list(self.info.pchannels),
            config=StreamingConfig(**{**CONFIG.__dict__, **config}),
        )
        self.nodes.append(node)
        await node.start()
        return node

    def rows(self, pks: list[int], vecs: np.ndarray, tag: str = "t") -> pa.Table:
        assert self.info is not None
        schema = from_request_bytes(self.info.schema)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), DIM)
        tags = pa.array([f"{tag}{k}" for k in pks], pa.string())
        return pa.Table.from_arrays(
            [pa.array(pks, pa.int64()), vec, tags], schema=arrow_schema(schema)
        )

    async def insert(self, node: StreamingNode, pks: list[int], vecs: np.ndarray) -> int:
        ack = await node.insert(self.cid, self.pid, self.vchannel, self.rows(pks, vecs))
        return ack.timestamp

    async def delete(self, node: StreamingNode, pks: list[int]) -> int:
        return (await node.delete(self.cid, None, self.vchannel, pa.array(pks))).timestamp

    def search(self, queries: np.ndarray, k: int, **kw: Any) -> GrowingSearch:
        return GrowingSearch(self.cid, (self.vchannel,), "vec", "L2", k, queries, **kw)

    def query(self, **kw: Any) -> GrowingQuery:
        return GrowingQuery(self.cid, (self.vchannel,), **kw)

    async def ids(self, node: StreamingNode, **kw: Any) -> list[int]:
        table = await node.query(self.query(**kw))
        return table.column("id").to_pylist()

    async def count(self, node: StreamingNode, **kw: Any) -> int:
        table = await node.query(self.query(count=True, **kw))
        return table.column("count(*)").to_pylist()[0]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    meta, objects = MemoryMetaStore(), MemoryObjectStore()
    coordinator = LocalCoordinator(meta, catalog=Catalog(meta, num_physical_channels=1))
    await coordinator.start()
    e = Env(meta, objects, coordinator)
    s = MilvusClient.create_schema(auto_id=False)
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vec", PDataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("tag", PDataType.VARCHAR, max_length=16)
    req = Prepare.create_collection_request("c", s)
    ts = await coordinator.allocate_timestamp()
    e.info = await coordinator.catalog.create_collection(
        "default", "c", req.schema, create_ts=ts, shards_num=1
    )
    try:
        yield e
    finally:
        for node in e.nodes:
            with contextlib.suppress(Exception):
                await node.close()
        for store in e.stores:
            with contextlib.suppress(Exception):
                await store.close()
        await coordinator.close()


async def flushed(env: Env, node: StreamingNode) -> None:
    ticket = await node.flush(env.cid, [env.vchannel])
    await until(lambda: node.flush_state(ticket))
    assert node.growing_segments(env.cid, env.vchannel) == []  # out of memory


def exact(base: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    scores = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(scores, axis=1, kind="stable")[:, :k].tolist()


def hits_per_query(result: Any) -> list[list[int]]:
    out, start = [], 0
    for k in result.topks.tolist():
        out.append(result.pks[start : start + k].tolist())
        start += k
    return out


async def test_flushed_rows_are_still_searched_and_queried(env: Env) -> None:
    node = await env.node()
    rng = np.random.default_rng(1)
    base = rng.random((60, DIM), dtype=np.float32)
    await env.insert(node, list(range(40)), base[:40])
    await flushed(env, node)
    await env.insert(node, list(range(40, 60)), base[40:])  # growing
    queries = rng.random((3, DIM), dtype=np.float32)
    result = await node.search(env.search(queries, 7, output_fields=("tag",)))
    assert hits_per_query(result.hits) == exact(base, queries, 7)
    assert result.hits.fields is not None
    assert result.hits.fields.column("tag").to_pylist() == [f"t{k}" for k in result.hits.pks]
    # filters over sealed + growing rows
    filtered = await node.search(env.search(queries, 5, filter="id % 2 == 0"))
    evens = np.arange(0, 60, 2)
    assert hits_per_query(filtered.hits) == evens[exact(base[evens], queries, 5)].tolist()
    got = await node.query(env.query(filter="id in [3, 45, 99, 7]", output_fields=("tag",)))
    assert got.column_names == ["id", "tag", "_ts"]
    assert got.column("id").to_pylist() == [3, 7, 45]
    assert got.column("tag").to_pylist() == ["t3", "t7", "t45"]
    assert await env.ids(node, limit=5) == [0, 1, 2, 3, 4]
    assert await env.ids(node, filter="id >= 38 and id < 42") == [38, 39, 40, 41]
    assert await env.count(node) == 60
    assert await env.count(node, filter="id < 10") == 10


async def test_a_delete_after_the_flush_hides_the_sealed_row_by_timestamp(env: Env) -> None:
    node = await env.node()
    vecs = np.eye(DIM, dtype=np.float32)[[0, 1, 2, 3, 0]]
    await env.insert(node, [1, 2, 3, 4, 5], vecs)
    await flushed(env, node)
    before = await env.coordinator.allocate_timestamp()
    await env.delete(node, [2])  # in the channel's delete buffer only (not persisted yet)
    assert await env.ids(node) == [1, 3, 4, 5]
    assert await env.count(node) == 4
    hit = await node.search(env.search(vecs[1:2], 1))
    assert hits_per_query(hit.hits) != [[2]]
    # a read at a timestamp before the delete still sees the row
    owner = node.owner(env.info.pchannels[0])  # type: ignore[union-attr]
    snap = SealedReader.snapshot(env.cid, env.vchannel, owner.mem)
    segments = await node.sealed.segments(snap, None)
    schema = from_request_bytes(env.info.schema)  # type: ignore[union-attr]
    old = await query_sealed(segments, env.query(), None, before, "id", stored_schema(schema))
    assert sorted(k for t in old for k in t.column("id").to_pylist()) == [1, 2, 3, 4, 5]
    # once the buffer reaches the delete logs (forced by a flush) the row stays hidden
    await env.insert(node, [6], vecs[:1])
    await flushed(env, node)
    assert not [d for d in owner.mem.deletes if d.collection_id == env.cid]
    assert await env.ids(node) == [1, 3, 4, 5, 6]


async def test_an_upsert_of_a_sealed_row_returns_only_the_new_version(env: Env) -> None:
    node = await env.node()
    vecs = np.eye(DIM, dtype=np.float32)
    await env.insert(node, [1, 2], vecs[:2])
    await flushed(env, node)
    new = env.rows([1], vecs[3:4], tag="new")
    await node.upsert(env.cid, env.vchannel, [(env.pid, new)], pa.array([1]), None)
    got = await node.query(env.query(output_fields=("tag",)))
    assert got.column("id").to_pylist() == [1, 2]
    assert got.column("tag").to_pylist() == ["new1", "t2"]
    assert await env.count(node) == 2
    result = await node.search(env.search(vecs[:1], 3, output_fields=("tag",)))
    assert sorted(result.hits.pks.tolist()) == [1, 2]
    assert result.hits.fields is not None
    assert sorted(result.hits.fields.column("tag").to_pylist()) == ["new1", "t2"]
    # and after the new version is flushed too
    await flushed(env, node)
    assert (await node.query(env.query(output_fields=("tag",)))).column("tag").to_pylist() == [
        "new1",
        "t2",
    ]


async def test_a_later_delete_log_hides_rows_of_an_earlier_segment(env: Env) -> None:
    node = await env.node(sealed_refresh_interval=0.0)
    vecs = np.ones((3, DIM), dtype=np.float32)
    await env.insert(node, [1, 2, 3], vecs)
    await flushed(env, node)
    await env.insert(node, [10, 11, 12], vecs)
    await flushed(env, node)
    assert await env.count(node) == 6
    first, second = await list_segments(env.objects, ROOT, env.cid)
    assert first.min_pk == 1 and second.min_pk == 10
    ts = await env.coordinator.allocate_timestamp()
    # a delete of key 2 (a row of the FIRST segment) written only to the second one's log
    await append_deltas(
        env.objects, ROOT, env.cid, env.pid, second.segment_id, pa.array([2]), pa.array([ts])
    )
    assert await env.ids(node, guarantee_ts=ts) == [1, 3, 10, 11, 12]  # Strong: after it
    # a fresh node loads it from the logs alone
    node.abandon()
    second_node = await env.node()
    assert await env.ids(second_node, guarantee_ts=ts) == [1, 3, 10, 11, 12]


async def test_a_new_owner_serves_the_sealed_rows_after_a_takeover(env: Env) -> None:
    node = await env.node()
    vecs = np.eye(DIM, dtype=np.float32)
    await env.insert(node, [1, 2, 3], vecs[:3])
    await flushed(env, node)
    await env.insert(node, [4], vecs[3:4])  # growing, replayed by the new owner
    await env.delete(node, [3])  # buffered only: replayed from the WAL
    assert await env.ids(node) == [1, 2, 4]
    node.abandon()  # crash

    second = await env.node()
    assert await env.ids(second) == [1, 2, 4]
    result = await second.search(env.search(vecs[1:2], 1, output_fields=("tag",)))
    assert hits_per_query(result.hits) == [[2]]
    assert await env.count(second) == 3
    await env.delete(second, [1])
    assert await env.ids(second) == [2, 4]


# --- index builds of sealed segments -------------------------------------------------------------


async def build_indexes(env: Env, index_id: int) -> list[int]:
    """Run every pending build with a data node's worker; the built segments' ids."""
    worker = IndexBuildWorker(env.coordinator, env.objects, 7, root=ROOT)
    built = []
    while (task := await env.coordinator.claim_index_build(7)) is not None:
        assert await worker.run_build(task) is BuildOutcome.OK
        kv = await env.meta.get(build_key(env.cid, index_id, task.segment_id))
        assert kv is not None and BuildRecord.decode(kv.value).state is BuildState.FINISHED
        built.append(task.segment_id)
    return built


def recall(got: list[list[int]], want: list[list[int]]) -> float:
    return sum(len(set(g) & set(w)) for g, w in zip(got, want, strict=True)) / sum(
        len(w) for w in want
    )


async def test_a_finished_hnsw_build_is_searched_through_its_graph(env: Env) -> None:
    index = await env.coordinator.catalog.create_index(
        "default", "c", "vec", "",
        {"index_type": "HNSW", "metric_type": "L2", "M": "16", "efConstruction": "100"},
        create_ts=await env.coordinator.allocate_timestamp(),
    )  # fmt: skip
    node = await env.node(sealed_refresh_interval=0.0)
    n, k = 16_000, 10
    base, queries = clustered_vectors(n, 20, dim=DIM, clusters=50, seed=3)
    await env.insert(node, list(range(n)), base)
    await flushed(env, node)
    want = exact(base, queries, k)
    counts = node.sealed.strategies
    before = await node.search(env.search(queries, k))  # no build yet: exact
    assert hits_per_query(before.hits) == want
    assert set(counts) == {Strategy.EXACT}

    assert await build_indexes(env, index.index_id)
    counts.clear()
    result = await node.search(env.search(queries, k, params={"ef": 64}))
    assert counts[Strategy.HNSW] >= 1 and not counts[Strategy.EXACT]
    assert recall(hits_per_query(result.hits), want) >= 0.9
    owner = node.owner(env.info.pchannels[0])  # type: ignore[union-attr]
    snap = SealedReader.snapshot(env.cid, env.vchannel, owner.mem)
    for seg in await node.sealed.segments(snap, None):
        assert seg.indexes["vec"].index_id == index.index_id

    # a filter: only matching rows, whichever strategy the plan picks
    counts.clear()
    filtered = await node.search(env.search(queries, k, filter="id % 3 == 0"))
    got = hits_per_query(filtered.hits)
    assert all(pk % 3 == 0 for hits in got for pk in hits)
    thirds = np.arange(0, n, 3)
    assert recall(got, thirds[exact(base[thirds], queries, k)].tolist()) >= 0.9
    assert all(len(hits) == k for hits in got)

    # deletes still hide rows (searched through the graph, post-filtered)
    gone = sorted({hits[0] for hits in hits_per_query(result.hits)})
    await env.delete(node, gone)
    counts.clear()
    after = await node.search(env.search(queries, k, params={"ef": "64"}))
    assert not set(after.hits.pks.tolist()) & set(gone)
    assert counts[Strategy.POST_FILTER] >= 1
    alive = np.setdiff1d(np.arange(n), gone)
    assert recall(hits_per_query(after.hits), alive[exact(base[alive], queries, k)].tolist()) >= 0.9

    # another metric than the index's: exact
    counts.clear()
    ip = await node.search(GrowingSearch(env.cid, (env.vchannel,), "vec", "IP", k, queries))
    assert set(counts) == {Strategy.EXACT}
    scores = queries @ base[alive].T
    top_ip = alive[np.argsort(-scores, axis=1, kind="stable")[:, :k]].tolist()
    assert hits_per_query(ip.hits) == top_ip


async def test_a_dropped_index_makes_sealed_searches_exact_again(env: Env) -> None:
    index = await env.coordinator.catalog.create_index(
        "default", "c", "vec", "", {"index_type": "HNSW", "metric_type": "L2"},
        create_ts=await env.coordinator.allocate_timestamp(),
    )  # fmt: skip
    node = await env.node(sealed_refresh_interval=0.0)
    base, queries = clustered_vectors(500, 3, dim=DIM, clusters=10, seed=4)
    await env.insert(node, list(range(500)), base)
    await flushed(env, node)
    (segment_id,) = await build_indexes(env, index.index_id)
    await node.search(env.search(queries, 5))
    assert node.sealed.strategies[Strategy.HNSW] == 1
    (manifest,) = await list_segments(env.objects, ROOT, env.cid)
    keys = [i.key async for i in env.objects.list(f"{manifest.prefix}index/")]
    for key in keys:  # what the index's garbage collection does
        await env.objects.delete(key)
    node.sealed.strategies.clear()
    result = await node.search(env.search(queries, 5))
    assert set(node.sealed.strategies) == {Strategy.EXACT}
    assert hits_per_query(result.hits) == exact(base, queries, 5)
    assert segment_id == manifest.segment_id


def test_search_ef_reads_the_request_params() -> None:
    assert search_ef({}) is None
    assert search_ef({"ef": 80}) == 80
    assert search_ef({"ef": "32"}) == 32
    for bad in (0, -1, "x", None, True, [1]):
        assert search_ef({"ef": bad}) is None
