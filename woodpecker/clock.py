"""Injectable time and id sources, so logic can run under virtual time and a fixed seed.

Logic modules take a :class:`Clock` (and an id generator) instead of calling ``time.time()``,
``asyncio.sleep`` or ``random`` directly. :class:`RealClock` is the production clock;
:class:`ManualClock` only moves when a test calls :meth:`ManualClock.advance`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from typing import Protocol


class Clock(Protocol):
    """A source of time. ``now`` is wall-clock seconds since the epoch; ``monotonic`` never goes
    backwards; ``sleep`` suspends the caller for ``seconds`` of this clock's time."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The system clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """Virtual time that advances only through :meth:`advance` (or :meth:`run_until_idle`).

    Sleepers wake in deadline order when time passes their deadline; ``sleep(0)`` yields once.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._start = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A sleep shorter than the float resolution of ``now`` (~2e-7 s near 1.7e9) would get
        # a deadline equal to now: time would never move and a caller that sleeps "the rest
        # of an interval" in a loop would spin inside ``advance`` forever. Round up one step.
        deadline = max(self._now + seconds, math.nextafter(self._now, math.inf))
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    @property
    def next_deadline(self) -> float | None:
        """The earliest pending sleeper's wake-up time, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline passes, in order,
        and letting each woken task run before time moves further."""
        target = self._now + seconds
        while True:
            deadline = self.next_deadline
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):  # let the woken task and what it triggers run
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)


class IdGenerator(Protocol):
    """Produces unique integer ids."""

    def next_id(self) -> int: ...


class SequentialIds:
    """1, 2, 3, ... (or from ``start``): deterministic ids for tests and single-writer logic."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def next_id(self) -> int:
        return next(self._counter)


class RandomIds:
    """Random positive 63-bit ids from a seeded generator (``seed=None`` draws from the OS)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def next_id(self) -> int:
        return self._rng.getrandbits(63) or 1
