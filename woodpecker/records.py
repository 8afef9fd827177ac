"""Metadata records of the WAL and the segment state machine (pure data, no I/O).

Keys and fields are documented in ``woodpecker/META.md``. Records are stored as JSON so they can
be read with ``etcdctl`` or ``sqlite3`` during an incident.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from woodpecker.errors import InvalidArgument
from woodpecker.message import MessageId

LOG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")


def check_log_name(name: str) -> None:
    if not LOG_NAME.match(name or ""):
        raise InvalidArgument(
            f"invalid log name {name!r}: use 1-255 letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')"
        )


# --- keys ------------------------------------------------------------------------------------

IDS_LOG_KEY = "ids/log"


def capabilities_key(object_store_uri: str) -> str:
    """Probe results of one object store (keyed by a hash of its URI)."""
    return f"store/capabilities/{hashlib.sha256(object_store_uri.encode()).hexdigest()[:16]}"


def log_key(name: str) -> str:
    return f"logs/{name}"


def writer_key(name: str) -> str:
    return f"logs/{name}/writer"


def lock_key(name: str) -> str:
    return f"logs/{name}/lock"


def segments_prefix(name: str) -> str:
    return f"logs/{name}/segments/"


def segment_key(name: str, segment_id: int) -> str:
    return f"{segments_prefix(name)}{segment_id:020d}"


def readers_prefix(name: str) -> str:
    return f"logs/{name}/readers/"


def reader_key(name: str, reader: str) -> str:
    return f"{readers_prefix(name)}{reader}"


def block_object(log_id: int, segment_id: int, block_no: int) -> str:
    return f"{log_id}/{segment_id}/{block_no}.blk"


def segment_object_prefix(log_id: int, segment_id: int) -> str:
    return f"{log_id}/{segment_id}/"


def footer_object(log_id: int, segment_id: int) -> str:
    return f"{log_id}/{segment_id}/footer.blk"


def log_object_prefix(log_id: int) -> str:
    return f"{log_id}/"


# --- records ---------------------------------------------------------------------------------


def _dump(record: Any) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class LogRecord:
    name: str
    log_id: int
    created_at: float
    truncation: list[int] | None = None  # MessageId as [segment, entry]: entries below may go

    @property
    def truncation_point(self) -> MessageId | None:
        return MessageId.from_list(self.truncation) if self.truncation else None

    def encode(self) -> bytes:
        return _dump(self)

    @staticmethod
    def decode(raw: bytes) -> LogRecord:
        return LogRecord(**json.loads(raw))


@dataclass(frozen=True)
class WriterRecord:
    """Who may extend the log: the newest ``epoch`` wins; ``next_segment_id`` never goes back."""

    epoch: int = 0
    next_segment_id: int = 0
    opened_at: float = 0.0

    def encode(self) -> bytes:
        return _dump(self)

    @staticmethod
    def decode(raw: bytes) -> WriterRecord:
        return WriterRecord(**json.loads(raw))


class SegmentState(enum.StrEnum):
    ACTIVE = "active"  # a writer may still add blocks
    COMPLETED = "completed"  # blocks final, footer written
    SEALED = "sealed"  # compacted: merged objects + footer; numbered blocks deleted
    TRUNCATED = "truncated"  # below the truncation point; objects being deleted


_TRANSITIONS: dict[SegmentState, frozenset[SegmentState]] = {
    SegmentState.ACTIVE: frozenset({SegmentState.COMPLETED}),
    SegmentState.COMPLETED: frozenset({SegmentState.SEALED, SegmentState.TRUNCATED}),
    SegmentState.SEALED: frozenset({SegmentState.TRUNCATED}),
    SegmentState.TRUNCATED: frozenset(),
}


class IllegalTransition(InvalidArgument):
    """A segment state change the lifecycle does not allow."""


@dataclass(frozen=True)
class SegmentRecord:
    segment_id: int
    state: SegmentState
    epoch: int  # the writer epoch that created it
    created_at: float
    block_count: int = 0  # numbered data blocks (final once COMPLETED)
    last_entry_id: int = -1  # -1: no entries
    size: int = 0  # bytes of the segment's block objects
    completed_at: float | None = None
    merged_count: int = 0  # m_{n}.blk objects once SEALED
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def entry_count(self) -> int:
        return self.last_entry_id + 1

    @property
    def is_final(self) -> bool:
        return self.state is not SegmentState.ACTIVE

    def transition(self, to: SegmentState, **changes: Any) -> SegmentRecord:
        """The record in state ``to``; raises ``IllegalTransition`` for a change the lifecycle
        (Active -> Completed -> Sealed -> Truncated, or Completed -> Truncated) forbids."""
        if to not in _TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"segment {self.segment_id}: {self.state.value} -> {to.value} is not allowed"
            )
        return replace(self, state=to, **changes)

    def encode(self) -> bytes:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @staticmethod
    def decode(raw: bytes) -> SegmentRecord:
        data = json.loads(raw)
        data["state"] = SegmentState(data["state"])
        return SegmentRecord(**data)


@dataclass(frozen=True)
class ReaderRecord:
    position: list[int]  # the next MessageId this reader will read
    updated_at: float

    def encode(self) -> bytes:
        return _dump(self)

    @staticmethod
    def decode(raw: bytes) -> ReaderRecord:
        return ReaderRecord(**json.loads(raw))
