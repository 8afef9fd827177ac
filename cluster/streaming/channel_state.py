"""What a physical channel's WAL messages build in memory, and the pure rules over it (no I/O).

:class:`ChannelMemory` is applied one message at a time, in WAL order, both live (after each
durable ack) and on replay, so both paths build the same state:

* ``insert`` appends to the growing segment the message names (created on its first row; its
  first message id is remembered for the checkpoint). Inserts of a segment listed in
  ``flushed_after`` (already durable, see :class:`~cluster.streaming.checkpoint.Checkpoint`) and
  messages of a dropped collection are skipped.
* ``delete`` is applied to every in-memory segment of the collection on that vchannel (and
  partition, when it names one) and buffered as a :class:`BufferedDelete` for the delete logs of
  segments already flushed.
* ``upsert`` is its delete, then an insert of each of its row groups, at the message's ts (the
  delete hides only rows stamped below it, so the new rows stay visible). On replay the groups
  of segments in ``flushed_after`` are skipped like inserts; the delete is applied regardless.
* ``flush`` seals the segments it lists and queues them (``to_flush``) in seal order.
* ``drop_collection`` forgets the collection's segments and buffered deletes.
* every message advances ``service_ts`` (its ts) and ``last_mid``.

:meth:`ChannelMemory.position` is the checkpoint rule: the first message still needed is the
first insert of a segment still in memory or the first buffered delete; with neither, the last
message applied (replaying it again is harmless: see the skip rules above).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from cluster.schema import CollectionSchema
from cluster.streaming.flushing import BufferedDelete
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import PK_FIELD, MessageHeader, MessageType, WalMessage
from cluster.streaming.policy import SegmentPolicy
from woodpecker.clock import Clock
from woodpecker.message import MessageId

__all__ = ["ChannelMemory", "MemSegment", "SegKey"]

log = logging.getLogger(__name__)

SegKey = tuple[int, int, str]  # (collection_id, partition_id, vchannel)


@dataclass(slots=True)
class MemSegment:
    """A segment in memory: growing, or sealed and waiting to be written."""

    growing: GrowingSegment
    first_mid: MessageId
    last_mid: MessageId
    sealed: bool = False

    @property
    def key(self) -> SegKey:
        g = self.growing
        return (g.collection_id, g.partition_id, g.vchannel)


class ChannelMemory:
    """See the module docstring. ``on_wake`` is called when background work became due (a
    segment crossed a policy limit, a flush sealed segments)."""

    def __init__(
        self,
        pchannel: str,
        clock: Clock,
        policy: SegmentPolicy,
        *,
        flushed_after: dict[int, MessageId] | None = None,
        service_ts: int = 0,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.pchannel = pchannel
        self.clock = clock
        self.policy = policy
        self.on_wake = on_wake or (lambda: None)
        self.segments: dict[int, MemSegment] = {}
        self.to_flush: deque[int] = deque()
        self.deletes: list[BufferedDelete] = []
        self.deletes_since: float | None = None
        self.dropped: set[int] = set()
        self.schemas: dict[int, CollectionSchema] = {}
        self.flushed_after: dict[int, MessageId] = dict(flushed_after or {})
        self.completed: set[int] = set()
        self.generation = 0  # bumped when rows or deletes leave memory for object storage
        self.token = uuid.uuid4().hex  # names this incarnation of the channel's memory
        self.service_ts = service_ts
        self.last_mid: MessageId | None = None
        self._ts_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- applying ------------------------------------------------------------------------------

    def skips(self, header: MessageHeader) -> bool:
        """Whether a replayed message needs no payload decoding (it changes nothing but
        ``service_ts``)."""
        if header.collection_id in self.dropped and header.type is not MessageType.DROP_COLLECTION:
            return True
        return header.type is MessageType.INSERT and header.segment_id in self.flushed_after

    def apply(self, msg: WalMessage, mid: MessageId) -> None:
        """Apply one message at WAL position ``mid``. Raises only on a broken contract (an
        insert of a collection whose schema was never registered, a timestamp regression)."""
        kind, cid = msg.type, msg.collection_id
        if cid is not None and cid in self.dropped and kind is not MessageType.DROP_COLLECTION:
            pass
        elif kind is MessageType.INSERT:
            assert msg.segment_id is not None and msg.table is not None
            self._insert(msg, msg.partition_id or 0, msg.segment_id, msg.table, mid)
        elif kind is MessageType.DELETE:
            assert msg.table is not None
            self._delete(msg, msg.partition_id, msg.table, mid)
        elif kind is MessageType.UPSERT:
            if msg.deletes is not None:
                self._delete(msg, msg.header.delete_partition_id, msg.deletes, mid)
            for part in msg.upsert_parts():
                self._insert(msg, part.partition_id, part.segment_id, part.table, mid)
        elif kind is MessageType.FLUSH:
            self._flush(msg)
        elif kind is MessageType.DROP_COLLECTION and cid is not None:
            self._drop(cid)
        self.advance(msg.ts, mid)

    def advance(self, ts: int, mid: MessageId) -> None:
        if ts > self.service_ts:
            self.service_ts = ts
        self.last_mid = mid
        if self._ts_waiters:
            ready = [w for w in self._ts_waiters if w[0] <= ts]
            if ready:
                self._ts_waiters = [w for w in self._ts_waiters if w[0] > ts]
                for _, fut in ready:
                    if not fut.done():
                        fut.set_result(None)

    def _insert(
        self, msg: WalMessage, partition_id: int, sid: int, rows: pa.Table, mid: MessageId
    ) -> None:
        """Append ``rows`` (of ``msg``) to segment ``sid`` of ``partition_id``."""
        cid = msg.collection_id
        assert cid is not None
        if sid in self.flushed_after:
            return
        seg = self.segments.get(sid)
        if seg is None:
            schema = self.schemas.get(cid)
            if schema is None:
                raise RuntimeError(f"insert into collection {cid} whose schema is not registered")
            growing = GrowingSegment(
                schema, segment_id=sid, collection_id=cid, partition_id=partition_id,
                vchannel=msg.vchannel, clock=self.clock,
            )  # fmt: skip
            seg = self.segments[sid] = MemSegment(growing, mid, mid)
        seg.growing.append(rows, mid)
        seg.last_mid = mid
        if self.policy.decide(seg.growing.stats) is not None:
            self.on_wake()

    def _delete(
        self, msg: WalMessage, partition_id: int | None, keys: pa.Table, mid: MessageId
    ) -> None:
        """Delete the ``pk`` column of ``keys`` at ``msg.ts`` in ``partition_id`` (all: None)."""
        assert msg.collection_id is not None
        pks = keys.column(PK_FIELD).combine_chunks()
        for seg in self.segments.values():
            cid, pid, vch = seg.key
            if (
                cid == msg.collection_id
                and vch == msg.vchannel
                and (partition_id is None or partition_id == pid)
            ):
                seg.growing.apply_delete(pks, msg.ts, mid)
                seg.last_mid = mid
        self.deletes.append(
            BufferedDelete(msg.collection_id, partition_id, msg.vchannel, pks, msg.ts, mid)
        )
        if self.deletes_since is None:
            self.deletes_since = self.clock.monotonic()

    def _flush(self, msg: WalMessage) -> None:
        assert msg.body is not None
        for raw in msg.body.get("segment_ids", []):
            sid = int(raw)
            seg = self.segments.get(sid)
            if seg is not None and not seg.sealed:
                seg.growing.seal()
                seg.sealed = True
                self.to_flush.append(sid)
        self.on_wake()

    def _drop(self, collection_id: int) -> None:
        self.dropped.add(collection_id)
        for sid in [s for s, seg in self.segments.items() if seg.key[0] == collection_id]:
            del self.segments[sid]
        self.deletes = [d for d in self.deletes if d.collection_id != collection_id]
        if not self.deletes:
            self.deletes_since = None
        log.info("channel %s: dropped collection %d", self.pchannel, collection_id)

    # --- flush bookkeeping ---------------------------------------------------------------------

    def complete(self, segment_id: int) -> MemSegment | None:
        """The segment is written and registered: drop it from memory (None if it was dropped
        meanwhile)."""
        seg = self.segments.pop(segment_id, None)
        if seg is not None:
            self.completed.add(segment_id)
            self.flushed_after[segment_id] = seg.last_mid
            self.generation += 1
        return seg

    def deletes_due(self, *, max_rows: int, max_age: float) -> bool:
        if not self.deletes:
            return False
        rows = sum(len(d.pks) for d in self.deletes)
        since = self.deletes_since if self.deletes_since is not None else self.clock.monotonic()
        return rows >= max_rows or self.clock.monotonic() - since >= max_age

    def persisted(self, batch: list[BufferedDelete]) -> None:
        """``batch`` (a snapshot of ``deletes``) is in the delete logs now."""
        done = {id(d) for d in batch}
        self.deletes = [d for d in self.deletes if id(d) not in done]
        self.generation += 1
        self.deletes_since = self.clock.monotonic() if self.deletes else None

    def position(self, floor: MessageId | None) -> MessageId | None:
        """The checkpoint position (see the module docstring), never below ``floor``."""
        needed = [s.first_mid for s in self.segments.values()]
        needed.extend(d.message_id for d in self.deletes[:1])
        position = min(needed) if needed else self.last_mid
        if floor is not None and (position is None or position < floor):
            return floor
        return position

    def flushed_from(self, position: MessageId) -> dict[int, MessageId]:
        """Prune ``flushed_after`` to the segments a replay from ``position`` would meet."""
        self.flushed_after = {s: m for s, m in self.flushed_after.items() if m >= position}
        return dict(self.flushed_after)

    # --- reads ---------------------------------------------------------------------------------

    def growing_segments(
        self, collection_id: int, vchannel: str, partition_ids: list[int] | None = None
    ) -> list[GrowingSegment]:
        return [
            s.growing
            for _, s in sorted(self.segments.items())
            if s.key[0] == collection_id
            and s.key[2] == vchannel
            and (partition_ids is None or s.key[1] in partition_ids)
        ]

    def ts_waiter(self, ts: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.service_ts >= ts:
            fut.set_result(None)
        else:
            self._ts_waiters.append((ts, fut))
        return fut

    def release_waiters(self, exc: BaseException) -> None:
        for _, fut in self._ts_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._ts_waiters.clear()
