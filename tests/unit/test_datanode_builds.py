"""Index build records and their state machine (cluster/coordinator/index_builds.py and
index_scheduler.py) on memory meta with a ManualClock: creation, claim, heartbeat, lease expiry
and reassignment, finish, failure with back-off, drops, and Milvus's progress rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymilvus.grpc_gen import schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.index_builds import (
    BuildConflict,
    BuildOutcome,
    BuildPolicy,
    BuildRecord,
    BuildResult,
    BuildState,
    BuildTask,
    ProgressState,
    SegmentFacts,
    build_key,
    claim_build,
    expire_build,
    summarize,
)
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from woodpecker.clock import ManualClock
from woodpecker.meta.memory import MemoryMetaStore

DT = schema_pb2.DataType
POLICY = BuildPolicy(
    lease=10.0, max_failures=3, retry_delay=1.0, max_retry_delay=4.0, reconcile_interval=1000.0
)
RESULT = BuildResult("some/index.json", 100, "HNSW", 1.5)


@dataclass
class Env:
    clock: ManualClock
    meta: MemoryMetaStore
    coord: LocalCoordinator
    info: CollectionInfo
    next_segment: int = 1000

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    async def create_index(self, index_type: str = "HNSW") -> int:
        created = await self.coord.catalog.create_index(
            "default",
            self.info.name,
            "vector",
            "",
            {"index_type": index_type, "metric_type": "L2"},
            create_ts=await self.coord.allocate_timestamp(),
        )
        return created.index_id

    async def flush(self, rows: int = 100) -> int:
        self.next_segment += 1
        await self.coord.report_flushed_segment(
            self.cid, self.pid, self.next_segment, self.info.vchannels[0], rows
        )
        return self.next_segment

    async def record(self, index_id: int, segment_id: int) -> BuildRecord | None:
        kv = await self.meta.get(build_key(self.cid, index_id, segment_id))
        return BuildRecord.decode(kv.value) if kv is not None else None

    async def states(self, index_id: int) -> dict[int, BuildState]:
        builds = await self.coord.index_builds.list_builds(self.cid, index_id)
        return {b.segment_id: b.state for b in builds}


async def make_env(*, schedule: bool = False) -> Env:
    clock = ManualClock()
    meta = MemoryMetaStore(clock)
    catalog = Catalog(meta, num_physical_channels=2)
    coord = LocalCoordinator(
        meta, clock, catalog=catalog, build_policy=POLICY, schedule_index_builds=schedule
    )
    await catalog.start()
    await coord.start()
    s = schema_pb2.CollectionSchema(name="c")
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="vector", data_type=DT.FloatVector).type_params.add(key="dim", value="8")
    info = await catalog.create_collection(
        "default", "c", s.SerializeToString(), create_ts=await coord.allocate_timestamp()
    )
    return Env(clock, meta, coord, info)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env()
    try:
        yield e
    finally:
        await e.coord.close()
        await e.meta.close()


# --- pure transitions ----------------------------------------------------------------------------


def test_pure_transitions_refuse_what_the_state_does_not_allow() -> None:
    r = BuildRecord(1, 2, 3, 4, 101, 100)
    held = claim_build(r, node_id=7, now=100.0, lease=10.0)
    assert (held.state, held.node_id, held.attempt, held.lease_deadline) == (
        BuildState.BUILDING, 7, 1, 110.0,
    )  # fmt: skip
    with pytest.raises(BuildConflict):
        claim_build(held, 8, 100.0, 10.0)  # already held
    with pytest.raises(BuildConflict):
        expire_build(held, 109.0, POLICY)  # lease still valid
    back = expire_build(held, 110.0, POLICY)
    assert (back.state, back.failures, back.retry_at) == (BuildState.PENDING, 1, 110.0)
    assert "lease of node 7 expired" in back.error
    with pytest.raises(BuildConflict):
        claim_build(BuildRecord(1, 2, 3, 4, 101, 100, retry_at=5.0), 7, 4.0, 10.0)  # backing off


def test_summarize_follows_milvus() -> None:
    segs = [SegmentFacts(1, 1, 100, 10), SegmentFacts(2, 1, 50, 20), SegmentFacts(3, 1, 30, 30)]
    finished = BuildRecord(1, 9, 1, 1, 101, 100, state=BuildState.FINISHED)
    failed = BuildRecord(1, 9, 2, 1, 101, 50, state=BuildState.FAILED, error="boom")
    # segment 3 (registered at 30) has no record yet
    p = summarize(segs, {1: finished}, as_of_ts=20)
    assert (p.indexed_rows, p.total_rows, p.pending_rows, p.state) == (
        100, 180, 80, ProgressState.IN_PROGRESS,
    )  # fmt: skip
    p = summarize(segs, {1: finished}, as_of_ts=15)  # only segment 1 counts for the state
    assert (p.indexed_rows, p.pending_rows, p.state) == (100, 80, ProgressState.FINISHED)
    p = summarize(segs, {1: finished, 2: failed}, as_of_ts=30)
    assert (p.state, p.fail_reason) == (ProgressState.FAILED, "2: boom;")
    empty = summarize([], {}, as_of_ts=0)
    assert (empty.total_rows, empty.state) == (0, ProgressState.FINISHED)


# --- on the meta store ---------------------------------------------------------------------------


async def test_a_segment_flushed_after_the_index_gets_a_build_that_one_node_claims(
    env: Env,
) -> None:
    index_id = await env.create_index()
    seg = await env.flush(rows=100)
    assert await env.states(index_id) == {seg: BuildState.PENDING}
    task = await env.coord.claim_index_build(node_id=7)
    assert task is not None
    assert (task.segment_id, task.partition_id, task.rows, task.attempt) == (seg, env.pid, 100, 1)
    assert (task.index.index_id, task.index.field_name, task.lease) == (index_id, "vector", 10.0)
    assert await env.coord.claim_index_build(node_id=8) is None  # nothing else to build
    record = await env.record(index_id, seg)
    assert record is not None
    assert (record.state, record.node_id, record.lease_deadline) == (
        BuildState.BUILDING, 7, env.clock.now() + 10.0,
    )  # fmt: skip
    assert await env.coord.finish_index_build(task, RESULT) is BuildOutcome.OK
    assert await env.coord.finish_index_build(task, RESULT) is BuildOutcome.OK  # a retried report
    record = await env.record(index_id, seg)
    assert record is not None
    assert (record.state, record.manifest_key, record.indexed_rows, record.index_type) == (
        BuildState.FINISHED, "some/index.json", 100, "HNSW",
    )  # fmt: skip
    # a re-report of the same segment (streaming node retry) changes nothing
    await env.coord.report_flushed_segment(env.cid, env.pid, seg, env.info.vchannels[0], 100)
    assert await env.states(index_id) == {seg: BuildState.FINISHED}


async def test_index_created_on_existing_segments_builds_them_all(env: Env) -> None:
    segs = [await env.flush(rows=10 * (i + 1)) for i in range(3)]
    index_id = await env.create_index()
    assert await env.states(index_id) == {}  # no scheduler here: sync creates them
    assert await env.coord.index_builds.sync_collection(env.cid) == (3, 0)
    assert await env.coord.index_builds.sync_collection(env.cid) == (0, 0)  # idempotent
    create_ts = (await env.coord.catalog.describe_index("default", "c")).create_ts
    p = await env.coord.index_build_progress(env.cid, index_id, create_ts)
    assert (p.indexed_rows, p.total_rows, p.pending_rows, p.state) == (
        0, 60, 60, ProgressState.IN_PROGRESS,
    )  # fmt: skip
    for _ in segs:
        task = await env.coord.claim_index_build(node_id=1)
        assert task is not None
        assert await env.coord.finish_index_build(task, RESULT) is BuildOutcome.OK
    p = await env.coord.index_build_progress(env.cid, index_id, create_ts)
    assert (p.indexed_rows, p.total_rows, p.pending_rows, p.state) == (
        60, 60, 0, ProgressState.FINISHED,
    )  # fmt: skip


async def test_index_on_an_empty_collection_is_finished_while_later_segments_build(
    env: Env,
) -> None:
    index_id = await env.create_index()
    create_ts = (await env.coord.catalog.describe_index("default", "c")).create_ts
    p = await env.coord.index_build_progress(env.cid, index_id, create_ts)
    assert (p.total_rows, p.state) == (0, ProgressState.FINISHED)
    await env.flush(rows=40)
    p = await env.coord.index_build_progress(env.cid, index_id, create_ts)
    assert (p.indexed_rows, p.total_rows, p.pending_rows, p.state) == (
        0, 40, 40, ProgressState.FINISHED,
    )  # fmt: skip
    later = await env.coord.allocate_timestamp()  # what pymilvus' create_index waits with
    p = await env.coord.index_build_progress(env.cid, index_id, later)
    assert p.state is ProgressState.IN_PROGRESS


async def test_lease_expiry_reassigns_and_fences_the_old_holder(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    first = await env.coord.claim_index_build(node_id=1)
    assert first is not None
    await env.clock.advance(6.0)
    assert await env.coord.heartbeat_index_build(first, 0.5) is BuildOutcome.OK  # deadline +10
    await env.clock.advance(6.0)
    assert await env.coord.index_builds.expire_leases() == 0  # heartbeat kept it
    record = await env.record(index_id, seg)
    assert record is not None and record.progress == 0.5
    await env.clock.advance(5.0)
    assert await env.coord.index_builds.expire_leases() == 1
    record = await env.record(index_id, seg)
    assert record is not None
    assert (record.state, record.failures, record.node_id) == (BuildState.PENDING, 1, 1)
    second = await env.coord.claim_index_build(node_id=2)
    assert second is not None and (second.node_id, second.attempt) == (2, 2)
    # the first holder wakes up: every report is stale, nothing changes
    assert await env.coord.heartbeat_index_build(first, 0.9) is BuildOutcome.STALE
    assert await env.coord.finish_index_build(first, RESULT) is BuildOutcome.STALE
    assert await env.coord.fail_index_build(first, "x", True) is BuildOutcome.STALE
    assert await env.coord.finish_index_build(second, RESULT) is BuildOutcome.OK
    record = await env.record(index_id, seg)
    assert record is not None and (record.state, record.node_id) == (BuildState.FINISHED, 2)


async def test_retryable_failures_back_off_then_give_up(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    for failures, backoff in ((1, 1.0), (2, 2.0)):
        task = await env.coord.claim_index_build(node_id=1)
        assert task is not None
        assert await env.coord.fail_index_build(task, "Unavailable: s3", True) is BuildOutcome.OK
        record = await env.record(index_id, seg)
        assert record is not None
        assert (record.state, record.failures) == (BuildState.PENDING, failures)
        assert record.retry_at == env.clock.now() + backoff
        assert await env.coord.claim_index_build(node_id=1) is None  # backing off
        await env.clock.advance(backoff)
    task = await env.coord.claim_index_build(node_id=1)
    assert task is not None and task.attempt == 3
    assert await env.coord.fail_index_build(task, "Unavailable: s3", True) is BuildOutcome.OK
    record = await env.record(index_id, seg)
    assert record is not None and record.state is BuildState.FAILED
    assert record.error == "gave up after 3 failures; last: Unavailable: s3"
    p = await env.coord.index_build_progress(
        env.cid, index_id, await env.coord.allocate_timestamp()
    )
    assert p.state is ProgressState.FAILED and f"{seg}: gave up" in p.fail_reason


async def test_a_non_retryable_failure_is_reported_at_once(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    task = await env.coord.claim_index_build(node_id=1)
    assert task is not None
    assert await env.coord.fail_index_build(task, "SegmentCorrupt: bad", False) is BuildOutcome.OK
    record = await env.record(index_id, seg)
    assert record is not None
    assert (record.state, record.failures, record.error) == (
        BuildState.FAILED, 0, "SegmentCorrupt: bad",
    )  # fmt: skip
    assert await env.coord.claim_index_build(node_id=1) is None


async def test_release_gives_the_build_back_without_a_failure(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    task = await env.coord.claim_index_build(node_id=1)
    assert task is not None
    assert await env.coord.release_index_build(task) is BuildOutcome.OK
    record = await env.record(index_id, seg)
    assert record is not None and (record.state, record.failures) == (BuildState.PENDING, 0)
    again = await env.coord.claim_index_build(node_id=2)
    assert again is not None and again.attempt == 2


async def test_index_dropped_mid_build_drops_its_records(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    task = await env.coord.claim_index_build(node_id=1)
    assert task is not None
    await env.coord.catalog.drop_index("default", "c")
    assert await env.coord.index_builds.sync_collection(env.cid) == (0, 1)
    assert await env.record(index_id, seg) is None
    assert await env.coord.heartbeat_index_build(task, 0.1) is BuildOutcome.GONE
    assert await env.coord.finish_index_build(task, RESULT) is BuildOutcome.GONE
    # a new index on the same field builds from scratch
    new_index = await env.create_index("FLAT")
    assert await env.coord.index_builds.sync_collection(env.cid) == (1, 0)
    assert await env.states(new_index) == {seg: BuildState.PENDING}


async def test_a_claim_drops_builds_of_an_index_that_is_gone(env: Env) -> None:
    index_id = await env.create_index()
    seg = await env.flush()
    await env.coord.catalog.drop_index("default", "c")  # nobody synced yet
    assert await env.coord.claim_index_build(node_id=1) is None
    assert await env.record(index_id, seg) is None


async def test_collection_dropped_drops_its_records(env: Env) -> None:
    index_id = await env.create_index()
    segs = [await env.flush() for _ in range(2)]
    task = await env.coord.claim_index_build(node_id=1)
    assert task is not None
    await env.coord.catalog.drop_collection(
        "default", "c", drop_ts=await env.coord.allocate_timestamp()
    )
    await env.coord.index_builds.sync_collection(env.cid)
    assert await env.states(index_id) == {}
    assert await env.coord.finish_index_build(task, RESULT) is BuildOutcome.GONE
    # a late report of a segment of the dropped collection creates nothing
    await env.coord.report_flushed_segment(env.cid, env.pid, segs[0] + 10, "v", 5)
    assert await env.states(index_id) == {}


# --- the scheduler and queue (background, on the ManualClock) ------------------------------------


async def until(check, clock: ManualClock | None = None, steps: int = 200) -> None:  # type: ignore[no-untyped-def]
    for _ in range(steps):
        if await check():
            return
        if clock is not None:
            await clock.advance(0.1)
        else:
            await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_scheduler_follows_the_catalog_and_expires_leases() -> None:
    env = await make_env(schedule=True)
    try:
        segs = [await env.flush(rows=10) for _ in range(2)]
        index_id = await env.create_index()  # the scheduler's watch creates the records

        async def both_pending() -> bool:
            return await env.states(index_id) == dict.fromkeys(segs, BuildState.PENDING)

        await until(both_pending)
        task = await env.coord.claim_index_build(node_id=1)
        assert isinstance(task, BuildTask)
        # no heartbeat: the expiry loop gives it back after the lease
        await env.clock.advance(POLICY.lease + POLICY.expiry_interval + 0.5)

        async def reassigned() -> bool:
            record = await env.record(index_id, task.segment_id)
            return record is not None and record.state is BuildState.PENDING

        await until(reassigned, env.clock)
        # a worker waiting for work wakes when a segment arrives
        while await env.coord.claim_index_build(node_id=2) is not None:
            pass
        waiter = asyncio.ensure_future(env.coord.wait_for_index_builds(within=1000.0))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await env.flush(rows=5)
        await asyncio.wait_for(waiter, 1.0)
        # dropping the collection drops every record
        await env.coord.catalog.drop_collection(
            "default", "c", drop_ts=await env.coord.allocate_timestamp()
        )

        async def none_left() -> bool:
            return await env.states(index_id) == {}

        await until(none_left)
        assert env.coord.build_scheduler is not None and env.coord.build_queue is not None
        assert env.coord.build_queue.open_builds() == []
    finally:
        await env.coord.close()
        await env.meta.close()
