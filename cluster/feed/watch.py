"""One ``Watch`` call: where it starts (now, a timestamp, a resume token) and its batches
(``cluster/FEED.md``). The I/O shell around :class:`~cluster.feed.merge.Merger`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cluster.coordinator.records import CollectionInfo
from cluster.feed.changes import to_change
from cluster.feed.merge import ChannelCursor, Consumed, FeedTruncated, Merger
from cluster.feed.tokens import ResumeToken, TokenError
from cluster.proto import feed_pb2
from cluster.streaming.messages import MessageType
from woodpecker.errors import LogNotFound, LogTruncated, Unavailable
from woodpecker.logstore import LogStore
from woodpecker.message import MessageId
from woodpecker.records import SegmentState

__all__ = ["FeedLimits", "WatchSession", "open_watch"]

DescribeCollection = Callable[[str, str | int], Awaitable[CollectionInfo]]
Timestamp = Callable[[], Awaitable[int]]


@dataclass(frozen=True)
class FeedLimits:
    """Server-side bounds of a watch (a request may ask for less, never more)."""

    max_batch_changes: int = 1024
    max_batch_bytes: int = 4 << 20
    heartbeat_interval: float = 1.0
    linger: float = 0.002  # seconds a started batch waits for more changes already at hand


def _limits(request: feed_pb2.WatchRequest, limits: FeedLimits) -> FeedLimits:
    def pick(asked: float, cap: float) -> Any:
        return min(asked, cap) if asked > 0 else cap

    return FeedLimits(
        pick(request.max_batch_changes, limits.max_batch_changes),
        pick(request.max_batch_bytes, limits.max_batch_bytes),
        request.heartbeat_interval if request.heartbeat_interval > 0 else limits.heartbeat_interval,
        limits.linger,
    )


async def _open_log(logs: LogStore, pchannel: str) -> Any:
    try:
        return await logs.open_log(pchannel)
    except LogNotFound:
        raise Unavailable(
            f"pchannel {pchannel!r} has no WAL yet (no streaming node took it over)"
        ) from None


async def _oldest(log_: Any) -> MessageId:
    reader = await log_.open_reader(MessageId.EARLIEST)
    try:
        return reader.position
    finally:
        await reader.close()


async def _oldest_live(logs: LogStore, log_: Any) -> tuple[MessageId, bool]:
    """The first entry still stored (below the truncation point too, while its segment lives)
    and whether entries before it were deleted (a segment below it is gone)."""
    live = [s for s in await log_.segments() if s.state is not SegmentState.TRUNCATED]
    if live:
        return MessageId(live[0].segment_id, 0), live[0].segment_id > 0
    writer = await logs.catalog.get_writer(log_.name)
    return MessageId.EARLIEST, writer.record.next_segment_id > 0


async def _cursor(
    logs: LogStore, pchannel: str, start: MessageId, *, since_ts: int | None = None
) -> ChannelCursor:
    """A cursor from ``start``; with ``since_ts`` from the oldest stored entry instead, checking
    that nothing after ``since_ts`` was deleted (``cluster/FEED.md``, "Where a watch starts")."""
    log_ = await _open_log(logs, pchannel)
    truncated = False
    if since_ts is not None:
        start, truncated = await _oldest_live(logs, log_)
    try:
        reader = await log_.open_reader(start)
    except LogTruncated:
        raise FeedTruncated(
            f"pchannel {pchannel!r}: the WAL was truncated past {start}; the oldest available "
            f"position is {await _oldest(log_)}"
        ) from None
    return ChannelCursor(pchannel, reader, since_ts=since_ts, truncated=truncated)


async def _open_cursors(
    logs: LogStore, starts: dict[str, MessageId], since_ts: int | None = None
) -> dict[str, ChannelCursor]:
    cursors: dict[str, ChannelCursor] = {}
    try:
        for ch, start in starts.items():
            cursors[ch] = await _cursor(logs, ch, start, since_ts=since_ts)
    except BaseException:
        for cursor in cursors.values():
            await cursor.close()
        raise
    return cursors


def _check_token(token: ResumeToken, info: CollectionInfo) -> None:
    if token.collection_id != info.collection_id:
        raise TokenError(
            f"the resume token is of collection id {token.collection_id}, not of "
            f"{info.name!r} ({info.collection_id})"
        )
    if set(token.positions) != set(info.pchannels):
        raise TokenError(
            f"the resume token names pchannels {sorted(token.positions)}, the collection has "
            f"{sorted(info.pchannels)}"
        )


async def open_watch(
    request: feed_pb2.WatchRequest,
    logs: LogStore,
    describe: DescribeCollection,
    timestamp: Timestamp,
    limits: FeedLimits = FeedLimits(),
) -> WatchSession:
    """Resolve the collection and the start; raises ``CollectionNotFound``, ``TokenError``,
    :class:`FeedTruncated` or ``Unavailable``."""
    info = await describe(request.db_name or "default", request.collection)
    start = request.WhichOneof("start")
    if start == "resume_token":
        token = ResumeToken.decode(request.resume_token)
        _check_token(token, info)
        merger = Merger(
            info.collection_id,
            await _open_cursors(logs, token.positions),
            after_key=token.last_key,
            min_ts=token.floor_ts,
        )
    elif start == "since_ts":
        # nothing of the collection precedes its creation: an older ``since`` (0, say) must not
        # be refused because the shared channels were truncated before the collection existed
        since = max(request.since_ts, info.create_ts)
        starts = dict.fromkeys(info.pchannels, MessageId.EARLIEST)
        cursors = await _open_cursors(logs, starts, since_ts=since)
        merger = Merger(info.collection_id, cursors, min_ts=since)
    else:  # now: resolve the tails first, then take the timestamp (cluster/FEED.md)
        cursors = await _open_cursors(logs, dict.fromkeys(info.pchannels, MessageId.LATEST))
        try:
            now = await timestamp()
        except BaseException:
            for cursor in cursors.values():
                await cursor.close()
            raise
        merger = Merger(info.collection_id, cursors, min_ts=now)
    return WatchSession(info, merger, describe, _limits(request, limits))


class WatchSession:
    """The batches of one watch. ``batches()`` pulls from the merge only when the consumer
    asks for the next batch (back-pressure); ``close()`` closes the readers."""

    def __init__(
        self,
        info: CollectionInfo,
        merger: Merger,
        describe: DescribeCollection,
        limits: FeedLimits,
    ) -> None:
        self.info = info
        self.merger = merger
        self.limits = limits
        self._describe = describe
        self._partitions = {p.partition_id: p.name for p in info.partitions}
        self._pending: asyncio.Future[Consumed] | None = None

    def _partition_name(self, pid: int) -> str:
        return self._partitions.get(pid, "")

    async def _refresh_partitions(self, consumed: Consumed) -> None:
        pids = {consumed.head.header.partition_id or 0}
        pids |= {pid for pid, _, _ in consumed.head.header.parts}
        if pids - {0} - self._partitions.keys():
            with contextlib.suppress(Exception):
                info = await self._describe(self.info.db, self.info.collection_id)
                self._partitions.update({p.partition_id: p.name for p in info.partitions})

    def _next(self) -> asyncio.Future[Consumed]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.merger.next())
        return self._pending

    def _take(self) -> Consumed:
        assert self._pending is not None and self._pending.done()
        pending, self._pending = self._pending, None
        return pending.result()

    def _batch(self, token: ResumeToken, end: str = "") -> feed_pb2.ChangeBatch:
        key = token.last_key
        return feed_pb2.ChangeBatch(
            collection=self.info.name,
            collection_id=self.info.collection_id,
            token=token.encode(),
            checkpoint_ts=key[0] if key else 0,
            end_reason=end,
        )

    async def batches(self) -> AsyncIterator[feed_pb2.ChangeBatch]:
        """Batches in order: changes, heartbeats (no changes, the token of the current cut)
        and, when the collection is dropped, a last batch with ``end_reason``."""
        limits = self.limits
        while True:
            pending = self._next()
            done, _ = await asyncio.wait({pending}, timeout=limits.heartbeat_interval)
            if not done:  # nothing consumed mid-way: the merger's token is a cut
                yield self._batch(self.merger.token())
                continue
            batch, size, end = self._batch(self.merger.token()), 0, ""
            while True:
                consumed = self._take()
                if consumed.head.header.type is MessageType.DROP_COLLECTION:
                    end = "collection dropped"
                    batch.token = consumed.token.encode()
                    break
                await self._refresh_partitions(consumed)
                change = to_change(consumed.head.message, self._partition_name)
                change.token = consumed.token.encode()
                batch.changes.append(change)
                batch.token, batch.checkpoint_ts = change.token, change.ts
                size += len(change.rows_arrow) + 8 * len(change.int_pks)
                if len(batch.changes) >= limits.max_batch_changes or size >= limits.max_batch_bytes:
                    break
                pending = self._next()
                done, _ = await asyncio.wait({pending}, timeout=limits.linger)
                if not done:
                    break
            batch.end_reason = end
            yield batch
            if end:
                return

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
        await self.merger.close()
