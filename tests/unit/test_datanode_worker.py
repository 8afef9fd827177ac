"""The data node's IndexBuildWorker over LocalCoordinator, memory meta and a memory object store:
real builds of flushed segments, failures, drops mid-build, lease loss, heartbeats, clean stop."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from polling import until
from pymilvus.grpc_gen import schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.index_builds import (
    BuildOutcome,
    BuildPolicy,
    BuildRecord,
    BuildState,
    BuildTask,
    ProgressState,
    build_key,
)
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.datanode import IndexBuildWorker
from cluster.index import index_manifest_key, read_index_manifest
from cluster.query.testing import clustered_vectors, segment_table
from cluster.storage import SegmentManifest, write_segment
from woodpecker.clock import RealClock
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore
from woodpecker.objectstore.wrappers import _Intercepting

T = TypeVar("T")
DT = schema_pb2.DataType
ROOT = "segs"
DIM = 16
POLICY = BuildPolicy(lease=0.3, max_failures=3, retry_delay=0.05, expiry_interval=0.05)


class Gated(_Intercepting):
    """Object reads wait while ``open`` is clear (a slow store, to hold a build mid-way)."""

    def __init__(self, inner: MemoryObjectStore) -> None:
        super().__init__(inner)
        self.open = asyncio.Event()
        self.open.set()

    async def _around(self, op: str, call: Callable[[], Awaitable[T]], sent: int) -> T:
        if op == "get":
            await self.open.wait()
        return await call()


@dataclass
class Env:
    meta: MemoryMetaStore
    objects: Gated
    coord: LocalCoordinator
    info: CollectionInfo
    index_id: int = 0
    next_segment: int = 100

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    async def segment(self, rows: int, *, register: bool = True) -> SegmentManifest:
        """Write a segment of ``rows`` clustered vectors and register it (as a flush does)."""
        self.next_segment += 1
        x, _ = clustered_vectors(rows, dim=DIM, clusters=20, seed=self.next_segment)
        manifest = await write_segment(
            self.objects.inner,
            ROOT,
            self.cid,
            self.pid,
            self.next_segment,
            segment_table(x, field="vector"),
            channel=self.info.vchannels[0],
            pk_field="id",
        )
        if register:
            await self.coord.report_flushed_segment(
                self.cid, self.pid, self.next_segment, self.info.vchannels[0], rows
            )
        return manifest

    async def record(self, segment_id: int) -> BuildRecord | None:
        kv = await self.meta.get(build_key(self.cid, self.index_id, segment_id))
        return BuildRecord.decode(kv.value) if kv is not None else None

    def worker(self, node_id: int = 1, **kwargs: object) -> IndexBuildWorker:
        return IndexBuildWorker(
            self.coord, self.objects, node_id, root=ROOT, poll_interval=0.05, **kwargs
        )  # type: ignore[arg-type]

    async def index_keys(self, manifest: SegmentManifest) -> list[str]:
        prefix = f"{manifest.prefix}index/"
        return [info.key async for info in self.objects.inner.list(prefix)]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    meta = MemoryMetaStore()
    catalog = Catalog(meta, num_physical_channels=1)
    coord = LocalCoordinator(
        meta, RealClock(), catalog=catalog, build_policy=POLICY, schedule_index_builds=True
    )
    await catalog.start()
    await coord.start()
    s = schema_pb2.CollectionSchema(name="c")
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="vector", data_type=DT.FloatVector).type_params.add(key="dim", value=str(DIM))
    info = await catalog.create_collection(
        "default", "c", s.SerializeToString(), create_ts=await coord.allocate_timestamp()
    )
    index = await catalog.create_index(
        "default",
        "c",
        "vector",
        "",
        {"index_type": "HNSW", "metric_type": "L2", "M": "8", "efConstruction": "40"},
        create_ts=await coord.allocate_timestamp(),
    )
    e = Env(meta, Gated(MemoryObjectStore()), coord, info, index.index_id)
    try:
        yield e
    finally:
        await coord.close()
        await meta.close()


async def claim(env: Env, node_id: int) -> BuildTask:
    """The next build for ``node_id`` once the queue's mirror has seen it."""
    async with asyncio.timeout(10):
        for _ in itertools.count():
            if (task := await env.coord.claim_index_build(node_id)) is not None:
                return task
            await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


async def test_worker_builds_every_flushed_segment_and_progress_reaches_100(env: Env) -> None:
    manifests = [await env.segment(rows) for rows in (1500, 700)]
    worker = env.worker()
    await worker.start()
    try:
        ts = await env.coord.allocate_timestamp()

        async def done() -> bool:
            p = await env.coord.index_build_progress(env.cid, env.index_id, ts)
            return p.state is ProgressState.FINISHED

        await until(done)
        p = await env.coord.index_build_progress(env.cid, env.index_id, ts)
        assert (p.indexed_rows, p.total_rows, p.pending_rows) == (2200, 2200, 0)
        for m in manifests:
            built = await read_index_manifest(env.objects.inner, m, 101, env.index_id)
            assert built is not None
            assert (built.index_type, built.rows, built.dim, built.build_params["M"]) == (
                "HNSW", m.row_count, DIM, 8,
            )  # fmt: skip
            assert await env.objects.inner.head(built.key(built.files[0].path))
            record = await env.record(m.segment_id)
            assert record is not None and record.state is BuildState.FINISHED
            assert record.manifest_key == index_manifest_key(m, 101, env.index_id)
        assert worker.stats.finished == 2 and worker.stats.failed == 0
        # a segment flushed later is picked up without a restart
        late = await env.segment(300)
        await until(lambda: _finished(env, late.segment_id))
    finally:
        await worker.close()


async def _finished(env: Env, segment_id: int) -> bool:
    record = await env.record(segment_id)
    return record is not None and record.state is BuildState.FINISHED


async def test_a_missing_segment_is_a_reported_failure(env: Env) -> None:
    await env.coord.report_flushed_segment(env.cid, env.pid, 999, env.info.vchannels[0], 10)
    worker = env.worker()
    task = await claim(env, worker.node_id)
    assert await worker.run_build(task) is BuildOutcome.OK
    record = await env.record(999)
    assert record is not None and record.state is BuildState.FAILED
    assert record.error.startswith("SegmentNotFound")
    p = await env.coord.index_build_progress(env.cid, env.index_id, 0)
    assert p.state is ProgressState.FAILED
    ts = await env.coord.allocate_timestamp()
    p = await env.coord.index_build_progress(env.cid, env.index_id, ts)
    assert p.state is ProgressState.FAILED and "999: SegmentNotFound" in p.fail_reason


async def test_index_dropped_mid_build_abandons_it_and_deletes_its_files(env: Env) -> None:
    m = await env.segment(800)
    worker = env.worker()
    task = await claim(env, worker.node_id)
    env.objects.open.clear()  # hold the build in its read
    running = asyncio.ensure_future(worker.run_build(task))
    await asyncio.sleep(0.05)
    await env.coord.catalog.drop_index("default", "c")

    async def gone() -> bool:
        return await env.record(m.segment_id) is None

    await until(gone)  # the scheduler followed the drop
    env.objects.open.set()
    assert await asyncio.wait_for(running, 20) is BuildOutcome.GONE
    assert await env.index_keys(m) == []
    assert worker.stats.abandoned == 1


async def test_a_build_whose_lease_moved_on_is_abandoned(env: Env) -> None:
    m = await env.segment(600)
    first = await claim(env, 1)
    await asyncio.sleep(POLICY.lease + 0.2)  # nobody heartbeats: the scheduler expires it

    async def pending() -> bool:
        record = await env.record(m.segment_id)
        return record is not None and record.state is BuildState.PENDING

    await until(pending)
    second = await claim(env, 2)
    assert second.attempt == 2
    stale_worker = env.worker(1)
    assert await stale_worker.run_build(first) is BuildOutcome.STALE
    assert await env.worker(2).run_build(second) is BuildOutcome.OK
    record = await env.record(m.segment_id)
    assert record is not None and (record.state, record.node_id) == (BuildState.FINISHED, 2)
    assert await env.index_keys(m)  # the stale worker left the (identical) files alone


async def test_heartbeats_keep_a_slow_build_and_close_releases_it(env: Env) -> None:
    m = await env.segment(500)
    env.objects.open.clear()  # the build stalls in its first read
    worker = env.worker()
    await worker.start()

    async def building() -> bool:
        record = await env.record(m.segment_id)
        return record is not None and record.state is BuildState.BUILDING

    await until(building)
    await asyncio.sleep(POLICY.lease * 3)  # three leases: heartbeats keep it
    record = await env.record(m.segment_id)
    assert record is not None
    assert (record.state, record.node_id, record.attempt) == (BuildState.BUILDING, 1, 1)
    assert [t.segment_id for t in worker.running] == [m.segment_id]
    await worker.close()  # cancels the build, gives it back
    record = await env.record(m.segment_id)
    assert record is not None
    assert (record.state, record.failures) == (BuildState.PENDING, 0)
    env.objects.open.set()
    other = env.worker(2)
    await other.start()
    try:
        await until(lambda: _finished(env, m.segment_id))
    finally:
        await other.close()
    record = await env.record(m.segment_id)
    assert record is not None and (record.node_id, record.attempt) == (2, 2)
    doc = json.loads(await env.objects.inner.get(record.manifest_key))
    assert doc["rows"] == 500 and doc["index_type"] == "HNSW"


async def test_worker_wait_raises_when_its_source_fails_for_good(env: Env) -> None:
    class Broken:
        async def claim_index_build(self, node_id: int) -> None:
            raise RuntimeError("coordinator bug")

    worker = IndexBuildWorker(Broken(), env.objects, 1, poll_interval=0.01)  # type: ignore[arg-type]
    await worker.start()
    with pytest.raises(RuntimeError, match="coordinator bug"):
        await asyncio.wait_for(worker.wait(), 5)
    await worker.close()
