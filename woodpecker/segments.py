"""Segment-level object I/O shared by the writer, recovery, readers and the auditor: scanning the
numbered blocks of a segment, fencing it, and completing it (footer, then meta CAS).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from woodpecker.catalog import Catalog, Versioned
from woodpecker.codec import (
    BLOCK_FOOTER_SIZE,
    HEADER_SIZE,
    BlockKind,
    IndexItem,
    SegmentFooter,
    decode_block_header,
    decode_footer,
    encode_fence,
    encode_footer,
    index_items_contiguous,
)
from woodpecker.errors import CorruptBlock, ObjectNotFound, PreconditionFailed, WriterFenced
from woodpecker.objectstore.base import ObjectStore
from woodpecker.records import (
    SegmentRecord,
    SegmentState,
    block_object,
    footer_object,
    segment_object_prefix,
)

log = logging.getLogger("woodpecker.segments")

FENCE_SIZE = HEADER_SIZE + BLOCK_FOOTER_SIZE
_SCAN_CONCURRENCY = 16


@dataclass(frozen=True)
class ScanResult:
    items: list[IndexItem]  # data blocks 0..n-1, contiguous
    stop: int  # block number of the first gap or fence (== len(items))
    fenced: bool  # True if ``stop`` holds a fence


async def list_numbered_blocks(store: ObjectStore, log_id: int, segment_id: int) -> dict[int, int]:
    """``{block_no: size}`` of the numbered blocks present under the segment's prefix."""
    prefix = segment_object_prefix(log_id, segment_id)
    found: dict[int, int] = {}
    async for info in store.list(prefix):
        name = info.key[len(prefix) :]
        stem = name[: -len(".blk")] if name.endswith(".blk") else ""
        if stem.isdigit():
            found[int(stem)] = info.size
    return found


async def read_block_summary(
    store: ObjectStore, log_id: int, segment_id: int, block_no: int, size: int
) -> IndexItem | None:
    """The index item of a data block, or None if the block is a fence. Reads only the block's
    24-byte trailer (or the whole 64-byte block when it is fence-sized)."""
    key = block_object(log_id, segment_id, block_no)
    if size == FENCE_SIZE:
        header = decode_block_header(await store.get(key), key)
        if header.kind is BlockKind.FENCE:
            return None
        raise CorruptBlock(f"{key}: a {size}-byte block that is not a fence")
    if size < FENCE_SIZE:
        raise CorruptBlock(f"{key}: {size} bytes is too short to be a block")
    trailer = await store.get(key, offset=size - BLOCK_FOOTER_SIZE)
    first = int.from_bytes(trailer[0:8], "little")
    count = int.from_bytes(trailer[8:12], "little")
    if trailer[-4:] != b"WPBF" or count == 0:
        raise CorruptBlock(f"{key}: bad block trailer")
    return IndexItem(BlockKind.DATA, block_no, first, count, size)


async def scan_segment(store: ObjectStore, log_id: int, segment_id: int) -> ScanResult:
    """The data blocks of an Active segment from block 0 up to the first gap or fence."""
    sizes = await list_numbered_blocks(store, log_id, segment_id)
    stop = 0
    while stop in sizes:
        stop += 1
    sem = asyncio.Semaphore(_SCAN_CONCURRENCY)

    async def summary(n: int) -> IndexItem | None:
        async with sem:
            return await read_block_summary(store, log_id, segment_id, n, sizes[n])

    summaries = await asyncio.gather(*(summary(n) for n in range(stop)))
    items: list[IndexItem] = []
    for item in summaries:
        if item is None:
            return _checked(ScanResult(items, len(items), True), log_id, segment_id)
        items.append(item)
    return _checked(ScanResult(items, stop, False), log_id, segment_id)


def _checked(result: ScanResult, log_id: int, segment_id: int) -> ScanResult:
    if not index_items_contiguous(result.items):
        raise CorruptBlock(f"segment {log_id}/{segment_id}: block entry ids are not contiguous")
    return result


async def place_fence(store: ObjectStore, log_id: int, segment_id: int, epoch: int) -> int:
    """Write a fence at the first free block number of the segment; returns that number.

    A fence PUT that loses to a data block (412) moves up past the occupied numbers and tries
    again, so the fence always ends above every block that any writer managed to write first.
    """
    sizes = await list_numbered_blocks(store, log_id, segment_id)
    n = 0
    while True:
        while n in sizes:
            n += 1
        try:
            await store.put(
                block_object(log_id, segment_id, n),
                encode_fence(log_id, segment_id, n, epoch),
                if_none_match="*",
            )
            return n
        except PreconditionFailed:
            sizes = await list_numbered_blocks(store, log_id, segment_id)
            sizes.setdefault(n, -1)


def footer_for(log_id: int, segment_id: int, items: list[IndexItem]) -> SegmentFooter:
    return SegmentFooter(
        log_id=log_id,
        segment_id=segment_id,
        entry_count=sum(i.count for i in items),
        entry_bytes=sum(i.size for i in items),
        items=items,
    )


async def read_footer(store: ObjectStore, log_id: int, segment_id: int) -> SegmentFooter:
    key = footer_object(log_id, segment_id)
    return decode_footer(await store.get(key), key)


async def write_footer(
    store: ObjectStore, footer: SegmentFooter, *, replace_existing: bool
) -> None:
    """Write ``footer.blk``. First writes are exclusive; an existing identical footer is fine
    (a recoverer and the writer compute the same index); a different one means a competing
    writer finished the segment differently: ``WriterFenced``."""
    key = footer_object(footer.log_id, footer.segment_id)
    data = encode_footer(footer)
    if replace_existing:
        await store.put(key, data)
        return
    try:
        await store.put(key, data, if_none_match="*")
    except PreconditionFailed:
        try:
            existing = await store.get(key)
        except ObjectNotFound:
            existing = b""
        if existing != data:
            raise WriterFenced(
                f"{key} was written with a different index by another writer"
            ) from None


async def complete_segment(
    store: ObjectStore,
    catalog: Catalog,
    name: str,
    log_id: int,
    current: Versioned[SegmentRecord],
    items: list[IndexItem],
) -> Versioned[SegmentRecord] | None:
    """Active -> Completed: write the footer, then CAS the record. Returns the new record, or
    None if the record changed meanwhile (someone else completed or recovered it)."""
    footer = footer_for(log_id, current.record.segment_id, items)
    await write_footer(store, footer, replace_existing=False)
    last = items[-1].first_entry_id + items[-1].count - 1 if items else -1
    updated = current.record.transition(
        SegmentState.COMPLETED,
        block_count=len(items),
        last_entry_id=last,
        size=footer.entry_bytes,
        completed_at=catalog.clock.now(),
    )
    return await catalog.update_segment(name, current, updated)


async def recover_segment(
    store: ObjectStore,
    catalog: Catalog,
    name: str,
    log_id: int,
    current: Versioned[SegmentRecord],
    epoch: int,
) -> Versioned[SegmentRecord]:
    """Fence an Active segment and complete it at its last complete block (crash recovery).

    Idempotent and safe to race: concurrent recoverers and the fenced writer agree on the
    blocks below the lowest fence, and only one CAS completes the record."""
    seg_id = current.record.segment_id
    try:
        fence_at = await place_fence(store, log_id, seg_id, epoch)
        scan = await scan_segment(store, log_id, seg_id)
    except ObjectNotFound:
        # Its writer completed the segment meanwhile (our record was read before) and the
        # auditor has already compacted it: nothing is left to recover.
        finished = await _finished_meanwhile(catalog, name, current)
        if finished is None:
            raise
        return finished
    if scan.stop > fence_at:
        raise CorruptBlock(f"segment {log_id}/{seg_id}: blocks past the fence at {fence_at}")
    log.info(
        "recovering segment",
        extra={"log": name, "segment": seg_id, "blocks": len(scan.items), "fence": fence_at},
    )
    while True:
        try:
            done = await complete_segment(store, catalog, name, log_id, current, scan.items)
        except WriterFenced:
            # a different footer: completed by its writer, then compacted (merged index)
            finished = await _finished_meanwhile(catalog, name, current)
            if finished is None:
                raise
            return finished
        if done is not None:
            return done
        latest = await catalog.get_segment(name, seg_id)
        if latest is None or latest.record.state is not SegmentState.ACTIVE:
            return latest if latest is not None else current
        current = latest  # only unrelated fields changed; try again


async def _finished_meanwhile(
    catalog: Catalog, name: str, current: Versioned[SegmentRecord]
) -> Versioned[SegmentRecord] | None:
    """The segment's record if it is no longer Active (completed, compacted or even deleted
    since ``current`` was read), else None."""
    latest = await catalog.get_segment(name, current.record.segment_id)
    if latest is None:
        return current  # final and truncated away: segments are never deleted while Active
    return latest if latest.record.state is not SegmentState.ACTIVE else None
