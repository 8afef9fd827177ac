"""The injectable clock and id generators."""

from __future__ import annotations

import asyncio

from woodpecker.clock import ManualClock, RandomIds, RealClock, SequentialIds


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("c", 3), ("a", 1), ("b", 2)]]
    await asyncio.sleep(0)
    await clock.advance(1.5)
    assert woke == [("a", 101.0)]
    await clock.advance(10)
    assert woke == [("a", 101.0), ("b", 102.0), ("c", 103.0)]
    assert clock.now() == 111.5 and clock.monotonic() == 11.5
    await asyncio.gather(*tasks)


async def test_manual_clock_sleep_chains_advance_within_one_call() -> None:
    clock = ManualClock()
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            await clock.sleep(1)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await clock.advance(5)
    assert ticks == [1, 2, 3, 4, 5]
    await task


async def test_cancelled_sleeper_is_dropped() -> None:
    clock = ManualClock()
    task = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert clock.next_deadline is None
    await clock.advance(10)


async def test_real_clock_moves() -> None:
    clock = RealClock()
    before = clock.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic() > before
    assert clock.now() > 1.7e9


def test_id_generators() -> None:
    seq = SequentialIds(10)
    assert [seq.next_id() for _ in range(3)] == [10, 11, 12]
    a, b = RandomIds(3), RandomIds(3)
    ids = [a.next_id() for _ in range(100)]
    assert ids == [b.next_id() for _ in range(100)]
    assert len(set(ids)) == 100 and all(0 < i < 2**63 for i in ids)
