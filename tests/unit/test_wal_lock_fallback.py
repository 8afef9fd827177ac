"""Stores without conditional writes: the probe detects it and writers hold a lease lock."""

from __future__ import annotations

import asyncio

import pytest
from store_fakes import IgnoresConditions

from woodpecker import LogStore, MessageId, Unavailable, WalConfig, WriterFenced, WriterState
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore

CFG = WalConfig(max_interval=0.001, lock_ttl=1.0)


async def test_probe_detects_missing_conditional_writes_and_records_it() -> None:
    objects, meta = IgnoresConditions(MemoryObjectStore()), MemoryMetaStore()
    store = await LogStore.open(objects, meta, CFG)
    assert store.conditional_writes is False
    again = await LogStore.open(objects, meta, CFG)  # read back from meta, no second probe
    assert again.conditional_writes is False
    good = await LogStore.open(MemoryObjectStore(), meta, CFG)  # keyed by object store
    assert good.conditional_writes is True
    assert [o.key async for o in objects.list("_probe/")] == []


async def test_lock_serialises_writers_and_is_released_on_close() -> None:
    objects, meta = IgnoresConditions(MemoryObjectStore()), MemoryMetaStore()
    store = await LogStore.open(objects, meta, CFG)
    log = await store.create_log("locked")
    first = await log.open_writer()
    ids = [await first.append(b"a%d" % i) for i in range(3)]
    with pytest.raises(Unavailable, match="locked by another writer"):
        await asyncio.wait_for(log.open_writer(), timeout=10)
    await first.close()
    second = await log.open_writer()
    ids.append(await second.append(b"b"))
    await second.close()
    reader = await log.open_reader(MessageId.EARLIEST)
    got = [(await reader.read_next(timeout=1)).id for _ in range(4)]  # type: ignore[union-attr]
    assert got == ids
    await store.close()


async def test_lost_lease_fences_the_writer_and_a_crash_frees_the_lock() -> None:
    objects, meta = IgnoresConditions(MemoryObjectStore()), MemoryMetaStore()
    store = await LogStore.open(objects, meta, CFG)
    log = await store.create_log("lease")
    writer = await log.open_writer()
    await writer.append(b"x")
    await writer._lock_lease.revoke()  # the lease is lost (expired during a long pause)
    for _ in range(50):
        if writer.state is WriterState.FENCED:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(WriterFenced):
        await writer.append(b"late")
    successor = await log.open_writer()
    assert await successor.append(b"y") > MessageId(0, 0)
    await successor.close()
    await writer.close()
    await store.close()
