"""The timestamp oracle on every MetaStore backend: memory://, sqlite:// and a real etcd.

A new oracle on a reopened store is a restarted coordinator; one on a second store while the
first runs is a competing coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from meta_handles import Stores

from cluster.coordinator.errors import TsoFenced
from cluster.coordinator.tso import TimestampOracle, physical_ms
from woodpecker.clock import ManualClock, RealClock

pytestmark = pytest.mark.contract

BACKENDS = ["memory", "sqlite", "etcd"]


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest, meta_uri: Callable[[str], str]
) -> AsyncIterator[Stores]:
    uri = meta_uri(request.param)
    result = Stores(request.param, uri)
    yield result
    for store in result.opened:
        await store.close()


async def test_increasing_across_close_and_crash_restarts(
    stores: Stores,
) -> None:
    clock = ManualClock()
    issued: list[int] = []
    first = TimestampOracle(await stores.reopen(), clock, window_ms=2000)
    await first.start()
    issued += [await first.allocate() for _ in range(5)]
    await first.close()
    await clock.advance(-30)  # the clock goes back across the restart
    crashed = TimestampOracle(await stores.reopen(), clock, window_ms=2000)
    await crashed.start()
    issued += [await crashed.allocate(4) for _ in range(5)]
    assert crashed._renewer is not None
    crashed._renewer.cancel()  # dies without close()
    third = TimestampOracle(await stores.reopen(), clock, window_ms=2000)
    await third.start()
    issued += [await third.allocate() for _ in range(5)]
    await third.close()
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    assert physical_ms(issued[10]) > physical_ms(issued[9])  # above the crashed one's window


async def test_real_time_renewal_keeps_the_mark_ahead(stores: Stores) -> None:
    meta = await stores.reopen()
    async with TimestampOracle(meta, RealClock(), window_ms=150) as tso:
        last = 0
        deadline = asyncio.get_running_loop().time() + 0.6
        while asyncio.get_running_loop().time() < deadline:
            ts = await tso.allocate()
            assert ts > last
            last = ts
            assert physical_ms(ts) <= tso.high_water_ms
            await asyncio.sleep(0.01)
    async with TimestampOracle(await stores.reopen(), RealClock(), window_ms=150) as again:
        assert await again.allocate() > last


async def test_a_second_oracle_fences_the_first(stores: Stores) -> None:
    clock = ManualClock()
    first = TimestampOracle(await stores.reopen(), clock, window_ms=900, owner="first")
    await first.start()
    before = await first.allocate()
    async with TimestampOracle(
        await stores.concurrent(), clock, window_ms=900, owner="second"
    ) as second:
        assert await second.allocate() > before
        clock._now += 5  # past first's window: its next allocation must renew, and fails
        with pytest.raises(TsoFenced, match="second"):
            await first.allocate()
        await first.close()
