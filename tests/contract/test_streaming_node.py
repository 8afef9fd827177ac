"""The streaming node over every storage combination: memory objects + memory meta, file:// +
sqlite, and a real SeaweedFS S3 server + real etcd.

Each test plays a small cluster in one process: one coordinator (``LocalCoordinator``: TSO,
catalog, segment registry) and one or more streaming nodes, each on its own ``LogStore`` handle
over the same storage (as separate processes would be). A "crash" is ``StreamingNode.abandon()``
plus cancelling the writers' callers: nothing is flushed, closed or checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from collection_setup import create_test_collection
from polling import until

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.interfaces import FlushTicket, WriteAck
from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.storage import list_segments, read_deltas, read_segment
from cluster.streaming.checkpoint import CheckpointStore
from cluster.streaming.config import StreamingConfig
from cluster.streaming.errors import ChannelNotOwned
from cluster.streaming.node import StreamingNode
from cluster.streaming.policy import SegmentPolicy
from woodpecker import LogStore, WalConfig
from woodpecker.clock import RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore, open_object_store
from woodpecker.objectstore.base import ObjectStore

pytestmark = pytest.mark.contract

COMBOS = ["memory+memory", "file+sqlite", "seaweedfs+etcd"]
DIM = 16
ROOT = "segments"
WAL = WalConfig(max_interval=0.005)
FAST = StreamingConfig(
    time_tick_interval=0.05,
    storage_root=ROOT,
    maintenance_interval=0.05,
    checkpoint_interval=0.2,
    retry_delay=0.05,
)


@dataclass
class Env:
    """Shared storage, one coordinator, one collection (2 shards on 2 pchannels)."""

    objects: ObjectStore
    meta: MetaStore
    wal_objects: str | ObjectStore
    wal_meta: str | MetaStore
    coordinator: LocalCoordinator
    info: CollectionInfo
    schema: CollectionSchema
    stores: list[LogStore] = field(default_factory=list)
    nodes: list[StreamingNode] = field(default_factory=list)
    next_pk: int = 0

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    async def node(self, channels: list[str] | None = None, **config: object) -> StreamingNode:
        store = await LogStore.open(self.wal_objects, self.wal_meta, WAL)
        self.stores.append(store)
        cfg = StreamingConfig(**{**FAST.__dict__, **config})
        node = StreamingNode(
            store,
            self.objects,
            self.coordinator,
            channels=list(self.info.pchannels) if channels is None else channels,
            meta=self.meta,
            config=cfg,
        )
        self.nodes.append(node)
        await node.start()
        return node

    def batch(self, n: int) -> pa.Table:
        pks = np.arange(self.next_pk, self.next_pk + n, dtype=np.int64)
        self.next_pk += n
        rng = np.random.default_rng(int(pks[0]))
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * DIM, np.float32)), DIM)
        titles = pa.array([f"row {p}" for p in pks])
        return pa.Table.from_arrays([pa.array(pks), vec, titles], schema=arrow_schema(self.schema))

    async def wait_flushed(self, node: StreamingNode, ticket: FlushTicket) -> None:
        await until(lambda: node.flush_state(ticket))

    async def stored_rows(self) -> pa.Table:
        """Every row of every flushed segment of the collection (deletes not applied)."""
        tables = [await read_segment(self.objects, m) for m in await list_segments(
            self.objects, ROOT, self.cid
        )]  # fmt: skip
        if not tables:
            return arrow_schema(self.schema).empty_table()
        return pa.concat_tables(tables)


@pytest.fixture(params=COMBOS)
async def env(request, tmp_path, unique_prefix) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "memory+memory":
        objects: ObjectStore = MemoryObjectStore()
        meta: MetaStore = MemoryMetaStore()
        wal_objects: str | ObjectStore = objects
        wal_meta: str | MetaStore = meta
    elif kind == "file+sqlite":
        wal_objects = f"file://{tmp_path}/objects"
        objects = open_object_store(wal_objects)
        meta = wal_meta = open_meta_store(f"sqlite:///{tmp_path}/meta.db")
    else:
        wal_objects = request.getfixturevalue("seaweedfs_service").uri(unique_prefix)
        wal_meta = request.getfixturevalue("etcd_service").uri(unique_prefix)
        objects = open_object_store(wal_objects)
        meta = open_meta_store(wal_meta)
    coordinator = LocalCoordinator(
        meta, RealClock(), catalog=Catalog(meta, num_physical_channels=2)
    )
    await coordinator.start()
    info = await create_test_collection(coordinator, dim=DIM, shards=2)
    e = Env(
        objects, meta, wal_objects, wal_meta, coordinator, info, from_request_bytes(info.schema)
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
        await objects.close()
        await meta.close()


def pk_list(table: pa.Table) -> list[int]:
    return sorted(table.column("id").to_pylist())


async def insert_many(env: Env, node: StreamingNode, batches: int, rows: int) -> list[WriteAck]:
    tables = [env.batch(rows) for _ in range(batches)]
    return await asyncio.gather(
        *(node.insert(env.cid, env.pid, env.info.vchannels[i % 2], t) for i, t in enumerate(tables))
    )


# --- tests ---------------------------------------------------------------------------------------


async def test_concurrent_inserts_get_increasing_timestamps_and_flush_writes_them(
    env: Env,
) -> None:
    node = await env.node()
    acks = await insert_many(env, node, batches=24, rows=50)
    stamps = [a.timestamp for a in acks]
    assert len(set(stamps)) == len(stamps) and all(a.rows == 50 for a in acks)
    # acknowledged = visible in the growing segments
    growing = sum(
        seg.num_rows for v in env.info.vchannels for seg in node.growing_segments(env.cid, v)
    )
    assert growing == 24 * 50
    # WAL order is timestamp order on every channel (inserts and time ticks)
    for pchannel in env.info.pchannels:
        log = await node.log_store.open_log(pchannel)
        last = await log.last_message_id()  # time ticks keep coming: read up to here
        reader = await log.open_reader()
        wal_stamps = []
        while (msg := await reader.read_next(timeout=5)) is not None:
            wal_stamps.append(int(msg.properties["ts"]))
            if msg.id >= last:
                break
        await reader.close()
        assert len(wal_stamps) >= 12
        assert all(a < b for a, b in itertools.pairwise(wal_stamps))
    ticket = await node.flush(env.cid, list(env.info.vchannels))
    assert len(ticket.segment_ids) == 2 and ticket.flush_ts > max(stamps)
    await env.wait_flushed(node, ticket)
    stored = await env.stored_rows()
    assert pk_list(stored) == list(range(24 * 50))
    # the Parquet rows carry the acknowledged timestamps, 50 rows each
    counts = pc.value_counts(stored.column("_ts")).to_pylist()
    assert sorted(c["values"] for c in counts) == sorted(stamps)
    assert {c["counts"] for c in counts} == {50}
    registered = await env.coordinator.list_segments(env.cid)
    assert sorted(s.segment_id for s in registered) == list(ticket.segment_ids)
    assert sum(s.rows for s in registered) == 24 * 50


async def test_crash_mid_stream_then_replay_keeps_every_acked_row_once(env: Env) -> None:
    node = await env.node(policy=SegmentPolicy(max_rows=300))  # several seals mid-stream
    acked: list[int] = []

    async def writer(k: int) -> None:
        while True:
            t = env.batch(40)
            await node.insert(env.cid, env.pid, env.info.vchannels[k % 2], t)
            acked.extend(t.column("id").to_pylist())

    tasks = [asyncio.create_task(writer(k)) for k in range(6)]

    async def enough() -> bool:
        return len(acked) >= 2000

    await until(enough)
    node.abandon()  # crash: in-flight appends may or may not land; nothing is closed
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    acked_now = set(acked)

    second = await env.node()
    visible = {
        pk
        for v in env.info.vchannels
        for seg in second.growing_segments(env.cid, v)
        for pk in seg.query(2**63).column("id").to_pylist()
    }
    ticket = await second.flush(env.cid, list(env.info.vchannels))
    await env.wait_flushed(second, ticket)
    stored = pk_list(await env.stored_rows())
    assert len(stored) == len(set(stored)), "a row was written twice"
    assert acked_now <= set(stored), "an acknowledged row was lost"
    assert visible <= set(stored)


async def test_takeover_fences_the_previous_owner(env: Env) -> None:
    first = await env.node()
    acked = await insert_many(env, first, batches=4, rows=25)
    second = await env.node()  # same channels: opening the writers fences the first node
    with pytest.raises(ChannelNotOwned):
        for _ in range(3):  # the first append after the fence fails (its block PUT is refused)
            await first.insert(env.cid, env.pid, env.info.vchannels[0], env.batch(5))
    with pytest.raises(ChannelNotOwned):
        await first.insert(env.cid, env.pid, env.info.vchannels[0], env.batch(5))
    await insert_many(env, second, batches=4, rows=25)
    ticket = await second.flush(env.cid, list(env.info.vchannels))
    await env.wait_flushed(second, ticket)
    stored = pk_list(await env.stored_rows())
    assert len(stored) == len(set(stored))
    assert sum(a.rows for a in acked) == 100
    assert set(range(100)) <= set(stored)  # the first node's acknowledged rows survived
    assert len(stored) >= 200


async def test_flush_advances_the_checkpoint_and_truncates_the_wal(env: Env) -> None:
    node = await env.node()
    await insert_many(env, node, batches=6, rows=20)
    channel = env.info.pchannels[0]
    log = await node.log_store.open_log(channel)
    before = await log.last_message_id()
    ticket = await node.flush(env.cid, list(env.info.vchannels))
    await env.wait_flushed(node, ticket)
    store = CheckpointStore(env.meta, channel, RealClock())

    async def truncated() -> bool:
        point = await log.truncation_point()
        return point is not None and point > before

    await until(truncated)  # every flushed row's WAL entries are below the truncation point
    point = await log.truncation_point()
    cp = await store.load()
    assert point is not None and cp.position is not None
    assert point <= cp.position  # saved first, truncated after: never past the checkpoint
    assert all(m >= cp.position for m in cp.flushed.values())


async def test_time_ticks_advance_service_ts_while_idle(env: Env) -> None:
    node = await env.node()
    vchannel = env.info.vchannels[0]
    start = node.service_ts(vchannel)
    fresh = await env.coordinator.allocate_timestamp()
    async with asyncio.timeout(5):
        assert await node.wait_for_ts(vchannel, fresh) >= fresh
    assert node.service_ts(vchannel) > start


async def test_deletes_reach_growing_and_flushed_segments(env: Env) -> None:
    node = await env.node()
    v0 = env.info.vchannels[0]
    await node.insert(env.cid, env.pid, v0, env.batch(10))  # pks 0..9
    ticket = await node.flush(env.cid, [v0])
    await env.wait_flushed(node, ticket)
    await node.insert(env.cid, env.pid, v0, env.batch(10))  # pks 10..19, growing
    ack = await node.delete(env.cid, None, v0, pa.array([3, 12], pa.int64()))
    growing = node.growing_segments(env.cid, v0)
    assert 12 not in growing[0].query(ack.timestamp).column("id").to_pylist()
    ticket = await node.flush(env.cid, [v0])
    await env.wait_flushed(node, ticket)
    deleted: dict[int, set[int]] = {}

    async def deltas_written() -> bool:
        for m in await list_segments(env.objects, ROOT, env.cid):
            pks, _ = await read_deltas(env.objects, m)
            deleted[m.segment_id] = set(pks.to_pylist())
        if len(deleted) != 2:
            return False
        first, second = sorted(deleted)  # segment ids grow
        # pk 3: routed to the segment flushed before the delete (from the delete buffer);
        # pk 12: in the delete log of the segment it hid a row of
        return 3 in deleted[first] and 12 in deleted[second]

    await until(deltas_written)  # the delete buffer is persisted right after the flush


async def test_an_upsert_replays_whole_after_a_crash_and_flushes_with_its_deletes(
    env: Env,
) -> None:
    node = await env.node()
    v0 = env.info.vchannels[0]
    rows = env.batch(6)  # pks 0..5
    old = await node.insert(env.cid, env.pid, v0, rows)
    new = rows.slice(2, 3)
    new = new.set_column(2, "title", pa.array(["new"] * 3))
    ack = await node.upsert(env.cid, v0, [(env.pid, new)], new.column("id"), None)
    assert ack.rows == 3 and ack.timestamp > old.timestamp
    node.abandon()  # the crash: nothing flushed or checkpointed

    second = await env.node()

    def titles(ts: int) -> dict[int, str]:
        out: dict[int, str] = {}
        for seg in second.growing_segments(env.cid, v0):
            t = seg.query(ts, columns=["id", "title"])
            for pk, title in zip(
                t.column("id").to_pylist(), t.column("title").to_pylist(), strict=True
            ):
                assert pk not in out
                out[pk] = title
        return out

    olds = {i: f"row {i}" for i in range(6)}
    assert titles(ack.timestamp - 1) == olds  # replayed: not visible before its ts
    assert titles(ack.timestamp) == olds | {2: "new", 3: "new", 4: "new"}
    ticket = await second.flush(env.cid, [v0])
    await env.wait_flushed(second, ticket)
    [manifest] = await list_segments(env.objects, ROOT, env.cid)
    stored = await read_segment(env.objects, manifest, ["id", "title", "_ts"])
    assert stored.column("id").to_pylist() == [0, 1, 2, 3, 4, 5, 2, 3, 4]
    pks, tss = await read_deltas(env.objects, manifest)
    assert set(zip(pks.to_pylist(), tss.to_pylist(), strict=True)) == {
        (k, ack.timestamp) for k in (2, 3, 4)
    }
    hidden = set(pks.to_pylist())
    visible = {
        r["id"]: r["title"]
        for r in stored.to_pylist()
        if r["id"] not in hidden or r["_ts"] >= ack.timestamp  # a delete at T hides _ts < T
    }
    assert visible == olds | {2: "new", 3: "new", 4: "new"}
