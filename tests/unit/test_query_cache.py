"""The query node's SSD cache (cluster/query/cache.py): hits, misses, single downloads, LRU
eviction, pinning, restart, ranges."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cluster.query.cache import LocalCache
from woodpecker.errors import InvalidArgument, ObjectNotFound, Unavailable
from woodpecker.objectstore import FaultConfig, Faulty, MemoryObjectStore, Metered


def blob(key: str, size: int) -> bytes:
    seed = key.encode() * (size // max(1, len(key)) + 1)
    return bytes((b + i) % 256 for i, b in enumerate(seed[:size]))


async def make(
    tmp_path: Path, objects: dict[str, int], *, latency: float = 0.0, **kwargs: int
) -> tuple[LocalCache, Metered, MemoryObjectStore]:
    inner = MemoryObjectStore()
    for key, size in objects.items():
        await inner.put(key, blob(key, size))
    store = Metered(Faulty(inner, config=FaultConfig(latency=(latency, latency))))
    kwargs.setdefault("max_bytes", 10_000)
    cache = await LocalCache.open(store, tmp_path / "cache", **kwargs)
    return cache, store, inner


def gets(store: Metered) -> int:
    return store.meter.snapshot()["get"].requests


async def test_miss_then_hit(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"a/x": 300})
    path = await cache.get_file("a/x")
    assert path.read_bytes() == blob("a/x", 300)
    assert await cache.get("a/x") == blob("a/x", 300)
    m = cache.metrics
    assert (m.misses, m.hits, m.bytes_downloaded, m.evictions) == (1, 1, 300, 0)
    assert gets(store) == 1 and cache.contains("a/x") and cache.used_bytes == 300


async def test_concurrent_requests_download_once(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"k": 500}, latency=0.05)
    paths = await asyncio.gather(*(cache.get_file("k") for _ in range(10)))
    assert len(set(paths)) == 1 and gets(store) == 1 and cache.metrics.misses == 1


async def test_lru_eviction(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"a": 100, "b": 100, "c": 100}, max_bytes=250)
    await cache.get_file("a")
    await cache.get_file("b")
    await cache.get_file("a")  # b is now the least recently used
    await cache.get_file("c")
    assert cache.contains("a") and cache.contains("c") and not cache.contains("b")
    assert (cache.metrics.evictions, cache.metrics.bytes_evicted) == (1, 100)
    assert cache.used_bytes == 200 <= cache.max_bytes


async def test_leased_files_are_never_evicted(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"a": 100, "b": 100, "c": 100}, max_bytes=150)
    async with cache.lease("a") as path:
        await cache.get_file("b")
        await cache.get_file("c")
        assert path.exists() and cache.contains("a")
        assert cache.used_bytes <= 200  # over budget only by what is in use
    # Released: the next admission may evict it.
    await cache.get_file("b")
    assert cache.used_bytes <= 150


async def test_oversized_object_is_admitted(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"big": 500, "a": 10}, max_bytes=100)
    await cache.get_file("a")
    async with cache.lease("big") as path:
        assert path.stat().st_size == 500 and not cache.contains("a")
    await cache.get_file("a")
    assert not cache.contains("big")


async def test_restart_rebuilds_index_and_drops_partials(tmp_path: Path) -> None:
    cache, _, inner = await make(tmp_path, {"a": 100, "b": 100})
    old = await cache.get_file("a")
    await cache.get_file("b")
    os.utime(old, (1, 1))  # "a" is the least recently used (order survives by mtime)
    partial = tmp_path / "cache" / "tmp" / "deadbeef.1234.part"
    partial.write_bytes(b"half")
    store = Metered(inner)
    again = await LocalCache.open(store, tmp_path / "cache", max_bytes=150)
    assert not partial.exists()
    assert again.contains("b") and not again.contains("a")  # over budget: oldest evicted
    assert await again.get("b") == blob("b", 100)
    assert gets(store) == 0 and again.metrics.hits == 1


async def test_large_objects_download_in_parallel_parts(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"big": 5000}, part_bytes=1024)
    assert (await cache.get_file("big")).read_bytes() == blob("big", 5000)
    assert gets(store) == 5 and cache.metrics.bytes_downloaded == 5000


async def test_ranges_use_blocks(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"f": 1000}, block_bytes=100)
    data = blob("f", 1000)
    assert await cache.get_range("f", 150, 200) == data[150:350]
    assert gets(store) == 1 and cache.metrics.misses == 3  # blocks 1..3, one GET
    assert await cache.get_range("f", 120, 50) == data[120:170]
    assert gets(store) == 1 and cache.metrics.hits == 1
    assert await cache.get_range("f", 950, 200) == data[950:]  # clipped at the end
    assert await cache.get_range("f", 2000, 10) == b""
    assert await cache.get_range("f", 5, 0) == b""
    with pytest.raises(InvalidArgument):
        await cache.get_range("f", -1, 5)


async def test_ranges_from_a_whole_cached_object(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"f": 1000}, block_bytes=100)
    await cache.get_range("f", 0, 100)
    blocks = cache.entries
    await cache.get_file("f")
    assert cache.entries == blocks  # the unused block was replaced by the whole object
    before = gets(store)
    assert await cache.get_range("f", 10, 500) == blob("f", 1000)[10:510]
    assert gets(store) == before


async def test_concurrent_overlapping_ranges(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"f": 2000}, block_bytes=100, latency=0.02)
    data = blob("f", 2000)
    spans = [(0, 500), (250, 500), (400, 1000), (0, 2000)]
    got = await asyncio.gather(*(cache.get_range("f", o, n) for o, n in spans))
    assert got == [data[o : o + n] for o, n in spans]
    assert cache.metrics.misses == 20  # every block downloaded once


async def test_warm(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"a": 10, "b": 20, "c": 30})
    await cache.warm(["a", "b", "c", "a"])
    assert all(cache.contains(k) for k in "abc") and gets(store) == 3


async def test_failures_are_not_cached(tmp_path: Path) -> None:
    cache, store, inner = await make(tmp_path, {})
    with pytest.raises(ObjectNotFound):
        await cache.get_file("late")
    await inner.put("late", b"here")
    assert await cache.get("late") == b"here"
    faulty = store.inner
    assert isinstance(faulty, Faulty)
    await inner.put("flaky", b"x" * 10)
    faulty.fail_next("get", "unavailable")
    with pytest.raises(Unavailable):
        await cache.get_range("flaky", 0, 5)
    assert await cache.get_range("flaky", 0, 5) == b"xxxxx"
    assert not any((tmp_path / "cache" / "tmp").iterdir())


async def test_a_cancelled_waiter_does_not_cancel_the_download(tmp_path: Path) -> None:
    cache, store, _ = await make(tmp_path, {"k": 100}, latency=0.05)
    first = asyncio.create_task(cache.get_file("k"))
    second = asyncio.create_task(cache.get_file("k"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).read_bytes() == blob("k", 100)
    assert gets(store) == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cached_store_view_is_read_only(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"d/a": 100}, block_bytes=16)
    view = cache.view()
    assert await view.get("d/a", offset=10, length=5) == blob("d/a", 100)[10:15]
    assert await view.get("d/a", offset=90) == blob("d/a", 100)[90:]
    assert await view.get("d/a") == blob("d/a", 100)
    assert (await view.head("d/a")).size == 100
    assert [i.key async for i in view.list("d/")] == ["d/a"]
    with pytest.raises(InvalidArgument):
        await view.put("d/b", b"")
    with pytest.raises(InvalidArgument):
        await view.delete("d/a")


async def test_files_live_under_objects(tmp_path: Path) -> None:
    cache, _, _ = await make(tmp_path, {"a": 10})
    path = await cache.get_file("a")
    assert path.parent.parent == tmp_path / "cache" / "objects"
    assert path.read_bytes() == blob("a", 10)
