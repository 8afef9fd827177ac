"""The local MetaStore backends beyond the contract: virtual-time leases (memory://), bounded
watch history, engine validation, and sqlite durability details."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from woodpecker.clock import ManualClock
from woodpecker.errors import InvalidArgument, LeaseExpired, Unavailable, WatchCompacted
from woodpecker.meta import (
    Compare,
    Delete,
    DeletePrefix,
    EventType,
    MemoryMetaStore,
    Put,
    SqliteMetaStore,
)
from woodpecker.meta.engine import MetaEngine

pytestmark = pytest.mark.unit


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


# --- leases under virtual time -----------------------------------------------------------------


async def test_lease_expires_exactly_at_ttl_with_delete_events() -> None:
    clock = ManualClock()
    store = MemoryMetaStore(clock)
    lease = await store.grant_lease(10)
    watch = store.watch("k/")
    await store.put("k/a", b"1", lease=lease.id)
    await store.put("k/b", b"2", lease=lease.id)
    await store.put("k/plain", b"3")
    lost = asyncio.create_task(lease.wait_lost())
    await clock.advance(9.9)
    assert await store.get("k/a") is not None and lease.alive and not lost.done()
    await clock.advance(0.2)
    assert [kv.key for kv in await store.range("k/")] == ["k/plain"]
    await settle()
    assert lost.done() and not lease.alive
    events = [await watch.__anext__() for _ in range(5)]
    assert [(e.type, e.key) for e in events[3:]] == [
        (EventType.DELETE, "k/a"),
        (EventType.DELETE, "k/b"),
    ]
    assert events[3].revision == events[4].revision == await store.revision()
    with pytest.raises(LeaseExpired):
        await store.put("k/c", b"x", lease=lease.id)
    await store.close()


async def test_keepalive_under_virtual_time() -> None:
    clock = ManualClock()
    store = MemoryMetaStore(clock)
    lease = await store.grant_lease(6)
    await store.put("k", b"v", lease=lease.id)
    lease.start_keepalive()
    await settle()
    await clock.advance(60)
    assert await store.get("k") is not None and lease.alive
    await lease.revoke()
    assert await store.get("k") is None and not lease.alive
    await store.close()


async def test_manual_keepalive_moves_the_deadline() -> None:
    clock = ManualClock()
    store = MemoryMetaStore(clock)
    lease = await store.grant_lease(10)
    await store.put("k", b"v", lease=lease.id)
    await settle()
    await clock.advance(8)
    await lease.keepalive()
    await clock.advance(8)  # 16 s after the grant, 8 after the refresh
    assert await store.get("k") is not None
    await clock.advance(2.5)
    assert await store.get("k") is None
    with pytest.raises(LeaseExpired):
        await lease.keepalive()
    await store.close()


async def test_close_stops_timers_without_revoking() -> None:
    clock = ManualClock()
    store = MemoryMetaStore(clock)
    lease = await store.grant_lease(5)
    lease.start_keepalive()
    await settle()
    await store.close()
    assert not lease.alive
    assert clock.next_deadline is None  # no sleeper left behind


async def test_lease_ttl_must_be_positive() -> None:
    store = MemoryMetaStore(ManualClock())
    with pytest.raises(InvalidArgument):
        await store.grant_lease(0)
    await store.close()


# --- watch history -----------------------------------------------------------------------------


async def test_bounded_history_compacts_whole_revisions() -> None:
    store = MemoryMetaStore(ManualClock(), history_limit=3)
    r2 = (await store.txn([], [Put("a", b"1"), Put("b", b"2")])).revision  # two events
    r3 = await store.put("c", b"3")
    r4 = await store.put("d", b"4")  # pushes out the first event of r2
    with pytest.raises(WatchCompacted) as info:
        await store.watch("", start_revision=r2).__anext__()
    assert info.value.compact_revision == r3
    watch = store.watch("", start_revision=r3)
    assert [(e.key, e.revision) for e in [await watch.__anext__() for _ in range(2)]] == [
        ("c", r3),
        ("d", r4),
    ]
    await store.close()


async def test_compact_and_future_start_revision() -> None:
    store = MemoryMetaStore(ManualClock())
    r2 = await store.put("a", b"1")
    r3 = await store.put("a", b"2")
    await store.compact(r3)
    with pytest.raises(WatchCompacted):
        await store.watch("a", start_revision=r2).__anext__()
    future = store.watch("a", start_revision=r3 + 2)
    await store.put("a", b"skipped")
    r5 = await store.put("a", b"seen")
    event = await asyncio.wait_for(future.__anext__(), 1)
    assert (event.value, event.revision) == (b"seen", r5)
    with pytest.raises(InvalidArgument):
        await store.compact(r5 + 1)
    with pytest.raises(InvalidArgument):
        store.watch("a", start_revision=0)
    await store.close()


async def test_close_ends_watches() -> None:
    store = MemoryMetaStore(ManualClock())
    watch = store.watch("")
    waiter = asyncio.create_task(watch.__anext__())
    await settle()
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await waiter


# --- engine validation -------------------------------------------------------------------------


def test_engine_validation_mirrors_etcd() -> None:
    engine = MetaEngine()
    with pytest.raises(InvalidArgument, match="duplicate"):
        engine.plan([], [Put("k", b"1"), Put("k", b"2")])
    with pytest.raises(InvalidArgument, match="both put and deleted"):
        engine.plan([], [Delete("k"), Put("k", b"1")])
    with pytest.raises(InvalidArgument, match="both put and deleted"):
        engine.plan([], [], [Put("p/k", b"1"), DeletePrefix("p/")])  # failure branch too
    with pytest.raises(InvalidArgument, match="expects bytes"):
        engine.plan([Compare.value("k", 1)], [])  # type: ignore[arg-type]
    # overlapping deletes are fine and delete once
    plan = engine.plan([], [Delete("k"), DeletePrefix("")])
    assert plan.changes == () and plan.revision == engine.revision
    with pytest.raises(RuntimeError, match="stale"):
        p1 = engine.plan([], [Put("a", b"1")])
        engine.apply(engine.plan([], [Put("b", b"1")]))
        engine.apply(p1)


# --- sqlite ------------------------------------------------------------------------------------


async def test_sqlite_watch_before_first_call_sees_everything_after_it(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteMetaStore(path)
    await store.put("a", b"1")
    await store.close()
    store = SqliteMetaStore(path)
    watch = store.watch("")  # before the lazy open
    rev = await store.put("b", b"2")
    event = await asyncio.wait_for(watch.__anext__(), 1)
    assert (event.key, event.revision) == ("b", rev)
    await store.close()


async def test_sqlite_second_opener_is_refused(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    first = SqliteMetaStore(path)
    await first.put("a", b"1")
    second = SqliteMetaStore(path)
    with pytest.raises(Unavailable, match="locked"):
        await second.get("a")
    await second.close()
    await first.close()
    third = SqliteMetaStore(path)
    assert (await third.get("a")).value == b"1"  # type: ignore[union-attr]
    await third.close()


async def test_sqlite_cancelled_commit_keeps_memory_and_file_in_step(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteMetaStore(path)
    await store.put("warm", b"up")
    tasks = [asyncio.create_task(store.put(f"k/{i}", b"v")) for i in range(20)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    in_memory = [(kv.key, kv.mod_revision) for kv in await store.range("")]
    revision = await store.revision()
    await store.close()
    store = SqliteMetaStore(path)
    assert [(kv.key, kv.mod_revision) for kv in await store.range("")] == in_memory
    assert await store.revision() == revision
    await store.close()


async def test_sqlite_file_uses_wal_and_schema(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    store = SqliteMetaStore(path)
    await store.put("a", b"\x00\xff")
    await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT key, value, version FROM kv").fetchall() == [
            ("a", b"\x00\xff", 1)
        ]
    finally:
        conn.close()
