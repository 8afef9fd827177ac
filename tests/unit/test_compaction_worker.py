"""The compaction worker over LocalCoordinator, memory meta and a memory object store: merges and
purges, the registry swap, carried and fenced deletes, the delete router's retargeting, faults at
every step, stale attempts, racing workers, finalization and index build records.

``visible`` is the reader's contract in miniature (registry -> manifests not dropped -> rows and
every delete log of the listed segments -> MVCC at T -> newest version per key): each test checks
it is identical before, during and after a compaction for reads at or above the horizon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pymilvus.grpc_gen import schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.compactions import (
    LOCKS_PREFIX,
    CompactionOutput,
    CompactionPolicy,
    Compactions,
    Plan,
    registry_key,
)
from cluster.coordinator.index_builds import BuildOutcome, BuildPolicy, BuildState, build_key
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator
from cluster.datanode.compaction import CARRIED_PROPERTY, Compactor
from cluster.storage import (
    FENCE_PROPERTY,
    SegmentDropped,
    SegmentFenced,
    append_deltas,
    read_deltas,
    read_manifest,
    read_segment,
    write_segment,
)
from cluster.streaming.flushing import BufferedDelete, DeleteRouter
from woodpecker.clock import ManualClock, RealClock
from woodpecker.errors import Unavailable
from woodpecker.message import MessageId
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

DT = schema_pb2.DataType
ROOT = "segs"
DIM = 4
POLICY = CompactionPolicy(
    small_rows=100,
    max_inputs=8,
    max_rows=1000,
    retention=0.0,
    drop_delay=0.0,
    leases=BuildPolicy(lease=0.6, retry_delay=0.05, max_failures=5),
)


@dataclass
class Env:
    meta: MemoryMetaStore
    objects: MemoryObjectStore
    coord: LocalCoordinator
    info: CollectionInfo
    index_id: int
    next_pk: int = 0

    @property
    def cid(self) -> int:
        return self.info.collection_id

    @property
    def pid(self) -> int:
        return self.info.partitions[0].partition_id

    @property
    def vch(self) -> str:
        return self.info.vchannels[0]

    async def segment(self, rows: int, pks: list[int] | None = None) -> int:
        """Write and register a flushed segment of ``rows`` new keys (or ``pks``)."""
        sid = await self.coord.allocate_ids()
        if pks is None:
            pks = list(range(self.next_pk, self.next_pk + rows))
            self.next_pk += rows
        ts = await self.coord.allocate_timestamp()
        n = len(pks)
        vec = np.arange(n * DIM, dtype=np.float32)
        table = pa.table(
            {
                "id": pa.array(pks, pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec), DIM),
                "title": pa.array([f"row {p}" for p in pks]),
                "_row_id": pa.array(range(sid * 1000, sid * 1000 + n), pa.int64()),
                "_ts": pa.array([ts] * n, pa.uint64()),
            }
        )
        await write_segment(
            self.objects, ROOT, self.cid, self.pid, sid, table, channel=self.vch, pk_field="id"
        )
        await self.coord.report_flushed_segment(self.cid, self.pid, sid, self.vch, n)
        return sid

    async def delete(self, sid: int, pks: list[int]) -> int:
        ts = await self.coord.allocate_timestamp()
        await append_deltas(self.objects, ROOT, self.cid, self.pid, sid, pks, [ts] * len(pks))
        return ts

    async def registry(self) -> dict[int, str]:
        return {s.segment_id: s.state for s in await self.coord.list_segments(self.cid)}

    async def visible(self, at: int | None = None) -> list[tuple[int, int, str]]:
        """``(pk, _ts, title)`` visible at ``at`` (default: now), as a reader computes it."""
        at = at if at is not None else await self.coord.allocate_timestamp()
        tables, dpk, dts = [], [], []
        for info in await self.coord.list_segments(self.cid):
            if info.state != "flushed":
                continue
            m = await read_manifest(
                self.objects, ROOT, self.cid, info.partition_id, info.segment_id
            )
            if m.state == "dropped":
                continue
            tables.append(await read_segment(self.objects, m, ["id", "title", "_ts"]))
            pks, tss = await read_deltas(self.objects, m)
            dpk += pks.to_pylist()
            dts += tss.to_pylist()
        latest_delete: dict[int, list[int]] = {}
        for k, t in zip(dpk, dts, strict=True):
            latest_delete.setdefault(k, []).append(t)
        best: dict[int, tuple[int, str]] = {}
        for t in tables:
            for k, ts, title in zip(
                t["id"].to_pylist(), t["_ts"].to_pylist(), t["title"].to_pylist(), strict=True
            ):
                if ts > at:
                    continue
                if k not in best or ts > best[k][0]:
                    best[k] = (ts, title)
        out = []
        for k, (ts, title) in best.items():
            if any(ts < d <= at for d in latest_delete.get(k, ())):
                continue
            out.append((k, ts, title))
        return sorted(out)

    def compactor(self, node_id: int = 1, **kwargs: Any) -> Compactor:
        return Compactor(self.coord, self.objects, node_id, root=ROOT, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    meta = MemoryMetaStore()
    catalog = Catalog(meta, num_physical_channels=1)
    coord = LocalCoordinator(meta, RealClock(), catalog=catalog, compaction_policy=POLICY)
    await catalog.start()
    await coord.start()
    s = schema_pb2.CollectionSchema(name="c")
    s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
    s.fields.add(name="vector", data_type=DT.FloatVector).type_params.add(key="dim", value=str(DIM))
    s.fields.add(name="title", data_type=DT.VarChar).type_params.add(key="max_length", value="64")
    info = await catalog.create_collection(
        "default", "c", s.SerializeToString(), create_ts=await coord.allocate_timestamp()
    )
    index = await catalog.create_index(
        "default", "c", "vector", "", {"index_type": "FLAT", "metric_type": "L2"},
        create_ts=await coord.allocate_timestamp(),
    )  # fmt: skip
    yield Env(meta, MemoryObjectStore(), coord, info, index.index_id)
    await coord.close()


async def test_merge_purges_deleted_rows_carries_deletes_and_swaps_the_registry(env: Env) -> None:
    sids = [await env.segment(10) for _ in range(4)]  # pks 0..39
    big = await env.segment(200, pks=list(range(1000, 1200)))  # not small: stays
    await env.delete(sids[0], [1, 2])  # purged (rows of the inputs)
    await env.delete(big, [1100])  # another segment's log: untouched
    await env.delete(sids[1], [1150])  # in the big segment's range: carried
    before = await env.visible()
    compactor = env.compactor()
    assert await compactor.pass_once() == 1
    reg = await env.registry()
    assert [reg[s] for s in sids] == ["dropped"] * 4 and reg[big] == "flushed"
    (out,) = [s for s, state in reg.items() if state == "flushed" and s != big]
    m = await read_manifest(env.objects, ROOT, env.cid, env.pid, out)
    rows = await read_segment(env.objects, m)
    assert sorted(rows["id"].to_pylist()) == [p for p in range(40) if p not in (1, 2)]
    assert m.row_count == 38 and compactor.purged_rows == 2
    pks, _ = await read_deltas(env.objects, m)
    assert pks.to_pylist() == [1150]  # 1 and 2 purged with their rows; 1150 may hide big's row
    assert m.properties[CARRIED_PROPERTY] == "1"
    assert await env.visible() == before
    # index builds: the output has one, the inputs' are gone
    assert await env.meta.get(build_key(env.cid, env.index_id, out)) is not None
    for s in sids:
        assert await env.meta.get(build_key(env.cid, env.index_id, s)) is None
    # finalize (drop_delay 0): manifests dropped, record and locks gone
    await compactor.maintain()
    for s in sids:
        assert (await read_manifest(env.objects, ROOT, env.cid, env.pid, s)).state == "dropped"
    assert await env.coord.compactions.records() == []
    assert await env.meta.range(LOCKS_PREFIX) == []
    assert await env.visible() == before
    assert await compactor.pass_once() == 0  # nothing left to do: no churn


async def test_reads_are_identical_at_every_step_and_at_the_horizon(env: Env) -> None:
    sids = [await env.segment(5) for _ in range(3)]
    await env.delete(sids[2], [11, 12])
    t_before = await env.coord.allocate_timestamp()
    expected = await env.visible()
    seen: list[str] = []

    async def check(step: str, task: Any) -> None:
        assert await env.visible() == expected, step
        assert await env.visible(task.horizon_ts) == await env.visible(t_before), step
        seen.append(step)

    assert await env.compactor(fault=check).pass_once() == 1
    assert seen == ["read", "written", "fenced", "committed"]
    assert await env.visible() == expected
    assert await env.visible(t_before) == expected


async def test_deletes_during_a_compaction_are_carried_refused_or_retargeted(env: Env) -> None:
    sids = [await env.segment(10) for _ in range(2)]  # pks 0..19
    router = DeleteRouter(env.coord, env.objects, ROOT)
    phases: dict[str, Any] = {}

    def buffered(pk: int, ts: int) -> BufferedDelete:
        return BufferedDelete(
            env.cid, None, env.vch, pa.array([pk], pa.int64()), ts, MessageId(0, pk)
        )

    async def fault(step: str, task: Any) -> None:
        if step == "written":  # before the fence: lands in the input, must be carried
            phases["carried_ts"] = await env.delete(sids[0], [3])
        if step == "fenced":  # after the fence: refused, the router keeps it buffered
            with pytest.raises(SegmentFenced):
                await env.delete(sids[1], [14])
            phases["late"] = buffered(14, await env.coord.allocate_timestamp())
            with pytest.raises(SegmentFenced):
                await router.persist([phases["late"]])

    assert await env.compactor(fault=fault).pass_once() == 1
    # after the commit the router finds the inputs dropped and writes to the output
    assert await router.persist([phases["late"]]) == 1
    visible = [k for k, _, _ in await env.visible()]
    assert 3 not in visible and 14 not in visible and len(visible) == 18
    (out,) = [s for s, st in (await env.registry()).items() if st == "flushed"]
    m = await read_manifest(env.objects, ROOT, env.cid, env.pid, out)
    pks, _ = await read_deltas(env.objects, m)
    assert {3, 14} <= set(pks.to_pylist())
    await env.compactor().maintain()  # finalized: inputs take no deletes at all now
    with pytest.raises(SegmentDropped):
        await env.delete(sids[0], [5])
    # a router that still had the inputs cached re-lists and retargets
    assert await router.persist([buffered(5, await env.coord.allocate_timestamp())]) == 1
    assert 5 not in [k for k, _, _ in await env.visible()]


async def test_a_failure_mid_compaction_undoes_the_attempt_and_the_retry_commits(
    env: Env,
) -> None:
    sids = [await env.segment(10) for _ in range(3)]
    await env.delete(sids[1], [15])
    before = await env.visible()
    outputs: list[int] = []

    async def fail(step: str, task: Any) -> None:
        if step == "fenced":
            reg = await env.registry()
            outputs.extend(s for s in reg if s not in sids)
            raise Unavailable("injected: object store gone")

    assert await env.compactor(fault=fail).pass_once() == 1
    (record,) = await env.coord.compactions.records()
    assert record.state is BuildState.PENDING and record.failures == 1
    for s in sids:  # fences lifted, inputs still served, deletes accepted again
        m = await read_manifest(env.objects, ROOT, env.cid, env.pid, s)
        assert FENCE_PROPERTY not in m.properties and m.state == "flushed"
    assert outputs == []  # the output was never registered ...
    keys = [i.key async for i in env.objects.list(f"{ROOT}/")]
    assert {_sid(k) for k in keys} == set(sids)  # ... and its files are gone
    assert await env.visible() == before
    await env.delete(sids[2], [25])
    await asyncio.sleep(0.06)  # the back-off
    assert await env.compactor(node_id=2).pass_once() == 1
    assert [k for k, _, _ in await env.visible()] == [k for k, _, _ in before if k != 25]


def _sid(key: str) -> int:
    return int(key.split("/segments/")[1].split("/")[0])


async def test_a_crashed_attempt_leaves_the_inputs_serving_and_the_plan_is_retried(
    env: Env,
) -> None:
    sids = [await env.segment(10) for _ in range(2)]
    before = await env.visible()
    hold = asyncio.Event()

    async def hang(step: str, task: Any) -> None:
        if step == "fenced":
            hold.set()
            await asyncio.Event().wait()

    crashed = env.compactor(node_id=1, fault=hang)
    await crashed.plan()
    (task,) = [t for t in [await env.coord.compactions.claim(1)] if t is not None]
    runner = asyncio.create_task(crashed.run(task))
    await hold.wait()
    # the node dies: its tasks stop without any clean-up (its store and meta calls fail)
    crashed.objects = _Dead()  # type: ignore[assignment]
    crashed.records = _DeadRecords()  # type: ignore[assignment]
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    m = await read_manifest(env.objects, ROOT, env.cid, env.pid, sids[0])
    assert m.properties[FENCE_PROPERTY] == f"{task.plan_id}/1"  # left behind
    assert await env.visible() == before  # the inputs still serve
    with pytest.raises(SegmentFenced):
        await env.delete(sids[0], [1])
    await asyncio.sleep(POLICY.leases.lease + 0.05)  # the lease runs out
    survivor = env.compactor(node_id=2)
    await survivor.maintain()  # expired -> pending; the dead attempt's fences are lifted
    await env.delete(sids[0], [1])
    assert await survivor.pass_once() == 1
    (record,) = await env.coord.compactions.records()
    assert record.state is BuildState.FINISHED and record.attempt == 2
    assert [k for k, _, _ in await env.visible()] == [k for k, _, _ in before if k != 1]


class _Dead:
    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise Unavailable("dead node")

        return fail


class _DeadRecords(_Dead):
    pass


async def test_a_stale_attempt_cannot_commit_and_one_commit_per_plan() -> None:
    meta = MemoryMetaStore()
    clock = ManualClock()
    records = Compactions(meta, clock, POLICY)
    for sid in (1, 2):
        await meta.put(registry_key(7, sid), b'{"state": "flushed", "segment_id": %d}' % sid)
    versions = {1: 1, 2: 1}
    plan = Plan(3, "v", (1, 2), 20, "merge")
    assert await records.create(7, 50, plan, 100, versions) is not None
    assert await records.create(7, 51, plan, 100, versions) is None  # inputs locked
    first = await records.claim(node_id=1)
    assert first is not None and first.attempt == 1
    await clock.advance(POLICY.leases.lease + 1)
    assert await records.expire_leases() == 1
    second = await records.claim(node_id=2)
    assert second is not None and second.attempt == 2
    output = CompactionOutput(60, 20, 0, 0, 123)
    assert await records.heartbeat(first) is BuildOutcome.STALE
    assert await records.commit(first, output) is BuildOutcome.STALE
    assert await records.commit(second, output) is BuildOutcome.OK
    assert await records.commit(second, output) is BuildOutcome.OK  # a retried reply
    assert await records.commit(first, output) is BuildOutcome.STALE
    assert await meta.get(registry_key(7, 60)) is not None


class _BeatBeforeTxn(MemoryMetaStore):
    """A meta store whose next txn is preceded by ``before()`` (a concurrent heartbeat)."""

    before: Any = None

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        hook, self.before = self.before, None
        if hook is not None:
            await hook()
        return await super().txn(*args, **kwargs)


async def test_the_holders_own_heartbeat_during_its_commit_does_not_refuse_it() -> None:
    """The commit reads the record, then its txn compares that version: a heartbeat of the
    same attempt landing in between must not turn the commit into ``STALE`` (the plan would
    stay ``building`` until the lease expired, its work thrown away)."""
    meta = _BeatBeforeTxn()
    records = Compactions(meta, ManualClock(), POLICY)
    for sid in (1, 2):
        await meta.put(registry_key(7, sid), b'{"state": "flushed", "segment_id": %d}' % sid)
    assert await records.create(7, 50, Plan(3, "v", (1, 2), 20, "merge"), 100, {1: 1, 2: 1})
    task = await records.claim(node_id=1)
    assert task is not None
    beats: list[BuildOutcome] = []

    async def beat() -> None:
        beats.append(await records.heartbeat(task, 0.9))

    meta.before = beat
    assert await records.commit(task, CompactionOutput(60, 20, 0, 0, 123)) is BuildOutcome.OK
    assert beats == [BuildOutcome.OK]  # it did move the record under the commit
    (record,) = await records.records()
    assert record.state is BuildState.FINISHED and record.output_id == 60
    assert await meta.get(registry_key(7, 60)) is not None


async def test_a_refused_commit_gives_the_plan_back_at_once(env: Env) -> None:
    """A commit refused while the attempt still holds the plan (an input's registry record
    changed) puts the plan back to pending with back-off, its fences lifted, instead of
    leaving it ``building`` until the lease expires."""
    sids = [await env.segment(5) for _ in range(3)]
    before = await env.visible()

    async def drop_an_input(step: str, task: Any) -> None:
        if step == "fenced":
            kv = await env.meta.get(registry_key(env.cid, sids[0]))
            assert kv is not None
            raw = json.loads(kv.value)
            await env.meta.put(kv.key, json.dumps({**raw, "state": "dropped"}).encode())

    compactor = env.compactor(fault=drop_an_input)
    assert await compactor.plan()
    task = await env.coord.compactions.claim(compactor.node_id)
    assert task is not None
    assert await compactor.run(task) is BuildOutcome.STALE
    (record,) = await env.coord.compactions.records()
    assert record.state is BuildState.PENDING and record.attempt == 1 and record.failures == 1
    assert "commit refused" in record.error and record.retry_at > record.updated_at  # back-off
    assert compactor.committed == 0
    for sid in sids:  # this attempt's fences lifted; no output registered
        m = await read_manifest(env.objects, ROOT, env.cid, env.pid, sid)
        assert FENCE_PROPERTY not in m.properties
    assert set(await env.registry()) == set(sids)
    assert await env.visible() == [v for v in before if v[0] >= 5]  # sids[0] is unlisted


async def test_racing_workers_commit_each_plan_once(env: Env) -> None:
    for _ in range(12):
        await env.segment(5)
    await env.delete(next(iter(await env.registry())), [0, 1])
    before = await env.visible()
    workers = [env.compactor(node_id=n) for n in (1, 2, 3)]
    await asyncio.gather(*(w.pass_once() for w in workers))
    records = await env.coord.compactions.records()
    assert sum(w.committed for w in workers) == len(records) >= 1
    assert all(r.state is BuildState.FINISHED for r in records)
    assert await env.visible() == before
    reg = await env.registry()
    assert sum(st == "flushed" for st in reg.values()) == len(records)


async def test_everything_purged_commits_without_an_output(env: Env) -> None:
    a, b = await env.segment(3), await env.segment(3)
    await env.delete(a, [0, 1, 2])
    await env.delete(b, [3, 4, 5])
    assert await env.compactor().pass_once() == 1
    assert set((await env.registry()).values()) == {"dropped"}
    (record,) = await env.coord.compactions.records()
    assert record.output_id == 0 and record.purged_rows == 6
    assert await env.visible() == []


async def test_a_segment_with_many_deletes_is_rewritten(env: Env) -> None:
    big = await env.segment(150)  # not small
    await env.delete(big, list(range(40)))
    before = await env.visible()
    compactor = env.compactor()
    assert await compactor.pass_once() == 1
    (out,) = [s for s, st in (await env.registry()).items() if st == "flushed"]
    assert (await read_manifest(env.objects, ROOT, env.cid, env.pid, out)).row_count == 110
    assert await env.visible() == before
    await compactor.maintain()
    assert await compactor.pass_once() == 0  # its carried deletes do not count again


async def test_a_replayed_flush_of_a_compacted_segment_changes_nothing(env: Env) -> None:
    """A streaming node that crashed between registering a segment and saving its checkpoint
    writes it again on replay: a fenced or dropped input takes no deletes, and that is fine
    (its log went into the compaction's output the first time)."""
    from cluster.schema import from_request_bytes
    from cluster.streaming.flushing import write_sealed_segment
    from cluster.streaming.growing import GrowingSegment
    from cluster.streaming.messages import with_system_columns

    schema = from_request_bytes(env.info.schema)
    sid = await env.coord.allocate_ids()

    def rebuilt() -> GrowingSegment:  # the same WAL messages give the same segment
        seg = GrowingSegment(
            schema, segment_id=sid, collection_id=env.cid, partition_id=env.pid, vchannel=env.vch
        )
        table = pa.table(
            {
                "id": pa.array([500, 501], pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array([0.0] * 2 * DIM, pa.float32()), DIM
                ),
                "title": pa.array(["a", "b"]),
            }
        )
        seg.append(with_system_columns(table, np.array([1, 2]), 10))
        seg.apply_delete([501], 20)
        return seg

    m = await write_sealed_segment(env.objects, ROOT, rebuilt(), clock=RealClock())
    await env.coord.report_flushed_segment(env.cid, env.pid, sid, env.vch, m.row_count)
    await env.segment(3)
    before = await env.visible()

    async def replay(step: str, task: Any) -> None:
        if step == "fenced":
            await write_sealed_segment(env.objects, ROOT, rebuilt(), clock=RealClock())

    compactor = env.compactor(fault=replay)
    assert await compactor.pass_once() == 1
    await compactor.maintain()
    await write_sealed_segment(env.objects, ROOT, rebuilt(), clock=RealClock())  # dropped now
    await env.coord.report_flushed_segment(env.cid, env.pid, sid, env.vch, m.row_count)
    assert (await env.registry())[sid] == "dropped"  # a re-report changes nothing
    assert await env.meta.get(build_key(env.cid, env.index_id, sid)) is None
    assert await env.visible() == before
