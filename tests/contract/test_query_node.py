"""The sealed half of the read path in one process (memory stores): a streaming node delegates
to query nodes the segments they have loaded (cluster/query/node.py, cluster/query/routing.py,
assignments by cluster/coordinator/query_assign.py), and every answer equals what the streaming
node alone answers: rows, counts, top-k, deletes (buffered and flushed) and upserts, before,
during and after a handoff, and when a query node fails mid-read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
from collection_setup import create_test_collection
from polling import until

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.query_assign import QUERY, SegmentBalancer
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.coordinator.sessions import NodeSession
from cluster.interfaces import GrowingQuery, GrowingSearch
from cluster.milvus.columns import arrow_schema
from cluster.query.node import QueryNode, SegmentsNotServed, ShardRead
from cluster.query.routing import QueryRouter
from cluster.results import PartialResult
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from cluster.streaming.sealed import SealedSnapshot
from woodpecker import LogStore, WalConfig
from woodpecker.clock import RealClock
from woodpecker.errors import Unavailable
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

pytestmark = pytest.mark.contract

DIM = 8
ROOT = "segments"
CLOCK = RealClock()
FAST = StreamingConfig(
    time_tick_interval=0.05,
    storage_root=ROOT,
    maintenance_interval=0.05,
    checkpoint_interval=0.2,
    retry_delay=0.05,
)


class InProcessClient:
    """A QueryNodeClient that calls the node directly, counting calls; ``broken`` makes every
    call fail like an unreachable node."""

    def __init__(self, node: QueryNode) -> None:
        self.node = node
        self.calls = 0
        self.segments_read = 0
        self.broken = False

    def _enter(self, shards: Sequence[ShardRead]) -> None:
        self.calls += 1
        self.segments_read += sum(len(s.segment_ids) for s in shards)
        if self.broken:
            raise Unavailable("query node unreachable (test)")

    async def search_sealed(
        self, request: GrowingSearch, visible_ts: int, shards: Sequence[ShardRead]
    ) -> PartialResult:
        self._enter(shards)
        return await self.node.search_sealed(request, visible_ts, shards)

    async def query_sealed(
        self, request: GrowingQuery, visible_ts: int, shards: Sequence[ShardRead]
    ) -> pa.Table:
        self._enter(shards)
        return await self.node.query_sealed(request, visible_ts, shards)

    async def close(self) -> None:
        pass


@dataclass
class Env:
    objects: MemoryObjectStore
    meta: MemoryMetaStore
    coordinator: LocalCoordinator
    info: CollectionInfo
    schema: CollectionSchema
    streaming: StreamingNode | None = None
    clients: dict[str, InProcessClient] = field(default_factory=dict)
    closers: list = field(default_factory=list)
    next_pk: int = 0
    vectors: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    async def query_node(
        self, name: str, refresh_interval: float = 0.2
    ) -> tuple[QueryNode, NodeSession]:
        """A query node; with a long ``refresh_interval`` it re-reads delete logs only when a
        read's snapshot says something became durable."""
        session = NodeSession(self.meta, QUERY, address=name, clock=CLOCK, ttl=5.0)
        await session.start()
        node = QueryNode(
            self.objects, self.coordinator, self.meta, node_id=session.node_id, clock=CLOCK,
            root=ROOT, lease=session.lease_id, refresh_interval=refresh_interval, retry_delay=0.05,
        )  # fmt: skip
        await node.start()
        self.clients[name] = InProcessClient(node)
        self.closers += [node.close, session.close]
        return node, session

    def batch(self, pks: Sequence[int], tag: str = "row") -> pa.Table:
        rng = np.random.default_rng(len(self.vectors) + 1)
        vec = rng.random((len(pks), DIM), dtype=np.float32)
        for pk, v in zip(pks, vec, strict=True):
            self.vectors[pk] = v
        flat = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM)
        titles = pa.array([f"{tag} {p}" for p in pks])
        return pa.Table.from_arrays(
            [pa.array(np.asarray(pks, np.int64)), flat, titles], schema=arrow_schema(self.schema)
        )

    async def insert(self, n: int) -> None:
        assert self.streaming is not None
        pks = list(range(self.next_pk, self.next_pk + n))
        self.next_pk += n
        await self.streaming.insert(self.cid, self.pid, self.info.vchannels[0], self.batch(pks))

    async def flush(self) -> None:
        assert self.streaming is not None
        ticket = await self.streaming.flush(self.cid, list(self.info.vchannels))
        await until(lambda: self.streaming.flush_state(ticket))  # type: ignore[union-attr]

    async def search(self, queries: np.ndarray, k: int = 10) -> list[list[int]]:
        assert self.streaming is not None
        ts = await self.coordinator.allocate_timestamp()
        request = GrowingSearch(
            collection_id=self.cid, vchannels=tuple(self.info.vchannels), anns_field="vec",
            metric="L2", k=k, queries=queries, guarantee_ts=ts, output_fields=("title",),
        )  # fmt: skip
        result = await self.streaming.search(request)
        hits, out, at = result.hits, [], 0
        for n in hits.topks.tolist():
            out.append([int(x) for x in hits.pks[at : at + n]])
            at += n
        return out

    async def query(self, expr: str = "", count: bool = False) -> list | int:
        assert self.streaming is not None
        ts = await self.coordinator.allocate_timestamp()
        request = GrowingQuery(
            collection_id=self.cid, vchannels=tuple(self.info.vchannels), filter=expr,
            output_fields=("title",), count=count, guarantee_ts=ts,
        )  # fmt: skip
        table = await self.streaming.query(request)
        if count:
            return int(table.column(0)[0].as_py())
        ids, titles = table.column("id").to_pylist(), table.column("title").to_pylist()
        return sorted(zip(ids, titles, strict=True))

    def remote_segments(self) -> int:
        return sum(c.segments_read for c in self.clients.values())


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    objects, meta = MemoryObjectStore(), MemoryMetaStore()
    coordinator = LocalCoordinator(meta, CLOCK, catalog=Catalog(meta, num_physical_channels=1))
    await coordinator.start()
    info = await create_test_collection(coordinator, dim=DIM, shards=1)
    e = Env(objects, meta, coordinator, info, from_request_bytes(info.schema))
    balancer = SegmentBalancer(meta, CLOCK, interval=0.05)
    await balancer.start()
    router = QueryRouter(meta, CLOCK, connect=lambda address: e.clients[address])  # type: ignore[arg-type,return-value]
    await router.start()
    store = await LogStore.open(objects, meta, WalConfig(max_interval=0.005))
    e.streaming = StreamingNode(
        store, objects, coordinator, channels=list(info.pchannels), meta=meta, config=FAST,
        query_router=router,
    )  # fmt: skip
    await e.streaming.start()
    try:
        yield e
    finally:
        for close in [e.streaming.close, *reversed(e.closers), router.close, balancer.close]:
            with contextlib.suppress(Exception):
                await close()
        await store.close()
        await coordinator.close()


async def load(env: Env) -> None:
    catalog = env.coordinator.catalog
    flat = {"index_type": "FLAT", "metric_type": "L2"}
    ts = await env.coordinator.allocate_timestamp()
    await catalog.create_index("default", "coll", "vec", "", flat, create_ts=ts)
    await catalog.set_load_state("default", "coll", True)


async def all_loaded(env: Env, nodes: Sequence[QueryNode]) -> None:
    async def done() -> bool:
        segs = [s for s in await env.coordinator.list_segments(env.cid) if s.state == "flushed"]
        held = set().union(*(n.loaded for n in nodes))
        return bool(segs) and len(held) >= len(segs)

    await until(done, within=10, interval=0.02)


async def snapshot(env: Env, queries: np.ndarray) -> tuple:
    return (
        await env.search(queries),
        await env.query("id < 40"),
        await env.query(count=True),
        await env.query("id in [3, 33, 63, 93]"),
    )


async def test_loaded_segments_are_read_on_query_nodes_with_every_delete_applied(
    env: Env,
) -> None:
    for _ in range(4):
        await env.insert(30)
        await env.flush()
    await env.insert(10)  # growing rows stay on the streaming node
    queries = np.stack([env.vectors[i] for i in (3, 33, 63, 93, 121)])
    alone = await snapshot(env, queries)  # no collection load yet: the streaming node reads all
    assert env.remote_segments() == 0
    assert alone[2] == 130 and [ids[0] for ids in alone[0]] == [3, 33, 63, 93, 121]

    a, _ = await env.query_node("qn-a", refresh_interval=600)
    b, _ = await env.query_node("qn-b", refresh_interval=600)
    await load(env)
    await all_loaded(env, [a, b])
    assert a.loaded and b.loaded  # spread over both
    assert await snapshot(env, queries) == alone
    assert env.remote_segments() > 0
    remote_before = env.remote_segments()

    # deletes still in the streaming node's buffer reach the query nodes with the read
    assert env.streaming is not None
    await env.streaming.delete(env.cid, None, env.info.vchannels[0], pa.array([3, 33, 121]))
    after = await snapshot(env, queries)
    assert after[2] == 127
    assert all(pk not in ids for ids in after[0] for pk in (3, 33, 121))
    assert [pk for pk, _ in after[3]] == [63, 93]
    # once the deletes are in delete logs (the buffer is empty) the query nodes still apply them
    await env.flush()
    assert await snapshot(env, queries) == after
    assert env.remote_segments() > remote_before

    # deletes that go from the buffer to delete logs before any read saw them: the snapshot's
    # generation tells the query nodes to re-read the delete logs
    await env.streaming.delete(env.cid, None, env.info.vchannels[0], pa.array([5, 35]))
    await env.insert(1)  # a segment to flush: the flush also writes the buffered deletes
    await env.flush()
    # the flush step persists the buffered deletes right after the segment it reports flushed
    owner = env.streaming.owner(env.info.pchannels[0])
    await until(lambda: not owner.mem.deletes)
    assert await env.query(count=True) == 126
    assert await env.query("id in [5, 35, 36]") == [(36, "row 36")]

    # an upsert of a sealed row: the new version wins everywhere
    await env.streaming.upsert(
        env.cid,
        env.info.vchannels[0],
        [(env.pid, env.batch([63], tag="new"))],
        pa.array([63]),
        None,
    )
    rows = dict(await env.query("id in [63]"))  # type: ignore[arg-type]
    assert rows == {63: "new 63"}
    assert await env.query(count=True) == 126


async def test_a_failing_query_node_is_read_around_and_a_lost_one_replaced(env: Env) -> None:
    for _ in range(3):
        await env.insert(40)
        await env.flush()
    queries = np.stack([env.vectors[i] for i in (5, 45, 85)])
    expected = await snapshot(env, queries)
    a, a_session = await env.query_node("qn-a")
    b, _ = await env.query_node("qn-b")
    await load(env)
    await all_loaded(env, [a, b])
    env.clients["qn-a"].broken = True  # unreachable mid-read: the streaming node reads its share
    assert await snapshot(env, queries) == expected
    assert env.clients["qn-a"].calls > 0
    await a.close()
    await a_session.close()  # the session goes: its segments move to b
    await all_loaded(env, [b])
    calls = env.clients["qn-a"].calls
    assert await snapshot(env, queries) == expected
    assert env.clients["qn-a"].calls == calls  # no longer asked
    assert env.clients["qn-b"].segments_read > 0


async def test_handoff_of_new_segments_never_hides_rows(env: Env) -> None:
    a, _ = await env.query_node("qn-a")
    await load(env)
    total = 0
    queries = None
    for round_ in range(5):
        await env.insert(25)
        total += 25
        flushing = asyncio.create_task(env.flush())
        while not flushing.done():  # reads while the segment leaves memory and is handed over
            assert await env.query(count=True) == total
            await asyncio.sleep(0.005)
        await flushing
        if queries is None:
            queries = np.stack([env.vectors[0]])
        assert (await env.search(queries, k=1))[0] == [0]
        assert await env.query(count=True) == total, round_
    await all_loaded(env, [a])
    assert await env.query(count=True) == total


async def test_a_segment_the_query_node_does_not_list_is_refused_not_skipped(env: Env) -> None:
    """A compaction can drop a segment between the delegator's plan and the query node's read:
    leaving it out silently would hide its rows, so the node refuses (retryable) and the
    delegator reads it itself."""
    await env.insert(20)
    await env.flush()
    a, _ = await env.query_node("qn-a")
    await load(env)
    await all_loaded(env, [a])
    listed = [s.segment_id for s in await env.coordinator.list_segments(env.cid)]
    snap = SealedSnapshot(env.cid, env.info.vchannels[0], "test", 0, ())
    request = GrowingQuery(collection_id=env.cid, vchannels=tuple(env.info.vchannels), count=True)
    ts = await env.coordinator.allocate_timestamp()
    counted = await a.query_sealed(request, ts, [ShardRead(snap, tuple(listed))])
    assert counted.num_rows == 20
    with pytest.raises(SegmentsNotServed) as err:
        await a.query_sealed(request, ts, [ShardRead(snap, (*listed, 987654321))])
    assert err.value.retryable and "987654321" in str(err.value)
