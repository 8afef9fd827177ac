"""Errors of the streaming layer (WAL message codec, growing segments).

All are :class:`~woodpecker.errors.CanopyError`. The codec and segment errors are not
retryable: each one means a caller or a WAL entry broke a contract, and the same call would fail
the same way again. The streaming node's routing errors (:class:`ChannelNotOwned` and its
subclass :class:`ChannelFenced`, :class:`NodeClosed`) are retryable: the caller (the proxy)
refreshes its routing and sends the call to the channel's current owner.
"""

from __future__ import annotations

from woodpecker.errors import CanopyError

__all__ = [
    "ChannelFenced",
    "ChannelNotOwned",
    "MalformedMessage",
    "MessageError",
    "NodeClosed",
    "SchemaMismatch",
    "SegmentSealed",
    "StreamingError",
    "TimestampRegression",
    "UnknownMessageType",
    "UnsupportedMessageVersion",
]


class StreamingError(CanopyError):
    """Base of streaming-layer errors."""


class MessageError(StreamingError):
    """A WAL entry is not a message this code can decode."""


class UnknownMessageType(MessageError):
    """The entry's ``type`` property names no message type this version knows."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown WAL message type {type_!r}")
        self.type = type_


class UnsupportedMessageVersion(MessageError):
    """The entry's format version ``v`` is missing or newer than this code understands."""

    def __init__(self, version: str | None) -> None:
        super().__init__(f"unsupported WAL message format version {version!r}")
        self.version = version


class MalformedMessage(MessageError):
    """A known type and version, but a property or the payload does not fit the format."""


class SegmentSealed(StreamingError):
    """An insert was offered to a growing segment after :meth:`GrowingSegment.seal`."""


class TimestampRegression(StreamingError):
    """An insert or delete carries a timestamp below one the segment already applied (WAL
    messages of a channel are stamped in append order, so this is a caller bug)."""


class SchemaMismatch(StreamingError):
    """An insert batch lacks a column of the segment's schema, or has a wrong type."""


class ChannelNotOwned(StreamingError):
    """The call names a (v)channel whose physical channel this streaming node does not own (or
    no longer owns): refresh the routing and retry at the owner."""

    retryable = True

    def __init__(self, message: str, *, channel: str = "") -> None:
        super().__init__(message)
        self.channel = channel


class ChannelFenced(ChannelNotOwned):
    """Another streaming node opened the channel's WAL writer (a takeover) and fenced this one:
    nothing more can be appended here; the new owner has replayed every acknowledged write."""


class NodeClosed(StreamingError):
    """The streaming node is closed (or stopped after a failure); retry at another node."""

    retryable = True
