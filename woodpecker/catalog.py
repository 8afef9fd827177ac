"""WAL metadata operations over a MetaStore: every update is a compare-and-swap.

A ``Versioned`` pairs a record with the MetaStore ``version`` it was read at; updates pass that
version back, so a concurrent change makes the update fail instead of being overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from woodpecker.clock import Clock
from woodpecker.errors import LogExists, LogNotFound
from woodpecker.message import MessageId
from woodpecker.meta.base import Compare, Delete, DeletePrefix, MetaStore, Put
from woodpecker.records import (
    IDS_LOG_KEY,
    LogRecord,
    ReaderRecord,
    SegmentRecord,
    SegmentState,
    WriterRecord,
    check_log_name,
    log_key,
    reader_key,
    readers_prefix,
    segment_key,
    segments_prefix,
    writer_key,
)

R = TypeVar("R")


@dataclass(frozen=True)
class Versioned(Generic[R]):
    record: R
    version: int


class Catalog:
    """Typed access to the WAL's keys (see META.md)."""

    def __init__(self, meta: MetaStore, clock: Clock) -> None:
        self.meta = meta
        self.clock = clock

    # --- logs --------------------------------------------------------------------------------

    async def _allocate_log_id(self) -> int:
        while True:
            kv = await self.meta.get(IDS_LOG_KEY)
            current = int(kv.value) if kv else 0
            if await self.meta.cas(
                IDS_LOG_KEY, str(current + 1).encode(), expected_version=kv.version if kv else 0
            ):
                return current + 1

    async def create_log(self, name: str) -> LogRecord:
        check_log_name(name)
        if await self.meta.get(log_key(name)) is not None:
            raise LogExists(f"log {name!r} already exists")
        record = LogRecord(
            name=name, log_id=await self._allocate_log_id(), created_at=self.clock.now()
        )
        result = await self.meta.txn(
            [Compare.absent(log_key(name)), Compare.absent(writer_key(name))],
            [Put(log_key(name), record.encode()), Put(writer_key(name), WriterRecord().encode())],
        )
        if not result.succeeded:
            raise LogExists(f"log {name!r} already exists")
        return record

    async def get_log(self, name: str) -> Versioned[LogRecord]:
        check_log_name(name)
        kv = await self.meta.get(log_key(name))
        if kv is None:
            raise LogNotFound(f"log {name!r} not found")
        return Versioned(LogRecord.decode(kv.value), kv.version)

    async def list_logs(self, prefix: str = "") -> list[LogRecord]:
        logs = []
        for kv in await self.meta.range(log_key(prefix)):
            if "/" not in kv.key[len("logs/") :]:
                logs.append(LogRecord.decode(kv.value))
        return logs

    async def delete_log_meta(self, name: str) -> None:
        """Remove the log record and everything under it (objects must be gone first)."""
        await self.meta.txn([], [DeletePrefix(log_key(name) + "/"), Delete(log_key(name))])

    async def set_truncation(self, name: str, point: MessageId) -> MessageId:
        """Raise the truncation point to ``point`` (never lowers it); returns the point in force."""
        while True:
            current = await self.get_log(name)
            old = current.record.truncation_point
            if old is not None and old >= point:
                return old
            updated = replace(current.record, truncation=point.to_list())
            if await self.meta.cas(
                log_key(name), updated.encode(), expected_version=current.version
            ):
                return point

    # --- writer epoch ------------------------------------------------------------------------

    async def get_writer(self, name: str) -> Versioned[WriterRecord]:
        kv = await self.meta.get(writer_key(name))
        if kv is None:
            raise LogNotFound(f"log {name!r} not found")
        return Versioned(WriterRecord.decode(kv.value), kv.version)

    async def bump_epoch(self, name: str) -> Versioned[WriterRecord]:
        """Become the newest writer: epoch + 1. Concurrent openers each get a distinct epoch."""
        while True:
            current = await self.get_writer(name)
            rec = current.record
            bumped = WriterRecord(rec.epoch + 1, rec.next_segment_id, self.clock.now())
            if await self.meta.cas(
                writer_key(name), bumped.encode(), expected_version=current.version
            ):
                return Versioned(bumped, current.version + 1)

    async def create_segment(
        self, name: str, writer: Versioned[WriterRecord], epoch: int
    ) -> tuple[Versioned[WriterRecord], Versioned[SegmentRecord]] | None:
        """Atomically take ``writer.next_segment_id`` and create that segment Active. Returns
        None when the writer record changed (a newer writer exists: we are fenced)."""
        seg_id = writer.record.next_segment_id
        seg = SegmentRecord(
            segment_id=seg_id, state=SegmentState.ACTIVE, epoch=epoch, created_at=self.clock.now()
        )
        advanced = WriterRecord(epoch, seg_id + 1, writer.record.opened_at)
        result = await self.meta.txn(
            [
                Compare.version(writer_key(name), writer.version),
                Compare.absent(segment_key(name, seg_id)),
            ],
            [
                Put(writer_key(name), advanced.encode()),
                Put(segment_key(name, seg_id), seg.encode()),
            ],
        )
        if not result.succeeded:
            return None
        return Versioned(advanced, writer.version + 1), Versioned(seg, 1)

    # --- segments ----------------------------------------------------------------------------

    async def segments(self, name: str) -> list[Versioned[SegmentRecord]]:
        return [
            Versioned(SegmentRecord.decode(kv.value), kv.version)
            for kv in await self.meta.range(segments_prefix(name))
        ]

    async def get_segment(self, name: str, segment_id: int) -> Versioned[SegmentRecord] | None:
        kv = await self.meta.get(segment_key(name, segment_id))
        return Versioned(SegmentRecord.decode(kv.value), kv.version) if kv else None

    async def update_segment(
        self, name: str, current: Versioned[SegmentRecord], updated: SegmentRecord
    ) -> Versioned[SegmentRecord] | None:
        """CAS; None if the record changed since ``current`` was read."""
        ok = await self.meta.cas(
            segment_key(name, updated.segment_id),
            updated.encode(),
            expected_version=current.version,
        )
        return Versioned(updated, current.version + 1) if ok else None

    async def delete_segment(self, name: str, current: Versioned[SegmentRecord]) -> bool:
        key = segment_key(name, current.record.segment_id)
        result = await self.meta.txn([Compare.version(key, current.version)], [Delete(key)])
        return result.succeeded

    # --- readers -----------------------------------------------------------------------------

    async def get_reader(self, name: str, reader: str) -> ReaderRecord | None:
        kv = await self.meta.get(reader_key(name, reader))
        return ReaderRecord.decode(kv.value) if kv else None

    async def put_reader(self, name: str, reader: str, position: MessageId) -> None:
        record = ReaderRecord(position.to_list(), self.clock.now())
        await self.meta.put(reader_key(name, reader), record.encode())

    async def delete_reader(self, name: str, reader: str) -> bool:
        return await self.meta.delete(reader_key(name, reader))

    async def readers(self, name: str) -> dict[str, ReaderRecord]:
        prefix = readers_prefix(name)
        return {
            kv.key[len(prefix) :]: ReaderRecord.decode(kv.value)
            for kv in await self.meta.range(prefix)
        }
