"""The timestamp oracle under virtual time (ManualClock) on the in-memory MetaStore."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cluster.coordinator.errors import TsoClosed, TsoFenced
from cluster.coordinator.tso import (
    LOGICAL_MASK,
    MAX_COUNT,
    TimestampOracle,
    compose,
    datetime_to_ts,
    logical,
    physical_ms,
    ts_to_datetime,
)
from woodpecker.clock import ManualClock
from woodpecker.errors import InvalidArgument, Unavailable
from woodpecker.meta import MemoryMetaStore, MetaStore

START = 1_700_000_000.0
START_MS = int(START * 1000)
WINDOW = 3000
KEY = "tso/high_water"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
async def meta(clock: ManualClock) -> AsyncIterator[MemoryMetaStore]:
    store = MemoryMetaStore(clock)
    yield store
    await store.close()


async def persisted(meta: MetaStore) -> int:
    kv = await meta.get(KEY)
    assert kv is not None
    return json.loads(kv.value)["high_water_ms"]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_compose_and_split() -> None:
    ts = compose(START_MS, 7)
    assert ts == START_MS << 18 | 7
    assert (physical_ms(ts), logical(ts)) == (START_MS, 7)
    assert ts_to_datetime(ts) == datetime.fromtimestamp(START, tz=UTC)
    assert datetime_to_ts(ts_to_datetime(ts), 7) == ts
    assert compose(1, LOGICAL_MASK) + 1 == compose(2, 0)
    with pytest.raises(ValueError):
        compose(1, LOGICAL_MASK + 1)
    with pytest.raises(ValueError):
        compose(-1, 0)


async def test_timestamps_increase_and_follow_the_clock(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        a, b = await tso.allocate(), await tso.allocate()
        assert b == a + 1 and physical_ms(a) == START_MS and logical(a) == 0
        first = await tso.allocate(10)
        assert first == b + 1 and tso.last == first + 9
        await clock.advance(0.005)
        c = await tso.allocate()
        assert (physical_ms(c), logical(c)) == (START_MS + 5, 0)


async def test_allocate_count_bounds(meta: MemoryMetaStore, clock: ManualClock) -> None:
    async with TimestampOracle(meta, clock) as tso:
        for bad in (0, -1, MAX_COUNT + 1):
            with pytest.raises(ValueError):
                await tso.allocate(bad)


async def test_clock_going_backwards_advances_logical(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        await clock.advance(1.0)
        a = await tso.allocate()
        await clock.advance(-0.5)  # the wall clock steps back 500 ms
        b = await tso.allocate()
        assert b == a + 1 and physical_ms(b) == physical_ms(a)
        await clock.advance(0.6)  # the clock passes the old physical part again
        c = await tso.allocate()
        assert c > b and physical_ms(c) == START_MS + 1100 and logical(c) == 0


async def test_logical_overflow_bumps_physical(meta: MemoryMetaStore, clock: ManualClock) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        a = await tso.allocate(MAX_COUNT - 1)  # logical 0 .. MASK-1
        b = await tso.allocate(2)  # does not fit: next millisecond, still consecutive values
        assert (physical_ms(a), logical(a)) == (START_MS, 0)
        assert (physical_ms(b), logical(b)) == (START_MS + 1, 0)
        c = await tso.allocate(MAX_COUNT - 3)  # logical 2 .. MASK-1
        assert (physical_ms(c), logical(c)) == (START_MS + 1, 2)
        d = await tso.allocate()  # logical == MASK
        e = await tso.allocate()  # overflow with the clock standing still
        assert logical(d) == LOGICAL_MASK and e == d + 1 and physical_ms(e) == START_MS + 2


async def test_many_concurrent_allocations_are_unique(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        results = await asyncio.gather(*(tso.allocate(3) for _ in range(200)))
        spans = sorted(t for first in results for t in range(first, first + 3))
        assert len(set(spans)) == 600


async def test_window_is_persisted_ahead_and_renewed(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        assert await persisted(meta) == tso.high_water_ms == START_MS + WINDOW
        await clock.advance(1.0)
        assert await persisted(meta) == START_MS + WINDOW  # 2/3 of the window left: no write
        await clock.advance(1.1)  # a third left: the background task renews
        await settle()
        assert await persisted(meta) == START_MS + 2000 + WINDOW  # renewed at its deadline
        for step in range(20):  # time marches on: the mark stays ahead of every issued ts
            await clock.advance(0.7)
            await settle()
            ts = await tso.allocate()
            assert physical_ms(ts) <= await persisted(meta), step
            assert await persisted(meta) - physical_ms(ts) >= WINDOW // 3


async def test_inline_renewal_when_the_clock_jumps(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        clock._now += 3600  # a jump past the window without waking the renewer
        ts = await tso.allocate()
        assert physical_ms(ts) == START_MS + 3_600_000
        assert await persisted(meta) == START_MS + 3_600_000 + WINDOW


async def test_overflow_beyond_the_window_renews_inline(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as tso:
        last = 0
        for _ in range(WINDOW + 10):  # one full ms of logical values per call, clock frozen
            last = await tso.allocate(MAX_COUNT)
        assert physical_ms(last) > START_MS + WINDOW
        assert physical_ms(last) <= await persisted(meta)


async def test_restart_after_close_never_goes_backwards(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    tso = TimestampOracle(meta, clock, window_ms=WINDOW)
    await tso.start()
    for _ in range(5):
        last = await tso.allocate()
    await tso.close()
    assert await persisted(meta) == START_MS  # lowered to what was issued
    await clock.advance(-10)  # and the clock went back 10 s across the restart
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as again:
        ts = await again.allocate()
        assert ts > last and physical_ms(ts) == START_MS + 1


async def test_restart_after_crash_starts_above_the_whole_window(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    crashed = TimestampOracle(meta, clock, window_ms=WINDOW)
    await crashed.start()
    issued = [await crashed.allocate() for _ in range(3)]
    assert crashed._renewer is not None
    crashed._renewer.cancel()  # the process dies: no close(), the window stays persisted
    await settle()
    async with TimestampOracle(meta, clock, window_ms=WINDOW) as again:
        ts = await again.allocate()
        assert ts > max(issued) and physical_ms(ts) == START_MS + WINDOW + 1


async def test_second_oracle_fences_the_first(meta: MemoryMetaStore, clock: ManualClock) -> None:
    first = TimestampOracle(meta, clock, window_ms=WINDOW, owner="first")
    await first.start()
    a = await first.allocate()
    async with TimestampOracle(meta, clock, window_ms=WINDOW, owner="second") as second:
        b = await second.allocate()
        assert b > a and physical_ms(b) > first.high_water_ms
        # first learns at its next renewal, at the latest when a third of its window is left
        await clock.advance(2.5)
        await settle()
        with pytest.raises(TsoFenced, match="second"):
            await first.allocate()
        assert await second.allocate() > b
    await first.close()


async def test_concurrent_starts_one_loses(meta: MemoryMetaStore, clock: ManualClock) -> None:
    class SlowGet:
        """Both oracles read the key before either writes it."""

        def __init__(self, inner: MetaStore, barrier: asyncio.Barrier) -> None:
            self.inner, self.barrier, self.first = inner, barrier, True

        async def get(self, key: str):
            kv = await self.inner.get(key)
            if self.first:
                self.first = False
                await self.barrier.wait()
            return kv

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    barrier = asyncio.Barrier(2)
    oracles = [TimestampOracle(SlowGet(meta, barrier), clock, owner=str(i)) for i in range(2)]
    results = await asyncio.gather(*(o.start() for o in oracles), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "TsoFenced"]
    for o in oracles:
        await o.close()


class FlakyCas:
    """A MetaStore proxy whose next ``fail`` CAS calls raise Unavailable; with ``apply`` the
    write lands before the error (an outcome-unknown timeout)."""

    def __init__(self, inner: MetaStore) -> None:
        self.inner = inner
        self.fail = 0
        self.apply = False

    async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0) -> bool:
        if self.fail:
            self.fail -= 1
            if self.apply:
                await self.inner.cas(key, value, expected_version=expected_version)
            raise Unavailable("injected", outcome_unknown=self.apply)
        return await self.inner.cas(key, value, expected_version=expected_version, lease=lease)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def test_lost_reply_of_our_own_write_is_adopted(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    flaky = FlakyCas(meta)
    async with TimestampOracle(flaky, clock, window_ms=WINDOW) as tso:  # type: ignore[arg-type]
        flaky.fail, flaky.apply = 1, True
        clock._now += 10  # beyond the window: allocate must renew inline
        with pytest.raises(Unavailable):
            await tso.allocate()
        ts = await tso.allocate()  # the landed write is recognised as ours, not a takeover
        assert physical_ms(ts) == START_MS + 10_000
        assert await persisted(meta) >= physical_ms(ts)


async def test_background_renewal_retries_unavailable(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    flaky = FlakyCas(meta)
    async with TimestampOracle(flaky, clock, window_ms=WINDOW) as tso:  # type: ignore[arg-type]
        flaky.fail = 3
        for _ in range(12):
            await clock.advance(0.25)
            await settle()
        assert flaky.fail == 0
        assert await persisted(meta) > START_MS + WINDOW
        assert physical_ms(await tso.allocate()) == START_MS + 3000


async def test_closed_or_unstarted_oracle_refuses(
    meta: MemoryMetaStore, clock: ManualClock
) -> None:
    tso = TimestampOracle(meta, clock)
    with pytest.raises(TsoClosed):
        await tso.allocate()
    await tso.start()
    await tso.close()
    with pytest.raises(TsoClosed):
        await tso.allocate()
    await tso.close()  # idempotent


async def test_crashed_renewal_stops_the_oracle_loudly(
    meta: MemoryMetaStore, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FlakyCas):
        async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0):
            if self.fail:
                raise InvalidArgument("injected non-retryable failure")
            return await self.inner.cas(key, value, expected_version=expected_version)

    broken = Broken(meta)
    tso = TimestampOracle(broken, clock, window_ms=WINDOW)  # type: ignore[arg-type]
    await tso.start()
    broken.fail = 1
    await clock.advance(2.5)  # the renewal runs and crashes
    await settle()
    assert "renewal task crashed" in caplog.text
    with pytest.raises(TsoClosed, match="renewal crashed") as err:
        await tso.allocate()
    assert isinstance(err.value.__cause__, InvalidArgument)
    await tso.close()  # does not re-raise the crash
