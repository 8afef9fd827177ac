"""Making a channel's sealed data durable in object storage (the I/O half of a flush).

* :func:`write_sealed_segment` writes a sealed :class:`~cluster.streaming.growing.GrowingSegment`
  as one segment (``cluster/storage`` layout: Parquet insert file, then the manifest) plus a delete
  log of the deletes it recorded. It is idempotent, so a replay after a crash (or a fenced
  previous owner racing the new one) can run it again: an existing manifest means the rows are
  written (they are rebuilt from the same WAL messages, so they are the same rows), and only the
  delete log is appended again (deletes are idempotent: a duplicate record is harmless).
* :class:`DeleteRouter` persists deletes to the delete logs of segments flushed earlier: it
  lists the collection's registered segments of the vchannel (coordinator registry), keeps
  their primary-key range (from the manifest, read once per segment) and appends to each segment
  only the deletes whose key falls in its range (and partition). Compaction
  (``cluster/datanode/compaction.py``) replaces segments under it: an append to a segment being
  compacted is refused (``SegmentFenced``, retryable: ``persist`` raises it and the deletes stay
  buffered, so reads still apply them); one to a compacted-away segment is refused
  (``SegmentDropped``), and the router re-lists the registry and writes the deletes to the
  segments registered since (the compaction's output) before it returns.

Nothing here touches the WAL or the channel's in-memory state; ``cluster.streaming.channel``
decides when to call it and what the checkpoint may then skip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.interfaces import CoordinatorService
from cluster.storage import (
    ParquetOptions,
    SegmentDropped,
    SegmentExists,
    SegmentFenced,
    SegmentManifest,
    SegmentNotFound,
    SegmentWriter,
    append_deltas,
    read_manifest,
)
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import PK_FIELD, TS_FIELD
from woodpecker.clock import Clock
from woodpecker.errors import Unavailable
from woodpecker.message import MessageId
from woodpecker.objectstore.base import ObjectStore

__all__ = ["BufferedDelete", "DeleteRouter", "write_sealed_segment"]

log = logging.getLogger(__name__)

ROUTE_ROUNDS = 8  # registry re-lists of one persist call after finding targets dropped


async def write_sealed_segment(
    objects: ObjectStore,
    root: str,
    segment: GrowingSegment,
    *,
    clock: Clock,
    options: ParquetOptions | None = None,
) -> SegmentManifest:
    """Write ``segment`` (every row, deleted ones included: MVCC is the reader's job) and its
    recorded deletes; return the manifest. Raises :class:`SegmentExists` only when the id is
    taken by different data with no manifest (a reused segment id: a bug)."""
    cid, pid, sid = segment.collection_id, segment.partition_id, segment.segment_id
    try:
        manifest = await read_manifest(objects, root, cid, pid, sid)
    except SegmentNotFound:
        writer = SegmentWriter(
            objects,
            root,
            cid,
            pid,
            sid,
            channel=segment.vchannel,
            pk_field=segment.schema.primary_field.name,
            options=options,
            clock=clock,
        )
        await writer.write(segment.to_table())
        try:
            manifest = await writer.finish()
        except SegmentExists:
            # Someone else (a fenced previous owner finishing the same flush) got there first
            # with the same rows: its manifest is as good as ours.
            manifest = await read_manifest(objects, root, cid, pid, sid)
    deltas = segment.deltas(include_matched=True)
    if deltas.num_rows:
        try:
            await append_deltas(
                objects, root, cid, pid, sid, deltas.column(PK_FIELD), deltas.column(TS_FIELD),
                options=options,
            )  # fmt: skip
        except (SegmentDropped, SegmentFenced):
            # A replay of a segment a compaction has taken since: it was registered, so this
            # log was appended before (same WAL messages) and the compaction carried it.
            log.info("segment %d is compacted away: its delete log is already carried", sid)
    return manifest


@dataclass(frozen=True, slots=True)
class BufferedDelete:
    """A delete applied on the channel and not yet in the delete logs of flushed segments."""

    collection_id: int
    partition_id: int | None
    vchannel: str
    pks: pa.Array
    ts: int
    message_id: MessageId


@dataclass(frozen=True, slots=True)
class _Target:
    partition_id: int
    segment_id: int
    min_pk: int | str
    max_pk: int | str


class DeleteRouter:
    """Persists :class:`BufferedDelete` records to the flushed segments they may hit."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        objects: ObjectStore,
        root: str,
        options: ParquetOptions | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.objects = objects
        self.root = root
        self.options = options
        self._ranges: dict[int, _Target | None] = {}  # segment id -> pk range (None: gone)

    def remember(self, manifest: SegmentManifest) -> None:
        """Cache the pk range of a segment this node just wrote (saves a manifest GET)."""
        self._ranges[manifest.segment_id] = _Target(
            manifest.partition_id, manifest.segment_id, manifest.min_pk, manifest.max_pk
        )

    def forget_collection(self, segment_ids: Sequence[int]) -> None:
        for sid in segment_ids:
            self._ranges.pop(sid, None)

    async def _targets(self, collection_id: int, vchannel: str) -> list[_Target]:
        out = []
        for info in await self.coordinator.list_segments(collection_id):
            if info.vchannel != vchannel or info.state != "flushed":
                continue
            if info.segment_id not in self._ranges:
                try:
                    m = await read_manifest(
                        self.objects, self.root, collection_id, info.partition_id, info.segment_id
                    )
                    self._ranges[info.segment_id] = _Target(
                        m.partition_id, m.segment_id, m.min_pk, m.max_pk
                    )
                except SegmentNotFound:
                    self._ranges[info.segment_id] = None
            target = self._ranges[info.segment_id]
            if target is not None:
                out.append(target)
        return out

    async def persist(self, deletes: Sequence[BufferedDelete]) -> int:
        """Append ``deletes`` to the delete logs of the flushed segments of their collection and
        vchannel whose partition and pk range they match; returns delta files written. A target
        found dropped (compacted away) makes it re-list the registry and write to the segments
        not written yet; ``SegmentFenced`` (a compaction committing) is raised as is
        (retryable: call again later with the same deletes)."""
        groups: dict[tuple[int, str], list[BufferedDelete]] = {}
        for d in deletes:
            groups.setdefault((d.collection_id, d.vchannel), []).append(d)
        written = 0
        for (cid, vchannel), items in groups.items():
            written += await self._persist_group(cid, vchannel, items)
        return written

    async def _persist_group(self, cid: int, vchannel: str, items: list[BufferedDelete]) -> int:
        pks = pa.concat_arrays([d.pks for d in items])
        tss = pa.array(
            np.repeat(np.array([d.ts for d in items], dtype=np.uint64), [len(d.pks) for d in items])
        )
        parts = np.repeat(
            np.array([-1 if d.partition_id is None else d.partition_id for d in items]),
            [len(d.pks) for d in items],
        )
        written = 0
        done: set[int] = set()
        for _ in range(ROUTE_ROUNDS):
            targets = [t for t in await self._targets(cid, vchannel) if t.segment_id not in done]
            dropped = False
            for t in targets:
                done.add(t.segment_id)
                try:
                    written += await self._append(cid, t, pks, tss, parts)
                except SegmentDropped:
                    self._ranges[t.segment_id] = None  # compacted away: its successor next
                    dropped = True
                except SegmentNotFound:
                    self._ranges[t.segment_id] = None  # deleted meanwhile: nothing to hide
            if not dropped:
                return written
        raise Unavailable(
            f"collection {cid} {vchannel}: delete targets kept being dropped; retry later"
        )

    async def _append(
        self, cid: int, t: _Target, pks: pa.Array, tss: pa.Array, parts: np.ndarray
    ) -> int:
        """Append the deletes in ``t``'s partition and pk range to its log; files written."""
        mask = pc.and_(
            pc.greater_equal(pks, pa.scalar(t.min_pk, pks.type)),
            pc.less_equal(pks, pa.scalar(t.max_pk, pks.type)),
        )
        keep = mask.to_numpy(zero_copy_only=False) & ((parts == -1) | (parts == t.partition_id))
        if not keep.any():
            return 0
        sel = pa.array(keep)
        await append_deltas(
            self.objects, self.root, cid, t.partition_id, t.segment_id,
            pks.filter(sel), tss.filter(sel), options=self.options,
        )  # fmt: skip
        return 1
