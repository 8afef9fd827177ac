"""Unique int64 ids from a counter key in the MetaStore, reserved by CAS in blocks."""

from __future__ import annotations

import asyncio

from cluster.coordinator.errors import CatalogConflict
from woodpecker.meta.base import MetaStore


class IdAllocator:
    """Hands out ids unique across every allocator on the same key, across restarts, never
    reused. Each allocator reserves ``batch`` ids at a time by a CAS on ``key`` (a decimal
    counter: the last id reserved); ids of a block not used before a restart are skipped.

    ``allocate`` takes from the front of the block, ``allocate(from_end=True)`` from its back,
    so two kinds of ids interleaved (collections and their partitions) each stay consecutive."""

    def __init__(self, meta: MetaStore, key: str, *, batch: int = 64, max_attempts: int = 200):
        if batch < 1:
            raise ValueError("batch must be positive")
        self.meta = meta
        self.key = key
        self.batch = batch
        self.max_attempts = max_attempts
        self._next = 0  # next free id at the front of the block
        self._end = 0  # one past the last free id at the back of the block
        self._lock = asyncio.Lock()

    async def allocate(self, count: int = 1, *, from_end: bool = False) -> int:
        """Reserve ``count`` consecutive ids; returns the first (ids start at 1)."""
        if count < 1:
            raise ValueError("count must be positive")
        async with self._lock:
            if self._end - self._next < count:
                await self._reserve(max(count, self.batch))
            if from_end:
                self._end -= count
                return self._end
            first = self._next
            self._next += count
            return first

    async def _reserve(self, size: int) -> None:
        for _ in range(self.max_attempts):
            kv = await self.meta.get(self.key)
            current = int(kv.value) if kv else 0
            if await self.meta.cas(
                self.key, str(current + size).encode(), expected_version=kv.version if kv else 0
            ):
                self._next, self._end = current + 1, current + size + 1
                return
        raise CatalogConflict(f"could not reserve ids from {self.key!r}: too much contention")
