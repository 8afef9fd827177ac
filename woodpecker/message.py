"""Message ids and messages: the WAL's unit of order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True, order=True)
class MessageId:
    """``(segment_id, entry_id)``, totally ordered. ``EARLIEST`` and ``LATEST`` are start
    positions for readers, not ids of real entries."""

    segment_id: int
    entry_id: int

    EARLIEST: ClassVar[MessageId]
    LATEST: ClassVar[MessageId]

    def __str__(self) -> str:
        if self == MessageId.EARLIEST:
            return "EARLIEST"
        if self == MessageId.LATEST:
            return "LATEST"
        return f"{self.segment_id}:{self.entry_id}"

    @staticmethod
    def parse(text: str) -> MessageId:
        """Parse ``"SEG:ENTRY"``, ``"earliest"`` or ``"latest"``."""
        lowered = text.strip().lower()
        if lowered == "earliest":
            return MessageId.EARLIEST
        if lowered == "latest":
            return MessageId.LATEST
        seg, sep, entry = lowered.partition(":")
        if not sep or not seg.isdigit() or not entry.isdigit():
            raise ValueError(f"bad message id {text!r}: expected SEGMENT:ENTRY, earliest or latest")
        return MessageId(int(seg), int(entry))

    def to_list(self) -> list[int]:
        return [self.segment_id, self.entry_id]

    @staticmethod
    def from_list(value: list[int]) -> MessageId:
        return MessageId(int(value[0]), int(value[1]))


MessageId.EARLIEST = MessageId(-1, -1)
MessageId.LATEST = MessageId(2**63 - 1, 2**63 - 1)


@dataclass(frozen=True, slots=True)
class Message:
    id: MessageId
    payload: bytes
    properties: dict[str, str] = field(default_factory=dict)
