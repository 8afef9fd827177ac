"""cluster.streaming.node / .channel on in-memory storage: routing errors, validation before the
WAL, crash windows of a flush, drop, the injected clock, channel assignment, and upserts (flush,
and atomicity when the WAL append fails or the channel is fenced)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
from cluster.coordinator.channel_manager import AssignmentWatcher, ChannelManager
from cluster.coordinator.channels import ChannelState
from cluster.coordinator.errors import PartitionNotFound
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.coordinator.sessions import STREAMING, NodeSession, SessionRegistry
from cluster.milvus.columns import arrow_schema
from cluster.schema import from_request_bytes
from cluster.storage import list_segments, read_deltas, read_segment
from cluster.streaming.config import StreamingConfig
from cluster.streaming.errors import ChannelNotOwned, NodeClosed, SchemaMismatch
from cluster.streaming.node import StreamingNode
from cluster.streaming.policy import SegmentPolicy
from woodpecker import LogStore, WalConfig
from woodpecker.clock import Clock, ManualClock, RealClock
from woodpecker.errors import InvalidArgument, Unavailable
from woodpecker.message import MessageId
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import Faulty, MemoryObjectStore

until = partial(_until, within=10.0)

DIM = 4
ROOT = "segments"
CONFIG = StreamingConfig(
    time_tick_interval=0.05, storage_root=ROOT, maintenance_interval=0.05, checkpoint_interval=0.1
)


@dataclass
class Env:
    meta: MemoryMetaStore
    objects: MemoryObjectStore
    coordinator: LocalCoordinator
    stores: list[LogStore] = field(default_factory=list)
    nodes: list[StreamingNode] = field(default_factory=list)
    pks: itertools.count = field(default_factory=itertools.count)

    async def collection(self, name: str, shards: int = 1) -> CollectionInfo:
        s = MilvusClient.create_schema(auto_id=False)
        s.add_field("id", PDataType.INT64, is_primary=True)
        s.add_field("vec", PDataType.FLOAT_VECTOR, dim=DIM)
        req = Prepare.create_collection_request(name, s)
        ts = await self.coordinator.allocate_timestamp()
        return await self.coordinator.catalog.create_collection(
            "default", name, req.schema, create_ts=ts, shards_num=shards
        )

    async def node(
        self,
        channels: list[str],
        *,
        coordinator: Any = None,
        clock: Clock | None = None,
        **config: Any,
    ) -> StreamingNode:
        store = await LogStore.open(self.objects, self.meta, WalConfig(max_interval=0.001))
        self.stores.append(store)
        node = StreamingNode(
            store,
            self.objects,
            coordinator or self.coordinator,
            channels=channels,
            clock=clock,
            config=StreamingConfig(**{**CONFIG.__dict__, **config}),
        )
        self.nodes.append(node)
        await node.start()
        return node

    def batch(self, info: CollectionInfo, n: int) -> pa.Table:
        schema = from_request_bytes(info.schema)
        pks = np.array([next(self.pks) for _ in range(n)], dtype=np.int64)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * DIM, np.float32)), DIM)
        return pa.Table.from_arrays([pa.array(pks), vec], schema=arrow_schema(schema))

    def rows(self, info: CollectionInfo, pks: list[int], value: float = 1.0) -> pa.Table:
        """Rows with the given keys and every vector component ``value``."""
        schema = from_request_bytes(info.schema)
        n = len(pks)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.full(n * DIM, value, np.float32)), DIM)
        return pa.Table.from_arrays([pa.array(pks, pa.int64()), vec], schema=arrow_schema(schema))

    async def insert(self, node: StreamingNode, info: CollectionInfo, n: int) -> list[int]:
        table = self.batch(info, n)
        pid = info.partitions[0].partition_id
        await node.insert(info.collection_id, pid, info.vchannels[0], table)
        return table.column("id").to_pylist()

    async def stored(self, collection_id: int) -> list[int]:
        out: list[int] = []
        for m in await list_segments(self.objects, ROOT, collection_id):
            out += (await read_segment(self.objects, m, ["id"])).column("id").to_pylist()
        return sorted(out)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    meta, objects = MemoryMetaStore(), MemoryObjectStore()
    coordinator = LocalCoordinator(meta, catalog=Catalog(meta, num_physical_channels=1))
    await coordinator.start()
    e = Env(meta, objects, coordinator)
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


async def flushed(node: StreamingNode, info: CollectionInfo) -> None:
    ticket = await node.flush(info.collection_id, list(info.vchannels))
    await until(lambda: node.flush_state(ticket))


# --- routing and validation ----------------------------------------------------------------------


async def test_calls_for_channels_the_node_does_not_serve_are_retryable_errors(env: Env) -> None:
    info = await env.collection("c")
    node = await env.node([])
    with pytest.raises(ChannelNotOwned) as caught:
        await env.insert(node, info, 3)
    assert caught.value.retryable and "canopy-dml_0" in str(caught.value)
    with pytest.raises(InvalidArgument):
        await node.insert(info.collection_id, 0, "canopy-dml_0_999v0", env.batch(info, 1))
    await node.close()
    with pytest.raises(NodeClosed):
        await env.insert(node, info, 3)


async def test_a_bad_batch_is_refused_before_it_reaches_the_wal(env: Env) -> None:
    info = await env.collection("c")
    node = await env.node(list(info.pchannels))
    await env.insert(node, info, 2)
    log = await node.log_store.open_log(info.pchannels[0])
    before = await log.last_message_id()
    pid = info.partitions[0].partition_id
    bad = env.batch(info, 2).drop_columns(["vec"])
    with pytest.raises(SchemaMismatch):
        await node.insert(info.collection_id, pid, info.vchannels[0], bad)
    with pytest.raises(SchemaMismatch):
        await node.delete(info.collection_id, None, info.vchannels[0], pa.array(["x"]))
    owner = node.owner(info.pchannels[0])
    assert owner.failure is None
    # only time ticks may have followed: no insert or delete entry was appended
    reader = await log.open_reader(before)
    types = []
    while (msg := await reader.read_next(timeout=0.05)) is not None:
        types.append(msg.properties["type"])
    await reader.close()
    assert set(types[1:]) <= {"time_tick"}


# --- crash windows -------------------------------------------------------------------------------


async def test_segments_flushed_past_the_checkpoint_are_not_rebuilt(env: Env) -> None:
    slow, fast = await env.collection("slow"), await env.collection("fast")
    assert slow.pchannels == fast.pchannels  # one physical channel
    node = await env.node(list(slow.pchannels))
    slow_rows = await env.insert(node, slow, 5)  # stays growing: holds the checkpoint back
    fast_rows = await env.insert(node, fast, 7)
    await flushed(node, fast)
    owner = node.owner(slow.pchannels[0])
    await until(lambda: bool(owner.checkpoint.flushed))
    [(flushed_sid, _)] = owner.checkpoint.flushed.items()
    manifests = await list_segments(env.objects, ROOT, fast.collection_id)
    etag = manifests[0].etag
    node.abandon()

    second = await env.node(list(slow.pchannels))
    owner2 = second.owner(slow.pchannels[0])
    assert flushed_sid not in owner2.mem.segments  # skipped on replay
    assert [g.num_rows for g in second.growing_segments(slow.collection_id, slow.vchannels[0])] == [
        5
    ]
    await flushed(second, slow)
    await flushed(second, fast)
    assert await env.stored(fast.collection_id) == fast_rows
    assert await env.stored(slow.collection_id) == slow_rows
    again = await list_segments(env.objects, ROOT, fast.collection_id)
    assert [m.etag for m in again] == [etag]  # not written twice


class StuckReports:
    """A coordinator whose ``report_flushed_segment`` never returns: the node "crashes" after
    writing the segment and before registering it."""

    def __init__(self, inner: LocalCoordinator) -> None:
        self.inner = inner
        self.reached = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def report_flushed_segment(self, *args: Any) -> None:
        self.reached.set()
        await asyncio.Event().wait()


async def test_crash_between_writing_and_registering_a_segment(env: Env) -> None:
    info = await env.collection("c")
    stuck = StuckReports(env.coordinator)
    node = await env.node(list(info.pchannels), coordinator=stuck)
    rows = await env.insert(node, info, 6)
    await node.delete(info.collection_id, None, info.vchannels[0], pa.array([rows[0]]))
    ticket = await node.flush(info.collection_id, list(info.vchannels))
    async with asyncio.timeout(5):
        await stuck.reached.wait()
    [manifest] = await list_segments(env.objects, ROOT, info.collection_id)
    assert not await env.coordinator.list_segments(info.collection_id)
    node.abandon()

    second = await env.node(list(info.pchannels))
    await until(lambda: second.flush_state(ticket))  # the new owner registers it
    [again] = await list_segments(env.objects, ROOT, info.collection_id)
    assert again.etag != manifest.etag  # only the delete log was appended again
    assert again.insert_files == manifest.insert_files
    assert await env.stored(info.collection_id) == rows
    [registered] = await env.coordinator.list_segments(info.collection_id)
    assert registered.segment_id == ticket.segment_ids[0] and registered.rows == 6


async def test_drop_collection_forgets_growing_data_across_replays(env: Env) -> None:
    info = await env.collection("c")
    node = await env.node(list(info.pchannels))
    await env.insert(node, info, 4)
    await node.drop_collection(info.collection_id, list(info.vchannels))
    assert node.growing_segments(info.collection_id, info.vchannels[0]) == []
    node.abandon()
    second = await env.node(list(info.pchannels))
    assert second.growing_segments(info.collection_id, info.vchannels[0]) == []
    assert second.owner(info.pchannels[0]).mem.dropped == {info.collection_id}


# --- the injected clock --------------------------------------------------------------------------


async def test_ticks_and_the_idle_rule_run_on_the_injected_clock(env: Env) -> None:
    info = await env.collection("c")
    clock = ManualClock()
    policy = SegmentPolicy(max_idle=30.0, max_age=None)
    node = await env.node(list(info.pchannels), clock=clock, policy=policy, time_tick_interval=1.0)
    vchannel = info.vchannels[0]
    await env.insert(node, info, 3)
    ts = node.service_ts(vchannel)
    await asyncio.sleep(0.1)  # real time passes, virtual time does not: no tick
    assert node.service_ts(vchannel) == ts
    await clock.advance(1.5)
    await until(lambda: node.service_ts(vchannel) > ts)
    assert await env.coordinator.list_segments(info.collection_id) == []
    await clock.advance(31)  # idle for longer than max_idle: sealed and flushed
    await until(lambda: env.coordinator.list_segments(info.collection_id))
    assert node.growing_segments(info.collection_id, vchannel) == []


# --- assignment ----------------------------------------------------------------------------------


async def test_a_node_serves_what_the_coordinator_assigns_and_acks_it(env: Env) -> None:
    info = await env.collection("c")
    clock = RealClock()
    session = NodeSession(env.meta, STREAMING, address="sn:1", clock=clock, ttl=5)
    await session.start()
    watcher = AssignmentWatcher(env.meta, session.node_id, clock)
    manager = ChannelManager(env.meta, SessionRegistry(env.meta, clock), clock, 1)
    await manager.start()
    store = await LogStore.open(env.objects, env.meta, WalConfig(max_interval=0.001))
    env.stores.append(store)
    node = StreamingNode(
        store, env.objects, env.coordinator, watcher=watcher, session=session, config=CONFIG
    )
    env.nodes.append(node)
    try:
        await node.start()
        async with asyncio.timeout(5):
            records = await manager.wait_until(
                lambda r: all(x.state is ChannelState.ASSIGNED for x in r.values())
            )
        assert {r.owner for r in records.values()} == {session.node_id}
        assert node.channels == list(info.pchannels)
        rows = await env.insert(node, info, 3)
        await flushed(node, info)
        assert await env.stored(info.collection_id) == rows
        await session.close()  # the session is gone: the node stops serving, loudly
        with pytest.raises(Exception, match="session"):
            async with asyncio.timeout(5):
                await node.wait()
    finally:
        await manager.close()
        await session.close()


async def test_a_channel_released_after_its_fenced_exit_is_not_a_node_failure(env: Env) -> None:
    """The new owner may fence a moved channel before the old node sees the revoke: the old
    channel's supervisor then ends normally and the revoke releases it; the node keeps serving."""
    node = await env.node([])
    ended = asyncio.Event()

    async def fenced_and_dropped(channel: str, epoch: int | None) -> None:
        ended.set()  # _run_channel returns normally after ChannelFenced

    node._run_channel = fenced_and_dropped  # type: ignore[method-assign]
    node._supervise("canopy-dml_0", 1)
    await ended.wait()
    await node._release("canopy-dml_0")  # the revoke arrives after the fenced exit
    await asyncio.sleep(0)
    assert node.failure is None and node.status.value == "serving"


async def test_rebalancing_moves_channels_between_live_nodes(env: Env) -> None:
    info = await env.collection("c")
    clock = RealClock()
    manager = ChannelManager(
        env.meta, SessionRegistry(env.meta, clock), clock, 4, rebalance_interval=0.05
    )
    await manager.start()
    nodes, sessions = [], []
    try:
        for i in range(2):
            session = NodeSession(env.meta, STREAMING, address=f"sn:{i}", clock=clock, ttl=5)
            await session.start()
            sessions.append(session)
            store = await LogStore.open(env.objects, env.meta, WalConfig(max_interval=0.001))
            env.stores.append(store)
            node = StreamingNode(
                store, env.objects, env.coordinator, config=CONFIG, session=session,
                watcher=AssignmentWatcher(env.meta, session.node_id, clock),
            )  # fmt: skip
            env.nodes.append(node)
            await node.start()
            nodes.append(node)
            async with asyncio.timeout(10):
                await manager.wait_until(
                    lambda r, n=i + 1: (
                        all(x.state is ChannelState.ASSIGNED for x in r.values())
                        and len({x.owner for x in r.values()}) == n
                    )
                )
        await asyncio.sleep(0.3)  # a few more rebalance rounds
        assert [n.failure for n in nodes] == [None, None]
        assert sorted(nodes[0].channels + nodes[1].channels) == [
            f"canopy-dml_{i}" for i in range(4)
        ]
        assert len(nodes[0].channels) == len(nodes[1].channels) == 2
        owner = next(n for n in nodes if info.pchannels[0] in n.channels)
        rows = await env.insert(owner, info, 3)
        await flushed(owner, info)
        assert await env.stored(info.collection_id) == rows
    finally:
        await manager.close()
        for session in sessions:
            await session.close()


# --- the in-process coordinator service ----------------------------------------------------------


async def test_local_coordinator_registry_and_ids(env: Env) -> None:
    coord = env.coordinator
    await coord.report_flushed_segment(5, 6, 8, "v", 100)
    await coord.report_flushed_segment(5, 6, 7, "v", 50)
    await coord.report_flushed_segment(5, 6, 8, "v", 100)  # a re-report changes nothing
    await coord.report_flushed_segment(9, 6, 1, "w", 1)
    assert [(s.segment_id, s.rows) for s in await coord.list_segments(5)] == [(7, 50), (8, 100)]
    assert await coord.list_segments(4) == []
    other = LocalCoordinator(env.meta, catalog=coord.catalog, tso=coord.tso, id_batch=10)
    firsts = [
        await coord.allocate_ids(5000),
        await other.allocate_ids(7),
        await other.allocate_ids(9),
    ]
    spans = sorted(zip(firsts, [5000, 7, 9], strict=True))
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(spans))
    t1, t2 = await coord.allocate_timestamp(), await coord.allocate_timestamp(3)
    assert t2 > t1


async def test_repeated_crashes_keep_every_acked_row_exactly_once(env: Env) -> None:
    """Three generations of nodes, each crashing at a random moment while writers, seals (a
    tiny row limit), flushes, deletes and checkpoints are in flight; the last one flushes."""
    info = await env.collection("c")
    rng = np.random.default_rng(7)
    acked: set[int] = set()
    deleted: set[int] = set()
    pid, vchannel = info.partitions[0].partition_id, info.vchannels[0]
    for _generation in range(3):
        node = await env.node(list(info.pchannels), policy=SegmentPolicy(max_rows=120))

        async def writer(node: StreamingNode = node) -> None:
            while True:
                table = env.batch(info, int(rng.integers(1, 30)))
                await node.insert(info.collection_id, pid, vchannel, table)
                acked.update(table.column("id").to_pylist())
                if rng.random() < 0.2 and acked:
                    victim = int(rng.choice(sorted(acked)))
                    await node.delete(info.collection_id, None, vchannel, pa.array([victim]))
                    deleted.add(victim)

        tasks = [asyncio.create_task(writer()) for _ in range(4)]
        await asyncio.sleep(float(rng.uniform(0.05, 0.3)))
        node.abandon()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    final = await env.node(list(info.pchannels))
    for seg in final.growing_segments(info.collection_id, vchannel):
        pks = seg.to_table().column("id").to_pylist()
        assert len(pks) == len(set(pks)), "a replayed row was applied twice"
    await flushed(final, info)
    stored = await env.stored(info.collection_id)
    assert len(stored) == len(set(stored)), "a row was written twice"
    assert acked <= set(stored), "an acknowledged row was lost"

    async def deletes_durable() -> bool:  # the delete buffer is persisted right after a flush
        hidden: set[int] = set()
        for m in await list_segments(env.objects, ROOT, info.collection_id):
            pks, _ = await read_deltas(env.objects, m)
            hidden |= set(pks.to_pylist())
        return deleted <= hidden

    await until(deletes_durable)  # else: an acknowledged delete was lost


async def test_a_channel_is_taken_over_again_after_a_storage_outage(env: Env) -> None:
    info = await env.collection("c")
    faulty = Faulty(env.objects)
    wal = WalConfig(max_interval=0.001, put_attempts=2, retry_base_delay=0.001)
    store = await LogStore.open(faulty, env.meta, wal)
    env.stores.append(store)
    node = StreamingNode(
        store, faulty, env.coordinator, channels=list(info.pchannels), config=CONFIG,
        restart_delay=0.02, max_restart_delay=0.05,
    )  # fmt: skip
    env.nodes.append(node)
    await node.start()
    before = await env.insert(node, info, 3)
    faulty.down = True
    with pytest.raises(Unavailable):  # the WAL append fails: the owner stops, loudly
        await env.insert(node, info, 3)
    with pytest.raises(ChannelNotOwned):  # while it is being taken over again
        await env.insert(node, info, 3)
    faulty.down = False
    async with asyncio.timeout(5):
        while True:  # polling a retrying takeover
            with contextlib.suppress(ChannelNotOwned):
                after = await env.insert(node, info, 3)
                break
            await asyncio.sleep(0.02)
    assert node.failure is None
    await flushed(node, info)
    stored = await env.stored(info.collection_id)
    assert set(before) | set(after) <= set(stored) and len(stored) == len(set(stored))


# --- upsert --------------------------------------------------------------------------------------


def growing_versions(node: StreamingNode, info: CollectionInfo, ts: int | None = None) -> dict:  # type: ignore[type-arg]
    """pk -> (_ts, first vector component) of the rows visible at ``ts`` (default: the
    channel's service ts) in the node's growing segments; a pk visible twice fails."""
    vchannel = info.vchannels[0]
    at = node.service_ts(vchannel) if ts is None else ts
    out: dict[int, tuple[int, float]] = {}
    for seg in node.growing_segments(info.collection_id, vchannel):
        t = seg.query(at, columns=["id", "_ts", "vec"])
        for pk, stamp, vec in zip(
            *(t.column(c).to_pylist() for c in ("id", "_ts", "vec")), strict=True
        ):
            assert pk not in out, f"pk {pk} visible twice"
            out[pk] = (stamp, vec[0])
    return out


async def stored_versions(env: Env, collection_id: int) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """(pk -> (_ts, first vector component) of the visible rows, segment id -> sorted delete
    log entries) of the flushed segments: a delete at T hides the rows with _ts < T."""
    rows: list[tuple[int, int, float]] = []
    deltas: dict[int, list[tuple[int, int]]] = {}
    latest: dict[int, int] = {}
    for m in await list_segments(env.objects, ROOT, collection_id):
        t = await read_segment(env.objects, m, ["id", "_ts", "vec"])
        rows += zip(*(t.column(c).to_pylist() for c in ("id", "_ts", "vec")), strict=True)
        pks, tss = await read_deltas(env.objects, m)
        deltas[m.segment_id] = sorted(zip(pks.to_pylist(), tss.to_pylist(), strict=True))
        for pk, ts in deltas[m.segment_id]:
            latest[pk] = max(ts, latest.get(pk, 0))
    newest: dict[int, tuple[int, float]] = {}
    for pk, ts, vec in rows:
        if pk not in newest or ts > newest[pk][0]:
            newest[pk] = (ts, vec[0])
    visible = {pk: v for pk, v in newest.items() if latest.get(pk, -1) <= v[0]}
    return visible, deltas


async def wal_types(node_store: LogStore, pchannel: str) -> list[str]:
    log = await node_store.open_log(pchannel)
    reader = await log.open_reader(MessageId.EARLIEST)
    types = []
    while (msg := await reader.read_next(timeout=0.05)) is not None:
        types.append(msg.properties["type"])
    await reader.close()
    return types


async def test_an_upsert_is_one_message_and_flushes_rows_and_delete_logs(env: Env) -> None:
    info = await env.collection("c")
    node = await env.node(list(info.pchannels))
    cid, pid, v = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    await node.insert(cid, pid, v, env.rows(info, [0, 1, 2, 3]))
    await flushed(node, info)  # segment A: keys 0..3, on storage
    old = await node.insert(cid, pid, v, env.rows(info, [4, 5, 6, 7]))  # segment B, growing
    ack = await node.upsert(
        cid, v, [(pid, env.rows(info, [1, 5, 100], 2.0))], pa.array([1, 5, 100]), None
    )
    assert ack.rows == 3 and ack.timestamp > old.timestamp
    before = growing_versions(node, info, ack.timestamp - 1)
    assert sorted(before) == [4, 5, 6, 7]  # 1 is in A (flushed), 100 does not exist yet
    after = growing_versions(node, info, ack.timestamp)
    assert after == {4: before[4], 6: before[6], 7: before[7]} | {
        k: (ack.timestamp, 2.0) for k in (1, 5, 100)
    }
    types = await wal_types(node.log_store, info.pchannels[0])
    assert types.count("upsert") == 1 and "delete" not in types  # (the WAL holds no more
    # inserts than B's: it was truncated after A's flush)

    await flushed(node, info)
    a, b = sorted(s.segment_id for s in await env.coordinator.list_segments(cid))

    async def deltas_written() -> bool:
        return bool((await stored_versions(env, cid))[1].get(a))

    await until(deltas_written)  # the buffered delete reaches A right after the flush
    visible, deltas = await stored_versions(env, cid)
    t = ack.timestamp
    # A: the keys in its pk range. B: its own deletes, written with it, plus the same ones
    # again from the delete buffer (B is flushed and in range by then; duplicates are harmless)
    assert {k: set(v) for k, v in deltas.items()} == {a: {(1, t)}, b: {(1, t), (5, t), (100, t)}}
    segments = {m.segment_id: m for m in await list_segments(env.objects, ROOT, cid)}
    b_rows = await read_segment(env.objects, segments[b], ["id", "_ts"])
    assert b_rows.column("id").to_pylist() == [4, 5, 6, 7, 1, 5, 100]
    assert b_rows.column("_ts").to_pylist()[4:] == [t, t, t]  # the rows carry the delete's ts
    assert visible == {0: visible[0], 2: visible[2], 3: visible[3]} | {
        k: (t, 2.0) for k in (1, 5, 100)
    } | {k: (old.timestamp, 1.0) for k in (4, 6, 7)}


@pytest.mark.parametrize("fault", ["outage", "durable_then_outage"])
async def test_a_failed_upsert_is_applied_whole_or_not_at_all(env: Env, fault: str) -> None:
    """The WAL append of an upsert fails (the caller sees an error). After a takeover, key 1 is
    visible exactly once: the old row when the block never landed (outage), the new row when it
    landed before the writer gave up (its reply lost, then the retry failed) -- never neither,
    never both."""
    info = await env.collection("c")
    faulty = Faulty(env.objects)
    wal = WalConfig(max_interval=0.001, put_attempts=2, retry_base_delay=0.001)
    store = await LogStore.open(faulty, env.meta, wal)
    env.stores.append(store)
    quiet = StreamingConfig(**{**CONFIG.__dict__, "time_tick_interval": 3600.0})
    node = StreamingNode(
        store, faulty, env.coordinator, channels=list(info.pchannels), config=quiet
    )
    env.nodes.append(node)
    await node.start()
    cid, pid, v = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    old = await node.insert(cid, pid, v, env.rows(info, [0, 1, 2]))
    if fault == "outage":
        faulty.down = True
    else:
        faulty.fail_next("put", "unknown_outcome_applied")  # the block lands, the reply is lost
        faulty.fail_next("put", "unavailable")  # and the retry fails
    with pytest.raises(Unavailable):
        await node.upsert(cid, v, [(pid, env.rows(info, [1], 2.0))], pa.array([1]), None)
    node.abandon()  # the crash
    faulty.down = False

    second = await env.node(list(info.pchannels))  # takeover: fence and replay
    versions = growing_versions(second, info)
    types = await wal_types(second.log_store, info.pchannels[0])
    if fault == "outage":
        assert "upsert" not in types
        assert versions == {k: (old.timestamp, 1.0) for k in (0, 1, 2)}  # old row intact
    else:
        assert types.count("upsert") == 1
        upsert_ts = versions[1][0]
        assert upsert_ts > old.timestamp and versions[1] == (upsert_ts, 2.0)
        assert growing_versions(second, info, upsert_ts - 1)[1] == (old.timestamp, 1.0)
    await flushed(second, info)
    visible, _ = await stored_versions(env, cid)
    assert visible == versions


async def test_an_upsert_at_a_fenced_owner_leaves_nothing_behind(env: Env) -> None:
    info = await env.collection("c")
    cid, pid, v = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    first = await env.node(list(info.pchannels))
    old = await first.insert(cid, pid, v, env.rows(info, [0, 1]))
    second = await env.node(list(info.pchannels))  # takes the channel over: fences the first
    with pytest.raises(ChannelNotOwned):  # ChannelFenced: retryable at the new owner
        await first.upsert(cid, v, [(pid, env.rows(info, [1], 2.0))], pa.array([1]), None)
    assert growing_versions(second, info) == {0: (old.timestamp, 1.0), 1: (old.timestamp, 1.0)}
    second.abandon()
    third = await env.node(list(info.pchannels))  # and a replay of the whole WAL agrees
    assert "upsert" not in await wal_types(third.log_store, info.pchannels[0])
    assert growing_versions(third, info) == {0: (old.timestamp, 1.0), 1: (old.timestamp, 1.0)}


async def test_upsert_routing_and_validation(env: Env) -> None:
    info = await env.collection("c")
    node = await env.node(list(info.pchannels))
    cid, pid, v = info.collection_id, info.partitions[0].partition_id, info.vchannels[0]
    with pytest.raises(PartitionNotFound):
        await node.upsert(cid, v, [(424242, env.rows(info, [1]))], pa.array([1]), None)
    with pytest.raises(PartitionNotFound):
        await node.upsert(cid, v, [], pa.array([1]), 424242)
    with pytest.raises(SchemaMismatch):
        await node.upsert(cid, v, [], pa.array(["x"]), None)
    with pytest.raises(SchemaMismatch):
        bad = env.rows(info, [1]).drop_columns(["vec"])
        await node.upsert(cid, v, [(pid, bad)], pa.array([1]), None)
    empty = await node.upsert(cid, v, [(pid, env.rows(info, []))], pa.array([], pa.int64()), None)
    assert empty.rows == 0 and empty.timestamp > 0
    assert not set(await wal_types(node.log_store, info.pchannels[0])) - {"time_tick"}
    # two groups of one partition become one part (a second part could seal the first's segment)
    ack = await node.upsert(
        cid, v, [(pid, env.rows(info, [1])), (pid, env.rows(info, [2]))], pa.array([1, 2]), pid
    )
    assert ack.rows == 2
    [seg] = node.growing_segments(cid, v)
    assert seg.query(ack.timestamp, columns=["id"]).column("id").to_pylist() == [1, 2]
