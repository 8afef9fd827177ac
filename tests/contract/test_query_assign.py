"""The coordinator's SegmentBalancer (cluster/coordinator/query_assign.py), each rule of its
contract on the memory store and on real etcd: wanted segments get assigned to the least loaded
live query node, follow a lost node, move without a gap when a node joins, and are released
when no longer loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from polling import until

from cluster.coordinator.query_assign import (
    ASSIGN_PREFIX,
    QUERY,
    SegmentAssignment,
    SegmentBalancer,
    loaded_key,
    query_load_progress,
)
from cluster.coordinator.records import LoadInfo, LoadState, load_key
from cluster.coordinator.service import SegmentRecord, segment_key
from cluster.coordinator.sessions import NodeSession
from woodpecker.clock import RealClock
from woodpecker.meta import MetaStore, open_meta_store

pytestmark = pytest.mark.contract

CLOCK = RealClock()
CID = 7


@pytest.fixture(params=["memory", "etcd"])
async def meta(
    request: pytest.FixtureRequest, meta_uri: Callable[[str], str]
) -> AsyncIterator[MetaStore]:
    store = open_meta_store(meta_uri(request.param))
    yield store
    await store.close()


@pytest.fixture
async def balancer(meta: MetaStore) -> AsyncIterator[SegmentBalancer]:
    b = SegmentBalancer(meta, CLOCK, interval=0.1)
    await b.start()
    yield b
    await b.close()


async def register(meta: MetaStore, segment_id: int, rows: int, partition_id: int = 1) -> None:
    record = SegmentRecord(CID, partition_id, segment_id, "ch-0_v0", rows)
    await meta.put(segment_key(CID, segment_id), record.encode())


async def load(meta: MetaStore, partitions: tuple[int, ...] | None = None) -> None:
    info = LoadInfo(
        CID,
        LoadState.LOADED,
        load_all=partitions is None,
        partition_ids=partitions or (),
        replicas=1,
    )
    await meta.put(load_key(CID), info.encode())


async def node(meta: MetaStore) -> NodeSession:
    session = NodeSession(meta, QUERY, address="127.0.0.1:1", clock=CLOCK, ttl=2.0)
    await session.start()
    return session


async def assignments(meta: MetaStore) -> dict[int, SegmentAssignment]:
    kvs = await meta.range(ASSIGN_PREFIX)
    out = {}
    for kv in kvs:
        asg = SegmentAssignment.decode(kv.value)
        out[asg.segment_id] = asg
    return out


async def settled(meta: MetaStore, check: Callable[[dict[int, SegmentAssignment]], bool]) -> dict:
    result: dict[int, SegmentAssignment] = {}

    async def ok() -> bool:
        nonlocal result
        result = await assignments(meta)
        return check(result)

    await until(ok, within=10, interval=0.05)
    return result


async def test_loaded_segments_spread_over_live_nodes_by_rows(
    meta: MetaStore, balancer: SegmentBalancer
) -> None:
    a, b = await node(meta), await node(meta)
    for sid, rows in ((1, 100), (2, 100), (3, 100), (4, 100)):
        await register(meta, sid, rows)
    assert await assignments(meta) == {}  # nothing is loaded yet
    await load(meta)
    got = await settled(meta, lambda r: len(r) == 4)
    per_node = sorted(
        sum(1 for x in got.values() if x.node_id == n) for n in (a.node_id, b.node_id)
    )
    assert per_node == [2, 2]
    assert all(x.previous == 0 for x in got.values())
    await a.close()
    await b.close()


async def test_only_loaded_partitions_are_assigned_and_release_unassigns(
    meta: MetaStore, balancer: SegmentBalancer
) -> None:
    await node(meta)
    await register(meta, 1, 10, partition_id=1)
    await register(meta, 2, 10, partition_id=2)
    await load(meta, partitions=(2,))
    got = await settled(meta, lambda r: set(r) == {2})
    assert got[2].partition_id == 2
    await meta.delete(load_key(CID))  # released
    await settled(meta, lambda r: r == {})


async def test_a_lost_nodes_segments_go_to_the_survivor(
    meta: MetaStore, balancer: SegmentBalancer
) -> None:
    a, b = await node(meta), await node(meta)
    for sid in range(1, 5):
        await register(meta, sid, 50)
    await load(meta)
    await settled(meta, lambda r: len(r) == 4)
    await a.close()  # the session goes: its segments move
    got = await settled(
        meta, lambda r: len(r) == 4 and all(x.node_id == b.node_id for x in r.values())
    )
    assert all(x.previous == 0 for x in got.values())
    await b.close()  # no live node: the streaming nodes serve them (no assignment)
    await settled(meta, lambda r: r == {})


async def test_a_joining_node_takes_segments_without_a_gap(
    meta: MetaStore, balancer: SegmentBalancer
) -> None:
    a = await node(meta)
    for sid in range(1, 5):
        await register(meta, sid, 100)
    await load(meta)
    await settled(meta, lambda r: len(r) == 4 and all(x.node_id == a.node_id for x in r.values()))
    for sid in range(1, 5):
        await meta.put(loaded_key(a.node_id, CID, sid), b"1", lease=a.lease_id)
    b = await node(meta)
    moving = await settled(
        meta, lambda r: sum(1 for x in r.values() if x.node_id == b.node_id) == 2
    )
    moved = [x for x in moving.values() if x.node_id == b.node_id]
    # until b has loaded them, a keeps serving them
    assert all(x.previous == a.node_id for x in moved)
    for x in moved:
        await meta.put(loaded_key(b.node_id, CID, x.segment_id), b"1", lease=b.lease_id)
    done = await settled(meta, lambda r: all(x.previous == 0 for x in r.values()))
    assert sorted(x.node_id for x in done.values()) == sorted([a.node_id] * 2 + [b.node_id] * 2)
    await a.close()
    await b.close()


async def test_a_move_whose_target_dies_falls_back_to_the_old_node(
    meta: MetaStore, balancer: SegmentBalancer
) -> None:
    a = await node(meta)
    await register(meta, 1, 100)
    await register(meta, 2, 100)
    await load(meta)
    await settled(meta, lambda r: len(r) == 2)
    for sid in (1, 2):
        await meta.put(loaded_key(a.node_id, CID, sid), b"1", lease=a.lease_id)
    b = await node(meta)
    await settled(meta, lambda r: any(x.node_id == b.node_id for x in r.values()))
    await b.close()  # dies before loading: the segment goes back to a, which has it
    done = await settled(
        meta, lambda r: all(x.node_id == a.node_id and not x.previous for x in r.values())
    )
    assert set(done) == {1, 2}
    await a.close()


async def test_load_progress_counts_segments_live_query_nodes_announced(meta: MetaStore) -> None:
    await register(meta, 1, 10, partition_id=1)
    await register(meta, 2, 10, partition_id=2)
    assert await query_load_progress(meta, CID) == 100  # no query node: streaming nodes serve
    a = await node(meta)
    assert await query_load_progress(meta, CID) == 0
    await meta.put(loaded_key(a.node_id, CID, 1), b"1", lease=a.lease_id)
    assert await query_load_progress(meta, CID) == 50
    assert await query_load_progress(meta, CID, [1]) == 100
    assert await query_load_progress(meta, CID, [2]) == 0
    assert await query_load_progress(meta, CID + 1) == 100  # nothing flushed there
    b = await node(meta)
    await a.close()  # its markers go with its lease
    assert await query_load_progress(meta, CID) == 0
    await b.close()
