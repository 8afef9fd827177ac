"""One physical channel served by a streaming node: its WAL (a woodpecker log named after the
pchannel), its growing segments, its time ticks, flushes and checkpoint.

Contract of :class:`ChannelOwner`:

* **Takeover** (:meth:`ChannelOwner.start`): open the log (created if missing) and its writer,
  which fences any previous owner; load the checkpoint (``cluster/streaming/checkpoint.py``) and
  replay the log from its position to the last durable entry, applying every message exactly as
  the live path did. Replay is deterministic: an insert names its segment id, a flush message
  names the segments it seals, a ``drop_collection`` message forgets a collection.
* **Writes**: under the channel lock a write takes a TSO timestamp, picks its segment (sealing the
  current one first when the batch does not fit :class:`SegmentPolicy`) and is handed to the
  writer (``append_nowait``) as one message (an upsert's delete and inserts included: it is
  durable, applied and replayed whole or not at all); the lock is released before the durable
  ack, so concurrent writes share WAL blocks (group commit). Appends in lock order mean WAL
  order == timestamp order.
  A message is applied in memory (growing segments, deletes, seals, ``service_ts``) only after
  its ack, in WAL order (acks arrive in append order; the callback drains the queue head), and
  the caller's :class:`WriteAck` returns after that: a read at the ack's timestamp sees it.
* **Seal and flush** (a background task): the policy's size/age/idle rules seal segments (a
  flush message, appended under the lock like a write); :class:`ChannelFlusher`
  (``cluster/streaming/channel_flush.py``) writes sealed segments to object storage, reports
  them, drops them from memory, persists buffered deletes to the delete logs of flushed
  segments, then advances the checkpoint to the first message still needed (the first insert of
  a segment in memory or the first unpersisted delete; else the last message applied) and
  truncates the WAL below it. The in-memory state itself is
  :class:`~cluster.streaming.channel_state.ChannelMemory` (pure).
* **Time ticks**: every ``time_tick_interval`` seconds of the injected clock without an append,
  a ``time_tick`` with a fresh timestamp is appended, so ``service_ts`` keeps moving.
* **Failure**: a fenced writer fails the owner with :class:`ChannelFenced` (retryable for the
  caller: the channel moved); any other failure of a write or background task fails the owner
  with that error; ``on_failure`` tells the node. A failed owner accepts nothing more.

No loss, no duplicates (why replay is exact): a row is acknowledged only once its insert is
durable in the WAL and applied. The checkpoint position only moves past a message once the
segment the message fed is durable and registered and the deletes it carried are in delete logs,
so replay from the position rebuilds every segment not yet flushed from its first row. Segments
flushed after the position are listed in the checkpoint (``flushed``) and skipped; segments whose
manifest exists without being listed (a crash between writing and checkpointing) are rebuilt
from the same messages, sealed by the same flush message, and not written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from cluster.coordinator.errors import CollectionNotFound
from cluster.interfaces import CoordinatorService, WriteAck
from cluster.streaming.channel_flush import ChannelFlusher
from cluster.streaming.channel_state import ChannelMemory, SegKey
from cluster.streaming.checkpoint import Checkpoint
from cluster.streaming.config import StreamingConfig
from cluster.streaming.errors import ChannelFenced, ChannelNotOwned
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import (
    MessageType,
    UpsertPart,
    WalMessage,
    ddl_message,
    decode,
    decode_header,
    delete_message,
    encode,
    flush_message,
    insert_message,
    time_tick_message,
    upsert_message,
    with_system_columns,
)
from cluster.streaming.policy import SegmentStats
from cluster.streaming.routing import CollectionCache, conform_insert, conform_pks
from woodpecker import LogExists, LogNotFound, LogStore, MessageId, WriterFenced
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, Unavailable, WriterClosed
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore

__all__ = ["ChannelOwner", "ChannelState", "StreamingConfig"]

log = logging.getLogger(__name__)

_DATA_TYPES = (MessageType.INSERT, MessageType.DELETE, MessageType.UPSERT)
_READ_POLL = 0.002  # seconds between checks of a read waiting for writes in flight


class ChannelState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(slots=True)
class _Slot:
    """The segment new inserts of one (collection, partition, vchannel) go to; rows/bytes
    include appended-but-unapplied batches."""

    segment_id: int
    rows: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Pending:
    msg: WalMessage
    ack: asyncio.Future[MessageId]
    done: asyncio.Future[None]
    nbytes: int


class ChannelOwner:
    """Serves one physical channel (see the module docstring). ``await start()`` takes it over;
    ``close()`` stops gracefully; ``abandon()`` stops like a crash (tests)."""

    def __init__(
        self,
        pchannel: str,
        log_store: LogStore,
        objects: ObjectStore,
        coordinator: CoordinatorService,
        *,
        meta: MetaStore | None = None,
        clock: Clock | None = None,
        config: StreamingConfig | None = None,
        collections: CollectionCache | None = None,
        on_failure: Callable[[ChannelOwner, BaseException], None] | None = None,
    ) -> None:
        self.pchannel = pchannel
        self.log_store = log_store
        self.objects = objects
        self.coordinator = coordinator
        self.clock: Clock = clock or RealClock()
        self.config = config or StreamingConfig()
        self.policy = replace(self.config.policy, clock=self.clock)
        self.collections = collections or CollectionCache(coordinator)
        self.on_failure = on_failure
        self.state = ChannelState.NEW
        self.failure: BaseException | None = None
        self._wake = asyncio.Event()
        self.mem = ChannelMemory(pchannel, self.clock, self.policy, on_wake=self._wake.set)
        self.flusher = ChannelFlusher(
            pchannel, self.mem, objects, meta or log_store.meta, coordinator, self.config,
            self.clock, on_flushed=self._flushed,
        )  # fmt: skip
        self._log = None
        self._writer = None
        self._lock = asyncio.Lock()  # timestamp + append order
        self._queue: deque[_Pending] = deque()  # appended, not yet applied (WAL order)
        self._writes_queued = 0  # messages of _queue that are not time ticks
        self._ticking = False  # the lock is held by the time tick loop
        self._pending_bytes = 0
        self._space = asyncio.Event()
        self._space.set()
        self._slots: dict[SegKey, _Slot] = {}
        self._open: dict[int, tuple[int, str]] = {}  # assigned, not yet flushed: sid -> (cid, vch)
        self._last_append_at = self.clock.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._failed = asyncio.Event()

    # --- views ---------------------------------------------------------------------------------

    @property
    def service_ts(self) -> int:
        """The latest timestamp applied: every message of the channel at or below it is applied
        (WAL order is timestamp order)."""
        return self.mem.service_ts

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint as last saved by this owner (or loaded at start)."""
        return self.flusher.saved

    @property
    def epoch(self) -> int:
        return self._writer.epoch if self._writer is not None else 0

    def is_flushed(self, segment_id: int) -> bool:
        """Written, registered and out of memory, by this owner."""
        return segment_id in self.mem.completed

    def growing_segments(
        self, collection_id: int, vchannel: str, partition_ids: list[int] | None = None
    ) -> list[GrowingSegment]:
        """In-memory segments (growing and sealed-but-unflushed) of the collection on
        ``vchannel``, in segment id order."""
        return self.mem.growing_segments(collection_id, vchannel, partition_ids)

    async def wait_for_ts(self, ts: int) -> int:
        """Wait until ``service_ts >= ts`` (bound it with ``asyncio.timeout``)."""
        if self.mem.service_ts < ts:
            self._check_usable()
            await self.mem.ts_waiter(ts)
        return self.mem.service_ts

    @property
    def quiescent(self) -> bool:
        """No write is between taking its timestamp and being applied (the channel lock is
        free or held for a time tick, and no appended message but time ticks waits for its
        ack). Then every write stamped at or below any timestamp the oracle has already issued
        is applied: a write that takes its timestamp later gets a larger one. Time ticks carry
        no rows, so one in flight (on S3 an append waits up to the WAL's group-commit interval)
        never delays a read."""
        return not self._writes_queued and (self._ticking or not self._lock.locked())

    async def wait_readable(self, ts: int) -> int:
        """Wait until every write stamped at or below ``ts`` (a timestamp the oracle has
        issued) is applied: ``service_ts >= ts``, or the channel is :attr:`quiescent` (no need
        to wait for the next time tick). Returns a timestamp ``>= ts`` up to which every write
        is applied (``service_ts``, or ``ts`` itself). Bound it with ``asyncio.timeout``."""
        waiter: asyncio.Future[None] | None = None
        try:
            while True:
                self._check_usable()
                if self.mem.service_ts >= ts:
                    return self.mem.service_ts
                if self.quiescent:
                    return ts
                if waiter is None:
                    waiter = self.mem.ts_waiter(ts)
                # a write in flight: its apply moves service_ts (maybe not up to ts), then the
                # channel is quiescent again; re-check soon rather than wait for the next tick
                await asyncio.wait([waiter], timeout=_READ_POLL)
        finally:
            if waiter is not None and waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: a closed channel fails its waiters

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (create) the log, fence the previous writer, replay from the checkpoint, then
        serve. On failure everything opened is closed again and the error raised."""
        if self.state is not ChannelState.NEW:
            raise RuntimeError(f"ChannelOwner({self.pchannel}).start() called twice")
        self.state = ChannelState.STARTING
        try:
            try:
                self._log = await self.log_store.open_log(self.pchannel)
            except LogNotFound:
                try:
                    self._log = await self.log_store.create_log(self.pchannel)
                except LogExists:
                    self._log = await self.log_store.open_log(self.pchannel)
            self._writer = await self._log.open_writer()
            saved = await self.flusher.load()
            self.mem.flushed_after = dict(saved.flushed)
            self.mem.service_ts = saved.service_ts
            await self._replay()
        except BaseException:
            self.state = ChannelState.FAILED
            if self._writer is not None:
                with contextlib.suppress(CanopyError):
                    await self._writer.close()
            raise
        self._last_append_at = self.clock.monotonic()
        self.state = ChannelState.SERVING
        self._spawn(self._tick_loop(), "ticks")
        self._spawn(self._maintain_loop(), "maintenance")
        log.info(
            "channel %s: serving (WAL epoch %d, %d segments in memory, %d to flush)",
            self.pchannel, self.epoch, len(self.mem.segments), len(self.mem.to_flush),
        )  # fmt: skip

    async def _replay(self) -> None:
        """Apply every durable message from the checkpoint position on (see the module
        docstring), then rebuild the insert slots from the unsealed segments."""
        assert self._log is not None
        end = await self._log.last_message_id()
        start = self.flusher.saved.position
        if end is None or (start is not None and start > end):
            return
        reader = await self._log.open_reader(start or MessageId.EARLIEST)
        count = 0
        try:
            while True:
                raw = await reader.read_next(timeout=self.config.replay_read_timeout)
                if raw is None:
                    raise Unavailable(f"channel {self.pchannel}: replay stalled before {end}")
                header = decode_header(raw.properties)
                cid = header.collection_id
                if header.type in _DATA_TYPES and cid is not None:
                    await self._register(cid)
                if self.mem.skips(header):
                    self.mem.advance(header.ts, raw.id)
                else:
                    self._apply(decode(raw), raw.id)
                count += 1
                if raw.id >= end:
                    break
        finally:
            await reader.close()
        for sid, seg in self.mem.segments.items():
            if not seg.sealed:
                self._slots[seg.key] = _Slot(sid, seg.growing.num_rows, seg.growing.stats.bytes)
            self._open[sid] = (seg.key[0], seg.key[2])
        log.info("channel %s: replayed %d messages (%s..%s)", self.pchannel, count, start, end)

    async def _register(self, collection_id: int) -> None:
        """Make the collection's schema known to the channel memory (or mark it dropped)."""
        if collection_id in self.mem.dropped or collection_id in self.mem.schemas:
            return
        try:
            _, self.mem.schemas[collection_id] = await self.collections.get(collection_id)
        except CollectionNotFound:
            self.mem.dropped.add(collection_id)

    async def close(self) -> None:
        """Stop accepting writes, let appended ones finish, stop the tasks, save the checkpoint
        and close the writer. Sealed segments not yet written are left to the next owner."""
        if self.state in (ChannelState.CLOSED, ChannelState.NEW):
            self.state = ChannelState.CLOSED
            return
        healthy = self.state is ChannelState.SERVING
        self.state = ChannelState.CLOSED
        if self._queue:
            await asyncio.wait([p.done for p in self._queue], timeout=30)
        await self._stop_tasks()
        if healthy and self.failure is None:
            with contextlib.suppress(CanopyError):
                await self.flusher.save_checkpoint(self._log, force=True)
        if self._writer is not None:
            with contextlib.suppress(CanopyError):
                await self._writer.close()
        self.mem.release_waiters(
            ChannelNotOwned(f"channel {self.pchannel} closed", channel=self.pchannel)
        )

    def abandon(self) -> None:
        """Stop like a crashed process: cancel the tasks, close nothing, save nothing."""
        self.state = ChannelState.CLOSED
        for task in self._tasks:
            task.cancel()

    async def wait_failed(self) -> BaseException:
        """Return the failure once the owner has failed."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro, name=f"channel-{self.pchannel}-{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.state is ChannelState.CLOSED:
            return
        exc = task.exception() or RuntimeError(f"{task.get_name()} ended unexpectedly")
        if self.failure is None:
            log.error("channel %s: %s crashed", self.pchannel, task.get_name(), exc_info=exc)
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop serving for good: ``exc`` is the owner's failure (the first one wins)."""
        if self.failure is not None:
            return
        self.failure = exc
        if self.state is ChannelState.CLOSED:
            log.debug("channel %s (closed) failed: %r", self.pchannel, exc)
        else:
            self.state = ChannelState.FAILED
            log.warning("channel %s failed: %r", self.pchannel, exc)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.mem.release_waiters(exc)
        self._space.set()
        self._failed.set()
        if self.on_failure is not None:
            self.on_failure(self, exc)

    def _check_usable(self) -> None:
        if self.state is ChannelState.SERVING:
            return
        if isinstance(self.failure, ChannelNotOwned):
            raise self.failure
        if self.failure is not None:
            raise ChannelNotOwned(
                f"channel {self.pchannel} stopped after an error: {self.failure!r}",
                channel=self.pchannel,
            )
        raise ChannelNotOwned(
            f"channel {self.pchannel} is {self.state.value} on this node", channel=self.pchannel
        )

    # --- writes --------------------------------------------------------------------------------

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        """Stamp, append and apply one insert batch (see the module docstring)."""
        self._check_usable()
        _, schema = await self.collections.get(collection_id)
        expected = self.collections.arrow(collection_id)
        assert expected is not None
        rows = conform_insert(table, schema, expected)
        n, nbytes = rows.num_rows, rows.nbytes
        row_ids = await self._row_ids(n)
        await self._wait_for_space()
        async with self._lock:
            self._check_usable()
            self.mem.schemas.setdefault(collection_id, schema)
            # the segment first: sealing appends flush messages, which take their own (earlier)
            # timestamps, so WAL order stays timestamp order
            sid = await self._segment_for((collection_id, partition_id, vchannel), n, nbytes)
            ts = await self.coordinator.allocate_timestamp()
            full = with_system_columns(rows, row_ids, ts)
            msg = insert_message(
                full, ts=ts, vchannel=vchannel, collection_id=collection_id,
                partition_id=partition_id, segment_id=sid,
            )  # fmt: skip
            pending = self._append(msg)
        await asyncio.shield(pending.done)
        return WriteAck(ts, n)

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        """Stamp, append and apply a delete of ``pks`` (all partitions when None)."""
        self._check_usable()
        _, schema = await self.collections.get(collection_id)
        keys = conform_pks(pks, schema)
        async with self._lock:
            self._check_usable()
            ts = await self.coordinator.allocate_timestamp()
            if len(keys) == 0:
                return WriteAck(ts, 0)
            msg = delete_message(
                keys, ts=ts, vchannel=vchannel, collection_id=collection_id,
                partition_id=partition_id,
            )  # fmt: skip
            pending = self._append(msg)
        await asyncio.shield(pending.done)
        return WriteAck(ts, len(keys))

    async def upsert(
        self,
        collection_id: int,
        vchannel: str,
        inserts: Sequence[tuple[int, pa.Table]],
        delete_pks: pa.Array,
        delete_partition_id: int | None,
    ) -> WriteAck:
        """Stamp, append and apply one upsert: the delete of ``delete_pks`` (in
        ``delete_partition_id``, every partition when None) and the insert of each
        ``(partition_id, rows)`` group, as ONE message at ONE timestamp, so both become durable
        and visible together or not at all. Empty groups and keys are allowed. ``rows`` of the
        ack counts the inserted rows."""
        self._check_usable()
        _, schema = await self.collections.get(collection_id)
        expected = self.collections.arrow(collection_id)
        assert expected is not None
        keys = conform_pks(delete_pks, schema)
        by_partition: dict[int, list[pa.Table]] = {}
        for pid, table in inserts:
            if table.num_rows:
                by_partition.setdefault(pid, []).append(conform_insert(table, schema, expected))
        # one group per partition: a second group could seal the segment of the first one
        groups = [
            (pid, tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks())
            for pid, tables in by_partition.items()
        ]
        n = sum(rows.num_rows for _, rows in groups)
        row_ids = await self._row_ids(n)
        await self._wait_for_space()
        async with self._lock:
            self._check_usable()
            self.mem.schemas.setdefault(collection_id, schema)
            sids = [  # segments first, as in insert
                await self._segment_for((collection_id, pid, vchannel), rows.num_rows, rows.nbytes)
                for pid, rows in groups
            ]
            ts = await self.coordinator.allocate_timestamp()
            if n == 0 and len(keys) == 0:
                return WriteAck(ts, 0)
            parts, start = [], 0
            for (pid, rows), sid in zip(groups, sids, strict=True):
                ids = row_ids[start : start + rows.num_rows]
                parts.append(UpsertPart(pid, sid, with_system_columns(rows, ids, ts)))
                start += rows.num_rows
            msg = upsert_message(
                parts, keys, ts=ts, vchannel=vchannel, collection_id=collection_id,
                delete_partition_id=delete_partition_id,
            )  # fmt: skip
            pending = self._append(msg)
        await asyncio.shield(pending.done)
        return WriteAck(ts, n)

    async def _row_ids(self, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0, dtype=np.int64)
        first_id = await self.coordinator.allocate_ids(n)
        return np.arange(first_id, first_id + n, dtype=np.int64)

    async def _wait_for_space(self) -> None:
        """Back-pressure: wait while too much is appended but not yet applied."""
        while not self._space.is_set():
            await self._space.wait()

    async def flush(self, collection_id: int, vchannel: str) -> tuple[list[int], int]:
        """Seal the collection's growing segments on ``vchannel``; returns every segment of it
        not yet flushed (sealed now or earlier) and the flush timestamp, once the seal is
        applied. Writing them to object storage continues in the background."""
        self._check_usable()
        async with self._lock:
            self._check_usable()
            ids = sorted(
                s for s, (c, v) in self._open.items() if c == collection_id and v == vchannel
            )
            keys = [k for k in self._slots if k[0] == collection_id and k[2] == vchannel]
            pending, ts = await self._seal_locked(keys)
        for p in pending:
            await asyncio.shield(p.done)
        self._wake.set()
        return ids, ts

    async def drop_collection(self, collection_id: int, vchannel: str) -> None:
        """Append ``drop_collection``: the collection's growing data on ``vchannel`` is
        forgotten (now and on every replay) and later writes to it are ignored."""
        self._check_usable()
        async with self._lock:
            self._check_usable()
            ts = await self.coordinator.allocate_timestamp()
            msg = ddl_message(
                MessageType.DROP_COLLECTION, {}, ts=ts, collection_id=collection_id,
                vchannel=vchannel,
            )  # fmt: skip
            pending = self._append(msg)
        await asyncio.shield(pending.done)

    async def _segment_for(self, key: SegKey, rows: int, nbytes: int) -> int:
        """The segment id for a batch (lock held): the current one if the batch fits, else a new
        one after sealing the current one."""
        slot = self._slots.get(key)
        if slot is not None:
            stats = SegmentStats(
                slot.segment_id, slot.rows, slot.bytes, 0, None, None, None, None, None, None, False
            )
            if not self.policy.fits(stats, rows, nbytes):
                await self._seal_locked([key])
                slot = None
        if slot is None:
            slot = _Slot(await self.coordinator.allocate_ids(1))
            self._slots[key] = slot
            self._open[slot.segment_id] = (key[0], key[2])
        slot.rows += rows
        slot.bytes += nbytes
        return slot.segment_id

    async def _seal_locked(self, keys: list[SegKey]) -> tuple[list[_Pending], int]:
        """Append one flush message per (collection, vchannel) sealing the slots ``keys`` (lock
        held); new inserts go to new segments from now on. Returns them and the last ts."""
        groups: dict[tuple[int, str], list[int]] = {}
        for key in keys:
            slot = self._slots.pop(key, None)
            if slot is not None:
                groups.setdefault((key[0], key[2]), []).append(slot.segment_id)
        pending = []
        ts = await self.coordinator.allocate_timestamp()
        for (cid, vch), sids in groups.items():
            if pending:
                ts = await self.coordinator.allocate_timestamp()
            msg = flush_message(ts=ts, vchannel=vch, collection_id=cid, segment_ids=sorted(sids))
            pending.append(self._append(msg))
        return pending, ts

    def _append(self, msg: WalMessage) -> _Pending:
        """Encode and hand ``msg`` to the writer (lock held); it is applied once acked."""
        assert self._writer is not None
        encoded = encode(msg, compression=self.config.wal_compression)
        try:
            ack = self._writer.append_nowait(encoded.payload, encoded.properties)
        except WriterFenced as exc:
            raise self._fenced(exc) from exc
        except CanopyError as exc:
            self._fail(exc)
            raise
        ack = asyncio.ensure_future(ack)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _Pending(msg, ack, done, len(encoded.payload))
        self._queue.append(pending)
        if msg.type is not MessageType.TIME_TICK:
            self._writes_queued += 1
        self._pending_bytes += pending.nbytes
        if self._pending_bytes > self.config.max_pending_bytes:
            self._space.clear()
        self._last_append_at = self.clock.monotonic()
        ack.add_done_callback(self._drain)
        return pending

    def _fenced(self, exc: BaseException) -> ChannelFenced:
        fenced = ChannelFenced(
            f"channel {self.pchannel}: another streaming node took over the channel (its WAL "
            "writer fenced this one); refresh the routing and retry at the new owner",
            channel=self.pchannel,
        )
        fenced.__cause__ = exc
        self._fail(fenced)
        return self.failure if isinstance(self.failure, ChannelFenced) else fenced

    def _drain(self, _: object = None) -> None:
        """Apply acknowledged messages from the head of the queue, in WAL order."""
        while self._queue and self._queue[0].ack.done():
            p = self._queue.popleft()
            if p.msg.type is not MessageType.TIME_TICK:
                self._writes_queued -= 1
            self._pending_bytes -= p.nbytes
            err: BaseException | None = None
            if p.ack.cancelled():
                err = self.failure or WriterClosed(f"channel {self.pchannel}: append cancelled")
            elif (exc := p.ack.exception()) is not None:
                err = self.failure or (self._fenced(exc) if isinstance(exc, WriterFenced) else exc)
            elif self.failure is None:
                # Durable: apply. (After a failure a durable write is still acknowledged: the
                # next owner replays it; this dead owner just does not apply it.)
                try:
                    self._apply(p.msg, p.ack.result())
                except Exception as exc:  # a message that cannot be applied: a bug
                    log.exception("channel %s: applying %s failed", self.pchannel, p.msg.type)
                    err = exc
            if err is not None:
                self._fail(err)
            if not p.done.done():
                if err is None:
                    p.done.set_result(None)
                else:
                    p.done.set_exception(err)
                    p.done.exception()  # retrieved: a caller that went away leaves no warning
        if self._pending_bytes <= self.config.max_pending_bytes:
            self._space.set()

    def _flushed(self, segment_id: int) -> None:
        self._open.pop(segment_id, None)

    def _apply(self, msg: WalMessage, mid: MessageId) -> None:
        self.mem.apply(msg, mid)
        if msg.type is MessageType.DROP_COLLECTION and msg.collection_id is not None:
            cid = msg.collection_id
            for key in [k for k in self._slots if k[0] == cid]:
                del self._slots[key]
            for sid in [s for s, (c, _) in self._open.items() if c == cid]:
                del self._open[sid]
            self.collections.forget(cid)

    # --- background: time ticks ----------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """Append a time tick whenever nothing was appended for ``time_tick_interval``."""
        interval = self.config.time_tick_interval
        while True:
            idle_for = self.clock.monotonic() - self._last_append_at
            await self.clock.sleep(max(interval - idle_for, interval / 10))
            if self.clock.monotonic() - self._last_append_at < interval:
                continue
            async with self._lock:
                self._check_usable()
                self._ticking = True
                try:
                    ts = await self.coordinator.allocate_timestamp()
                    pending = self._append(time_tick_message(ts))
                finally:
                    self._ticking = False
            await asyncio.shield(pending.done)

    # --- background: seal, flush, persist deletes, checkpoint ----------------------------------

    async def _maintain_loop(self) -> None:
        delay = self.config.retry_delay
        while True:
            await self._sleep_or_wake(self.config.maintenance_interval)
            try:
                await self._seal_due()
                await self.flusher.step(self._log)
                delay = self.config.retry_delay
            except CanopyError as exc:
                if not exc.retryable or self.state is not ChannelState.SERVING:
                    raise
                log.warning("channel %s: flush step failed, retrying: %s", self.pchannel, exc)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.config.max_retry_delay)
                self._wake.set()

    async def _sleep_or_wake(self, seconds: float) -> None:
        if not self._wake.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
        self._wake.clear()

    async def _seal_due(self) -> None:
        """Seal the current segments a policy rule (size, age, idle) says are due."""
        due = []
        for key, slot in self._slots.items():
            seg = self.mem.segments.get(slot.segment_id)
            if seg is not None and self.policy.decide(seg.growing.stats) is not None:
                due.append((key, slot.segment_id))
        if not due:
            return
        async with self._lock:
            self._check_usable()
            keys = [k for k, sid in due if (s := self._slots.get(k)) and s.segment_id == sid]
            pending, _ = await self._seal_locked(keys)
        for p in pending:
            await asyncio.shield(p.done)
