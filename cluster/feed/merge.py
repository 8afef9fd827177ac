"""The merge of a collection's pchannels in timestamp order (``cluster/FEED.md``, "Order").

:class:`ChannelCursor` is one pchannel's woodpecker reader plus its *head*, the next unconsumed
message (header decoded, payload not). :class:`Merger` fills every cursor's head, consumes the
smallest order key ``(ts, pchannel, segment_id, entry_id)`` and returns the consumed messages
that are changes of the collection. Consuming is synchronous (no ``await`` between taking a head
and returning it), so at every suspension point :meth:`Merger.token` describes a cut: everything
consumed is below everything not consumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.feed.tokens import OrderKey, ResumeToken
from cluster.streaming.messages import MessageHeader, MessageType, decode_header
from woodpecker.errors import CanopyError, LogTruncated
from woodpecker.message import Message, MessageId

__all__ = ["ChannelCursor", "FeedTruncated", "Head", "Merger"]

DATA_TYPES = frozenset({MessageType.INSERT, MessageType.DELETE, MessageType.UPSERT})


class FeedTruncated(CanopyError):
    """The WAL no longer holds the position a watch must start from (gRPC ``OUT_OF_RANGE``)."""


@dataclass(frozen=True, slots=True)
class Head:
    key: OrderKey
    message: Message
    header: MessageHeader


class ChannelCursor:
    """One pchannel's reader and head. ``since_ts`` (with ``truncated``): the first message must
    have ``ts <= since_ts``, else changes after ``since_ts`` may have been truncated away."""

    def __init__(
        self,
        pchannel: str,
        reader: Any,
        *,
        since_ts: int | None = None,
        truncated: bool = False,
    ) -> None:
        self.pchannel = pchannel
        self.reader = reader
        self.head: Head | None = None
        self._check_since = since_ts if truncated else None
        self.messages_read = 0
        self.bytes_read = 0

    def position(self) -> MessageId:
        """The position of the next unconsumed message."""
        return self.head.message.id if self.head is not None else self.reader.position

    async def fill(self) -> Head:
        """The head, reading (and waiting at the tail) when there is none."""
        if self.head is not None:
            return self.head
        try:
            msg = await self.reader.read_next()
        except LogTruncated as exc:
            raise FeedTruncated(
                f"pchannel {self.pchannel!r}: the WAL was truncated past the watch's position "
                f"{self.position()}: {exc}"
            ) from None
        header = decode_header(msg.properties)
        self.messages_read += 1
        self.bytes_read += len(msg.payload)
        if self._check_since is not None:
            since, self._check_since = self._check_since, None
            if header.ts > since:
                raise FeedTruncated(
                    f"pchannel {self.pchannel!r}: the WAL was truncated; the oldest available "
                    f"position is {msg.id} (ts {header.ts}), after since={since}: changes in "
                    "between may be gone; watch from a later timestamp or 'now'"
                )
        key = (header.ts, self.pchannel, msg.id.segment_id, msg.id.entry_id)
        self.head = Head(key, msg, header)
        return self.head

    async def close(self) -> None:
        await self.reader.close()


@dataclass(frozen=True, slots=True)
class Consumed:
    """A change of the collection (or its ``drop_collection``) and the token just after it."""

    head: Head
    token: ResumeToken


class Merger:
    """Merges ``cursors`` (one per pchannel of collection ``collection_id``). Skips messages
    with an order key at or below ``after_key`` (a resume) or a ``ts`` at or below ``min_ts``
    (a start from a timestamp)."""

    def __init__(
        self,
        collection_id: int,
        cursors: Mapping[str, ChannelCursor],
        *,
        after_key: OrderKey | None = None,
        min_ts: int | None = None,
    ) -> None:
        self.collection_id = collection_id
        self.cursors = dict(sorted(cursors.items()))
        self.last_key = after_key
        self._after = after_key
        self._min_ts = min_ts

    def token(self) -> ResumeToken:
        positions = {ch: c.position() for ch, c in self.cursors.items()}
        return ResumeToken(self.collection_id, positions, self.last_key, self._min_ts)

    @property
    def messages_read(self) -> int:
        return sum(c.messages_read for c in self.cursors.values())

    @property
    def bytes_read(self) -> int:
        return sum(c.bytes_read for c in self.cursors.values())

    async def next(self) -> Consumed:
        """The next change of the collection, in order key (waits for every pchannel)."""
        while True:
            for cursor in self.cursors.values():
                await cursor.fill()
            cursor = min(self.cursors.values(), key=lambda c: c.head.key)  # type: ignore[union-attr]
            head = cursor.head
            assert head is not None
            cursor.head = None  # consumed: from here to the return, no await
            if self._after is not None and head.key <= self._after:
                continue
            self.last_key = head.key
            if self._is_change(head.header):
                return Consumed(head, self.token())

    def _is_change(self, header: MessageHeader) -> bool:
        if header.collection_id != self.collection_id:
            return False
        if header.type not in DATA_TYPES and header.type is not MessageType.DROP_COLLECTION:
            return False
        return self._min_ts is None or header.ts > self._min_ts

    async def close(self) -> None:
        for cursor in self.cursors.values():
            await cursor.close()
