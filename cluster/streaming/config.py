"""The streaming node's knobs, in one dataclass (times are seconds of the injected clock)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.storage import ParquetOptions
from cluster.streaming.policy import SegmentPolicy

__all__ = ["StreamingConfig"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class StreamingConfig:
    """Knobs of a streaming node (times are seconds of the injected clock)."""

    time_tick_interval: float = 0.2
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    storage_root: str = ""  # root prefix of sealed segments in the object store
    parquet: ParquetOptions | None = None
    max_pending_bytes: int = 64 * MiB  # appended-but-unapplied bytes per channel (back-pressure)
    wal_compression: str | None = None  # "lz4"/"zstd" for Arrow payloads
    maintenance_interval: float = 1.0  # policy time rules are checked at least this often
    delete_flush_interval: float = 10.0  # buffered deletes reach delete logs at most this late
    delete_flush_rows: int = 100_000
    checkpoint_interval: float = 5.0  # a checkpoint moved only by ticks is saved this often
    retry_delay: float = 0.2  # first back-off after a retryable storage error
    max_retry_delay: float = 5.0
    replay_read_timeout: float = 60.0
    # sealed segments of the owned vchannels that no query node serves (all, in standalone)
    sealed_cache_dir: str | None = None  # LocalCache directory (None: a temp dir per node)
    sealed_cache_bytes: int = 4096 * MiB
    sealed_refresh_interval: float = 1.0  # the segment registry is re-read at most this often
