"""The auditor: garbage-collects truncated segments and compacts small blocks.

Rules (invariant 6):
- A segment is deleted only when it is final (Completed/Sealed), every entry of it lies below the
  truncation point, and every registered (named) reader's position is past it. Deletion marks
  the record Truncated (CAS), deletes the objects, then deletes the record, so a crash at any
  step is finished by the next pass.
- A Completed segment of many small blocks is compacted: its entries are re-packed into merged
  objects ``m_{n}.blk`` of about ``merged_block_bytes``, a new footer indexes them, the record
  becomes Sealed (CAS), and only then are the numbered blocks deleted. Readers holding the old
  footer get ObjectNotFound for a numbered block, re-read the record and footer, and continue.
- One auditor per log at a time: a pass holds a lease-backed lock key in the meta store.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from woodpecker.catalog import Versioned
from woodpecker.codec import (
    BlockHeader,
    BlockKind,
    IndexItem,
    decode_block,
    encode_block,
    encode_entry,
)
from woodpecker.message import MessageId
from woodpecker.records import SegmentRecord, SegmentState, segment_object_prefix
from woodpecker.segments import footer_for, read_footer, write_footer

if TYPE_CHECKING:
    from woodpecker.logstore import LogStore

log = logging.getLogger("woodpecker.auditor")


def auditor_lock_key(name: str) -> str:
    return f"logs/{name}/auditor"


async def audit_log(store: LogStore, name: str) -> dict[str, Any]:
    """One pass over one log; returns what it did (for logs, the CLI and tests)."""
    report: dict[str, Any] = {"deleted_segments": [], "compacted_segments": [], "skipped": None}
    lease = await store.meta.grant_lease(max(10.0, store.config.lock_ttl))
    locked = await store.meta.cas(
        auditor_lock_key(name), uuid.uuid4().hex.encode(), expected_version=0, lease=lease.id
    )
    if not locked:
        await lease.revoke()
        report["skipped"] = "another auditor holds the lock"
        return report
    lease.start_keepalive()
    try:
        log_rec = (await store.catalog.get_log(name)).record
        keep_from = await _protected_position(store, name, log_rec.truncation_point)
        for seg in await store.catalog.segments(name):
            rec = seg.record
            if _deletable(rec, keep_from):
                await _delete_segment(store, name, log_rec.log_id, seg)
                report["deleted_segments"].append(rec.segment_id)
            elif rec.state is SegmentState.COMPLETED and _worth_compacting(store, rec):
                if await _compact_segment(store, name, log_rec.log_id, seg):
                    report["compacted_segments"].append(rec.segment_id)
    finally:
        await lease.revoke()
    if report["deleted_segments"] or report["compacted_segments"]:
        log.info("audit pass", extra={"log": name, **report})
    return report


async def _protected_position(
    store: LogStore, name: str, truncation: MessageId | None
) -> MessageId | None:
    """Everything below the returned id may be deleted (None: nothing may)."""
    if truncation is None:
        return None
    readers = await store.catalog.readers(name)
    # A named reader keeps the whole segment its position is in: at (s, n) just past the last
    # entry of s it still needs segment s to learn that s is finished (deleting s would make
    # the position ambiguous, and resuming from it fail with LogTruncated).
    positions = [
        MessageId(MessageId.from_list(r.position).segment_id, -1) for r in readers.values()
    ]
    return min([truncation, *positions])


def _deletable(rec: SegmentRecord, keep_from: MessageId | None) -> bool:
    if rec.state is SegmentState.TRUNCATED:
        return True  # a deletion that crashed half-way
    if keep_from is None or not rec.is_final:
        return False
    return MessageId(rec.segment_id, rec.last_entry_id) < keep_from


async def _delete_segment(
    store: LogStore, name: str, log_id: int, seg: Versioned[SegmentRecord]
) -> None:
    if seg.record.state is not SegmentState.TRUNCATED:
        updated = await store.catalog.update_segment(
            name, seg, seg.record.transition(SegmentState.TRUNCATED)
        )
        if updated is None:
            return  # changed under us; the next pass looks again
        seg = updated
    prefix = segment_object_prefix(log_id, seg.record.segment_id)
    keys = [info.key async for info in store.objects.list(prefix)]
    await _delete_all(store, keys)
    await store.catalog.delete_segment(name, seg)


async def _delete_all(store: LogStore, keys: list[str]) -> None:
    sem = asyncio.Semaphore(16)

    async def delete(key: str) -> None:
        async with sem:
            await store.objects.delete(key)

    await asyncio.gather(*(delete(k) for k in keys))


def _worth_compacting(store: LogStore, rec: SegmentRecord) -> bool:
    cfg = store.config
    if rec.block_count < cfg.compact_min_blocks:
        return False
    return rec.size / rec.block_count < cfg.compact_small_block_bytes


async def _compact_segment(
    store: LogStore, name: str, log_id: int, seg: Versioned[SegmentRecord]
) -> bool:
    seg_id = seg.record.segment_id
    prefix = segment_object_prefix(log_id, seg_id)
    footer = await read_footer(store.objects, log_id, seg_id)
    target = store.config.merged_block_bytes
    merged_items: list[IndexItem] = []
    pending: list[bytes] = []
    pending_bytes = 0
    first_of_pending = 0
    next_entry = 0

    async def emit() -> None:
        nonlocal pending, pending_bytes
        number = len(merged_items)
        header = BlockHeader(BlockKind.MERGED, log_id, seg_id, number, 0)
        data = encode_block(header, first_of_pending, pending)
        await store.objects.put(prefix + f"m_{number}.blk", data)
        merged_items.append(
            IndexItem(BlockKind.MERGED, number, first_of_pending, len(pending), len(data))
        )
        pending, pending_bytes = [], 0

    for item in footer.items:
        key = prefix + item.object_name
        block = decode_block(await store.objects.get(key), key)
        for k, entry in enumerate(block.entries):
            encoded = encode_entry(entry.payload, entry.properties)
            if pending and pending_bytes + len(encoded) > target:
                await emit()
            if not pending:
                first_of_pending = block.first_entry_id + k
            pending.append(encoded)
            pending_bytes += len(encoded)
            next_entry = block.first_entry_id + k + 1
    if pending:
        await emit()
    if next_entry != seg.record.entry_count:
        log.error("compaction read a different entry count; skipped", extra={"segment": seg_id})
        return False
    await write_footer(
        store.objects, footer_for(log_id, seg_id, merged_items), replace_existing=True
    )
    updated = await store.catalog.update_segment(
        name,
        seg,
        seg.record.transition(
            SegmentState.SEALED,
            merged_count=len(merged_items),
            size=sum(i.size for i in merged_items),
        ),
    )
    if updated is None:
        return False
    # every numbered block (and any orphan past a fence) is now unreachable
    leftovers = [
        info.key
        async for info in store.objects.list(prefix)
        if not info.key[len(prefix) :].startswith("m_") and not info.key.endswith("/footer.blk")
    ]
    await _delete_all(store, leftovers)
    return True
