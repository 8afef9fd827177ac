"""When a growing segment seals: a pure decision over its :class:`SegmentStats` and a clock.

:class:`SegmentPolicy` never reads the wall clock itself: it takes an injected
:class:`~woodpecker.clock.Clock`, and ages are measured on ``clock.monotonic()``, the same clock
the :class:`~cluster.streaming.growing.GrowingSegment` stamps its writes with (give both the same
clock). A segment without rows never seals: there is nothing to flush.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from woodpecker.clock import Clock, RealClock
from woodpecker.message import MessageId

__all__ = ["SealReason", "SegmentPolicy", "SegmentStats"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SegmentStats:
    """A growing segment at one moment. ``bytes`` is the approximate in-memory size of its
    Arrow data (what a flush writes, before compression). Timestamps are hybrid (TSO) ones;
    ``first_write_at``/``last_write_at`` are ``clock.monotonic()`` seconds of the first and last
    insert; message ids are the first and last WAL entries applied (inserts and deletes)."""

    segment_id: int
    rows: int
    bytes: int
    deletes: int
    min_ts: int | None
    max_ts: int | None
    first_message_id: MessageId | None
    last_message_id: MessageId | None
    first_write_at: float | None
    last_write_at: float | None
    sealed: bool


class SealReason(StrEnum):
    ROWS = "rows"
    BYTES = "bytes"
    AGE = "age"
    IDLE = "idle"
    FLUSH = "flush"


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    """Seal a segment once it holds ``max_rows`` rows or ``max_bytes`` bytes, ``max_age``
    seconds after its first row, ``max_idle`` seconds after its last row, or when a flush is
    requested. ``None`` disables a rule. Defaults keep a growing segment small enough for exact
    search (about 10 ms per query at 100k x 128-d) while making segments big enough to index."""

    max_rows: int | None = 200_000
    max_bytes: int | None = 128 * MiB
    max_age: float | None = 600.0
    max_idle: float | None = 120.0
    clock: Clock = field(default_factory=RealClock)

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_bytes", "max_age", "max_idle"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")

    def decide(self, stats: SegmentStats, *, flush_requested: bool = False) -> SealReason | None:
        """The reason to seal now, or None. Size rules are checked before time rules, and an
        explicit flush request comes first; a sealed or empty segment yields None."""
        if stats.sealed or stats.rows == 0:
            return None
        if flush_requested:
            return SealReason.FLUSH
        if self.max_rows is not None and stats.rows >= self.max_rows:
            return SealReason.ROWS
        if self.max_bytes is not None and stats.bytes >= self.max_bytes:
            return SealReason.BYTES
        now = self.clock.monotonic()
        if (
            self.max_age is not None
            and stats.first_write_at is not None
            and now - stats.first_write_at >= self.max_age
        ):
            return SealReason.AGE
        if (
            self.max_idle is not None
            and stats.last_write_at is not None
            and now - stats.last_write_at >= self.max_idle
        ):
            return SealReason.IDLE
        return None

    def deadline(self, stats: SegmentStats) -> float | None:
        """The ``clock.monotonic()`` time at which a time rule fires if nothing is written
        before (so a node can sleep until then); None if no time rule applies."""
        if stats.sealed or stats.rows == 0:
            return None
        times = []
        if self.max_age is not None and stats.first_write_at is not None:
            times.append(stats.first_write_at + self.max_age)
        if self.max_idle is not None and stats.last_write_at is not None:
            times.append(stats.last_write_at + self.max_idle)
        return min(times) if times else None

    def fits(self, stats: SegmentStats, rows: int, nbytes: int) -> bool:
        """Whether a batch of ``rows`` rows / ``nbytes`` bytes may go into the segment without
        crossing a size limit. An empty, unsealed segment takes any batch (a batch is never
        split across segments here)."""
        if stats.sealed:
            return False
        if stats.rows == 0:
            return True
        if self.max_rows is not None and stats.rows + rows > self.max_rows:
            return False
        return not (self.max_bytes is not None and stats.bytes + nbytes > self.max_bytes)
