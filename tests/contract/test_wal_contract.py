"""The WAL's behaviour over every storage combination.

Combinations: memory+memory, file+sqlite, file+etcd (real etcd), SeaweedFS+etcd (real S3 and
real etcd). Each test gets a factory that opens further LogStore handles on the same storage, to
play a second process (another writer, a remote reader, an auditor).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from woodpecker import (
    LogExists,
    LogNotFound,
    LogStore,
    LogTruncated,
    MessageId,
    WalConfig,
    WriterClosed,
    WriterFenced,
    WriterState,
)
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.memory import MemoryMetaStore
from woodpecker.objectstore import MemoryObjectStore, Metered
from woodpecker.records import SegmentState

pytestmark = pytest.mark.contract

COMBOS = ["memory+memory", "file+sqlite", "file+etcd", "seaweedfs+etcd"]
FAST = WalConfig(max_interval=0.005, max_block_bytes=64 * 1024, max_bytes=64 * 1024)

Opener = Callable[..., Awaitable[LogStore]]


@pytest.fixture(params=COMBOS)
async def open_store(request, tmp_path, unique_prefix) -> AsyncIterator[Opener]:  # type: ignore[no-untyped-def]
    objects_kind, meta_kind = request.param.split("+")
    shared_objects = MemoryObjectStore() if objects_kind == "memory" else None
    # sqlite is the embedded single-process backend: "other processes" share its one handle
    shared_meta: MetaStore | None = None
    if meta_kind == "memory":
        shared_meta = MemoryMetaStore()
    elif meta_kind == "sqlite":
        shared_meta = open_meta_store(f"sqlite:///{tmp_path}/meta.db")
    if objects_kind == "seaweedfs":
        service = request.getfixturevalue("seaweedfs_service")
        object_uri = service.uri(unique_prefix)
    else:
        object_uri = f"file://{tmp_path}/objects"
    if meta_kind == "etcd":
        meta_uri = request.getfixturevalue("etcd_service").uri(unique_prefix)
    else:
        meta_uri = ""
    opened: list[LogStore] = []

    async def opener(config: WalConfig = FAST) -> LogStore:
        store = await LogStore.open(
            shared_objects if shared_objects is not None else object_uri,
            shared_meta if shared_meta is not None else meta_uri,
            config,
        )
        opened.append(store)
        return store

    yield opener
    for store in opened:
        with contextlib.suppress(Exception):
            await store.close()
    if shared_meta is not None:
        await shared_meta.close()


async def _read_all(log, start=MessageId.EARLIEST, wait: float = 0.3) -> list:  # type: ignore[no-untyped-def]
    reader = await log.open_reader(start)
    out = []
    while (msg := await reader.read_next(timeout=wait)) is not None:
        out.append(msg)
    await reader.close()
    return out


async def test_create_open_list_delete_logs(open_store: Opener) -> None:
    store = await open_store()
    await store.create_log("orders")
    await store.create_log("orders-eu")
    await store.create_log("users")
    with pytest.raises(LogExists):
        await store.create_log("orders")
    assert await store.list_logs() == ["orders", "orders-eu", "users"]
    assert await store.list_logs("orders") == ["orders", "orders-eu"]
    with pytest.raises(LogNotFound):
        await store.open_log("nope")
    log = await store.open_log("orders")
    writer = await log.open_writer()
    await writer.append(b"x")
    await writer.close()
    await store.delete_log("orders")
    assert await store.list_logs() == ["orders-eu", "users"]
    assert [o async for o in store.objects.list(f"{log.log_id}/")] == []
    again = await store.create_log("orders")
    assert again.log_id != log.log_id
    assert await _read_all(again) == []


async def test_append_then_read_back_in_order_with_properties(open_store: Opener) -> None:
    store = await open_store()
    log = await store.create_log("wal")
    writer = await log.open_writer()
    ids = [await writer.append(f"e{i}".encode(), {"i": str(i)}) for i in range(10)]
    futs = [writer.append_nowait(f"b{i}".encode()) for i in range(500)]
    ids += await asyncio.gather(*futs)
    assert ids == sorted(ids) and len(set(ids)) == 510
    assert ids[0] == MessageId(0, 0) and ids[-1] == MessageId(0, 509)
    msgs = await _read_all(log)
    assert [m.id for m in msgs] == ids
    assert msgs[3].payload == b"e3" and msgs[3].properties == {"i": "3"}
    assert msgs[-1].payload == b"b499" and msgs[-1].properties == {}
    assert await log.last_message_id() == ids[-1]
    await writer.close()


async def test_acks_arrive_in_append_order(open_store: Opener) -> None:
    store = await open_store(WalConfig(max_interval=0.002, max_block_bytes=2048, max_bytes=2048))
    writer = await (await store.create_log("order")).open_writer()
    acked: list[int] = []
    futs = []
    for i in range(400):
        fut = asyncio.ensure_future(writer.append_nowait(b"p" * (i % 300)))
        fut.add_done_callback(lambda _f, i=i: acked.append(i))
        futs.append(fut)
    await asyncio.gather(*futs)
    assert acked == list(range(400))
    await writer.close()


async def test_large_entries_and_block_cutting(open_store: Opener) -> None:
    cfg = WalConfig(max_interval=0.005, max_block_bytes=10_000, max_bytes=1 << 20)
    store = await open_store(cfg)
    log = await store.create_log("big")
    writer = await log.open_writer()
    payloads = [bytes([i]) * 3000 for i in range(20)] + [b"L" * 50_000]  # one above the block cap
    ids = await asyncio.gather(*(writer.append_nowait(p) for p in payloads))
    await writer.close()
    [seg] = await log.segments()
    assert seg.block_count >= 7  # 3 KB entries, 10 KB blocks: at most 3 per block
    assert [m.payload for m in await _read_all(log)] == payloads
    assert ids[-1] == MessageId(0, 20)


async def test_segments_roll_by_block_count_and_clean_close_completes(open_store: Opener) -> None:
    cfg = WalConfig(max_interval=0.001, max_block_bytes=1000, max_bytes=1000, segment_max_blocks=3)
    store = await open_store(cfg)
    log = await store.create_log("roll")
    writer = await log.open_writer()
    ids = [await writer.append(b"z" * 900) for _ in range(10)]
    await writer.close()
    assert writer.state is WriterState.CLOSED
    segs = await log.segments()
    assert [s.segment_id for s in segs] == [0, 1, 2, 3]
    assert all(s.state is SegmentState.COMPLETED for s in segs)
    assert [s.block_count for s in segs] == [3, 3, 3, 1]
    assert [m.id for m in await _read_all(log)] == ids
    with pytest.raises(WriterClosed):
        writer.append_nowait(b"after close")
    # a new writer continues in a new segment; ids keep growing
    writer2 = await log.open_writer()
    nxt = await writer2.append(b"next")
    assert nxt == MessageId(4, 0) and nxt > ids[-1]
    await writer2.close()


async def test_new_writer_fences_the_old_one(open_store: Opener) -> None:
    store_a = await open_store()
    store_b = await open_store()
    log_a = await store_a.create_log("fence")
    old = await log_a.open_writer()
    acked_old = [await old.append(f"old{i}".encode()) for i in range(5)]
    new = await (await store_b.open_log("fence")).open_writer()
    assert new.epoch == old.epoch + 1
    with pytest.raises(WriterFenced):
        await old.append(b"stale")
    assert old.state is WriterState.FENCED
    with pytest.raises(WriterFenced):
        old.append_nowait(b"stale again")
    acked_new = [await new.append(f"new{i}".encode()) for i in range(3)]
    await new.close()
    await old.close()  # closing a fenced writer touches nothing
    msgs = await _read_all(log_a)
    assert [m.id for m in msgs] == acked_old + acked_new
    assert b"stale" not in [m.payload for m in msgs]


async def test_crashed_writer_is_recovered_without_loss_or_duplicates(open_store: Opener) -> None:
    store_a = await open_store()
    log = await store_a.create_log("crash")
    crashed = await log.open_writer()
    acked = list(await asyncio.gather(*(crashed.append_nowait(b"a%d" % i) for i in range(50))))
    await crashed._stop_tasks()  # the process dies: no close, the segment stays Active
    assert (await log.segments())[-1].state is SegmentState.ACTIVE
    store_b = await open_store()
    log_b = await store_b.open_log("crash")
    successor = await log_b.open_writer()
    first_seg = (await log_b.segments())[0]
    assert first_seg.state is SegmentState.COMPLETED and first_seg.last_entry_id == 49
    acked.append(await successor.append(b"after"))
    await successor.close()
    msgs = await _read_all(log_b)
    assert [m.id for m in msgs] == acked
    assert len({m.payload for m in msgs}) == len(msgs)


async def test_readers_start_at_earliest_latest_and_an_id(open_store: Opener) -> None:
    store = await open_store()
    log = await store.create_log("pos")
    writer = await log.open_writer()
    ids = [await writer.append(b"%d" % i) for i in range(6)]
    from_mid = await _read_all(log, ids[3])
    assert [m.payload for m in from_mid] == [b"3", b"4", b"5"]
    latest = await log.open_reader(MessageId.LATEST)
    assert await latest.read_next(timeout=0.1) is None
    new_id = await writer.append(b"fresh")
    msg = await latest.read_next(timeout=5)
    assert msg is not None and msg.id == new_id and msg.payload == b"fresh"
    await writer.close()
    # positions inside completed segments go through the footer
    assert [m.payload for m in await _read_all(log, ids[4])] == [b"4", b"5", b"fresh"]


async def test_tailing_reader_wakes_for_local_and_remote_writers(open_store: Opener) -> None:
    store = await open_store()
    log = await store.create_log("tail")
    local_reader = await log.open_reader(MessageId.EARLIEST)
    remote_store = await open_store()
    remote_reader = await (await remote_store.open_log("tail")).open_reader(MessageId.EARLIEST)
    writer = await log.open_writer()

    async def consume(reader, n):  # type: ignore[no-untyped-def]
        return [(await reader.read_next(timeout=10)).payload for _ in range(n)]

    tasks = [asyncio.create_task(consume(r, 30)) for r in (local_reader, remote_reader)]
    await asyncio.sleep(0.05)
    for i in range(30):
        await writer.append(b"t%d" % i)
        if i % 10 == 0:
            await asyncio.sleep(0.02)
    expected = [b"t%d" % i for i in range(30)]
    assert await asyncio.gather(*tasks) == [expected, expected]
    await writer.close()


async def test_named_reader_checkpoints_and_resumes(open_store: Opener) -> None:
    store = await open_store()
    log = await store.create_log("named")
    writer = await log.open_writer()
    for i in range(10):
        await writer.append(b"%d" % i)
    reader = await log.open_reader(name="indexer")
    got = [(await reader.read_next(timeout=1)).payload for _ in range(4)]  # type: ignore[union-attr]
    assert got == [b"0", b"1", b"2", b"3"]
    await reader.checkpoint()
    await reader.close()
    other = await open_store()
    resumed = await (await other.open_log("named")).open_reader(name="indexer")
    assert (await resumed.read_next(timeout=1)).payload == b"4"  # type: ignore[union-attr]
    await writer.close()


async def test_truncation_and_auditor_respect_named_readers(open_store: Opener) -> None:
    cfg = WalConfig(max_interval=0.001, max_block_bytes=500, max_bytes=500, segment_max_blocks=2)
    store = await open_store(cfg)
    log = await store.create_log("gc")
    writer = await log.open_writer()
    ids = [await writer.append(b"x" * 400) for _ in range(12)]  # 6 segments of 2 blocks
    await writer.close()
    laggard = await log.open_reader(ids[5], name="laggard")  # needs segment 2 onwards
    await laggard.checkpoint()
    assert await log.truncate(ids[9]) == ids[9]
    assert await log.truncate(ids[1]) == ids[9]  # never moves backwards
    report = await store.audit_once()
    assert report["gc"]["deleted_segments"] == [0, 1]
    assert [s.segment_id for s in await log.segments()] == [2, 3, 4, 5]
    assert [m.id for m in await _read_all(log, ids[5])] == ids[5:]
    await laggard.checkpoint(ids[10])
    report = await store.audit_once()
    assert report["gc"]["deleted_segments"] == [2, 3]
    assert [m.id for m in await _read_all(log)] == ids[9:]  # EARLIEST honours the truncation point
    with pytest.raises(LogTruncated):
        await log.open_reader(ids[0])
    remaining = {int(o.key.split("/")[1]) async for o in store.objects.list(f"{log.log_id}/")}
    assert remaining == {4, 5}


async def test_auditor_compacts_small_blocks_and_readers_follow(open_store: Opener) -> None:
    cfg = WalConfig(
        max_interval=0.001,
        max_block_bytes=300,
        max_bytes=300,
        compact_min_blocks=4,
        merged_block_bytes=4000,
    )
    store = await open_store(cfg)
    log = await store.create_log("compact")
    writer = await log.open_writer()
    ids = [await writer.append(b"c%03d" % i + b"." * 200) for i in range(40)]
    await writer.close()
    before = await log.segments()
    assert before[0].block_count == 40
    reader = await log.open_reader(MessageId.EARLIEST)
    head = [await reader.read_next(timeout=1) for _ in range(5)]  # holds the old footer
    report = await store.audit_once()
    assert report["compact"]["compacted_segments"] == [0]
    [seg] = await log.segments()
    assert seg.state is SegmentState.SEALED and 1 < seg.merged_count < 5
    keys = sorted([o.key.split("/")[-1] async for o in store.objects.list(f"{log.log_id}/0/")])
    assert keys == ["footer.blk"] + [f"m_{n}.blk" for n in range(seg.merged_count)]
    rest = []
    while (msg := await reader.read_next(timeout=0.3)) is not None:
        rest.append(msg)
    assert [m.id for m in head + rest] == ids  # the reader crossed the compaction seamlessly
    assert [m.id for m in await _read_all(log, ids[17])] == ids[17:]


async def test_object_requests_per_entry_are_batched(open_store: Opener) -> None:
    store = await open_store(WalConfig(max_interval=0.05))
    meter: Metered = store.meter
    writer = await (await store.create_log("cost")).open_writer()
    before = meter.meter.snapshot()["put"].requests
    await asyncio.gather(*(writer.append_nowait(b"v" * 1000) for _ in range(1000)))
    puts = meter.meter.snapshot()["put"].requests - before
    assert puts <= 3, f"1000 entries of 1 KB took {puts} PUTs (group commit should batch them)"
    await writer.close()
