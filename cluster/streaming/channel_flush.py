"""The flush half of a channel owner: sealed segments to object storage, buffered deletes to
delete logs, then the checkpoint forward and the WAL truncated (one background step at a time).

:class:`ChannelFlusher` works on the owner's :class:`~cluster.streaming.channel_state.ChannelMemory`
and never appends to the WAL (sealing, which does, stays with the owner). Order within a step,
which the no-loss argument of ``cluster/streaming/channel.py`` relies on:

1. each sealed segment, in seal order: written (idempotent), reported to the coordinator, then
   dropped from memory and remembered in ``flushed_after``;
2. buffered deletes: after a flush always (so the checkpoint can pass them), otherwise once
   ``delete_flush_rows`` or ``delete_flush_interval`` is reached; a delete applied while a
   segment was being written is still in the buffer and so reaches that segment's delete log;
3. the checkpoint: saved when its position moved (at once after 1 or 2, else every
   ``checkpoint_interval``), and only then the WAL truncated at it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cluster.interfaces import CoordinatorService
from cluster.streaming.channel_state import ChannelMemory
from cluster.streaming.checkpoint import Checkpoint, CheckpointStore
from cluster.streaming.config import StreamingConfig
from cluster.streaming.flushing import DeleteRouter, write_sealed_segment
from woodpecker.clock import Clock
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore

__all__ = ["ChannelFlusher"]

log = logging.getLogger(__name__)


class ChannelFlusher:
    """See the module docstring. ``on_flushed(segment_id)`` runs once a segment is durable,
    registered and out of memory."""

    def __init__(
        self,
        pchannel: str,
        mem: ChannelMemory,
        objects: ObjectStore,
        meta: MetaStore,
        coordinator: CoordinatorService,
        config: StreamingConfig,
        clock: Clock,
        on_flushed: Callable[[int], None],
    ) -> None:
        self.pchannel = pchannel
        self.mem = mem
        self.objects = objects
        self.coordinator = coordinator
        self.config = config
        self.clock = clock
        self.on_flushed = on_flushed
        self.checkpoints = CheckpointStore(meta, pchannel, clock)
        self.router = DeleteRouter(coordinator, objects, config.storage_root, config.parquet)
        self.saved = Checkpoint()  # as last saved (or loaded)
        self.saved_at = 0.0
        self.dirty = False  # something became durable since the last save

    async def load(self) -> Checkpoint:
        self.saved = await self.checkpoints.load()
        self.saved_at = self.clock.monotonic()
        return self.saved

    async def step(self, log_: object) -> None:
        """One pass: flush sealed segments, persist deletes, save the checkpoint."""
        flushed = await self.flush_sealed()
        await self.persist_deletes(force=flushed > 0)
        await self.save_checkpoint(log_, force=False)

    async def flush_sealed(self) -> int:
        """Write the sealed segments in seal order; returns how many were completed."""
        done = 0
        mem = self.mem
        while mem.to_flush:
            sid = mem.to_flush[0]
            seg = mem.segments.get(sid)
            if seg is not None:
                g = seg.growing
                manifest = await write_sealed_segment(
                    self.objects, self.config.storage_root, g, clock=self.clock,
                    options=self.config.parquet,
                )  # fmt: skip
                if sid in mem.segments:  # not dropped meanwhile
                    await self.coordinator.report_flushed_segment(
                        g.collection_id, g.partition_id, sid, g.vchannel, manifest.row_count
                    )
                    self.router.remember(manifest)
                    mem.complete(sid)
                    self.on_flushed(sid)
                    self.dirty = True
                    done += 1
                    log.info(
                        "channel %s: flushed segment %d (%d rows)",
                        self.pchannel, sid, manifest.row_count,
                    )  # fmt: skip
            mem.to_flush.popleft()
        return done

    async def persist_deletes(self, *, force: bool) -> None:
        mem, cfg = self.mem, self.config
        if not mem.deletes or not (
            force
            or mem.deletes_due(max_rows=cfg.delete_flush_rows, max_age=cfg.delete_flush_interval)
        ):
            return
        batch = list(mem.deletes)
        await self.router.persist(batch)
        mem.persisted(batch)
        self.dirty = True

    async def save_checkpoint(self, log_: object, *, force: bool) -> None:
        """Save the checkpoint if it moved, then truncate ``log_`` (a woodpecker ``Log``)
        below it."""
        position = self.mem.position(self.saved.position)
        if position is None or position == self.saved.position:
            return
        now = self.clock.monotonic()
        if not (force or self.dirty or now - self.saved_at >= self.config.checkpoint_interval):
            return
        flushed = self.mem.flushed_from(position)
        stored = await self.checkpoints.save(Checkpoint(position, flushed, self.mem.service_ts))
        self.saved, self.saved_at, self.dirty = stored, now, False
        if stored.position is not None and log_ is not None:
            await log_.truncate(stored.position)  # type: ignore[attr-defined]
