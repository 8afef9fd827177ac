"""The background parts of index builds (records and transitions: ``index_builds.py``).

- :class:`BuildQueue` mirrors ``index_builds/`` (a snapshot, then the watch): the open builds
  in memory, so a claim needs no range read, and a wake-up for workers when a build becomes
  pending. It is the worker's ``BuildSource`` (``cluster/datanode/worker.py``) in a process that
  talks to the MetaStore directly (``canopy data-node``); ``LocalCoordinator`` wraps one.
- :class:`IndexBuildScheduler` is the coordinator's part: it reconciles every collection at
  start, then follows ``catalog/indexes/`` (an index created or dropped: create or drop that
  collection's records) and ``catalog/collection_ids/`` (a dropped collection: drop its
  records), expires leases every ``BuildPolicy.expiry_interval`` (reassignment) and reconciles
  everything every ``BuildPolicy.reconcile_interval`` as a safety net. New segments get their
  records from ``LocalCoordinator.report_flushed_segment``.

Both are supervised: a task that crashes stops its object and ``wait()`` raises the error;
retryable store errors are retried with back-off on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cluster.coordinator.index_builds import (
    BUILDS_PREFIX,
    BuildOutcome,
    BuildRecord,
    BuildResult,
    BuildState,
    BuildTask,
    IndexBuilds,
    collection_of,
    decode_build,
)
from cluster.coordinator.records import INDEXES_PREFIX
from cluster.coordinator.watching import PrefixMirror
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import KeyValue

__all__ = ["BuildQueue", "IndexBuildScheduler"]

log = logging.getLogger(__name__)

_COLLECTION_IDS_PREFIX = "catalog/collection_ids/"


class _Background:
    """Supervised tasks: the first one to end (or fail) stops the others; ``wait()`` raises its
    error, ``close()`` cancels them all."""

    name = "background"

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._closed = False

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(run(), name=f"{self.name}-{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        exc = task.exception() or RuntimeError(f"{task.get_name()} ended unexpectedly")
        log.error("%s failed; stopping", task.get_name(), exc_info=exc)
        self._failure = self._failure or exc
        for other in self._tasks:
            other.cancel()
        self._stopped.set()

    async def wait(self) -> None:
        """Until closed; raises what stopped a task."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._stopped.set()


async def _retrying(what: str, call: Callable[[], Awaitable[object]], clock: Clock) -> None:
    """Run ``call``; a retryable store error is logged and retried with back-off."""
    delay = 0.05
    while True:
        try:
            await call()
            return
        except CanopyError as exc:
            if not exc.retryable:
                raise
            log.warning("%s: %s; retrying in %.2f s", what, exc, delay)
            await clock.sleep(delay)
            delay = min(delay * 2, 2.0)


class BuildQueue(_Background):
    """The open (pending or building) builds, mirrored from ``index_builds/``: workers claim
    from it without range reads and wait on it for new work. Implements the worker's
    ``BuildSource`` (``cluster/datanode/worker.py``)."""

    name = "build-queue"

    def __init__(self, builds: IndexBuilds) -> None:
        super().__init__()
        self.builds = builds
        self._mirror = PrefixMirror(builds.meta, BUILDS_PREFIX, builds.clock)
        self._open: dict[str, tuple[BuildRecord, KeyValue]] = {}
        self._work = asyncio.Event()

    async def start(self) -> None:
        for kv in (await self._mirror.start()).values():
            self._note(kv.key, kv)
        self._spawn("follow", self._follow)

    async def close(self) -> None:
        await super().close()  # first: a mirror that ends is not taken for a failure
        await self._mirror.close()

    async def _follow(self) -> None:
        async for change in self._mirror:
            self._note(change.key, change.new)

    def _note(self, key: str, kv: KeyValue | None) -> None:
        record = decode_build(kv) if kv is not None else None
        if record is None or record.state in (BuildState.FINISHED, BuildState.FAILED):
            self._open.pop(key, None)
            return
        self._open[key] = (record, kv)  # type: ignore[assignment]
        if record.state is BuildState.PENDING:
            self._work.set()

    def open_builds(self) -> list[BuildRecord]:
        return [r for r, _ in self._open.values()]

    def building(self) -> list[KeyValue]:
        return [kv for r, kv in self._open.values() if r.state is BuildState.BUILDING]

    # --- BuildSource -------------------------------------------------------------------------

    async def claim_index_build(self, node_id: int) -> BuildTask | None:
        self._work.clear()  # a build that appears from here on wakes the next wait
        now = self.builds.clock.now()
        ready = sorted(
            (r.retry_at, r.created_at, key)
            for key, (r, _) in self._open.items()
            if r.claimable(now)
        )
        return await self.builds.claim(node_id, [self._open[k][1] for *_, k in ready])

    async def heartbeat_index_build(self, task: BuildTask, progress: float) -> BuildOutcome:
        return await self.builds.heartbeat(task, progress)

    async def finish_index_build(self, task: BuildTask, result: BuildResult) -> BuildOutcome:
        return await self.builds.finish(task, result)

    async def fail_index_build(self, task: BuildTask, error: str, retryable: bool) -> BuildOutcome:
        return await self.builds.fail(task, error, retryable)

    async def release_index_build(self, task: BuildTask) -> BuildOutcome:
        return await self.builds.release(task)

    async def wait_for_index_builds(self, within: float) -> None:
        """Until a build may have become claimable since the last claim, at most ``within``
        seconds."""
        waiter = asyncio.ensure_future(self._work.wait())
        sleeper = asyncio.ensure_future(self.builds.clock.sleep(within))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()


class IndexBuildScheduler(_Background):
    """The coordinator's part: creates and drops build records as indexes, collections and
    segments come and go, and expires leases (see the module docstring). ``queue`` supplies
    the building records to check (its mirror), so expiry costs no reads."""

    name = "index-build-scheduler"

    def __init__(self, builds: IndexBuilds, queue: BuildQueue) -> None:
        super().__init__()
        self.builds = builds
        self.queue = queue
        self.clock = builds.clock
        self._mirrors = [
            PrefixMirror(builds.meta, INDEXES_PREFIX, self.clock),
            PrefixMirror(builds.meta, _COLLECTION_IDS_PREFIX, self.clock),
        ]

    async def start(self) -> None:
        """Reconcile everything once, then follow the catalog and expire leases."""
        for mirror in self._mirrors:
            await mirror.start()
        await self.builds.sync_all()
        for mirror in self._mirrors:
            self._spawn(mirror.prefix.split("/")[1], lambda m=mirror: self._follow(m))
        self._spawn("expiry", self._expire)
        self._spawn("reconcile", self._reconcile)

    async def close(self) -> None:
        await super().close()
        for mirror in self._mirrors:
            await mirror.close()

    async def _follow(self, mirror: PrefixMirror) -> None:
        async for change in mirror:
            cid = collection_of(change.key, mirror.prefix)
            if cid is None:
                continue
            if mirror.prefix == _COLLECTION_IDS_PREFIX and change.new is not None:
                continue  # created or renamed: index records drive the builds
            await _retrying(
                f"sync builds of collection {cid}",
                lambda c=cid: self.builds.sync_collection(c),
                self.clock,
            )

    async def _expire(self) -> None:
        while True:
            await self.clock.sleep(self.builds.policy.expiry_interval)
            await _retrying(
                "expire index build leases",
                lambda: self.builds.expire_leases(self.queue.building()),
                self.clock,
            )

    async def _reconcile(self) -> None:
        while True:
            await self.clock.sleep(self.builds.policy.reconcile_interval)
            await _retrying("reconcile index builds", self.builds.sync_all, self.clock)
