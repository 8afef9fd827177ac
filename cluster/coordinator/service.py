"""The in-process :class:`~cluster.interfaces.CoordinatorService`: what the other roles ask the
coordinator, answered from the MetaStore (used in-process by ``canopy standalone``, and served over
gRPC to the other roles by ``canopy coordinator`` through ``cluster.rpc.coordinator``).

Contract of :class:`LocalCoordinator`:

- ``allocate_timestamp`` comes from one :class:`~cluster.coordinator.tso.TimestampOracle`
  (strictly increasing across calls, oracles and restarts on the same meta store).
- ``allocate_ids`` comes from an :class:`~cluster.coordinator.ids.IdAllocator` on
  ``coordinator/ids`` reserving large blocks (``id_batch``, default 2**20), so allocating the
  row ids of an insert batch is one meta CAS per ~200 batches. Ids are unique across
  coordinators and restarts and never reused (unused ids of a block are skipped).
- ``describe_collection_by_id`` reads the :class:`~cluster.coordinator.catalog.Catalog`.
- The **segment registry** holds one key per sealed segment,
  ``segments/{collection_id:020d}/{segment_id:020d}`` (JSON :class:`SegmentRecord`).
  ``report_flushed_segment`` creates it if absent (a create-if-absent CAS, stamped with a TSO
  timestamp ``flushed_ts``), so a streaming node that re-reports after a crash changes nothing;
  then it creates the segment's index build records (one per index of the collection, if absent).
  ``list_segments`` is one range read.
- **Index builds** (``index_builds.py``, ``index_scheduler.py``): ``claim_index_build``,
  ``heartbeat_index_build``, ``finish_index_build``, ``fail_index_build``,
  ``release_index_build`` and ``wait_for_index_builds`` make the coordinator a worker's
  ``BuildSource`` (``cluster/datanode/worker.py``); ``index_build_progress`` answers the proxy's
  DescribeIndex. With ``schedule_index_builds=True`` ``start()`` also runs the build queue and
  the scheduler (records follow index and collection DDL, leases expire); ``wait()`` raises if
  either fails. Without it, claims read ``index_builds/`` directly and records appear only for
  segments registered here.
- **Compactions** (``compactions.py``): ``compactions`` holds the plan records; with
  ``allocate_timestamp`` and ``allocate_ids`` that makes the coordinator a worker's
  ``CompactionSource`` (``cluster/datanode/compaction.py``), which plans, runs and commits
  them (the commit txn registers the output and drops the inputs here, in ``segments/``).

Keys: ``cluster/coordinator/META.md`` ("Coordinator service").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.compactions import CompactionPolicy, Compactions
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.index_builds import (
    BuildOutcome,
    BuildPolicy,
    BuildResult,
    BuildTask,
    IndexBuildProgress,
    IndexBuilds,
)
from cluster.coordinator.index_scheduler import BuildQueue, IndexBuildScheduler
from cluster.coordinator.query_assign import query_load_progress
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.tso import TimestampOracle
from cluster.interfaces import SegmentInfo
from woodpecker.clock import Clock, RealClock
from woodpecker.meta.base import MetaStore

__all__ = [
    "IDS_KEY",
    "SEGMENTS_PREFIX",
    "LocalCoordinator",
    "SegmentRecord",
    "segment_key",
    "segments_prefix",
]

log = logging.getLogger(__name__)

IDS_KEY = "coordinator/ids"
SEGMENTS_PREFIX = "segments/"
DEFAULT_ID_BATCH = 1 << 20


def segments_prefix(collection_id: int) -> str:
    return f"{SEGMENTS_PREFIX}{collection_id:020d}/"


def segment_key(collection_id: int, segment_id: int) -> str:
    return f"{segments_prefix(collection_id)}{segment_id:020d}"


@dataclass(frozen=True)
class SegmentRecord:
    """The value of a segment registry key. ``reported_at``: wall-clock seconds (injected
    clock) of the first report."""

    collection_id: int
    partition_id: int
    segment_id: int
    vchannel: str
    rows: int
    state: str = "flushed"
    reported_at: float = 0.0
    flushed_ts: int = 0  # TSO timestamp of the first report (0 in records from before it existed)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> SegmentRecord:
        raw = json.loads(value)
        return SegmentRecord(
            collection_id=int(raw["collection_id"]),
            partition_id=int(raw["partition_id"]),
            segment_id=int(raw["segment_id"]),
            vchannel=str(raw["vchannel"]),
            rows=int(raw["rows"]),
            state=str(raw.get("state", "flushed")),
            reported_at=float(raw.get("reported_at", 0.0)),
            flushed_ts=int(raw.get("flushed_ts", 0)),
        )

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.collection_id,
            self.partition_id,
            self.segment_id,
            self.vchannel,
            self.rows,
            self.state,
        )


class LocalCoordinator:
    """A :class:`~cluster.interfaces.CoordinatorService` over a MetaStore.

    ``await start()`` (or ``async with``) starts the timestamp oracle and the catalog (unless
    ready-made ones are passed in, which the caller then starts and closes) and, with
    ``schedule_index_builds``, the index build queue and scheduler; ``close()`` stops what it
    started. Safe to call from many tasks at once."""

    def __init__(
        self,
        meta: MetaStore,
        clock: Clock | None = None,
        *,
        catalog: Catalog | None = None,
        tso: TimestampOracle | None = None,
        id_batch: int = DEFAULT_ID_BATCH,
        build_policy: BuildPolicy | None = None,
        schedule_index_builds: bool = False,
        compaction_policy: CompactionPolicy | None = None,
    ) -> None:
        self.meta = meta
        self.clock: Clock = clock or RealClock()
        self._owns_catalog = catalog is None
        self._owns_tso = tso is None
        self.catalog = catalog or Catalog(meta)
        self.tso = tso or TimestampOracle(meta, self.clock)
        self._ids = IdAllocator(meta, IDS_KEY, batch=id_batch)
        self.index_builds = IndexBuilds(meta, self.clock, build_policy)
        self.compactions = Compactions(meta, self.clock, compaction_policy)
        self.local_load_progress: Callable[[int, list[int] | None], Awaitable[int]] | None = (
            None  # see load_progress
        )
        self._schedule = schedule_index_builds
        self.build_queue: BuildQueue | None = None
        self.build_scheduler: IndexBuildScheduler | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        if self._owns_tso:
            await self.tso.start()
        if self._owns_catalog:
            await self.catalog.start()
        if self._schedule:
            self.build_queue = BuildQueue(self.index_builds)
            await self.build_queue.start()
            self.build_scheduler = IndexBuildScheduler(self.index_builds, self.build_queue)
            await self.build_scheduler.start()
        self._started = True

    async def close(self) -> None:
        for part in (self.build_scheduler, self.build_queue):
            if part is not None:
                await part.close()
        if self._owns_tso and self._started:
            await self.tso.close()
        self._started = False

    async def wait(self) -> None:
        """Until the build queue or scheduler fails (raising its error) or they are closed;
        forever without them."""
        parts = [p.wait() for p in (self.build_queue, self.build_scheduler) if p is not None]
        if not parts:
            await asyncio.Event().wait()
        tasks = [asyncio.ensure_future(p) for p in parts]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()

    async def __aenter__(self) -> LocalCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- CoordinatorService --------------------------------------------------------------------

    async def allocate_timestamp(self, count: int = 1) -> int:
        return await self.tso.allocate(count)

    async def allocate_ids(self, count: int = 1) -> int:
        return await self._ids.allocate(count)

    async def describe_collection_by_id(self, collection_id: int) -> CollectionInfo:
        return await self.catalog.describe_collection(None, collection_id)

    async def report_flushed_segment(
        self, collection_id: int, partition_id: int, segment_id: int, vchannel: str, rows: int
    ) -> None:
        record = SegmentRecord(
            collection_id,
            partition_id,
            segment_id,
            vchannel,
            rows,
            "flushed",
            self.clock.now(),
            await self.tso.allocate(),
        )
        key = segment_key(collection_id, segment_id)
        if not await self.meta.cas(key, record.encode(), expected_version=0):
            existing = await self.meta.get(key)
            if existing is not None:
                old = SegmentRecord.decode(existing.value)
                if (old.partition_id, old.vchannel, old.rows) != (partition_id, vchannel, rows):
                    log.error(
                        "segment %d of collection %d reported again with different facts: "
                        "%s vs registered %s",
                        segment_id,
                        collection_id,
                        record,
                        old,
                    )
                record = old
        if record.state != "flushed":
            return  # compacted away since (a re-report after a crash): no index builds
        await self.index_builds.sync_segment(
            collection_id, record.partition_id, segment_id, record.rows, record.flushed_ts
        )

    async def list_segments(self, collection_id: int) -> list[SegmentInfo]:
        kvs = await self.meta.range(segments_prefix(collection_id))
        return [SegmentRecord.decode(kv.value).info() for kv in kvs]

    async def load_progress(
        self, collection_id: int, partition_ids: Sequence[int] | None = None
    ) -> int:
        """Query nodes' progress (:func:`query_load_progress`), or ``local_load_progress``'s
        when set (``canopy standalone``: its streaming node holds the sealed segments)."""
        if self.local_load_progress is not None:
            pids = None if partition_ids is None else list(partition_ids)
            return await self.local_load_progress(collection_id, pids)
        return await query_load_progress(self.meta, collection_id, partition_ids)

    # --- beyond the Protocol -------------------------------------------------------------------

    async def get_segment(self, collection_id: int, segment_id: int) -> SegmentInfo | None:
        kv = await self.meta.get(segment_key(collection_id, segment_id))
        return SegmentRecord.decode(kv.value).info() if kv is not None else None

    # --- index builds (the worker's BuildSource, and progress for the proxy) -------------------

    async def claim_index_build(self, node_id: int) -> BuildTask | None:
        if self.build_queue is not None:
            return await self.build_queue.claim_index_build(node_id)
        return await self.index_builds.claim(node_id)

    async def heartbeat_index_build(self, task: BuildTask, progress: float) -> BuildOutcome:
        return await self.index_builds.heartbeat(task, progress)

    async def finish_index_build(self, task: BuildTask, result: BuildResult) -> BuildOutcome:
        return await self.index_builds.finish(task, result)

    async def fail_index_build(self, task: BuildTask, error: str, retryable: bool) -> BuildOutcome:
        return await self.index_builds.fail(task, error, retryable)

    async def release_index_build(self, task: BuildTask) -> BuildOutcome:
        return await self.index_builds.release(task)

    async def wait_for_index_builds(self, within: float) -> None:
        if self.build_queue is not None:
            await self.build_queue.wait_for_index_builds(within)
        else:
            await self.clock.sleep(within)

    async def index_build_progress(
        self, collection_id: int, index_id: int, as_of_ts: int = 0
    ) -> IndexBuildProgress:
        """Rows indexed, total and pending over the collection's flushed segments, and the
        state as of ``as_of_ts`` (segments registered later build in the background): see
        :func:`~cluster.coordinator.index_builds.summarize`."""
        return await self.index_builds.progress(collection_id, index_id, as_of_ts)
