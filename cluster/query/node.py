"""The query node: serves reads over the sealed segments the coordinator assigns to it.

Contract of :class:`QueryNode`:

* **Assignments** (``cluster/coordinator/query_assign.py``): the node follows
  ``query/assign/`` and takes every segment whose assignment names it (as ``node_id``, or as
  ``previous`` during a move). Taking a segment loads it through the node's
  :class:`~cluster.query.cache.LocalCache` (an SSD cache that survives restarts) with the delete
  logs known then and the newest index of each vector field, and then writes
  ``query/loaded/{node}/{collection}/{segment}`` under the node's session lease (``lease`` 0:
  no session, tests). A failed load is retried after ``retry_delay``. A segment no longer
  assigned here is released (its key deleted, the segment forgotten). Every ``refresh_interval``
  the node re-reads its segments' delete logs and index manifests in the background, so a newly
  built index is loaded beside the exact copy and swapped in before reads use it.
* **Reads** (:meth:`search_sealed`, :meth:`query_sealed`) come from the streaming node that owns
  the vchannel (the shard delegator). It has already waited for the guarantee timestamp and
  picked ``visible_ts``; it sends, per vchannel, the segments to read here and the snapshot of
  its memory (:class:`~cluster.streaming.sealed.SealedSnapshot`: its deletes not yet in delete
  logs, and the generation that tells this node when to re-read the delete logs). The node
  reads any segment asked for (loading it on demand if need be) with
  :func:`~cluster.streaming.sealed.search_sealed` / ``query_sealed`` and merges its segments'
  results: one :class:`~cluster.results.PartialResult` (top ``k``, newest version per key), or
  one table (newest version per key, key order, ``limit``); for a count, the primary keys and
  ``_ts`` of every matching visible row (the delegator counts distinct keys over every source).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from cluster.coordinator.query_assign import (
    ASSIGN_PREFIX,
    SegmentAssignment,
    loaded_key,
)
from cluster.coordinator.watching import PrefixMirror
from cluster.interfaces import CoordinatorService, GrowingQuery, GrowingSearch
from cluster.results import PartialResult, reduce_query, reduce_search
from cluster.schema import DataType
from cluster.streaming.growing import stored_schema
from cluster.streaming.messages import TS_FIELD
from cluster.streaming.reads import compile_read_filter
from cluster.streaming.routing import CollectionCache
from cluster.streaming.sealed import SealedReader, SealedSnapshot, query_sealed, search_sealed
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore

__all__ = ["QueryNode", "SegmentsNotServed", "ShardRead"]

log = logging.getLogger(__name__)


class SegmentsNotServed(CanopyError):
    """A read named sealed segments this query node cannot serve: its registry view no longer
    lists them (compacted away, or dropped) or does not list them yet. Retryable: the delegator
    reads them itself."""

    retryable = True


@dataclass(frozen=True, slots=True)
class ShardRead:
    """The segments of one vchannel a read needs from this node, and the delegator's
    snapshot of that vchannel's memory."""

    snapshot: SealedSnapshot
    segment_ids: tuple[int, ...]


class QueryNode:
    """See the module docstring. ``start()`` follows the assignments of ``node_id``;
    ``close()`` stops (the session, owned by the caller, removes the loaded keys)."""

    def __init__(
        self,
        objects: ObjectStore,
        coordinator: CoordinatorService,
        meta: MetaStore,
        *,
        node_id: int,
        clock: Clock,
        root: str = "",
        cache_dir: str | None = None,
        cache_bytes: int = 4 << 30,
        lease: int = 0,
        refresh_interval: float = 1.0,
        retry_delay: float = 1.0,
    ) -> None:
        self.meta = meta
        self.node_id = node_id
        self.clock = clock
        self.lease = lease
        self.refresh_interval = refresh_interval
        self.retry_delay = retry_delay
        self.collections = CollectionCache(coordinator)
        self.reader = SealedReader(
            objects, coordinator, root=root, clock=clock, cache_dir=cache_dir,
            cache_bytes=cache_bytes, refresh_interval=refresh_interval,
        )  # fmt: skip
        self._assign = PrefixMirror(meta, ASSIGN_PREFIX, clock)
        self._mine: dict[str, SegmentAssignment] = {}
        self._loaders: dict[str, asyncio.Task[None]] = {}
        self.loaded: set[str] = set()  # assignment keys loaded and announced
        self._tasks: list[asyncio.Task[None]] = []
        self._releasing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        snapshot = await self._assign.start()
        for key, kv in snapshot.items():
            self._on_assignment(key, kv.value)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name="query-assignments"))
        self._tasks.append(loop.create_task(self._refresh_loop(), name="query-refresh"))
        log.info("query node %d serving %d segments", self.node_id, len(self._mine))

    async def _follow(self) -> None:
        async for change in self._assign:
            self._on_assignment(change.key, change.new.value if change.new else None)

    def _on_assignment(self, key: str, value: bytes | None) -> None:
        asg = None
        if value is not None:
            with contextlib.suppress(ValueError, KeyError):
                asg = SegmentAssignment.decode(value)
        if asg is not None and self.node_id in asg.nodes():
            if key not in self._mine:
                self._mine[key] = asg
                self._loaders[key] = asyncio.get_running_loop().create_task(
                    self._take(key, asg), name=f"load-{key}"
                )
            return
        old = self._mine.pop(key, None)
        if old is not None:
            task = self._loaders.pop(key, None)
            if task is not None:
                task.cancel()
            task = asyncio.get_running_loop().create_task(self._release(key, old))
            self._releasing.add(task)  # a reference until done (the loop keeps only weak ones)
            task.add_done_callback(self._releasing.discard)

    async def _fields(self, collection_id: int) -> list[str]:
        _, schema = await self.collections.get(collection_id)
        return [f.name for f in schema.fields if f.dtype == DataType.FLOAT_VECTOR]

    async def _take(self, key: str, asg: SegmentAssignment) -> None:
        """Load the segment, then announce it (retried until done or released)."""
        snap = SealedSnapshot(asg.collection_id, asg.vchannel, "", -1, ())
        while True:
            try:
                fields = await self._fields(asg.collection_id)
                found = await self.reader.preload(snap, asg.segment_id, fields)
                if found:
                    lk = loaded_key(self.node_id, asg.collection_id, asg.segment_id)
                    await self.meta.put(lk, b"1", lease=self.lease)
                    self.loaded.add(key)
                    log.info("loaded segment %d (collection %d)", asg.segment_id, asg.collection_id)
                    return
                log.info("segment %d is not registered (yet); retrying", asg.segment_id)
            except asyncio.CancelledError:
                raise
            except CanopyError as exc:
                log.warning("loading segment %d failed, retrying: %s", asg.segment_id, exc)
            except Exception:
                log.exception("loading segment %d failed, retrying", asg.segment_id)
            await self.clock.sleep(self.retry_delay)

    async def _release(self, key: str, asg: SegmentAssignment) -> None:
        self.loaded.discard(key)
        self.reader.release(asg.collection_id, asg.vchannel, [asg.segment_id])
        with contextlib.suppress(CanopyError):
            await self.meta.delete(loaded_key(self.node_id, asg.collection_id, asg.segment_id))
        log.info("released segment %d (collection %d)", asg.segment_id, asg.collection_id)

    async def _refresh_loop(self) -> None:
        """Keep the loaded segments' delete logs and indexes current (see the module
        docstring)."""
        while True:
            await self.clock.sleep(self.refresh_interval)
            for key in list(self.loaded):
                asg = self._mine.get(key)
                if asg is None:
                    continue
                try:
                    fields = await self._fields(asg.collection_id)
                    snap = SealedSnapshot(asg.collection_id, asg.vchannel, "", -1, ())
                    await self.reader.preload(snap, asg.segment_id, fields)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next round tries again
                    log.info("refreshing segment %d failed: %s", asg.segment_id, exc)

    # --- reads ---------------------------------------------------------------------------------

    async def _segments(
        self, shards: Sequence[ShardRead], partition_ids: Sequence[int] | None, field: str | None
    ) -> list:
        pids = None if partition_ids is None else list(partition_ids)
        out = []
        for shard in shards:
            wanted = set(shard.segment_ids)
            got = await self.reader.segments(shard.snapshot, pids, field=field, only=wanted)
            missing = wanted - {seg.segment_id for seg in got}  # (all of them are in pids)
            if missing:
                raise SegmentsNotServed(
                    f"query node {self.node_id} does not serve segments {sorted(missing)} of "
                    f"{shard.snapshot.vchannel} (not registered as flushed in its view)"
                )
            out.extend(got)
        return out

    async def search_sealed(
        self, request: GrowingSearch, visible_ts: int, shards: Sequence[ShardRead]
    ) -> PartialResult:
        """The top ``k`` over the shards' segments at ``visible_ts`` (module docstring)."""
        _, schema = await self.collections.get(request.collection_id)
        stored = self.collections.stored(request.collection_id) or stored_schema(schema)
        plan = compile_read_filter(request.filter, schema, request.template_values)
        segments = await self._segments(shards, request.partition_ids, request.anns_field)
        pk = schema.primary_field.name
        nq = len(request.queries)
        parts = await search_sealed(
            segments, request, request.queries, plan, visible_ts, pk, stored, self.reader.strategies
        )
        if not parts:
            columns = list(request.output_fields)
            fields = stored.empty_table().select(columns).schema if columns else None
            int_pks = schema.primary_field.dtype == DataType.INT64
            return PartialResult.empty(nq, int_pks=int_pks, fields=fields)
        if len(parts) == 1:
            return parts[0]
        return reduce_search(parts, nq, request.metric, request.k)

    async def query_sealed(
        self, request: GrowingQuery, visible_ts: int, shards: Sequence[ShardRead]
    ) -> pa.Table:
        """The matching rows over the shards' segments at ``visible_ts`` (module docstring)."""
        _, schema = await self.collections.get(request.collection_id)
        stored = self.collections.stored(request.collection_id) or stored_schema(schema)
        plan = compile_read_filter(request.filter, schema, request.template_values)
        segments = await self._segments(shards, request.partition_ids, None)
        pk = schema.primary_field.name
        tables = await query_sealed(segments, request, plan, visible_ts, pk, stored)
        if request.count:
            columns = [pk, TS_FIELD]
            if not tables:
                return stored.empty_table().select(columns)
            return pa.concat_tables(tables)
        if not tables:
            columns = [pk, *(c for c in request.output_fields if c not in (pk, TS_FIELD)), TS_FIELD]
            return stored.empty_table().select(columns)
        return reduce_query(tables, pk, limit=request.limit)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._loaders.values(), *self._releasing]
        self._tasks, self._loaders = [], {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(CanopyError):
            await self._assign.close()
        await self.reader.close()
