"""The channel assignment state machine (pure): examples, then seeded random event sequences
checked against its invariants after every event."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from cluster.coordinator.channel_manager import AssignmentWatcher, ChannelManager
from cluster.coordinator.channels import (
    Assign,
    ChannelAcked,
    ChannelAssignment,
    ChannelRecord,
    ChannelState,
    Command,
    Event,
    NodeDraining,
    NodeJoined,
    NodeLeft,
    NodesSynced,
    NodeStatus,
    RebalanceTick,
    Revoke,
)
from cluster.coordinator.sessions import STREAMING, NodeSession, SessionRegistry
from woodpecker.clock import ManualClock
from woodpecker.meta import MemoryMetaStore

S = ChannelState


def names(n: int) -> list[str]:
    return [f"canopy-dml_{i}" for i in range(n)]


def ack_all(m: ChannelAssignment) -> None:
    for channel, record in m.records.items():
        if record.state is S.ASSIGNING:
            assert record.node_id is not None
            assert m.handle(ChannelAcked(channel, record.node_id, record.epoch)) == []


def counts(m: ChannelAssignment) -> dict[int, int]:
    return {n: len(m.owned(n)) for n in sorted(m.nodes)}


# --- examples ------------------------------------------------------------------------------------


def test_no_node_keeps_channels_unassigned_then_the_first_node_gets_all() -> None:
    m = ChannelAssignment(names(3))
    assert m.handle(RebalanceTick()) == []
    assert m.handle(NodeLeft(7)) == []
    assert all(r.state is S.UNASSIGNED for r in m.records.values())
    commands = m.handle(NodeJoined(5))
    assert commands == [Assign(c, 5, 1) for c in names(3)]
    assert all(r == ChannelRecord(5, 1, S.ASSIGNING) for r in m.records.values())
    assert m.violations() == []


def test_acks_only_count_for_the_current_owner_and_epoch() -> None:
    m = ChannelAssignment(names(1))
    m.handle(NodeJoined(1))
    channel = names(1)[0]
    m.handle(ChannelAcked(channel, 2, 1))  # not the owner
    m.handle(ChannelAcked(channel, 1, 0))  # stale epoch
    m.handle(ChannelAcked("nope", 1, 1))  # unknown channel
    assert m.records[channel].state is S.ASSIGNING
    m.handle(ChannelAcked(channel, 1, 1))
    assert m.records[channel] == ChannelRecord(1, 1, S.ASSIGNED)


def test_balance_moves_acknowledged_channels_boundedly_and_only_beyond_one() -> None:
    m = ChannelAssignment(names(8), max_moves_per_tick=2)
    m.handle(NodeJoined(1))
    assert m.handle(NodeJoined(2)) == []  # joining alone moves nothing
    assert m.handle(RebalanceTick()) == []  # nothing acknowledged yet: nothing moves
    ack_all(m)
    commands = m.handle(RebalanceTick())
    assert commands == [
        Revoke("canopy-dml_7", 1, 1),
        Assign("canopy-dml_7", 2, 2),
        Revoke("canopy-dml_6", 1, 1),
        Assign("canopy-dml_6", 2, 2),
    ]
    assert counts(m) == {1: 6, 2: 2}
    ack_all(m)
    m.handle(RebalanceTick())
    assert counts(m) == {1: 4, 2: 4}
    ack_all(m)
    assert m.handle(RebalanceTick()) == []
    m.handle(NodeJoined(3))
    ack_all(m)
    m.handle(RebalanceTick())
    ack_all(m)
    assert counts(m) == {1: 3, 2: 3, 3: 2}
    assert m.handle(RebalanceTick()) == []  # 3/3/2: imbalance 1 is left alone


def test_leaving_node_channels_go_to_the_least_loaded_smallest_id_first() -> None:
    m = ChannelAssignment(names(6))
    m.handle(NodesSynced(frozenset({1, 2, 3})))  # 1: 0 2 4 / 2: 1 5 / 3: 2 ... round robin
    ack_all(m)
    assert counts(m) == {1: 2, 2: 2, 3: 2}
    owned_by_2 = m.owned(2)
    commands = m.handle(NodeLeft(2))
    assert [c for c in commands if isinstance(c, Revoke)] == [Revoke(c, 2, 1) for c in owned_by_2]
    assigned = [c for c in commands if isinstance(c, Assign)]
    assert [(c.channel, c.node_id, c.epoch) for c in assigned] == [
        (owned_by_2[0], 1, 2),
        (owned_by_2[1], 3, 2),
    ]
    assert counts(m) == {1: 3, 3: 3}
    m.handle(NodeLeft(1))
    m.handle(NodeLeft(3))
    assert all(r.state is S.UNASSIGNED and r.epoch >= 1 for r in m.records.values())
    commands = m.handle(NodeJoined(9))
    assert all(isinstance(c, Assign) and c.node_id == 9 for c in commands)
    assert {c.channel: c.epoch for c in commands} == {c: r.epoch for c, r in m.records.items()}
    assert all(r.epoch >= 2 for r in m.records.values())


def test_draining_moves_channels_to_serving_nodes_or_keeps_them() -> None:
    m = ChannelAssignment(names(4))
    m.handle(NodeJoined(1))
    ack_all(m)
    assert m.handle(NodeDraining(1)) == []  # nobody else: keep serving them
    assert m.nodes[1] is NodeStatus.DRAINING
    commands = m.handle(NodeJoined(2))  # evacuation is not balancing: all at once
    assert [c.node_id for c in commands if isinstance(c, Assign)] == [2, 2, 2, 2]
    assert counts(m) == {1: 0, 2: 4}
    m.handle(NodeJoined(1))  # stops draining
    assert m.nodes[1] is NodeStatus.SERVING
    ack_all(m)
    m.handle(RebalanceTick())
    assert counts(m) == {1: 2, 2: 2}


def test_restore_keeps_live_owners_and_reassigns_orphans() -> None:
    records = {
        "canopy-dml_0": ChannelRecord(1, 3, S.ASSIGNED),
        "canopy-dml_1": ChannelRecord(2, 5, S.ASSIGNED),
        "canopy-dml_2": ChannelRecord(2, 1, S.ASSIGNING),
        "canopy-dml_3": ChannelRecord(None, 4, S.UNASSIGNED),
        "gone": ChannelRecord(1, 1, S.ASSIGNED),
    }
    m = ChannelAssignment(names(4), records=records)
    commands = m.handle(NodesSynced(frozenset({1, 2})))
    assert commands == [Assign("canopy-dml_3", 1, 5)]  # only the unassigned one
    again = ChannelAssignment(names(4), records=records)
    commands = again.handle(NodesSynced(frozenset({1})))
    assert Revoke("canopy-dml_1", 2, 5) in commands
    assert {c.channel: c.epoch for c in commands if isinstance(c, Assign)} == {
        "canopy-dml_1": 6,
        "canopy-dml_2": 2,
        "canopy-dml_3": 5,
    }
    assert again.violations() == []


def test_record_encoding_round_trips() -> None:
    for record in (ChannelRecord(None, 0, S.UNASSIGNED), ChannelRecord(12, 7, S.ASSIGNING)):
        assert ChannelRecord.decode(record.encode()) == record


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        ChannelAssignment([])
    with pytest.raises(ValueError):
        ChannelAssignment(["a", "a"])
    with pytest.raises(ValueError):
        ChannelAssignment(["a"], max_moves_per_tick=0)


# --- properties ----------------------------------------------------------------------------------


class Model:
    """Replays commands as the nodes would see them and checks them against the machine."""

    def __init__(self, m: ChannelAssignment) -> None:
        self.m = m
        self.held: dict[int, dict[str, int]] = {}  # node -> channel -> epoch, from commands
        self.epochs = {c: r.epoch for c, r in m.records.items()}
        self.stats: Counter[str] = Counter()

    def step(self, event: Event) -> list[Command]:
        m = self.m
        before_nodes = dict(m.nodes)
        before_loads = m.loads()
        commands = m.handle(event)
        for command in commands:
            if isinstance(command, Assign):
                assert command.epoch == self.epochs[command.channel] + 1, (event, command)
                self.epochs[command.channel] = command.epoch
                assert not any(command.channel in h for h in self.held.values()), "two owners"
                self.held.setdefault(command.node_id, {})[command.channel] = command.epoch
            else:
                held = self.held.get(command.node_id, {})
                assert held.get(command.channel) == command.epoch, (event, command)
                del held[command.channel]
        assert m.violations() == [], (event, m.violations())
        for channel, record in m.records.items():
            assert record.epoch == self.epochs[channel]
            owners = [n for n, h in self.held.items() if channel in h]
            assert owners == ([] if record.owner is None else [record.owner])
        serving_before = [n for n, s in before_nodes.items() if s is NodeStatus.SERVING]
        if isinstance(event, RebalanceTick):
            moves = [c for c in commands if isinstance(c, Assign)]
            assert len(moves) <= m.max_moves_per_tick
            spread = [before_loads[n] for n in serving_before]
            if len(spread) < 2 or max(spread) - min(spread) <= 1:
                assert commands == []
        if not isinstance(event, RebalanceTick):
            # no reshuffle: outside balancing, channels leave only departed or draining nodes
            for c in commands:
                if isinstance(c, Revoke):
                    assert m.nodes.get(c.node_id) is not NodeStatus.SERVING, (event, c)
        self.stats[type(event).__name__] += len(commands)
        return commands


def random_event(rng: random.Random, m: ChannelAssignment, pool: list[int]) -> Event:
    roll = rng.random()
    if roll < 0.18:
        return NodeJoined(rng.choice(pool))
    if roll < 0.30:
        known = list(m.nodes)
        return NodeLeft(rng.choice(known) if known and rng.random() < 0.9 else rng.choice(pool))
    if roll < 0.36:
        return NodeDraining(rng.choice(pool))
    if roll < 0.40:
        live = rng.sample(pool, rng.randint(0, len(pool)))
        cut = rng.randint(0, len(live))
        return NodesSynced(frozenset(live[:cut]), frozenset(live[cut:]))
    if roll < 0.75:
        channel = rng.choice(m.channels)
        record = m.records[channel]
        if record.node_id is not None and rng.random() < 0.85:
            return ChannelAcked(channel, record.node_id, record.epoch)
        return ChannelAcked(channel, rng.choice(pool), rng.randint(0, record.epoch + 1))
    return RebalanceTick()


def run_sequence(seed: int) -> Model:
    rng = random.Random(seed)
    m = ChannelAssignment(names(rng.randint(1, 20)), max_moves_per_tick=rng.randint(1, 3))
    model = Model(m)
    pool = list(range(1, rng.randint(2, 7)))
    for _ in range(300):
        model.step(random_event(rng, m, pool))
    # quiesce: everyone acks, ticks balance within a bounded number of ticks
    for _ in range(len(m.channels) + 1):
        for channel, record in m.records.items():
            if record.state is S.ASSIGNING:
                assert record.node_id is not None
                model.step(ChannelAcked(channel, record.node_id, record.epoch))
        model.step(RebalanceTick())
    serving = [n for n, s in m.nodes.items() if s is NodeStatus.SERVING]
    if serving:
        loads = [len(m.owned(n)) for n in serving]
        assert max(loads) - min(loads) <= 1
        assert sum(loads) == len(m.channels)
    elif not m.nodes:
        assert all(r.state is S.UNASSIGNED for r in m.records.values())
    return model


@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_keep_the_invariants(seed: int) -> None:
    run_sequence(seed)


def test_random_sequences_exercise_every_kind_of_change() -> None:
    total: Counter[str] = Counter()
    for seed in range(40):
        total += run_sequence(seed).stats
    assert all(total[k] > 50 for k in ("NodeJoined", "NodeLeft", "NodeDraining", "NodesSynced")), (
        total
    )
    assert total["RebalanceTick"] > 50, total


@pytest.mark.parametrize("seed", range(10))
def test_every_departure_is_reassigned_at_once(seed: int) -> None:
    rng = random.Random(1000 + seed)
    m = ChannelAssignment(names(rng.randint(1, 16)))
    model = Model(m)
    live = rng.sample(range(1, 50), rng.randint(1, 6))
    model.step(NodesSynced(frozenset(live)))
    while live:
        leaving = live.pop(rng.randrange(len(live)))
        orphaned = m.owned(leaving)
        before = m.loads()
        commands = model.step(NodeLeft(leaving))
        if not live:
            assert all(m.records[c].state is S.UNASSIGNED for c in orphaned)
            continue
        for channel in orphaned:
            assert m.records[channel].owner in live
            assert m.records[channel].state is S.ASSIGNING
        # the orphans went to the least-loaded survivors: the survivors' spread did not grow
        after = m.loads()
        spread_before = max(before[n] for n in live) - min(before[n] for n in live)
        assert max(after.values()) - min(after.values()) <= max(spread_before, 1)
        assert len([c for c in commands if isinstance(c, Assign)]) == len(orphaned)


# --- the shell under virtual time ----------------------------------------------------------------


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_manager_and_sessions_run_on_an_injected_clock() -> None:
    clock = ManualClock()
    meta = MemoryMetaStore(clock)
    a = NodeSession(meta, STREAMING, address="a", clock=clock, ttl=10)
    b = NodeSession(meta, STREAMING, address="b", clock=clock, ttl=10)
    await a.start()
    await b.start()
    mgr = ChannelManager(meta, SessionRegistry(meta, clock), clock, 4, rebalance_interval=1)
    await mgr.start()
    try:
        for _ in range(3):  # nodes ack, ticks balance
            for channel, record in mgr.assignments().items():
                if record.state is S.ASSIGNING:
                    assert record.node_id is not None
                    assert await AssignmentWatcher(meta, record.node_id).ack(channel, record.epoch)
            await settle()
            await clock.advance(1)
            await settle()
        records = mgr.assignments()
        assert sorted(len(owned) for owned in owners(records).values()) == [2, 2]
        b.abandon()
        expires = b.lease_deadline
        await clock.advance(expires - clock.monotonic() - 0.01)
        await settle()
        assert len(owners(mgr.assignments())[b.node_id]) == 2  # not yet expired
        await clock.advance(0.02)
        await settle()
        assert set(owners(mgr.assignments())) == {a.node_id}  # reassigned at expiry
        await clock.advance(60)  # a's keepalive keeps it
        await settle()
        assert a.alive and set(owners(mgr.assignments())) == {a.node_id}
        assert mgr.failure is None
    finally:
        await mgr.close()
        await a.close()
        await meta.close()


def owners(records: dict[str, ChannelRecord]) -> dict[int | None, list[str]]:
    out: dict[int | None, list[str]] = {}
    for channel, record in records.items():
        out.setdefault(record.owner, []).append(channel)
    return out
