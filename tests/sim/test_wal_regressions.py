"""Deterministic reproductions of the WAL bugs the seeded simulation found (``-m sim``).

Each test builds the one interleaving a seed of ``test_wal_sim.py`` hit by chance.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from sim_support import IgnoresConditions, SimMeta

from woodpecker.clock import ManualClock
from woodpecker.config import KiB, WalConfig
from woodpecker.errors import Unavailable, WriterClosed, WriterFenced
from woodpecker.logstore import LogStore
from woodpecker.message import MessageId
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore.memory import MemoryObjectStore
from woodpecker.objectstore.wrappers import FaultConfig, Faulty
from woodpecker.records import SegmentState, segments_prefix
from woodpecker.segments import recover_segment

pytestmark = pytest.mark.sim

T = TypeVar("T")


async def drive(clock: ManualClock, coro: Coroutine[Any, Any, T], limit: float = 30.0) -> T:
    task = asyncio.ensure_future(coro)
    waited = 0.0
    while not task.done():
        await clock.advance(0.001)
        waited += 0.001
        assert waited < limit, f"{coro!r} did not finish within {limit}s of virtual time"
    return task.result()


async def open_store(
    clock: ManualClock, *, latency: float = 0.0, meta: Any = None, **config: Any
) -> LogStore:
    objects = Faulty(
        MemoryObjectStore(clock=clock), config=FaultConfig(latency=(latency, latency)), clock=clock
    )
    cfg = WalConfig(max_interval=0.001, **config)
    return await LogStore.open(objects, meta or MemoryMetaStore(clock=clock), cfg, clock=clock)


async def test_manual_clock_sleep_below_float_resolution_still_advances() -> None:
    """seed=1 hung: near now=1.7e9 a float step is ~2.4e-7 s; a writer sleeping "the rest of its
    interval" (1e-7 s) got deadline == now, so ``advance`` woke it forever at the same time."""
    clock = ManualClock()
    target = 1e-7  # below the float resolution of now()

    async def until_target() -> None:
        while clock.monotonic() < target:
            await clock.sleep(target - clock.monotonic())

    task = asyncio.ensure_future(until_target())
    await asyncio.wait_for(clock.advance(0.001), timeout=5)  # real seconds: a hang fails
    assert task.done()
    await task


async def test_cancelled_upload_fails_the_writer_and_later_blocks_are_not_acked() -> None:
    """seed=1 (crash simulation): a cancelled block upload failed only its own entries; the
    acker went on and acknowledged the next block across the hole (lost on recovery)."""
    clock = ManualClock()
    store = await drive(clock, open_store(clock, latency=0.01, max_block_bytes=1 * KiB))
    log = await drive(clock, store.create_log("l"))
    writer = await drive(clock, log.open_writer())
    first = writer.append_nowait(b"a" * 900)
    second = writer.append_nowait(b"b" * 900)  # its own block: two uploads in flight
    while writer._seg is None or len(writer._seg.uploads) < 2:
        await clock.advance(0.001)
    writer._seg.uploads[0].cancel()
    await drive(clock, asyncio.wait({first, second}))  # type: ignore[arg-type]
    assert isinstance(first.exception(), WriterClosed)  # type: ignore[attr-defined]
    assert second.exception() is not None, "block 1 was acknowledged across the lost block 0"  # type: ignore[attr-defined]
    assert writer.state.value == "failed"


async def test_named_reader_resumes_at_the_end_of_a_truncated_segment() -> None:
    """seed=1: a named reader checkpointed at (s, n) just past the last entry of segment s; the
    auditor deleted s (its last entry was below the checkpoint), and reopening the reader by name
    failed with LogTruncated."""
    clock = ManualClock()
    store = await drive(clock, open_store(clock, segment_max_blocks=1))
    log = await drive(clock, store.create_log("l"))
    writer = await drive(clock, log.open_writer())
    ids = [await drive(clock, writer.append(b"x%d" % i)) for i in range(3)]  # segments 0, 1, 2
    assert [m.segment_id for m in ids] == [0, 1, 2]
    reader = await drive(clock, log.open_reader(MessageId.EARLIEST, name="r"))
    msg = await drive(clock, reader.read_next())
    assert msg is not None and msg.id == MessageId(0, 0)
    await drive(clock, reader.checkpoint())  # (0, 1): past the end of segment 0
    await reader.close()
    await drive(clock, log.truncate(ids[-1]))
    await drive(clock, store.audit_once())
    resumed = await drive(clock, log.open_reader(name="r"))
    msg = await drive(clock, resumed.read_next())
    assert msg is not None and msg.id == MessageId(1, 0)
    await drive(clock, writer.close())
    await drive(clock, store.close())


async def test_recovery_tolerates_a_segment_completed_and_compacted_meanwhile() -> None:
    """seed=53: open_writer listed segment 0 as Active; before it scanned the segment, the old
    writer completed it and the auditor compacted it (numbered blocks deleted), and open_writer
    failed with ObjectNotFound (or WriterFenced on the merged footer)."""
    clock = ManualClock()
    store = await drive(
        clock, open_store(clock, compact_min_blocks=2, compact_small_block_bytes=1 << 20)
    )
    log = await drive(clock, store.create_log("l"))
    writer = await drive(clock, log.open_writer())
    for i in range(3):
        await drive(clock, writer.append(b"x%d" % i))  # three blocks in segment 0
    stale = (await drive(clock, store.catalog.segments("l")))[0]
    assert stale.record.state is SegmentState.ACTIVE
    await drive(clock, writer.close())
    report = await drive(clock, store.audit_once())
    assert report["l"]["compacted_segments"] == [0]
    done = await drive(
        clock, recover_segment(store.objects, store.catalog, "l", log.log_id, stale, epoch=9)
    )
    assert done.record.state is SegmentState.SEALED
    await drive(clock, store.close())


class _SlowSegmentListing(SimMeta):
    """Runs ``during_listing`` between listing the segments and returning the listing."""

    during_listing: Any = None

    async def range(self, prefix: str, *, limit: int | None = None) -> Any:
        result = await super().range(prefix, limit=limit)
        if prefix == segments_prefix("l") and self.during_listing is not None:
            hook, self.during_listing = self.during_listing, None
            await hook()
        return result


@pytest.mark.parametrize("start", [MessageId.EARLIEST, MessageId.LATEST])
async def test_reader_opened_while_the_first_segment_is_created(start: MessageId) -> None:
    """seed=104 (lease-lock scenario): a reader listed no segments, the writer then created
    segment 0, and the reader read next_segment_id (now 1): it started at (1, 0) and skipped
    everything written to segment 0."""
    clock = ManualClock()
    meta = _SlowSegmentListing(MemoryMetaStore(clock=clock), clock, random.Random(0), latency=0.0)
    store = await drive(clock, open_store(clock, meta=meta))
    log = await drive(clock, store.create_log("l"))
    writer = await drive(clock, log.open_writer())
    meta.during_listing = lambda: writer.append(b"first")  # creates segment 0
    reader = await drive(clock, log.open_reader(start))
    assert reader.position == MessageId(0, 0)
    msg = await drive(clock, reader.read_next())
    assert msg is not None and msg.payload == b"first"
    await drive(clock, writer.close())
    await drive(clock, store.close())


async def test_close_of_a_fenced_writer_settles_the_batch_its_flusher_held() -> None:
    """seed=941: a fenced writer's flusher was waiting (for an upload slot) with a cut batch
    when the application closed the writer; close() cancelled the flusher and those appends
    never resolved (``await writer.append()`` would hang forever)."""
    clock = ManualClock()
    store = await drive(
        clock, open_store(clock, latency=0.01, max_block_bytes=1 * KiB, max_inflight_blocks=1)
    )
    log = await drive(clock, store.create_log("l"))
    writer = await drive(clock, log.open_writer())
    futures = [writer.append_nowait(b"p" * 900) for _ in range(3)]  # three blocks, one slot
    while writer._seg is None or not writer._seg.uploads:
        await clock.advance(0.001)
    writer._fail(WriterFenced("a newer writer took over (test)"))  # as the acker would
    await drive(clock, writer.close())
    await drive(clock, asyncio.sleep(0))
    assert all(f.done() for f in futures), "close() left appends pending forever"  # type: ignore[attr-defined]
    await drive(clock, store.close())


class _HookOnList:
    """Forwards to a memory store; runs ``on_list`` once, after a listing of ``prefix``."""

    def __init__(self, inner: MemoryObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.on_list: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_page(self, prefix: str = "", **kw: Any) -> Any:
        page = await self.inner.list_page(prefix, **kw)
        if prefix == self.prefix and self.on_list is not None:
            hook, self.on_list = self.on_list, None
            await hook()
        return page

    def list(self, prefix: str = "", **kw: Any) -> Any:
        from woodpecker.objectstore.base import iterate_pages

        return iterate_pages(self, prefix, kw.get("start_after"), kw.get("page_size", 1000))


async def test_reader_locating_a_block_while_the_segment_is_compacted() -> None:
    """seed=991: a reader opened at an id inside an Active segment listed its blocks; the
    segment was completed and compacted before it read their trailers, and read_next raised
    ObjectNotFound instead of reading the segment through its new footer."""
    clock = ManualClock()
    objects = _HookOnList(MemoryObjectStore(clock=clock), "1/0/")
    cfg = WalConfig(max_interval=0.001, compact_min_blocks=2, compact_small_block_bytes=1 << 20)
    store = await drive(
        clock, LogStore.open(objects, MemoryMetaStore(clock=clock), cfg, clock=clock)
    )
    log = await drive(clock, store.create_log("l"))
    assert log.log_id == 1
    writer = await drive(clock, log.open_writer())
    for i in range(3):
        await drive(clock, writer.append(b"x%d" % i))  # blocks 0, 1, 2 of segment 0
    reader = await drive(clock, log.open_reader(MessageId(0, 2)))

    async def complete_and_compact() -> None:
        await writer.close()
        assert (await store.audit_once())["l"]["compacted_segments"] == [0]

    objects.on_list = complete_and_compact
    msg = await drive(clock, reader.read_next())
    assert msg is not None and msg.id == MessageId(0, 2) and msg.payload == b"x2"
    await drive(clock, store.close())


async def test_failed_open_releases_the_fallback_lock() -> None:
    """seed=558 (lease-lock scenario): open_writer took the lock, then its recovery failed
    (Unavailable); the lease and its keepalive lived on, so no writer could ever open again."""
    clock = ManualClock()
    objects = Faulty(IgnoresConditions(MemoryObjectStore(clock=clock)), clock=clock)
    cfg = WalConfig(max_interval=0.001, lock_ttl=0.3, put_attempts=1)
    store = await drive(
        clock, LogStore.open(objects, MemoryMetaStore(clock=clock), cfg, clock=clock)
    )
    assert not store.conditional_writes
    log = await drive(clock, store.create_log("l"))
    first = await drive(clock, log.open_writer())
    await drive(clock, first.append(b"x"))  # segment 0 stays Active
    for task in (first._flusher, first._acker, first._lease_watch):
        task.cancel()  # the process dies; its lease expires after lock_ttl
    first._lock_lease._keepalive_task.cancel()
    objects.fail_next("list", Unavailable("injected: recovery cannot list the segment"))
    with pytest.raises(Unavailable):
        await drive(clock, log.open_writer())
    writer = await drive(clock, log.open_writer(), limit=0.5)  # not after 3 * lock_ttl
    assert (await drive(clock, writer.append(b"y"))).segment_id == 1
    await drive(clock, writer.close())
    await drive(clock, store.close())
