"""The streaming node: serves the physical channels assigned to it, as a
:class:`~cluster.interfaces.StreamingService`.

Contract of :class:`StreamingNode`:

* **Channels**: from an explicit list (standalone, tests) or, with a ``watcher``
  (:class:`~cluster.coordinator.channel_manager.AssignmentWatcher`), the channels the coordinator
  assigns to this node: on ``assigned`` the node takes the channel over
  (:class:`~cluster.streaming.channel.ChannelOwner` fences the WAL and replays it) and then acks the
  assignment; on ``revoked`` it closes the owner. Each channel has a supervisor task: an owner
  that fails with a retryable error (the WAL store was unreachable) is restarted after a
  back-off; one that was fenced (another node took the channel) is dropped.
* **Routing**: a call names a vchannel; its physical channel is
  ``CollectionInfo.pchannels[i]`` for ``vchannels[i]``. A vchannel whose pchannel this node does
  not serve raises :class:`ChannelNotOwned` (retryable: the proxy refreshes its routing).
* **Flush**: :meth:`flush` seals on every vchannel and returns a
  :class:`~cluster.interfaces.FlushTicket` of every segment of the collection not yet flushed
  there; ``flush_ts`` is the smallest per-channel seal timestamp (everything at or below it is in
  the ticket's segments). :meth:`flush_state` is true once each of them is written and
  registered (this node's owners know their own; otherwise the coordinator's registry decides).
* **Reads** (:meth:`search`, :meth:`query`): every vchannel of a request must be served here
  (else :class:`ChannelNotOwned`); the filter is compiled once per request against this node's
  schema of the collection; the node waits for the guarantee timestamp on each channel, then
  reads every in-memory segment of the collection on those vchannels (growing, and sealed but
  not yet flushed: rows stay searchable here until their segment is written and registered)
  at one ``visible_ts`` (see :meth:`~cluster.interfaces.StreamingService.search`). Big reads
  (rows x queries above ``THREAD_READ_WORK``) run in a worker thread so the channels' acks and
  ticks keep flowing. As the vchannels' shard delegator the node also answers for their
  flushed (sealed) segments: those a query node has loaded (``query_router``) are read there,
  with the node's delete buffer and memory generation sent along; the rest, and the share of
  a query node whose call failed, it reads itself (:mod:`cluster.streaming.sealed`: loaded
  lazily from object storage, every delete of the vchannel applied by timestamp). Everything
  is merged with the growing hits by the usual reduce (newest version per key; a row in two
  sources during a handoff counts once). Invariants: ``cluster/READ_PATH.md``.
* **Lifecycle**: ``start`` -> ``serving`` -> ``close``. A supervisor task that crashes with an
  unexpected error stops the node loudly (logged, :meth:`wait` raises it, calls raise
  :class:`NodeClosed`); so does the loss of the node's session, when one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa

from cluster.coordinator.channel_manager import AssignmentKind, AssignmentWatcher
from cluster.coordinator.errors import CollectionNotFound, PartitionNotFound
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.sessions import NodeSession, SessionLost
from cluster.expr import FilterPlan
from cluster.interfaces import (
    COUNT_COLUMN,
    VISIBLE_TS_KEY,
    CoordinatorService,
    FlushTicket,
    GrowingQuery,
    GrowingSearch,
    GrowingSearchResult,
    WriteAck,
)
from cluster.milvus.status import FieldNotFound, Timeout
from cluster.query.node import ShardRead
from cluster.query.segment import SealedSegment
from cluster.results import PartialResult, reduce_query, reduce_search
from cluster.schema import CollectionSchema, DataType
from cluster.streaming.channel import ChannelOwner
from cluster.streaming.config import StreamingConfig
from cluster.streaming.errors import ChannelFenced, ChannelNotOwned, NodeClosed
from cluster.streaming.growing import GrowingSegment, stored_schema
from cluster.streaming.reads import compile_read_filter, query_segments, search_segments
from cluster.streaming.routing import CollectionCache, pchannel_of
from cluster.streaming.sealed import (
    SealedReader,
    SealedSnapshot,
    count_distinct,
    query_sealed,
    search_sealed,
)
from cluster.streaming.search import Metric
from woodpecker import LogStore
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, InvalidArgument
from woodpecker.meta.base import MetaStore
from woodpecker.objectstore.base import ObjectStore

if TYPE_CHECKING:
    from cluster.query.routing import QueryRouter
    from cluster.rpc.query import QueryNodeClient

R = TypeVar("R")

__all__ = ["THREAD_READ_WORK", "NodeStatus", "StreamingNode"]

log = logging.getLogger(__name__)

THREAD_READ_WORK = 200_000
"""A read over more rows x queries than this runs in a worker thread."""


class NodeStatus(enum.StrEnum):
    NEW = "new"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class StreamingNode:
    """See the module docstring. ``log_store`` holds the WAL logs (one per pchannel),
    ``objects`` receives sealed segments (under ``config.storage_root``), ``meta`` keeps the
    channel checkpoints (default: the log store's meta store)."""

    def __init__(
        self,
        log_store: LogStore,
        objects: ObjectStore,
        coordinator: CoordinatorService,
        *,
        channels: Sequence[str] = (),
        watcher: AssignmentWatcher | None = None,
        session: NodeSession | None = None,
        meta: MetaStore | None = None,
        clock: Clock | None = None,
        config: StreamingConfig | None = None,
        restart_delay: float = 0.5,
        max_restart_delay: float = 10.0,
        query_router: QueryRouter | None = None,
    ) -> None:
        self.log_store = log_store
        self.query_router = query_router
        self.objects = objects
        self.coordinator = coordinator
        self.watcher = watcher
        self.session = session
        self.meta = meta or log_store.meta
        self.clock: Clock = clock or RealClock()
        self.config = config or StreamingConfig()
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.collections = CollectionCache(coordinator)
        self.status = NodeStatus.NEW
        self.failure: BaseException | None = None
        self._explicit = list(dict.fromkeys(channels))
        self._owners: dict[str, ChannelOwner] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        self._channel_tasks: set[asyncio.Task[None]] = set()
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self.sealed = SealedReader(
            objects, coordinator, root=self.config.storage_root, clock=self.clock,
            cache_dir=self.config.sealed_cache_dir, cache_bytes=self.config.sealed_cache_bytes,
            refresh_interval=self.config.sealed_refresh_interval,
        )  # fmt: skip

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take over the explicit channels (returns once each serves; raises the first
        takeover error) and start following the watcher / session."""
        if self.status is not NodeStatus.NEW:
            raise RuntimeError("StreamingNode.start() called twice")
        self.status = NodeStatus.SERVING
        try:
            for channel in self._explicit:
                self._supervise(channel, None)
            if self._ready:
                await asyncio.gather(*self._ready.values())
            if self.watcher is not None:
                await self.watcher.start()
                self._spawn(self._follow_assignments(), "assignments")
            if self.session is not None:
                self._spawn(self._watch_session(), "session")
        except BaseException:
            await self.close()
            raise
        log.info("streaming node serving channels %s", sorted(self._owners))

    async def close(self) -> None:
        """Close every channel owner gracefully and stop the background tasks."""
        if self.status in (NodeStatus.STOPPING, NodeStatus.STOPPED):
            return
        if self.status is not NodeStatus.FAILED:
            self.status = NodeStatus.STOPPING
        tasks = [*self._tasks, *self._supervisors.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        owners = list(self._owners.values())
        self._owners.clear()
        await asyncio.gather(*(o.close() for o in owners), return_exceptions=True)
        if self.watcher is not None:
            with contextlib.suppress(CanopyError):
                await self.watcher.close()
        await self.sealed.close()
        if self.status is NodeStatus.STOPPING:
            self.status = NodeStatus.STOPPED
        self._stopped.set()

    def abandon(self) -> None:
        """Stop like a crashed process (tests, simulations): cancel every task; close, flush
        and save nothing. The WAL writers stay open until a new owner fences them."""
        self.status = NodeStatus.STOPPED
        for task in [*self._tasks, *self._supervisors.values()]:
            task.cancel()
        for owner in self._owners.values():
            owner.abandon()
        self._owners.clear()
        self.sealed.discard()
        self._stopped.set()

    async def wait(self) -> None:
        """Return when the node is closed; raise what stopped it if it failed."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    async def __aenter__(self) -> StreamingNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro, name: str) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro, name=f"streaming-node-{name}")
        task.add_done_callback(self._task_done)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.status is not NodeStatus.SERVING:
            return
        exc = task.exception()
        if exc is None:
            if task in self._channel_tasks:
                return  # a channel that ended normally (fenced, revoked)
            exc = RuntimeError(f"{task.get_name()} ended unexpectedly")
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop the node loudly: log, close everything in the background, make ``wait`` raise."""
        if self.failure is not None:
            return
        log.error("streaming node stopping after a failure", exc_info=exc)
        self.failure = exc
        self.status = NodeStatus.FAILED
        self._closing = asyncio.get_running_loop().create_task(
            self.close(), name="streaming-node-close"
        )

    # --- channel supervision -------------------------------------------------------------------

    @property
    def channels(self) -> list[str]:
        """The physical channels this node serves now."""
        return sorted(self._owners)

    def owner(self, pchannel: str) -> ChannelOwner:
        owner = self._owners.get(pchannel)
        if owner is None:
            self._check_usable()
            raise ChannelNotOwned(
                f"physical channel {pchannel} is not served by this streaming node; refresh the "
                "routing and retry at its owner",
                channel=pchannel,
            )
        return owner

    def _supervise(self, channel: str, epoch: int | None) -> None:
        old = self._supervisors.pop(channel, None)
        if old is not None:
            old.cancel()
        self._ready[channel] = asyncio.get_running_loop().create_future()
        task = self._spawn(self._run_channel(channel, epoch), f"channel-{channel}")
        self._supervisors[channel] = task
        # Remembered until done: a fenced channel's supervisor ends normally, and the revoke
        # that follows may drop it from _supervisors before its done-callback runs.
        self._channel_tasks.add(task)
        task.add_done_callback(self._channel_tasks.discard)

    async def _run_channel(self, channel: str, epoch: int | None) -> None:
        """Take ``channel`` over and keep it served: restart after retryable failures, give up
        when fenced. Unexpected errors propagate (and stop the node)."""
        delay = self.restart_delay
        ready = self._ready[channel]
        try:
            while True:
                owner = ChannelOwner(
                    channel, self.log_store, self.objects, self.coordinator, meta=self.meta,
                    clock=self.clock, config=self.config, collections=self.collections,
                )  # fmt: skip
                try:
                    await owner.start()
                except CanopyError as exc:
                    if not exc.retryable:
                        raise
                    log.warning("channel %s: takeover failed, retrying: %s", channel, exc)
                    await self.clock.sleep(delay)
                    delay = min(delay * 2, self.max_restart_delay)
                    continue
                self._owners[channel] = owner
                if not ready.done():
                    ready.set_result(None)
                if self.watcher is not None and epoch is not None:
                    await self._ack(channel, epoch)
                failure = await owner.wait_failed()
                if self._owners.get(channel) is owner:
                    del self._owners[channel]
                await owner.close()
                if isinstance(failure, ChannelFenced):
                    log.warning("channel %s: taken over by another node; dropping it", channel)
                    return
                if not isinstance(failure, CanopyError):
                    raise failure
                log.warning("channel %s failed (%s); taking it over again", channel, failure)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
                ready.exception()
            raise

    async def _ack(self, channel: str, epoch: int) -> None:
        """Acknowledge the assignment (retrying retryable meta errors)."""
        assert self.watcher is not None
        delay = self.restart_delay
        while True:
            try:
                if not await self.watcher.ack(channel, epoch):
                    log.warning("channel %s moved on before the ack of epoch %d", channel, epoch)
                return
            except CanopyError as exc:
                if not exc.retryable:
                    raise
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)

    async def _release(self, channel: str) -> None:
        task = self._supervisors.pop(channel, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        owner = self._owners.pop(channel, None)
        if owner is not None:
            await owner.close()

    async def _follow_assignments(self) -> None:
        assert self.watcher is not None
        async for event in self.watcher:
            if event.kind is AssignmentKind.ASSIGNED:
                log.info("channel %s assigned (epoch %d)", event.channel, event.epoch)
                self._supervise(event.channel, event.epoch)
            else:
                log.info("channel %s revoked (epoch %d)", event.channel, event.epoch)
                await self._release(event.channel)
        raise RuntimeError("the assignment watch ended")

    async def _watch_session(self) -> None:
        assert self.session is not None
        await self.session.wait_lost()
        if self.status is NodeStatus.SERVING:
            raise SessionLost(f"session {self.session.key} lost: the node must stop serving")

    # --- routing -------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.status is not NodeStatus.SERVING:
            raise NodeClosed(f"streaming node is {self.status.value}")
        if self.session is not None and (reason := self.session.unconfirmed_reason()):
            # its channels may have moved meanwhile: serving them could miss newer writes
            raise NodeClosed(f"streaming node is not serving: {reason}")

    async def _route(
        self, collection_id: int, vchannel: str, *partition_ids: int | None
    ) -> ChannelOwner:
        """The owner of ``vchannel``'s pchannel, once the vchannel and every partition named
        (None: all partitions) are known to belong to the collection."""
        self._check_usable()
        info, _ = await self.collections.get(collection_id)

        def unknown(info: CollectionInfo) -> list[int]:
            known = {p.partition_id for p in info.partitions}
            return [p for p in partition_ids if p is not None and p not in known]

        if vchannel not in info.vchannels or unknown(info):
            info, _ = await self.collections.get(collection_id, refresh=True)
        if vchannel not in info.vchannels:
            raise InvalidArgument(
                f"{vchannel} is not a vchannel of collection {collection_id} ({info.vchannels})"
            )
        if missing := unknown(info):
            raise PartitionNotFound(str(missing[0]), info.name)
        return self.owner(info.pchannels[info.vchannels.index(vchannel)])

    # --- StreamingService ----------------------------------------------------------------------

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        owner = await self._route(collection_id, vchannel, partition_id)
        return await owner.insert(collection_id, partition_id, vchannel, table)

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        owner = await self._route(collection_id, vchannel, partition_id)
        return await owner.delete(collection_id, partition_id, vchannel, pks)

    async def upsert(
        self,
        collection_id: int,
        vchannel: str,
        inserts: Sequence[tuple[int, pa.Table]],
        delete_pks: pa.Array,
        delete_partition_id: int | None,
    ) -> WriteAck:
        pids = [pid for pid, _ in inserts]
        owner = await self._route(collection_id, vchannel, *pids, delete_partition_id)
        return await owner.upsert(collection_id, vchannel, inserts, delete_pks, delete_partition_id)

    async def flush(self, collection_id: int, vchannels: list[str]) -> FlushTicket:
        """Seal on every vchannel (each must be served here, else :class:`ChannelNotOwned`);
        see the module docstring for the ticket."""
        owners = [(await self._route(collection_id, v), v) for v in vchannels]
        results = await asyncio.gather(*(o.flush(collection_id, v) for o, v in owners))
        ids = sorted({sid for sids, _ in results for sid in sids})
        flush_ts = min((ts for _, ts in results), default=0)
        if not results:
            flush_ts = await self.coordinator.allocate_timestamp()
        return FlushTicket(collection_id, tuple(ids), flush_ts)

    async def flush_state(self, ticket: FlushTicket) -> bool:
        self._check_usable()
        owners = list(self._owners.values())
        pending = [s for s in ticket.segment_ids if not any(o.is_flushed(s) for o in owners)]
        if not pending:
            return True
        registered = {
            s.segment_id for s in await self.coordinator.list_segments(ticket.collection_id)
        }
        if all(s in registered for s in pending):
            return True
        try:
            await self.coordinator.describe_collection_by_id(ticket.collection_id)
        except CollectionNotFound:
            return True  # dropped: its growing data is gone, nothing will ever flush
        return False

    async def drop_collection(self, collection_id: int, vchannels: list[str]) -> None:
        self._check_usable()
        for vchannel in vchannels:
            owner = self.owner(pchannel_of(vchannel))
            await owner.drop_collection(collection_id, vchannel)
        self.collections.forget(collection_id)
        self.sealed.forget_collection(collection_id)

    # --- reads (for the search path) -----------------------------------------------------------

    def service_ts(self, vchannel: str) -> int:
        """The latest timestamp applied on the vchannel's physical channel (every write at or
        below it is visible in the growing segments)."""
        return self.owner(pchannel_of(vchannel)).service_ts

    async def wait_for_ts(self, vchannel: str, ts: int) -> int:
        """Wait until :meth:`service_ts` of ``vchannel`` reaches ``ts`` (bound it with
        ``asyncio.timeout``)."""
        return await self.owner(pchannel_of(vchannel)).wait_for_ts(ts)

    def growing_segments(
        self, collection_id: int, vchannel: str, partition_ids: list[int] | None = None
    ) -> list[GrowingSegment]:
        return self.owner(pchannel_of(vchannel)).growing_segments(
            collection_id, vchannel, partition_ids
        )

    # --- StreamingService: reads ---------------------------------------------------------------

    async def search(self, request: GrowingSearch) -> GrowingSearchResult:
        """See :meth:`cluster.interfaces.StreamingService.search`."""
        schema, owners = await self._read_target(
            request.collection_id, request.vchannels, request.partition_ids
        )
        queries = _check_search(request, schema)
        stored = self._stored_schema(request.collection_id, schema)
        _check_columns(request.output_fields, stored)
        plan = compile_read_filter(request.filter, schema, request.template_values)
        visible_ts = await self._read_ts(owners, request.guarantee_ts, request.wait_timeout)
        segments = self._segments(request.collection_id, owners, request.partition_ids)
        snaps = self._sealed_snapshots(request.collection_id, owners)
        _prepare_pk_lookups(plan, segments)
        work = sum(seg.num_rows for seg in segments) * max(len(queries), 1)
        args = (segments, _with_queries(request, queries), plan, visible_ts, schema, stored)
        if work > THREAD_READ_WORK:
            hits = await asyncio.to_thread(search_segments, *args)
        else:
            hits = search_segments(*args)
        parts = await self._search_sealed(
            snaps, _with_queries(request, queries), plan, visible_ts, schema, stored
        )
        if parts:
            hits = reduce_search([hits, *parts], len(queries), request.metric, request.k)
        return GrowingSearchResult(hits, visible_ts)

    async def query(self, request: GrowingQuery) -> pa.Table:
        """See :meth:`cluster.interfaces.StreamingService.query`."""
        schema, owners = await self._read_target(
            request.collection_id, request.vchannels, request.partition_ids
        )
        if request.limit is not None and request.limit < 0:
            raise InvalidArgument(f"query limit must not be negative, got {request.limit}")
        stored = self._stored_schema(request.collection_id, schema)
        _check_columns(request.output_fields, stored)
        plan = compile_read_filter(request.filter, schema, request.template_values)
        visible_ts = await self._read_ts(owners, request.guarantee_ts, request.wait_timeout)
        segments = self._segments(request.collection_id, owners, request.partition_ids)
        snaps = self._sealed_snapshots(request.collection_id, owners)
        _prepare_pk_lookups(plan, segments)
        pk = schema.primary_field.name
        tables = await self._query_sealed(snaps, request, plan, visible_ts, pk, stored)
        growing_request = request
        if tables and request.count:  # count distinct keys over both sources: keys needed
            growing_request = dataclasses.replace(
                request, count=False, output_fields=(), limit=None
            )
        work = sum(seg.num_rows for seg in segments)
        args = (segments, growing_request, plan, visible_ts, schema, stored)
        if work > THREAD_READ_WORK:
            table = await asyncio.to_thread(query_segments, *args)
        else:
            table = query_segments(*args)
        if tables:
            if request.count:
                total = count_distinct([table, *tables], pk)
                table = pa.table({COUNT_COLUMN: pa.array([total], pa.int64())})
            elif tables:
                table = reduce_query([table, *tables], pk, limit=request.limit)
        metadata = {**(table.schema.metadata or {}), VISIBLE_TS_KEY: str(visible_ts).encode()}
        return table.replace_schema_metadata(metadata)

    def _stored_schema(self, collection_id: int, schema: CollectionSchema) -> pa.Schema:
        """The Arrow schema of the collection's stored rows (cached with ``schema``; computed
        again if the collection was forgotten meanwhile)."""
        return self.collections.stored(collection_id) or stored_schema(schema)

    async def _read_target(
        self,
        collection_id: int,
        vchannels: Sequence[str],
        partition_ids: Sequence[int] | None,
    ) -> tuple[CollectionSchema, list[tuple[ChannelOwner, str]]]:
        """The node's schema of the collection and the owner of each vchannel (all must be
        served here; named partitions must exist)."""
        self._check_usable()
        _, schema = await self.collections.get(collection_id)
        pids = tuple(partition_ids or ())
        owners = [(await self._route(collection_id, v, *pids), v) for v in vchannels]
        return schema, owners

    async def _read_ts(
        self, owners: list[tuple[ChannelOwner, str]], guarantee_ts: int, wait_for: float
    ) -> int:
        """Wait (at most ``wait_for`` s) until each channel has applied every write stamped at
        or below ``guarantee_ts``; then the one timestamp to read them all at: the largest
        timestamp known to be issued for a quiescent channel, its service time (or the
        proven floor) for one with writes in flight; the smallest over the channels."""
        unique = list({id(o): o for o, _ in owners}.values())
        floors: list[int] = []
        try:
            async with asyncio.timeout(wait_for):
                for owner in unique:
                    floors.append(await owner.wait_readable(guarantee_ts))
        except TimeoutError:
            late = unique[len(floors)]
            raise Timeout(
                f"channel {late.pchannel} did not reach the guarantee timestamp {guarantee_ts} "
                f"within {wait_for:g} s (service time {late.service_ts})"
            ) from None
        if not unique:
            return guarantee_ts
        issued = max(guarantee_ts, *(o.service_ts for o in unique))
        return min(
            issued if o.quiescent else max(o.service_ts, floor)
            for o, floor in zip(unique, floors, strict=True)
        )

    def _sealed_snapshots(
        self, collection_id: int, owners: list[tuple[ChannelOwner, str]]
    ) -> list[SealedSnapshot]:
        """Taken with the growing segments (no await between): see
        :mod:`cluster.streaming.sealed`."""
        return [SealedReader.snapshot(collection_id, v, owner.mem) for owner, v in owners]

    async def _plan_sealed(
        self, snaps: list[SealedSnapshot], partition_ids: Sequence[int] | None
    ) -> tuple[dict[str, list[ShardRead]], list[ShardRead | SealedSnapshot]]:
        """Who reads which sealed segments: ``(remote, local)``, the shards to ask each query
        node (by address) for, and what this node reads itself (a snapshot alone: all of its
        vchannel's segments). Segments served remotely are released here."""
        if self.query_router is None:
            return {}, list(snaps)
        pids = None if partition_ids is None else list(partition_ids)
        remote: dict[str, list[ShardRead]] = {}
        local: list[ShardRead | SealedSnapshot] = []
        for snap in snaps:
            ids = await self.sealed.segment_ids(snap, pids)
            by_node, mine = self.query_router.split(snap.collection_id, ids)
            for address, sids in by_node.items():
                remote.setdefault(address, []).append(ShardRead(snap, tuple(sids)))
                self.sealed.release(snap.collection_id, snap.vchannel, sids)
            if mine:
                local.append(ShardRead(snap, tuple(mine)))
        return remote, local

    async def _local_sealed(
        self,
        shards: Sequence[ShardRead | SealedSnapshot],
        partition_ids: Sequence[int] | None,
        index_field: str | None = None,
    ) -> list[SealedSegment]:
        pids = None if partition_ids is None else list(partition_ids)
        out: list[SealedSegment] = []
        for shard in shards:
            if isinstance(shard, SealedSnapshot):
                out.extend(await self.sealed.segments(shard, pids, field=index_field))
            else:
                out.extend(
                    await self.sealed.segments(
                        shard.snapshot, pids, field=index_field, only=set(shard.segment_ids)
                    )
                )
        return out

    async def _search_sealed(
        self,
        snaps: list[SealedSnapshot],
        request: GrowingSearch,
        plan: FilterPlan | None,
        visible_ts: int,
        schema: CollectionSchema,
        stored: pa.Schema,
    ) -> list[PartialResult]:
        """The sealed hits of a search (see :meth:`_delegate`)."""
        pk = schema.primary_field.name

        async def here(shards: Sequence[ShardRead | SealedSnapshot]) -> list[PartialResult]:
            segments = await self._local_sealed(shards, request.partition_ids, request.anns_field)
            if not segments:
                return []
            return await search_sealed(
                segments, request, request.queries, plan, visible_ts, pk, stored,
                self.sealed.strategies,
            )  # fmt: skip

        async def there(client: QueryNodeClient, shards: list[ShardRead]) -> PartialResult:
            return await client.search_sealed(request, visible_ts, shards)

        return await self._delegate(snaps, request.partition_ids, here, there)

    async def _query_sealed(
        self,
        snaps: list[SealedSnapshot],
        request: GrowingQuery,
        plan: FilterPlan | None,
        visible_ts: int,
        pk: str,
        stored: pa.Schema,
    ) -> list[pa.Table]:
        """The sealed rows of a query (see :meth:`_delegate`)."""

        async def here(shards: Sequence[ShardRead | SealedSnapshot]) -> list[pa.Table]:
            segments = await self._local_sealed(shards, request.partition_ids)
            if not segments:
                return []
            return await query_sealed(segments, request, plan, visible_ts, pk, stored)

        async def there(client: QueryNodeClient, shards: list[ShardRead]) -> pa.Table:
            return await client.query_sealed(request, visible_ts, shards)

        return await self._delegate(snaps, request.partition_ids, here, there)

    async def _delegate(
        self,
        snaps: list[SealedSnapshot],
        partition_ids: Sequence[int] | None,
        here: Callable[[Sequence[ShardRead | SealedSnapshot]], Awaitable[list[R]]],
        there: Callable[[QueryNodeClient, list[ShardRead]], Awaitable[R]],
    ) -> list[R]:
        """The sealed part of a read, concurrently: ``there`` from each query node that has
        segments of it loaded, ``here`` for the rest and for the share of a query node whose
        call failed with a retryable error (unreachable, closing)."""
        remote, local = await self._plan_sealed(snaps, partition_ids)
        if not remote:  # no query node involved (standalone): no task per read
            return await here(local) if local else []

        async def ask(address: str, shards: list[ShardRead]) -> list[R]:
            assert self.query_router is not None
            try:
                return [await there(self.query_router.client(address), shards)]
            except CanopyError as exc:
                if not exc.retryable:
                    raise
                log.info("query node %s failed a read (%s); reading here instead", address, exc)
                return await here(shards)

        results = await asyncio.gather(here(local), *(ask(a, s) for a, s in remote.items()))
        return [part for result in results for part in result]

    @staticmethod
    def _segments(
        collection_id: int,
        owners: list[tuple[ChannelOwner, str]],
        partition_ids: Sequence[int] | None,
    ) -> list[GrowingSegment]:
        pids = None if partition_ids is None else list(partition_ids)
        return [
            seg
            for owner, vchannel in owners
            for seg in owner.growing_segments(collection_id, vchannel, pids)
        ]


def _prepare_pk_lookups(plan: FilterPlan | None, segments: Sequence[GrowingSegment]) -> None:
    """Build the segments' ``pk -> row`` indexes on this (the writer's) thread when the filter
    names primary keys (a read may then run in a worker thread)."""
    if plan is not None and plan.pk_values() is not None:
        for seg in segments:
            seg.latest_rows([])


def _with_queries(request: GrowingSearch, queries: np.ndarray) -> GrowingSearch:
    """``request`` with its queries as checked (float32, 2-D)."""
    if queries is request.queries:
        return request
    return dataclasses.replace(request, queries=queries)


def _check_search(request: GrowingSearch, schema: CollectionSchema) -> np.ndarray:
    """The queries as a float32 ``(nq, dim)`` array, once the field, metric and k are valid."""
    field = schema.get_field(request.anns_field)
    if field is None or field.dtype != DataType.FLOAT_VECTOR:
        raise InvalidArgument(f"{request.anns_field!r} is not a float vector field")
    try:
        Metric.parse(request.metric)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if request.k < 1:
        raise InvalidArgument(f"k must be positive, got {request.k}")
    queries = np.asarray(request.queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != field.dim:
        raise InvalidArgument(f"queries must be (nq, {field.dim}), got shape {queries.shape}")
    return queries


def _check_columns(names: Sequence[str], stored: pa.Schema) -> None:
    for name in names:
        if stored.get_field_index(name) < 0:
            raise FieldNotFound(name)
