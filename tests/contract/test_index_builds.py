"""Index builds end to end on every storage combination (memory, file + sqlite, SeaweedFS +
etcd): a real StreamingNode flushes segments, the coordinator's scheduler creates build records
when an index is created (and for segments flushed later), data-node workers build HNSW graphs
into object storage, and progress reaches 100 %. A build held by a dead worker moves to a live
one when its lease expires; dropping the collection drops the records."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import pytest
from polling import until as _until
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.index_builds import (
    BuildPolicy,
    BuildState,
    IndexBuilds,
    ProgressState,
)
from cluster.coordinator.index_scheduler import BuildQueue
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.datanode import IndexBuildWorker
from cluster.index import load_index, read_index_manifest
from cluster.milvus.columns import arrow_schema
from cluster.query.testing import clustered_vectors
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.storage import list_segments, write_segment
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from woodpecker import LogStore, WalConfig
from woodpecker.clock import RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore, open_object_store
from woodpecker.objectstore.base import ObjectStore

until = partial(_until, within=60.0)

pytestmark = pytest.mark.contract

COMBOS = ["memory+memory", "file+sqlite", "seaweedfs+etcd"]
DIM = 16
ROOT = "segments"
POLICY = BuildPolicy(lease=1.0, retry_delay=0.1, expiry_interval=0.1)
FAST = StreamingConfig(
    time_tick_interval=0.05, storage_root=ROOT, maintenance_interval=0.05, retry_delay=0.05
)


@dataclass
class Env:
    objects: ObjectStore
    meta: MetaStore
    wal: tuple[str | ObjectStore, str | MetaStore]
    open_meta: Callable[[], MetaStore]
    coordinator: LocalCoordinator
    info: CollectionInfo
    schema: CollectionSchema
    closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    next_pk: int = 0

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    async def streaming_node(self) -> StreamingNode:
        store = await LogStore.open(*self.wal, WalConfig(max_interval=0.005))
        self.closers.append(store.close)
        node = StreamingNode(
            store,
            self.objects,
            self.coordinator,
            channels=list(self.info.pchannels),
            meta=self.meta,
            config=FAST,
        )
        await node.start()
        self.closers.append(node.close)
        return node

    def batch(self, n: int) -> pa.Table:
        pks = np.arange(self.next_pk, self.next_pk + n, dtype=np.int64)
        self.next_pk += n
        x, _ = clustered_vectors(n, dim=DIM, clusters=30, seed=int(pks[0]))
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)
        return pa.Table.from_arrays([pa.array(pks), vec], schema=arrow_schema(self.schema))

    async def flush_rows(self, node: StreamingNode, per_shard: int) -> None:
        for vchannel in self.info.vchannels:
            await node.insert(self.cid, self.pid, vchannel, self.batch(per_shard))
        ticket = await node.flush(self.cid, list(self.info.vchannels))
        await until(lambda: node.flush_state(ticket))

    async def create_index(self) -> int:
        info = await self.coordinator.catalog.create_index(
            "default",
            "coll",
            "vec",
            "",
            {"index_type": "HNSW", "metric_type": "L2", "M": "8", "efConstruction": "64"},
            create_ts=await self.coordinator.allocate_timestamp(),
        )
        return info.index_id

    async def data_node(self, node_id: int) -> IndexBuildWorker:
        """A worker as ``canopy data-node`` runs it: its own meta handle and build queue."""
        meta = self.open_meta()
        self.closers.append(meta.close)
        queue = BuildQueue(IndexBuilds(meta, RealClock(), POLICY))
        await queue.start()
        self.closers.append(queue.close)
        worker = IndexBuildWorker(queue, self.objects, node_id, root=ROOT, poll_interval=0.1)
        await worker.start()
        self.closers.append(worker.close)
        return worker

    async def progress(self, index_id: int) -> tuple[int, int, int, ProgressState]:
        ts = await self.coordinator.allocate_timestamp()
        p = await self.coordinator.index_build_progress(self.cid, index_id, ts)
        return p.indexed_rows, p.total_rows, p.pending_rows, p.state


@pytest.fixture(params=COMBOS)
async def env(request, tmp_path, unique_prefix) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "memory+memory":
        objects: ObjectStore = MemoryObjectStore()
        meta: MetaStore = MemoryMetaStore()
        wal: tuple[str | ObjectStore, str | MetaStore] = (objects, meta)
        open_meta: Callable[[], MetaStore] = lambda: _Unclosed(meta)  # noqa: E731
    elif kind == "file+sqlite":
        uri = f"file://{tmp_path}/objects"
        objects = open_object_store(uri)
        meta = open_meta_store(f"sqlite:///{tmp_path}/meta.db")  # one handle per process
        wal = (uri, meta)
        open_meta = lambda: _Unclosed(meta)  # noqa: E731
    else:
        wal = (
            request.getfixturevalue("seaweedfs_service").uri(unique_prefix),
            request.getfixturevalue("etcd_service").uri(unique_prefix),
        )
        objects = open_object_store(wal[0])  # type: ignore[arg-type]
        meta = open_meta_store(wal[1])  # type: ignore[arg-type]
        open_meta = lambda: open_meta_store(wal[1])  # type: ignore[arg-type]  # noqa: E731
    coordinator = LocalCoordinator(
        meta,
        RealClock(),
        catalog=Catalog(meta, num_physical_channels=2),
        build_policy=POLICY,
        schedule_index_builds=True,
    )
    await coordinator.start()
    s = MilvusClient.create_schema(auto_id=False)
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vec", PDataType.FLOAT_VECTOR, dim=DIM)
    request_pb = Prepare.create_collection_request("coll", s)
    info = await coordinator.catalog.create_collection(
        "default", "coll", request_pb.schema, create_ts=await coordinator.allocate_timestamp(),
        shards_num=2,
    )  # fmt: skip
    e = Env(objects, meta, wal, open_meta, coordinator, info, from_request_bytes(info.schema))
    try:
        yield e
    finally:
        for close in reversed(e.closers):
            with contextlib.suppress(Exception):
                await close()
        await coordinator.close()
        await objects.close()
        await meta.close()


class _Unclosed:
    """The shared memory meta store as a second handle (closing it closes nothing)."""

    def __init__(self, inner: MetaStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def close(self) -> None:
        pass


async def test_flushed_segments_are_indexed_and_progress_reaches_100(env: Env) -> None:
    node = await env.streaming_node()
    await env.flush_rows(node, per_shard=1200)  # one segment per shard
    index_id = await env.create_index()  # on existing segments: the scheduler creates builds
    assert (await env.progress(index_id))[:3] == (0, 2400, 2400)
    await env.data_node(node_id=1001)
    await env.data_node(node_id=1002)

    async def complete() -> bool:
        return await env.progress(index_id) == (2400, 2400, 0, ProgressState.FINISHED)

    await until(complete)
    segments = await list_segments(env.objects, ROOT, env.cid)
    assert len(segments) == 2
    field_id = next(f.field_id for f in env.schema.fields if f.name == "vec")
    for seg in segments:
        built = await read_index_manifest(env.objects, seg, field_id, index_id)
        assert built is not None
        assert (built.index_type, built.rows, built.build_params["M"]) == ("HNSW", 1200, 8)
        graph = await load_index(env.objects, built)
        assert graph is not None and graph.rows == 1200
    builds = await env.coordinator.index_builds.list_builds(env.cid, index_id)
    assert {b.state for b in builds} == {BuildState.FINISHED}
    assert {b.node_id for b in builds} <= {1001, 1002}

    # a segment flushed after the index builds in the background
    await env.flush_rows(node, per_shard=300)
    await until(lambda: _all_finished(env, index_id, 4))
    assert await env.progress(index_id) == (3000, 3000, 0, ProgressState.FINISHED)


async def _all_finished(env: Env, index_id: int, count: int) -> bool:
    builds = await env.coordinator.index_builds.list_builds(env.cid, index_id)
    return len(builds) == count and all(b.state is BuildState.FINISHED for b in builds)


async def test_a_dead_workers_build_moves_and_a_dropped_collection_drops_records(
    env: Env,
) -> None:
    index_id = await env.create_index()
    for sid in (501, 502):
        x, _ = clustered_vectors(800, dim=DIM, clusters=20, seed=sid)
        table = pa.table(
            {
                "id": pa.array(np.arange(800, dtype=np.int64) + sid * 1000),
                "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
                "_row_id": pa.array(np.arange(800, dtype=np.int64)),
                "_ts": pa.array(np.full(800, 1 << 40, np.uint64)),
            }
        )
        await write_segment(
            env.objects, ROOT, env.cid, env.pid, sid, table, channel="v", pk_field="id"
        )
        await env.coordinator.report_flushed_segment(env.cid, env.pid, sid, "v", 800)
    # node 99 claims one build and dies without a word
    dead = await env.coordinator.index_builds.claim(99)
    assert dead is not None
    worker = await env.data_node(node_id=7)

    async def complete() -> bool:
        return (await env.progress(index_id))[3] is ProgressState.FINISHED

    await until(complete)
    builds = {b.segment_id: b for b in await env.coordinator.index_builds.list_builds(env.cid)}
    moved = builds[dead.segment_id]
    assert (moved.node_id, moved.attempt, moved.failures) == (7, 2, 1)  # expired once, moved
    await until(lambda: worker.stats.finished == 2)  # counted once its finish report returns

    await env.coordinator.catalog.drop_collection(
        "default", "coll", drop_ts=await env.coordinator.allocate_timestamp()
    )

    async def dropped() -> bool:
        return await env.coordinator.index_builds.list_builds(env.cid) == []

    await until(dropped)
