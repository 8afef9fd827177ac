"""The MetaStore contract, run against every backend: memory://, sqlite:// and a real etcd.

Each test gets a fresh store (for etcd: a fresh key prefix on the session's etcd). The etcd
revision is shared by every test of the session, so tests assert revisions relative to what
their own writes returned, and exact "+1 per write" steps only on the private backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from woodpecker.errors import InvalidArgument, LeaseExpired, StorageError, WatchCompacted
from woodpecker.meta import (
    MAX_REQUEST_BYTES,
    MAX_TXN_OPS,
    Compare,
    Delete,
    DeletePrefix,
    EtcdMetaStore,
    EventType,
    MetaStore,
    Put,
    SqliteMetaStore,
    Watch,
    WatchEvent,
    open_meta_store,
)

pytestmark = pytest.mark.contract

BACKENDS = ["memory", "sqlite", "etcd"]
TTL = 1.0  # requested lease ttl; etcd rounds it up to its floor (2 s), see lease.ttl


@pytest.fixture(params=BACKENDS)
async def meta(
    request: pytest.FixtureRequest, tmp_path, unique_prefix: str
) -> AsyncIterator[MetaStore]:
    if request.param == "memory":
        store = open_meta_store("memory://")
    elif request.param == "sqlite":
        store = open_meta_store(f"sqlite:///{tmp_path}/meta.db")
    else:
        store = open_meta_store(request.getfixturevalue("etcd_service").uri(unique_prefix))
    yield store
    await store.close()


def private(meta: MetaStore) -> bool:
    """True when no one else writes to this store's revision counter."""
    return not isinstance(meta, EtcdMetaStore)


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def take(watch: Watch, n: int, within: float = 10.0) -> list[WatchEvent]:
    """The next ``n`` events, each due within ``within`` seconds."""
    return [await asyncio.wait_for(watch.__anext__(), within) for _ in range(n)]


async def nothing_more(watch: Watch, wait: float = 0.2) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(watch.__anext__(), wait)


def put_ev(key: str, value: bytes, rev: int, version: int) -> WatchEvent:
    return WatchEvent(EventType.PUT, key, value, rev, version)


def del_ev(key: str, rev: int) -> WatchEvent:
    return WatchEvent(EventType.DELETE, key, b"", rev, 0)


# --- keys, values, bookkeeping -----------------------------------------------------------------


async def test_get_missing_is_none(meta: MetaStore) -> None:
    assert await meta.get("nope") is None


async def test_put_get_bookkeeping(meta: MetaStore) -> None:
    r1 = await meta.put("k", b"\x00one\xff")
    kv = await meta.get("k")
    assert kv is not None
    assert (kv.key, kv.value, kv.version, kv.create_revision, kv.mod_revision, kv.lease) == (
        "k", b"\x00one\xff", 1, r1, r1, 0,
    )  # fmt: skip
    r2 = await meta.put("k", b"two")
    assert r2 > r1
    kv = await meta.get("k")
    assert kv is not None and (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
        b"two", 2, r1, r2,
    )  # fmt: skip
    assert await meta.revision() >= r2


async def test_revision_steps_once_per_effective_write(meta: MetaStore) -> None:
    r0 = await meta.revision()
    r1 = await meta.put("a", b"1")
    r2 = (await meta.txn([], [Put("b", b"2"), Put("c", b"3"), Delete("a")])).revision
    assert await meta.delete("missing") is False
    assert await meta.delete_prefix("missing/") == 0
    failed = await meta.txn([Compare.version("b", 7)], [Put("b", b"x")])
    assert not failed.succeeded
    assert r0 < r1 < r2 <= failed.revision
    if private(meta):
        assert (r1, r2, failed.revision, await meta.revision()) == (r0 + 1, r0 + 2, r0 + 2, r0 + 2)


async def test_delete_resets_version(meta: MetaStore) -> None:
    await meta.put("k", b"1")
    await meta.put("k", b"2")
    assert await meta.delete("k") is True
    assert await meta.delete("k") is False
    assert await meta.get("k") is None
    r = await meta.put("k", b"3")
    kv = await meta.get("k")
    assert kv is not None and (kv.version, kv.create_revision, kv.mod_revision) == (1, r, r)


async def test_range_is_ordered_and_prefix_isolated(meta: MetaStore) -> None:
    keys = ["a/c", "a", "a/b/c", "ab", "a/b", "a/é", "a/z", "a/", "b/a", "a/B"]
    for key in keys:
        await meta.put(key, key.encode())
    got = [kv.key for kv in await meta.range("a/")]
    assert got == sorted(k for k in keys if k.startswith("a/"))
    assert got == ["a/", "a/B", "a/b", "a/b/c", "a/c", "a/z", "a/é"]  # UTF-8 byte order
    assert [kv.key for kv in await meta.range("a/b")] == ["a/b", "a/b/c"]
    assert [kv.key for kv in await meta.range("")] == sorted(keys)
    assert all(kv.value == kv.key.encode() for kv in await meta.range(""))
    assert await meta.range("zzz/") == []


async def test_range_limit(meta: MetaStore) -> None:
    for i in range(5):
        await meta.put(f"p/{i}", b"v")
    assert [kv.key for kv in await meta.range("p/", limit=2)] == ["p/0", "p/1"]
    assert len(await meta.range("p/", limit=10)) == 5
    assert len(await meta.range("p/", limit=None)) == 5
    with pytest.raises(InvalidArgument):
        await meta.range("p/", limit=-1)


async def test_delete_prefix(meta: MetaStore) -> None:
    for key in ["d/1", "d/2", "d/x/3", "dd", "e/1"]:
        await meta.put(key, b"v")
    assert await meta.delete_prefix("d/") == 3
    assert [kv.key for kv in await meta.range("")] == ["dd", "e/1"]
    assert await meta.delete_prefix("d/") == 0


async def test_invalid_requests(meta: MetaStore) -> None:
    with pytest.raises(InvalidArgument):
        await meta.put("", b"v")
    with pytest.raises(InvalidArgument):
        await meta.put("k", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await meta.put("k", b"x" * (MAX_REQUEST_BYTES + 1))
    with pytest.raises(InvalidArgument):
        await meta.txn([], [Put("k", b"1"), Put("k", b"2")])
    with pytest.raises(InvalidArgument):
        await meta.txn([], [DeletePrefix("k"), Put("k/1", b"1")])
    with pytest.raises(InvalidArgument):
        await meta.txn([], [Put(f"k/{i}", b"v") for i in range(MAX_TXN_OPS + 1)])
    assert await meta.range("") == []


# --- transactions ------------------------------------------------------------------------------


async def test_txn_success_is_atomic_at_one_revision(meta: MetaStore) -> None:
    await meta.put("t/old", b"o")
    result = await meta.txn(
        [Compare.absent("t/a"), Compare.value("t/old", b"o")],
        [Put("t/a", b"1"), Put("t/b", b"2"), Delete("t/old")],
        [Put("t/failed", b"x")],
    )
    assert result.succeeded
    kvs = await meta.range("t/")
    assert [(kv.key, kv.mod_revision) for kv in kvs] == [
        ("t/a", result.revision),
        ("t/b", result.revision),
    ]


async def test_txn_failure_applies_only_failure_ops(meta: MetaStore) -> None:
    await meta.put("t/a", b"1")
    result = await meta.txn(
        [Compare.version("t/a", 1), Compare.absent("t/b"), Compare.value("t/a", b"other")],
        [Put("t/a", b"changed"), Put("t/b", b"2")],
        [Put("t/fail", b"f")],
    )
    assert not result.succeeded
    kvs = {kv.key: kv for kv in await meta.range("t/")}
    assert kvs["t/a"].value == b"1" and "t/b" not in kvs
    assert kvs["t/fail"].mod_revision == result.revision


async def test_txn_compare_targets(meta: MetaStore) -> None:
    r1 = await meta.put("c", b"v1")
    r2 = await meta.put("c", b"v2")
    holds = [
        Compare.version("c", 2),
        Compare.create_revision("c", r1),
        Compare.mod_revision("c", r2),
        Compare.value("c", b"v2"),
        Compare.version("missing", 0),
        Compare.mod_revision("missing", 0),
        Compare.create_revision("missing", 0),
    ]
    fails = [
        Compare.version("c", 1),
        Compare.create_revision("c", r2),
        Compare.mod_revision("c", r1),
        Compare.value("c", b"v1"),
        Compare.value("missing", b""),
        Compare.absent("c"),
    ]
    for compare in holds:
        assert (await meta.txn([compare], [])).succeeded, compare
    for compare in fails:
        assert not (await meta.txn([compare], [])).succeeded, compare
    assert (await meta.txn(holds, [])).succeeded
    assert not (await meta.txn([*holds, fails[0]], [])).succeeded


async def test_cas(meta: MetaStore) -> None:
    assert await meta.cas("k", b"1", expected_version=0)
    assert not await meta.cas("k", b"x", expected_version=0)
    assert await meta.cas("k", b"2", expected_version=1)
    assert not await meta.cas("k", b"x", expected_version=1)
    assert not await meta.cas("k", b"x", expected_version=3)
    kv = await meta.get("k")
    assert kv is not None and (kv.value, kv.version) == (b"2", 2)


@pytest.mark.parametrize("expected_version", [0, 1])
async def test_concurrent_cas_exactly_one_wins(meta: MetaStore, expected_version: int) -> None:
    if expected_version:
        await meta.put("k", b"base")

    async def attempt(i: int) -> bool:
        return await meta.cas("k", f"w{i}".encode(), expected_version=expected_version)

    results = await asyncio.gather(*(attempt(i) for i in range(24)))
    assert sum(results) == 1
    kv = await meta.get("k")
    assert kv is not None and kv.value == f"w{results.index(True)}".encode()
    assert kv.version == expected_version + 1


async def test_concurrent_counter_is_exact(meta: MetaStore) -> None:
    workers, increments = 20, 5

    async def worker() -> None:
        for _ in range(increments):
            while True:
                kv = await meta.get("counter")
                value, version = (int(kv.value), kv.version) if kv else (0, 0)
                if await meta.cas("counter", str(value + 1).encode(), expected_version=version):
                    break

    await asyncio.gather(*(worker() for _ in range(workers)))
    kv = await meta.get("counter")
    assert kv is not None and int(kv.value) == workers * increments
    assert kv.version == workers * increments


# --- leases ------------------------------------------------------------------------------------


async def test_lease_expiry_deletes_keys_with_events(meta: MetaStore) -> None:
    lease = await meta.grant_lease(TTL)
    assert lease.ttl >= TTL and lease.alive
    async with meta.watch("l/") as watch:
        r1 = await meta.put("l/a", b"1", lease=lease.id)
        r2 = (await meta.txn([], [Put("l/b", b"2", lease=lease.id)])).revision
        await meta.put("l/keep", b"k")
        assert (await meta.get("l/a")).lease == lease.id  # type: ignore[union-attr]
        events = await take(watch, 3)
        assert [e.revision for e in events[:2]] == [r1, r2]
        await eventually(lambda: _absent(meta, "l/a"), within=lease.ttl + 3)
        deletes = await take(watch, 2)
    assert {(e.type, e.key) for e in deletes} == {
        (EventType.DELETE, "l/a"),
        (EventType.DELETE, "l/b"),
    }
    assert deletes[0].revision == deletes[1].revision  # one revision for the whole lease
    assert [kv.key for kv in await meta.range("l/")] == ["l/keep"]
    with pytest.raises(LeaseExpired):
        await lease.keepalive()
    assert not lease.alive
    await asyncio.wait_for(lease.wait_lost(), 1)
    with pytest.raises(LeaseExpired):
        await meta.put("l/late", b"x", lease=lease.id)


async def _absent(meta: MetaStore, key: str) -> bool:
    return await meta.get(key) is None


async def test_keepalive_keeps_keys_past_ttl(meta: MetaStore) -> None:
    lease = await meta.grant_lease(TTL)
    await meta.put("k", b"v", lease=lease.id)
    lease.start_keepalive()
    await asyncio.sleep(lease.ttl * 1.6)
    assert await meta.get("k") is not None and lease.alive
    await lease.keepalive()  # a manual refresh works alongside the background one
    await lease.revoke()
    assert await meta.get("k") is None
    assert not lease.alive
    await asyncio.wait_for(lease.wait_lost(), 1)


async def test_revoke_deletes_keys_at_one_revision(meta: MetaStore) -> None:
    lease = await meta.grant_lease(30)
    other = await meta.grant_lease(30)
    async with meta.watch("r/") as watch:
        await meta.txn([], [Put(f"r/{i}", b"v", lease=lease.id) for i in range(3)])
        await meta.put("r/other", b"o", lease=other.id)
        await lease.revoke()
        events = await take(watch, 3 + 1 + 3)
    deletes = events[4:]
    assert [(e.type, e.key) for e in deletes] == [(EventType.DELETE, f"r/{i}") for i in range(3)]
    assert len({e.revision for e in deletes}) == 1
    assert [kv.key for kv in await meta.range("r/")] == ["r/other"]
    await lease.revoke()  # idempotent
    with pytest.raises(LeaseExpired):
        await lease.keepalive()
    await other.revoke()
    assert await meta.range("r/") == []


async def test_put_without_lease_detaches_key(meta: MetaStore) -> None:
    lease = await meta.grant_lease(30)
    await meta.put("k", b"1", lease=lease.id)
    await meta.put("k", b"2")
    assert (await meta.get("k")).lease == 0  # type: ignore[union-attr]
    await lease.revoke()
    assert (await meta.get("k")).value == b"2"  # type: ignore[union-attr]


# --- watches -----------------------------------------------------------------------------------


async def _write_mix(meta: MetaStore) -> list[WatchEvent]:
    """Puts, overwrites, deletes, a txn, a prefix delete and writes outside ``w/``; returns the
    events a watch on ``w/`` must see."""
    r1 = await meta.put("w/a", b"1")
    await meta.put("outside", b"x")
    r2 = await meta.put("w/b", b"2")
    r3 = await meta.put("w/a", b"3")
    r4 = (await meta.txn([Compare.version("w/a", 2)], [Put("w/c", b"4"), Delete("w/b")])).revision
    await meta.delete("w/missing")
    r5 = (await meta.txn([], [DeletePrefix("w/")])).revision
    return [
        put_ev("w/a", b"1", r1, 1),
        put_ev("w/b", b"2", r2, 1),
        put_ev("w/a", b"3", r3, 2),
        put_ev("w/c", b"4", r4, 1),
        del_ev("w/b", r4),
        del_ev("w/a", r5),
        del_ev("w/c", r5),
    ]


async def test_watch_sees_every_event_in_order(meta: MetaStore) -> None:
    async with meta.watch("w/") as watch:
        expected = await _write_mix(meta)
        assert await take(watch, len(expected)) == expected
        await nothing_more(watch)


async def test_watch_resume_replays_history_exactly(meta: MetaStore) -> None:
    first = await meta.revision() + 1
    expected = await _write_mix(meta)
    async with meta.watch("w/", start_revision=first) as watch:
        assert await take(watch, len(expected)) == expected
        late = await meta.put("w/late", b"l")
        assert await take(watch, 1) == [put_ev("w/late", b"l", late, 1)]
    # resuming in the middle of the history: from the txn's revision on
    async with meta.watch("w/", start_revision=expected[3].revision) as watch:
        assert await take(watch, 5) == [*expected[3:], put_ev("w/late", b"l", late, 1)]
        await nothing_more(watch)


async def test_concurrent_watches_see_the_same_sequence(meta: MetaStore) -> None:
    writers, puts = 4, 15  # each writer: 15 puts over 4 keys, a prefix delete every 5 puts

    async def writer(n: int) -> None:
        for i in range(puts):
            await meta.put(f"s/{n}/{i % 4}", f"{n}.{i}".encode())
            if i % 5 == 4:
                await meta.delete_prefix(f"s/{n}/")

    async with meta.watch("s/") as w1, meta.watch("s/") as w2:
        await asyncio.gather(*(writer(n) for n in range(writers)))
        total = writers * (puts + 3 * 4)
        seq1, seq2 = await take(w1, total), await take(w2, total)
        await nothing_more(w1)
    assert seq1 == seq2
    revisions = [e.revision for e in seq1]
    assert revisions == sorted(revisions)
    assert sum(e.type is EventType.DELETE for e in seq1) == writers * 3 * 4


async def test_slow_watcher_does_not_block_writers(meta: MetaStore) -> None:
    n = 150
    async with meta.watch("slow/") as watch:
        revs = [await asyncio.wait_for(meta.put(f"slow/{i:03}", b"v"), 5) for i in range(n)]
        events = await take(watch, n)
    assert [e.revision for e in events] == revs


async def test_watch_close_ends_iteration(meta: MetaStore) -> None:
    watch = meta.watch("x/")
    async with watch:
        await meta.put("x/1", b"1")
        assert len(await take(watch, 1)) == 1
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(watch.__anext__(), 2)
    seen = [e async for e in watch]
    assert seen == []


async def test_watch_from_compacted_revision_raises(meta: MetaStore) -> None:
    first = await meta.put("h/1", b"1")
    await meta.put("h/2", b"2")
    if isinstance(meta, SqliteMetaStore):
        path = meta.path
        await meta.close()
        meta = open_meta_store(f"sqlite:///{path}")
    else:
        await meta.compact(await meta.revision())  # type: ignore[attr-defined]
    try:
        with pytest.raises(WatchCompacted) as info:
            async with meta.watch("h/", start_revision=first) as watch:
                await asyncio.wait_for(watch.__anext__(), 5)
        assert info.value.compact_revision > first
        # resuming from the reported revision works
        async with meta.watch("h/", start_revision=info.value.compact_revision) as watch:
            rev = await meta.put("h/3", b"3")
            events = await take(watch, 1)
            assert events[-1].revision <= rev
    finally:
        await meta.close()


# --- lifecycle ---------------------------------------------------------------------------------


async def test_closed_store_refuses_calls(meta: MetaStore) -> None:
    await meta.put("k", b"v")
    await meta.close()
    with pytest.raises(StorageError):
        await meta.get("k")
    await meta.close()  # idempotent


async def test_sqlite_persists_across_reopen(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/sub/meta.db"
    store = open_meta_store(uri)
    r1 = await store.put("p/a", b"1")
    r2 = await store.put("p/a", b"2")
    await store.txn([], [Put("p/b", b"b"), Put("p/c", b"c")])
    await store.delete("p/c")
    lease = await store.grant_lease(60)
    r3 = await store.put("p/leased", b"l", lease=lease.id)
    await store.close()

    store = open_meta_store(uri)
    try:
        assert await store.revision() == r3 + 1  # reopening deleted the leased key
        a = await store.get("p/a")
        assert a is not None and (a.value, a.version, a.create_revision, a.mod_revision) == (
            b"2", 2, r1, r2,
        )  # fmt: skip
        assert [kv.key for kv in await store.range("p/")] == ["p/a", "p/b"]
        assert await store.put("p/d", b"d") == r3 + 2
        assert await store.cas("p/a", b"3", expected_version=2)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "nonsense",
        "redis://localhost:6379",
        "memory://named",
        "sqlite://",
        "sqlite://host/x.db",
        "etcd://",
        "etcd://host:notaport/p",
        "etcd://host:2379/p?timeout=-1",
        "etcd://host:2379/p?colour=blue",
    ],
)
def test_bad_uris_are_invalid_arguments(uri: str) -> None:
    with pytest.raises(InvalidArgument, match=r"memory://|sqlite|etcd"):
        open_meta_store(uri)
