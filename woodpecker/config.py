"""Every WAL knob in one dataclass, with the defaults of the design brief."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class WalConfig:
    """Tuning for writers, readers and the auditor.

    ``max_interval=None`` picks by store: 200 ms for S3 (each PUT costs money and ~10 ms), 10 ms
    for file://, 1 ms for memory://.
    """

    # group commit
    max_interval: float | None = None  # seconds an entry may wait before its block is cut
    max_bytes: int = 2 * MiB  # buffered bytes that trigger a flush at once
    max_block_bytes: int = 2 * MiB  # appended bytes (payload + properties) per block; framing
    # adds ~10 B per entry and 64 B per block; a lone larger entry gets a block of its own
    max_inflight_blocks: int = 8  # parallel block uploads per writer
    max_pending_bytes: int = 64 * MiB  # appends wait (back-pressure) above this many unacked bytes

    # segment rolling
    segment_max_bytes: int = 256 * MiB
    segment_max_blocks: int = 1000
    segment_max_age: float = 600.0  # seconds

    # object store retries (the Retrying wrapper)
    put_attempts: int = 8
    retry_base_delay: float = 0.05
    retry_max_delay: float = 2.0

    # readers
    reader_poll_min: float = 0.005  # first back-off when a reader reaches the tail
    reader_poll_max: float = 0.2  # back-off cap at the tail
    reader_prefetch_blocks: int = 4  # blocks fetched ahead of a reader in sealed segments

    # auditor
    auditor_interval: float = 60.0
    compact_min_blocks: int = 4  # only compact Completed segments with at least this many blocks
    compact_small_block_bytes: int = 1 * MiB  # blocks below this size are worth merging
    merged_block_bytes: int = 16 * MiB  # target size of a merged object

    # fallback lock when the object store lacks conditional writes
    lock_ttl: float = 10.0

    def interval_for(self, store_uri: str) -> float:
        if self.max_interval is not None:
            return self.max_interval
        if store_uri.startswith("s3://"):
            return 0.2
        if store_uri.startswith("file://"):
            return 0.01
        return 0.001

    def validate(self) -> None:
        if self.max_block_bytes <= 0 or self.max_bytes <= 0:
            raise ValueError("max_bytes and max_block_bytes must be positive")
        if self.max_inflight_blocks < 1:
            raise ValueError("max_inflight_blocks must be >= 1")
        if self.segment_max_blocks < 1 or self.segment_max_bytes <= 0:
            raise ValueError("segment limits must be positive")
        if self.max_interval is not None and self.max_interval < 0:
            raise ValueError("max_interval must be >= 0")
