"""The log reader: ordered delivery from any position, tailing with prompt wake-ups.

A reader walks segments in id order. In an Active segment it fetches numbered blocks one after
another and stops at the first gap or fence: a block after a gap was never acknowledged and is
never shown. At the tail it waits for an in-process writer's signal or polls with back-off
(``reader_poll_min`` doubling to ``reader_poll_max``). Final (Completed/Sealed) segments are read
through their footer index, so a reader can start anywhere with one footer GET and one block GET.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from woodpecker.catalog import Versioned
from woodpecker.codec import BlockKind, SegmentFooter, decode_block
from woodpecker.errors import LogTruncated, ObjectNotFound
from woodpecker.message import Message, MessageId
from woodpecker.records import SegmentRecord, SegmentState, block_object, segment_object_prefix
from woodpecker.segments import list_numbered_blocks, read_block_summary, read_footer

if TYPE_CHECKING:
    from woodpecker.logstore import Log


class LogReader:
    """Reads one log in order. Create through ``Log.open_reader()``."""

    def __init__(
        self, log_: Log, position: MessageId, name: str | None, *, block_hint: int | None
    ) -> None:
        self._log = log_
        self._store = log_.store.objects
        self._catalog = log_.store.catalog
        self._config = log_.store.config
        self._clock = log_.store.clock
        self.name = name
        self._pos = position  # the next id to deliver
        self._buffer: deque[Message] = deque()
        self._seg: Versioned[SegmentRecord] | None = None
        self._footer: SegmentFooter | None = None
        self._block_no: int | None = block_hint  # next numbered block (Active segments)
        self._closed = False

    @property
    def position(self) -> MessageId:
        """The id of the next entry this reader will return."""
        return self._buffer[0].id if self._buffer else self._pos

    # --- public API --------------------------------------------------------------------------

    async def read_next(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next entry, waiting at the tail; None if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        backoff = self._config.reader_poll_min
        while True:
            if self._closed:
                raise RuntimeError("reader is closed")
            if self._buffer:
                return self._buffer.popleft()
            # take the wake-up signal BEFORE looking, so an ack that lands while we look is
            # not missed (it sets this very event and the wait below returns at once)
            appended = self._log.appended_signal()
            if await self._fill():
                backoff = self._config.reader_poll_min
                continue
            wait = backoff
            if deadline is not None:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            await self._log.wait_appended(wait, appended)
            backoff = min(backoff * 2, self._config.reader_poll_max)

    def __aiter__(self) -> LogReader:
        return self

    async def __anext__(self) -> Message:
        msg = await self.read_next()
        assert msg is not None
        return msg

    async def checkpoint(self, position: MessageId | None = None) -> None:
        """Persist ``position`` (default: the next entry to read) for a named reader."""
        if self.name is None:
            raise ValueError("only named readers have checkpoints: open_reader(name=...)")
        await self._catalog.put_reader(self._log.name, self.name, position or self.position)

    async def close(self) -> None:
        self._closed = True
        self._log._reader_closed(self)

    async def __aenter__(self) -> LogReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- filling -----------------------------------------------------------------------------

    async def _fill(self) -> bool:
        """Load the next entries into the buffer. False means: nothing new yet (at the tail)."""
        while True:
            seg = await self._current_segment()
            if seg is None:
                return False
            record = seg.record
            if record.state is SegmentState.ACTIVE:
                progressed = await self._fill_active(record)
                if progressed is None:
                    continue  # the segment changed state; look again
                return progressed
            if self._pos.entry_id > record.last_entry_id:
                self._advance_to(record.segment_id + 1)
                continue
            if await self._fill_final(record):
                return True

    async def _current_segment(self) -> Versioned[SegmentRecord] | None:
        if self._seg is not None and self._seg.record.segment_id == self._pos.segment_id:
            if self._seg.record.state is not SegmentState.TRUNCATED:
                return self._seg
        candidates = [
            s
            for s in await self._catalog.segments(self._log.name)
            if s.record.segment_id >= self._pos.segment_id
        ]
        if not candidates:
            return None
        seg = candidates[0]
        if seg.record.state is SegmentState.TRUNCATED:
            raise LogTruncated(f"log {self._log.name!r}: {self._pos} was truncated")
        if seg.record.segment_id > self._pos.segment_id:
            if self._pos.entry_id > 0 and await self._segment_was_deleted(self._pos.segment_id):
                raise LogTruncated(f"log {self._log.name!r}: {self._pos} was truncated")
            self._pos = MessageId(seg.record.segment_id, 0)
            self._block_no = None
        self._seg = seg
        self._footer = None
        return seg

    async def _segment_was_deleted(self, segment_id: int) -> bool:
        trunc = (await self._catalog.get_log(self._log.name)).record.truncation_point
        return trunc is not None and MessageId(segment_id, 0) < trunc

    def _advance_to(self, segment_id: int) -> None:
        self._pos = MessageId(segment_id, 0)
        self._seg = None
        self._footer = None
        self._block_no = None

    async def _refresh_segment(self, segment_id: int) -> Versioned[SegmentRecord] | None:
        self._seg = await self._catalog.get_segment(self._log.name, segment_id)
        self._footer = None
        return self._seg

    def _take(self, segment_id: int, first_entry_id: int, entries: list) -> bool:  # type: ignore[type-arg]
        """Buffer the block's entries at or after the position; True if any were new."""
        start = max(0, self._pos.entry_id - first_entry_id)
        for k in range(start, len(entries)):
            entry = entries[k]
            mid = MessageId(segment_id, first_entry_id + k)
            self._buffer.append(Message(mid, entry.payload, entry.properties))
        if start < len(entries):
            self._pos = MessageId(segment_id, first_entry_id + len(entries))
            return True
        return False

    async def _fill_active(self, record: SegmentRecord) -> bool | None:
        """One step in an Active segment: True (entries buffered), False (at the tail) or None
        (the segment is final now: re-read it through its footer)."""
        seg_id = record.segment_id
        if self._block_no is None:
            try:
                self._block_no = await self._locate_block(seg_id, self._pos.entry_id)
            except ObjectNotFound:
                # completed and compacted since we looked (numbered blocks deleted): if so,
                # read it through its footer
                refreshed = await self._refresh_segment(seg_id)
                if refreshed is None or refreshed.record.state is not SegmentState.ACTIVE:
                    return None
                raise
        key = block_object(self._log.log_id, seg_id, self._block_no)
        try:
            data = await self._store.get(key)
        except ObjectNotFound:
            data = None
        if data is not None:
            block = decode_block(data, key)
            if block.header.kind is BlockKind.DATA:
                self._block_no += 1
                if self._take(seg_id, block.first_entry_id, block.entries):
                    return True
                return await self._fill_active(record)
            # a fence: a new writer is recovering this segment; wait for it to complete
        refreshed = await self._refresh_segment(seg_id)
        if refreshed is None or refreshed.record.state is not SegmentState.ACTIVE:
            self._block_no = None
            return None
        return False

    async def _locate_block(self, segment_id: int, entry_id: int) -> int:
        """The numbered block of an Active segment that holds ``entry_id`` (or the next block
        to be written when the entry is not written yet)."""
        if entry_id == 0:
            return 0
        sizes = await list_numbered_blocks(self._store, self._log.log_id, segment_id)
        n = 0
        while n in sizes:
            item = await read_block_summary(self._store, self._log.log_id, segment_id, n, sizes[n])
            if item is None or item.first_entry_id + item.count > entry_id:
                return n
            n += 1
        return n

    async def _fill_final(self, record: SegmentRecord) -> bool:
        seg_id = record.segment_id
        for _attempt in range(3):
            try:
                if self._footer is None:
                    self._footer = await read_footer(self._store, self._log.log_id, seg_id)
                footer = self._footer
                idx = footer.locate(self._pos.entry_id)
                if idx >= len(footer.items):
                    self._advance_to(seg_id + 1)
                    return False
                item = footer.items[idx]
                key = segment_object_prefix(self._log.log_id, seg_id) + item.object_name
                block = decode_block(await self._store.get(key), key)
                return self._take(seg_id, block.first_entry_id, block.entries) or (
                    await self._fill_final(record)
                )
            except ObjectNotFound:
                # compaction replaced the blocks, or truncation removed the segment
                refreshed = await self._refresh_segment(seg_id)
                if refreshed is None or refreshed.record.state is SegmentState.TRUNCATED:
                    raise LogTruncated(
                        f"log {self._log.name!r}: segment {seg_id} was truncated under the reader"
                    ) from None
                await asyncio.sleep(0)
        raise ObjectNotFound(f"log {self._log.name!r}: segment {seg_id} objects keep vanishing")
