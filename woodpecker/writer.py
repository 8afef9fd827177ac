"""The log writer: group commit, parallel block uploads, acknowledgements in append order.

Pipeline: ``append_nowait`` encodes the entry into the buffer; the flusher cuts the buffer into
blocks once ``max_bytes`` are buffered or the oldest entry has waited ``max_interval``; blocks
upload in parallel (at most ``max_inflight_blocks``) with ``if_none_match="*"``; the acker
resolves futures strictly in block order, so entry n is never acknowledged before n-1. A block
PUT that loses its precondition means a newer writer fenced this one: every unacknowledged entry
fails with ``WriterFenced`` and the writer is dead. Any other upload failure (after the Retrying
wrapper gave up) kills the writer the same way with that error: a block sequence may never have a
hole that later blocks are acknowledged across.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from woodpecker.catalog import Versioned
from woodpecker.codec import (
    ENTRY_OVERHEAD,
    BlockHeader,
    BlockKind,
    IndexItem,
    encode_block,
    encode_entry,
)
from woodpecker.errors import (
    CanopyError,
    InvalidArgument,
    PreconditionFailed,
    WriterClosed,
    WriterFenced,
)
from woodpecker.message import MessageId
from woodpecker.records import SegmentRecord, WriterRecord, block_object
from woodpecker.segments import complete_segment

if TYPE_CHECKING:
    from woodpecker.logstore import Log

log = logging.getLogger("woodpecker.writer")


class WriterState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    FENCED = "fenced"
    FAILED = "failed"


@dataclass(slots=True)
class _Pending:
    data: bytes
    future: asyncio.Future[MessageId]
    at: float  # clock.monotonic() when it was buffered
    queued: bool = False  # handed to the acker, which settles it


@dataclass
class _OpenSegment:
    record: Versioned[SegmentRecord]
    opened_at: float
    next_entry_id: int = 0
    next_block_no: int = 0
    bytes: int = 0
    items: list[IndexItem] = field(default_factory=list)
    uploads: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def segment_id(self) -> int:
        return self.record.record.segment_id


@dataclass
class _Upload:
    task: asyncio.Task[None]
    segment_id: int
    first_entry_id: int
    futures: list[asyncio.Future[MessageId]]
    nbytes: int


class LogWriter:
    """The single writer of a log. Create through ``Log.open_writer()``."""

    def __init__(self, log_: Log, writer: Versioned[WriterRecord], interval: float) -> None:
        self._log = log_
        self._store = log_.store.objects
        self._catalog = log_.store.catalog
        self._config = log_.store.config
        self._clock = log_.store.clock
        self._conditional = log_.store.conditional_writes
        self._writer = writer
        self._epoch = writer.record.epoch
        self._interval = interval
        self._state = WriterState.OPEN
        self._failure: CanopyError | None = None
        self._seg: _OpenSegment | None = None
        self._buffer: list[_Pending] = []
        self._buffer_bytes = 0
        self._buffer_since = 0.0
        self._flush_requested = False
        self._wake = asyncio.Event()
        self._inflight = asyncio.Semaphore(self._config.max_inflight_blocks)
        self._acks: asyncio.Queue[_Upload | None] = asyncio.Queue()
        self._unacked_bytes = 0
        self._unacked_entries = 0
        self._space = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flusher = asyncio.create_task(self._supervise(self._flush_loop()), name="wal-flusher")
        self._acker = asyncio.create_task(self._supervise(self._ack_loop()), name="wal-acker")
        # set by Log.open_writer when the store lacks conditional writes
        self._lock_lease: Any = None
        self._lease_watch: asyncio.Task[None] | None = None

    # --- public API --------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def state(self) -> WriterState:
        return self._state

    @property
    def segment_id(self) -> int | None:
        return self._seg.segment_id if self._seg else None

    def append_nowait(
        self, payload: bytes, properties: dict[str, str] | None = None
    ) -> Awaitable[MessageId]:
        """Buffer one entry; the returned awaitable resolves to its id once it is durable.
        Raises at once if the writer is closed, fenced or failed."""
        self._check_open()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidArgument(f"payload must be bytes, not {type(payload).__name__}")
        if properties is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
        ):
            raise InvalidArgument("properties must map str to str")
        data = encode_entry(payload, properties)  # copies the payload: the caller may reuse it
        future: asyncio.Future[MessageId] = asyncio.get_running_loop().create_future()
        now = self._clock.monotonic()
        if not self._buffer:
            self._buffer_since = now
            self._wake.set()
        self._buffer.append(_Pending(data, future, now))
        self._buffer_bytes += len(data)
        self._unacked_bytes += len(data)
        self._unacked_entries += 1
        self._idle.clear()
        if self._buffer_bytes >= self._config.max_bytes:
            self._wake.set()
        return future

    async def append(self, payload: bytes, properties: dict[str, str] | None = None) -> MessageId:
        """Append one entry and wait until it is durable; waits first while more than
        ``max_pending_bytes`` are unacknowledged (back-pressure)."""
        if self._unacked_bytes > self._config.max_pending_bytes:
            async with self._space:
                await self._space.wait_for(
                    lambda: (
                        self._unacked_bytes <= self._config.max_pending_bytes
                        or self._state is not WriterState.OPEN
                    )
                )
        return await self.append_nowait(payload, properties)

    async def flush(self) -> None:
        """Cut the buffer now and wait until everything appended so far is acknowledged."""
        self._check_open()
        self._flush_requested = True
        self._wake.set()
        await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Flush, wait for every acknowledgement, and complete the open segment. Safe to call
        more than once; a fenced or failed writer closes without touching storage."""
        if self._state in (WriterState.CLOSED, WriterState.CLOSING):
            return
        if self._state is WriterState.OPEN:
            self._state = WriterState.CLOSING
            self._wake.set()
            with contextlib.suppress(CanopyError):
                await self._idle.wait()
            if self._failure is None and self._seg is not None:
                try:
                    await self._complete_current()
                except CanopyError as exc:
                    self._fail(exc)
        await self._stop_tasks()
        if self._state is WriterState.CLOSING:
            self._state = WriterState.CLOSED
        if self._lease_watch is not None:
            self._lease_watch.cancel()
        if self._lock_lease is not None:
            with contextlib.suppress(CanopyError):
                await self._lock_lease.revoke()
        self._log._writer_closed(self)

    async def __aenter__(self) -> LogWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- failure -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is WriterState.OPEN:
            return
        if self._failure is not None:
            raise self._failure
        raise WriterClosed("the writer is closed; open a new one with Log.open_writer()")

    def _fail(self, exc: BaseException) -> None:
        """Kill the writer: every entry not yet acknowledged fails with ``exc``."""
        if isinstance(exc, PreconditionFailed):
            exc = WriterFenced(f"log {self._log.name!r}: a newer writer took over ({exc})")
        if not isinstance(exc, CanopyError):
            exc = WriterClosed(f"log {self._log.name!r}: writer crashed: {exc!r}")
        if self._failure is None:
            self._failure = exc
            self._state = (
                WriterState.FENCED if isinstance(exc, WriterFenced) else WriterState.FAILED
            )
            log.warning("writer stopped", extra={"log": self._log.name, "reason": str(exc)})
        self._settle([p.future for p in self._buffer], sum(len(p.data) for p in self._buffer))
        self._buffer.clear()
        self._buffer_bytes = 0
        self._wake.set()
        self._idle.set()

    async def _supervise(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a crashed pipeline task fails the writer loudly
            self._fail(exc)

    async def _stop_tasks(self) -> None:
        self._acks.put_nowait(None)
        self._wake.set()
        for task in (self._flusher, self._acker):
            if not task.done():
                if task is self._flusher:
                    task.cancel()
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow our own cancel
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    async with asyncio.timeout(30):
                        await task
        if self._seg is not None:
            for upload in self._seg.uploads:
                upload.cancel()

    # --- flusher -----------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while self._state in (WriterState.OPEN, WriterState.CLOSING):
            if not self._buffer:
                if self._state is WriterState.CLOSING:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._wait_for_cut()
            if self._failure is not None:
                return
            batch = self._take_batch()
            try:
                await self._write_batch(batch)
            except Exception as exc:
                self._fail(exc)
            finally:
                # only after a failure, or when close() cancels a dead writer's flusher
                # mid-batch: settle what never reached the acker (else those appends hang)
                unsent = [p for p in batch if not p.queued]
                if unsent:
                    self._settle([p.future for p in unsent], sum(len(p.data) for p in unsent))

    def _take_batch(self) -> list[_Pending]:
        """Take the entries to cut now. When only ``max_bytes`` triggered the cut, a trailing
        partial block stays buffered until it fills up or its oldest entry has waited
        ``max_interval``, so a saturated writer PUTs full blocks (the PUT cost per MiB)."""
        batch, rest = self._buffer, []
        if not self._flush_requested and self._state is WriterState.OPEN:
            split = self._last_block_start(batch)
            if split > 0 and self._clock.monotonic() - batch[split].at < self._interval:
                batch, rest = batch[:split], batch[split:]
        self._buffer = rest
        self._buffer_bytes = sum(len(p.data) for p in rest)
        if rest:
            self._buffer_since = rest[0].at
        self._flush_requested = False
        return batch

    def _last_block_start(self, batch: list[_Pending]) -> int:
        """Index of the first entry of the last block ``_write_batch`` cuts from ``batch``."""
        max_block = self._config.max_block_bytes
        start = size = 0
        for k, p in enumerate(batch):
            if k > start and size + len(p.data) - ENTRY_OVERHEAD > max_block:
                start, size = k, 0
            size += len(p.data) - ENTRY_OVERHEAD
        return start

    async def _wait_for_cut(self) -> None:
        """Return once the buffer should become blocks: enough bytes, the interval elapsed,
        a flush was requested, or the writer is closing."""
        while (
            self._buffer_bytes < self._config.max_bytes
            and not self._flush_requested
            and self._state is WriterState.OPEN
        ):
            remaining = self._buffer_since + self._interval - self._clock.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            sleeper = asyncio.ensure_future(self._clock.sleep(remaining))
            try:
                await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                sleeper.cancel()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        max_block = self._config.max_block_bytes
        i = 0
        while i < len(batch):
            seg = await self._segment_for_next_block()
            j, size = i, 0
            # the limit counts what callers appended; framing (ENTRY_OVERHEAD per entry, 64 B
            # per block) comes on top, so 8 x 256 KiB entries make one 2 MiB block
            while j < len(batch) and (
                j == i or size + len(batch[j].data) - ENTRY_OVERHEAD <= max_block
            ):
                size += len(batch[j].data) - ENTRY_OVERHEAD
                j += 1
            chunk = batch[i:j]
            i = j
            first = seg.next_entry_id
            block_no = seg.next_block_no
            header = BlockHeader(
                BlockKind.DATA, self._log.log_id, seg.segment_id, block_no, self._epoch
            )
            data = encode_block(header, first, [p.data for p in chunk])
            seg.next_entry_id += len(chunk)
            seg.next_block_no += 1
            seg.bytes += len(data)
            seg.items.append(IndexItem(BlockKind.DATA, block_no, first, len(chunk), len(data)))
            await self._inflight.acquire()
            if self._failure is not None:
                self._inflight.release()
                return  # the caller settles what was not queued
            key = block_object(self._log.log_id, seg.segment_id, block_no)
            task = asyncio.create_task(self._upload(key, data), name=f"wal-put-{key}")
            seg.uploads.append(task)
            for p in chunk:
                p.queued = True
            futures = [p.future for p in chunk]
            self._acks.put_nowait(_Upload(task, seg.segment_id, first, futures, size))

    async def _upload(self, key: str, data: bytes) -> None:
        try:
            if self._conditional:
                await self._store.put(key, data, if_none_match="*")
            else:
                await self._store.put(key, data)
        finally:
            self._inflight.release()

    # --- segments ----------------------------------------------------------------------------

    async def _segment_for_next_block(self) -> _OpenSegment:
        seg = self._seg
        cfg = self._config
        if seg is not None and (
            seg.next_block_no >= cfg.segment_max_blocks
            or seg.bytes >= cfg.segment_max_bytes
            or self._clock.monotonic() - seg.opened_at >= cfg.segment_max_age
        ):
            await self._complete_current()
            seg = None
        if seg is None:
            seg = await self._open_segment()
        return seg

    async def _open_segment(self) -> _OpenSegment:
        created = await self._catalog.create_segment(self._log.name, self._writer, self._epoch)
        if created is None:
            raise WriterFenced(f"log {self._log.name!r}: a newer writer took over")
        self._writer, record = created
        self._seg = _OpenSegment(record, self._clock.monotonic())
        log.debug("segment opened", extra={"log": self._log.name, "segment": self.segment_id})
        return self._seg

    async def _complete_current(self) -> None:
        """Wait until every block of the open segment is durable, then complete it."""
        seg = self._seg
        if seg is None:
            return
        results = await asyncio.gather(*seg.uploads, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result if isinstance(result, CanopyError) else WriterClosed(repr(result))
        done = await complete_segment(
            self._store, self._catalog, self._log.name, self._log.log_id, seg.record, seg.items
        )
        if done is None:
            raise WriterFenced(f"log {self._log.name!r}: segment {seg.segment_id} was recovered")
        self._seg = None
        log.debug("segment completed", extra={"log": self._log.name, "segment": seg.segment_id})

    # --- acker -------------------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            upload = await self._acks.get()
            if upload is None:
                return
            try:
                await upload.task
                failure = self._failure
            except asyncio.CancelledError:
                # The upload (or this acker) was cancelled: the block may never land, so no
                # later block may be acknowledged across it. Fail the writer, not just this
                # block, and do not swallow a cancellation of the acker itself.
                self._fail(WriterClosed(f"log {self._log.name!r}: a block upload was cancelled"))
                failure = self._failure
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    self._settle(upload.futures, upload.nbytes)
                    while not self._acks.empty():
                        rest = self._acks.get_nowait()
                        if rest is not None:
                            self._settle(rest.futures, rest.nbytes)
                    raise
            except BaseException as exc:
                self._fail(exc)
                failure = self._failure
            if failure is None:
                for k, fut in enumerate(upload.futures):
                    if not fut.done():
                        fut.set_result(MessageId(upload.segment_id, upload.first_entry_id + k))
                self._log._notify_appended()
            self._settle(upload.futures, upload.nbytes)
            async with self._space:
                self._space.notify_all()

    def _settle(self, futures: list[asyncio.Future[MessageId]], nbytes: int) -> None:
        """These entries are done (acknowledged above, or failed here with the writer's
        failure); update the accounting that ``flush``/``close`` and back-pressure wait on."""
        for fut in futures:
            if not fut.done():
                fut.set_exception(self._failure or WriterClosed("writer closed"))
        self._unacked_entries -= len(futures)
        self._unacked_bytes -= nbytes
        if self._unacked_entries <= 0:
            self._idle.set()
