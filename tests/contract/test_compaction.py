"""Compaction under a live streaming node, on memory stores and on real SeaweedFS + etcd (where
the manifest CAS and the registry txn are the real thing).

Each test plays a small cluster in one process: ``LocalCoordinator`` (TSO, catalog, registry,
plan records), one ``StreamingNode`` flushing many small segments and serving reads (growing +
sealed, through its ``SealedReader``, which re-lists the registry on every read here), and
``Compactor`` workers. Reads (query of every row, count(*), get by keys) must give the same
answer before, during (checked from the worker's fault hook at each step) and after a
compaction; deletes issued mid-compaction must survive; a worker killed mid-way must leave the
data readable and its plan retried; racing workers commit once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from collection_setup import create_test_collection
from polling import until
from pymilvus import MilvusClient

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.compactions import CompactionPolicy
from cluster.coordinator.index_builds import BuildPolicy, BuildState
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.datanode.compaction import Compactor
from cluster.interfaces import COUNT_COLUMN, GrowingQuery
from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.storage import FENCE_PROPERTY, read_deltas, read_manifest, read_segment
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from woodpecker import LogStore, WalConfig
from woodpecker.errors import Unavailable
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore, open_object_store
from woodpecker.objectstore.base import ObjectStore
from woodpecker.objectstore.wrappers import _Intercepting

pytestmark = pytest.mark.contract

COMBOS = ["memory+memory", "seaweedfs+etcd"]
DIM = 8
ROOT = "segments"
WAL = WalConfig(max_interval=0.005)
FAST = StreamingConfig(
    time_tick_interval=0.05,
    storage_root=ROOT,
    maintenance_interval=0.05,
    checkpoint_interval=0.2,
    retry_delay=0.05,
    max_retry_delay=0.2,
    delete_flush_interval=0.05,
    sealed_refresh_interval=0.0,  # every read re-lists the registry: it sees every step
)
POLICY = CompactionPolicy(
    small_rows=1000,
    max_inputs=32,
    max_rows=10_000,
    retention=0.0,
    drop_delay=0.0,
    leases=BuildPolicy(lease=1.0, retry_delay=0.05),
)


class Switchable(_Intercepting):
    """An object store that fails every call with ``Unavailable`` while ``dead`` is set."""

    dead = False

    async def _around(self, op: str, call: Any, sent: int) -> Any:
        if self.dead:
            raise Unavailable(f"injected: {op} on a dead node")
        return await call()


@dataclass
class Env:
    objects: ObjectStore
    meta: MetaStore
    coordinator: LocalCoordinator
    info: CollectionInfo
    schema: CollectionSchema
    node: StreamingNode | None = None
    store: LogStore | None = None
    next_pk: int = 0
    workers: list[Compactor] = field(default_factory=list)
    shard_of: dict[int, str] = field(default_factory=dict)  # pk -> vchannel it went to

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    def batch(self, n: int) -> pa.Table:
        pks = np.arange(self.next_pk, self.next_pk + n, dtype=np.int64)
        self.next_pk += n
        rng = np.random.default_rng(int(pks[0]))
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * DIM, np.float32)), DIM)
        titles = pa.array([f"row {p}" for p in pks])
        return pa.Table.from_arrays([pa.array(pks), vec, titles], schema=arrow_schema(self.schema))

    async def small_flushes(self, rounds: int, rows: int) -> None:
        """``rounds`` flushes of ``rows`` new rows on each shard: 2 * rounds segments."""
        assert self.node is not None
        for _ in range(rounds):
            for v in self.info.vchannels:
                await self.node.insert(self.cid, self.pid, v, self.batch(rows))
            ticket = await self.node.flush(self.cid, list(self.info.vchannels))
            await until(lambda t=ticket: self.node.flush_state(t))  # type: ignore[union-attr]

    async def delete(self, pks: list[int]) -> None:
        assert self.node is not None
        by_shard: dict[str, list[int]] = {}
        for pk in pks:  # the shard a key was inserted on: rounds alternate shards per batch
            by_shard.setdefault(self.shard_of[pk], []).append(pk)
        for v, keys in by_shard.items():
            await self.node.delete(self.cid, None, v, pa.array(keys, pa.int64()))

    async def reads(self) -> tuple[list[tuple[int, str]], int, list[int]]:
        """(every visible (id, title), count(*), ids found by a get of a fixed key set)."""
        assert self.node is not None
        vchs = tuple(self.info.vchannels)
        rows = await self.node.query(GrowingQuery(self.cid, vchs, output_fields=("id", "title")))
        count = await self.node.query(GrowingQuery(self.cid, vchs, count=True))
        got = await self.node.query(
            GrowingQuery(self.cid, vchs, filter="id in [0, 5, 33, 61, 62, 199, 400, 1234]")
        )
        pairs = sorted(zip(rows["id"].to_pylist(), rows["title"].to_pylist(), strict=True))
        return pairs, int(count[COUNT_COLUMN][0].as_py()), sorted(got["id"].to_pylist())

    async def registry(self) -> dict[int, str]:
        return {s.segment_id: s.state for s in await self.coordinator.list_segments(self.cid)}

    def compactor(self, node_id: int, objects: ObjectStore | None = None, **kw: Any) -> Compactor:
        w = Compactor(self.coordinator, objects or self.objects, node_id, root=ROOT, **kw)
        self.workers.append(w)
        return w

    async def stored_visible(self) -> set[int]:
        """Keys visible from storage alone (registry, manifests, every delete log): what a
        freshly started reader would serve once the node's buffer is gone."""
        keys: dict[int, int] = {}
        deletes: dict[int, int] = {}
        for info in await self.coordinator.list_segments(self.cid):
            if info.state != "flushed":
                continue
            m = await read_manifest(
                self.objects, ROOT, self.cid, info.partition_id, info.segment_id
            )
            t = await read_segment(self.objects, m, ["id", "_ts"])
            for k, ts in zip(t["id"].to_pylist(), t["_ts"].to_pylist(), strict=True):
                keys[k] = max(ts, keys.get(k, 0))
            pks, tss = await read_deltas(self.objects, m)
            for k, ts in zip(pks.to_pylist(), tss.to_pylist(), strict=True):
                deletes[k] = max(ts, deletes.get(k, 0))
        return {k for k, ts in keys.items() if deletes.get(k, 0) <= ts}


@pytest.fixture(params=COMBOS)
async def env(request, unique_prefix) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    if request.param == "memory+memory":
        objects: ObjectStore = MemoryObjectStore()
        meta: MetaStore = MemoryMetaStore()
        wal_objects: Any = objects
        wal_meta: Any = meta
    else:
        wal_objects = request.getfixturevalue("seaweedfs_service").uri(unique_prefix)
        wal_meta = request.getfixturevalue("etcd_service").uri(unique_prefix)
        objects = open_object_store(wal_objects)
        meta = open_meta_store(wal_meta)
    coordinator = LocalCoordinator(
        meta, catalog=Catalog(meta, num_physical_channels=2), compaction_policy=POLICY
    )
    await coordinator.start()
    info = await create_test_collection(coordinator, dim=DIM, shards=2)
    e = Env(objects, meta, coordinator, info, from_request_bytes(info.schema))
    e.store = await LogStore.open(wal_objects, wal_meta, WAL)
    e.node = StreamingNode(
        e.store, objects, coordinator, channels=list(info.pchannels), meta=meta, config=FAST
    )
    await e.node.start()
    try:
        yield e
    finally:
        for w in e.workers:
            with contextlib.suppress(Exception):
                await w.close()
        with contextlib.suppress(Exception):
            await e.node.close()
        with contextlib.suppress(Exception):
            await e.store.close()
        await coordinator.close()
        await objects.close()
        await meta.close()


async def _fill(env: Env, rounds: int, rows: int) -> None:
    start = env.next_pk
    await env.small_flushes(rounds, rows)
    # batches alternate shards within a round: remember where each key went
    pk = start
    for _ in range(rounds):
        for v in env.info.vchannels:
            for k in range(pk, pk + rows):
                env.shard_of[k] = v
            pk += rows


async def _buffer_empty(env: Env) -> bool:
    assert env.node is not None
    return all(not env.node.owner(p).mem.deletes for p in env.info.pchannels)  # type: ignore[attr-defined]


async def test_many_small_flushes_compact_with_identical_reads_at_every_step(env: Env) -> None:
    await _fill(env, rounds=10, rows=20)  # 20 segments of 20 rows (10 per shard)
    await env.delete(list(range(0, 400, 7)))  # 58 keys, spread over many segments
    await until(lambda: _buffer_empty(env))  # in the delete logs now
    before = await env.reads()
    assert before[1] == 400 - 58 and len(await env.registry()) == 20
    steps: list[str] = []

    async def check(step: str, task: Any) -> None:
        assert await env.reads() == before, step
        steps.append(step)

    workers = [env.compactor(1, fault=check), env.compactor(2, fault=check)]
    started = time.perf_counter()
    await asyncio.gather(*(w.pass_once() for w in workers))  # racing: one commit per plan
    elapsed = time.perf_counter() - started
    records = await env.coordinator.compactions.records()
    assert len(records) == 2 and all(r.state is BuildState.FINISHED for r in records), [
        (r.plan_id, r.state, r.error, r.attempt) for r in records
    ]
    assert sum(w.committed for w in workers) == 2
    assert steps.count("committed") == 2
    reg = await env.registry()
    assert sorted(reg.values()).count("flushed") == 2  # one segment per shard
    assert await env.reads() == before
    purged = sum(r.purged_rows for r in records)
    assert purged == 58
    await workers[0].maintain()  # finalize: inputs' manifests dropped, records gone
    assert await env.coordinator.compactions.records() == []
    assert await env.reads() == before
    print(f"\n20 segments -> {len(records)} in {elapsed:.2f} s, {purged} rows purged")


async def test_deletes_issued_during_a_compaction_survive(env: Env) -> None:
    await _fill(env, rounds=4, rows=10)  # 8 segments, keys 0..79
    deleted: set[int] = set()

    async def delete_now(step: str, task: Any) -> None:
        # each shard's plan runs these steps: the keys are of both shards (10-19: shard 1)
        keys = {"read": [1, 2], "written": [11, 12], "fenced": [21, 22, 71]}.get(step, [])
        if keys:
            await env.delete(keys)
            deleted.update(keys)
            rows, count, _ = await env.reads()  # acknowledged deletes are visible at once
            assert not set(deleted) & {k for k, _ in rows} and count == 80 - len(deleted)

    await env.compactor(1, fault=delete_now).pass_once()
    assert sum(1 for st in (await env.registry()).values() if st == "flushed") == 2
    await env.workers[0].maintain()
    await until(lambda: _buffer_empty(env))  # the router wrote them (retargeted if refused)
    rows, count, _ = await env.reads()
    assert not set(deleted) & {k for k, _ in rows} and count == 80 - len(deleted)
    assert await env.stored_visible() == set(range(80)) - set(deleted)  # durable in the logs


async def test_a_worker_killed_mid_compaction_leaves_data_readable_and_the_plan_retried(
    env: Env,
) -> None:
    await _fill(env, rounds=3, rows=10)
    await env.delete([3, 4])
    await until(lambda: _buffer_empty(env))
    before = await env.reads()
    store = Switchable(env.objects)

    async def die(step: str, task: Any) -> None:
        if step == "fenced":  # the node dies before committing: its clean-up fails too
            store.dead = True
            raise Unavailable("injected: killed after fencing")

    doomed = env.compactor(1, objects=store, fault=die)
    await doomed.pass_once()  # fences set, no commit, no clean-up
    assert await env.reads() == before
    assert set((await env.registry()).values()) == {"flushed"}
    fenced = [
        (await read_manifest(env.objects, ROOT, env.cid, env.pid, s)).properties.get(FENCE_PROPERTY)
        for s in await env.registry()
    ]
    assert any(fenced)  # left behind by the dead attempt
    # deletes meanwhile stay buffered on the node (refused by the fence) but are read
    await env.delete([5])
    rows, count, _ = await env.reads()
    assert 5 not in {k for k, _ in rows} and count == before[1] - 1
    await asyncio.sleep(0.1)  # the failed attempt's back-off
    survivor = env.compactor(2)
    assert await survivor.pass_once() >= 1  # fences of the dead attempt lifted, plan retried
    await survivor.maintain()
    await until(lambda: _buffer_empty(env))
    assert await env.coordinator.compactions.records() == []
    rows, count, _ = await env.reads()
    assert 5 not in {k for k, _ in rows} and count == before[1] - 1
    assert await env.stored_visible() == {k for k, _ in before[0]} - {5}


async def test_a_cancelled_worker_gives_its_plan_back(env: Env) -> None:
    await _fill(env, rounds=2, rows=10)
    before = await env.reads()
    hold = asyncio.Event()

    async def stall(step: str, task: Any) -> None:
        if step == "fenced":
            hold.set()
            await asyncio.Event().wait()

    stuck = env.compactor(1, fault=stall)
    runner = asyncio.create_task(stuck.pass_once())
    await hold.wait()
    runner.cancel()  # the data node stops mid-compaction
    await asyncio.gather(runner, return_exceptions=True)
    assert await env.reads() == before
    records = await env.coordinator.compactions.records()  # one plan per shard
    assert [r.attempt for r in sorted(records, key=lambda r: -r.attempt)] == [1, 0]
    assert all(r.state is BuildState.PENDING and r.failures == 0 for r in records)  # released
    for sid in await env.registry():  # its fences were lifted on the way out
        m = await read_manifest(env.objects, ROOT, env.cid, env.pid, sid)
        assert FENCE_PROPERTY not in m.properties
    assert await env.compactor(2).pass_once() == 2  # one plan per shard
    assert await env.reads() == before


async def test_standalone_compacts_through_its_embedded_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``canopy standalone`` in-process: its embedded worker has a compactor (running its
    loop); a pass over the small segments flushed through the Milvus API keeps every answer."""
    from cluster.standalone import Standalone, StandaloneConfig
    from integration.services import free_port

    sa = Standalone(StandaloneConfig(data_dir=str(tmp_path), port=free_port()))
    await sa.start()
    try:
        assert sa.worker is not None and sa.worker.compactor is not None
        sa.coordinator.compactions.policy = POLICY  # type: ignore[union-attr]
        client = await asyncio.to_thread(MilvusClient, uri=sa.uri)  # connects: off the loop

        def write() -> None:
            client.create_collection("c", dimension=DIM, primary_field_name="id", id_type="int")
            for r in range(6):
                rows = [{"id": r * 10 + i, "vector": [float(i)] * DIM} for i in range(10)]
                client.insert("c", rows)
                client.flush("c")
            client.delete("c", ids=[0, 11, 22])

        def read() -> tuple[list[int], int]:
            got = client.query("c", filter="id >= 0", output_fields=["id"], limit=100)
            count = client.query("c", output_fields=["count(*)"], consistency_level="Strong")
            return sorted(r["id"] for r in got), count[0]["count(*)"]

        await asyncio.to_thread(write)
        before = await asyncio.to_thread(read)
        assert before[1] == 57
        cid = (await sa.coordinator.catalog.describe_collection("default", "c")).collection_id  # type: ignore[union-attr]
        flushed_before = [
            s
            for s in await sa.coordinator.list_segments(cid)
            if s.state == "flushed"  # type: ignore[union-attr]
        ]
        assert await sa.worker.compactor.pass_once() >= 1
        flushed = [s for s in await sa.coordinator.list_segments(cid) if s.state == "flushed"]  # type: ignore[union-attr]
        assert len(flushed) < len(flushed_before)
        assert await asyncio.to_thread(read) == before
        await sa.worker.compactor.maintain()  # finalized
        assert await asyncio.to_thread(read) == before
        await asyncio.to_thread(client.close)
    finally:
        await sa.stop()
