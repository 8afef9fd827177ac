"""The data node's index-build worker: claims builds from the coordinator and runs them.

Contract of :class:`IndexBuildWorker`:

- ``await start()`` runs a supervised loop until ``close()``: claim a build
  (``BuildSource.claim_index_build``), read the segment manifest (``cluster/storage``), build
  the index (``cluster/index.build_index``: the CPU-heavy part runs in a thread, the event loop
  stays free) and report it finished or failed. Idle, it waits for new work
  (``wait_for_index_builds``) at most ``poll_interval`` seconds. At most ``concurrency`` builds
  run at once (default 1: hnswlib already uses every core).
- While a build runs the worker heartbeats every ``lease / 3`` seconds (with the build's
  progress). A heartbeat answered ``STALE`` (the lease expired and the build moved) or ``GONE``
  (the index or collection was dropped) abandons the build; so does a finish answered that way.
  After ``GONE`` the worker deletes what it wrote under the build's prefix. (An abandoned hnswlib
  build keeps its thread until the graph is done; only its result is dropped.)
- Failures: a :class:`~woodpecker.errors.CanopyError` reports its ``retryable`` flag; a missing
  segment manifest, a damaged segment and bad index params are not retryable; any other
  exception is retryable (the coordinator gives up after ``BuildPolicy.max_failures``). An error
  talking to the source is retried with back-off if retryable; a non-retryable one stops the
  worker (``wait()`` raises it).
- ``close()`` cancels running builds and releases them (back to pending at once, so another
  worker need not wait for the lease to expire); returns when everything stopped.
- **Compaction**: given ``compactions``, or when the source is also a
  :class:`~cluster.datanode.compaction.CompactionSource` (``LocalCoordinator`` is; so every
  embedded worker and ``canopy standalone`` compacts), and ``compaction`` is true, the worker
  runs a :class:`~cluster.datanode.compaction.Compactor` beside the build loop (started,
  supervised by ``wait()`` and closed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cluster.coordinator.index_builds import BuildOutcome, BuildResult, BuildTask
from cluster.datanode.compaction import CompactionSource, Compactor
from cluster.index import IndexSpec, build_index, delete_index, index_manifest_key
from cluster.storage import SegmentCorrupt, SegmentNotFound, SegmentPath, read_manifest
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, InvalidArgument
from woodpecker.objectstore.base import ObjectStore

__all__ = ["BuildSource", "IndexBuildWorker", "WorkerStats"]

log = logging.getLogger(__name__)


class BuildSource(Protocol):
    """Where builds come from: ``LocalCoordinator`` in-process, or a ``BuildQueue`` over the
    MetaStore in a separate data-node process."""

    async def claim_index_build(self, node_id: int) -> BuildTask | None: ...

    async def heartbeat_index_build(self, task: BuildTask, progress: float) -> BuildOutcome: ...

    async def finish_index_build(self, task: BuildTask, result: BuildResult) -> BuildOutcome: ...

    async def fail_index_build(
        self, task: BuildTask, error: str, retryable: bool
    ) -> BuildOutcome: ...

    async def release_index_build(self, task: BuildTask) -> BuildOutcome: ...

    async def wait_for_index_builds(self, within: float) -> None: ...


@dataclass
class WorkerStats:
    """Counts since start, and the last build's wall time."""

    finished: int = 0
    failed: int = 0
    abandoned: int = 0
    last_build_seconds: float = 0.0


_NOT_RETRYABLE = (SegmentNotFound, SegmentCorrupt, InvalidArgument)


def classify_error(exc: BaseException) -> tuple[str, bool]:
    """``(message, retryable)`` of a build error."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _NOT_RETRYABLE):
        return message, False
    if isinstance(exc, CanopyError):
        return message, exc.retryable
    return message, True


class IndexBuildWorker:
    """See the module docstring."""

    def __init__(
        self,
        source: BuildSource,
        objects: ObjectStore,
        node_id: int,
        *,
        clock: Clock | None = None,
        root: str = "",
        concurrency: int = 1,
        poll_interval: float = 1.0,
        num_threads: int = -1,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
        compaction: bool = True,
        compactions: CompactionSource | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.source = source
        self.objects = objects
        self.node_id = node_id
        self.clock = clock or RealClock()
        self.root = root
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.num_threads = num_threads
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._builds: dict[asyncio.Task[BuildOutcome], BuildTask] = {}
        self._loop: asyncio.Task[None] | None = None
        self._closing = False
        self.compactor: Compactor | None = None
        if compactions is None and isinstance(source, CompactionSource):
            compactions = source
        if compaction and compactions is not None:
            self.compactor = Compactor(
                compactions,
                objects,
                node_id,
                clock=self.clock,
                root=root,
                retry_delay=retry_delay,
                max_retry_delay=max_retry_delay,
            )

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("IndexBuildWorker.start() called twice")
        self._loop = asyncio.get_running_loop().create_task(
            self._run(), name=f"index-build-worker-{self.node_id}"
        )
        if self.compactor is not None:
            await self.compactor.start()
        log.info(
            "index build worker %d started (%d at a time; compaction %s)",
            self.node_id,
            self.concurrency,
            "on" if self.compactor is not None else "off",
        )

    async def wait(self) -> None:
        """Until the worker stops: raises what stopped it (``close()`` returns quietly)."""
        assert self._loop is not None, "not started"
        parts: list[asyncio.Future[None]] = [asyncio.ensure_future(self._wait_builds())]
        if self.compactor is not None:
            parts.append(asyncio.ensure_future(self.compactor.wait()))
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:
                part.result()
        finally:
            for part in parts:
                part.cancel()

    async def _wait_builds(self) -> None:
        assert self._loop is not None
        try:
            await asyncio.shield(self._loop)
        except asyncio.CancelledError:
            if self._loop.cancelled():
                return  # closed
            raise
        raise RuntimeError(f"index build worker {self.node_id} ended unexpectedly")

    async def close(self) -> None:
        self._closing = True
        if self.compactor is not None:
            await self.compactor.close()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop
        running = dict(self._builds)
        for task in running:
            task.cancel()
        for task, build in running.items():
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await self.source.release_index_build(build)

    @property
    def running(self) -> list[BuildTask]:
        return list(self._builds.values())

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            await self._slots.acquire()
            try:
                task = await self.source.claim_index_build(self.node_id)
            except CanopyError as exc:
                self._slots.release()
                if not exc.retryable:
                    raise
                log.warning("claiming an index build failed: %s; retrying in %.2f s", exc, delay)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            except BaseException:
                self._slots.release()
                raise
            delay = self.retry_delay
            if task is None:
                self._slots.release()
                await self.source.wait_for_index_builds(self.poll_interval)
                continue
            runner = asyncio.get_running_loop().create_task(
                self.run_build(task), name=f"index-build-{task.segment_id}"
            )
            self._builds[runner] = task
            runner.add_done_callback(self._build_done)

    def _build_done(self, runner: asyncio.Task[BuildOutcome]) -> None:
        self._builds.pop(runner, None)
        self._slots.release()
        if not runner.cancelled() and (exc := runner.exception()) is not None:
            log.error("index build runner failed", exc_info=exc)

    # --- one build ---------------------------------------------------------------------------

    async def run_build(self, task: BuildTask) -> BuildOutcome:
        """Build ``task`` to the end, heartbeating meanwhile; returns the outcome of the last
        report (``STALE``/``GONE`` when abandoned)."""
        progress = [0.0]
        work = asyncio.ensure_future(self._build(task, progress))
        try:
            lost = await heartbeat_until_done(
                self.clock,
                task.lease,
                work,  # type: ignore[arg-type]
                lambda: self.source.heartbeat_index_build(task, progress[0]),
                task.key,
            )
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
        if lost is not None:
            return await self._abandon(task, lost)
        exc = work.exception()
        if exc is not None:
            message, retryable = classify_error(exc)
            self.stats.failed += 1
            outcome = await self._report(
                lambda: self.source.fail_index_build(task, message, retryable)
            )
        else:
            result = work.result()
            self.stats.last_build_seconds = result.build_seconds
            outcome = await self._report(lambda: self.source.finish_index_build(task, result))
            if outcome is BuildOutcome.OK:
                self.stats.finished += 1
        if outcome in (BuildOutcome.GONE, BuildOutcome.STALE):
            return await self._abandon(task, outcome)
        return outcome

    async def _build(self, task: BuildTask, progress: list[float]) -> BuildResult:
        manifest = await read_manifest(
            self.objects, self.root, task.collection_id, task.partition_id, task.segment_id
        )
        spec = IndexSpec.from_index_info(task.index)

        def report(stage: str, fraction: float) -> None:
            weight = {"read": (0.0, 0.1), "build": (0.1, 0.8), "upload": (0.9, 0.1)}
            start, span = weight.get(stage, (1.0, 0.0))
            progress[0] = round(start + span * fraction, 3)

        built = await build_index(
            self.objects,
            self.root,
            manifest,
            spec,
            progress=report,
            num_threads=self.num_threads,
            clock=self.clock,
        )
        return BuildResult(
            manifest_key=index_manifest_key(manifest, spec.field_id, spec.index_id),
            rows=built.rows,
            index_type=built.index_type,
            build_seconds=built.build_seconds,
        )

    async def _abandon(self, task: BuildTask, outcome: BuildOutcome) -> BuildOutcome:
        self.stats.abandoned += 1
        log.info("index build %s abandoned: %s", task.key, outcome.value)
        if outcome is BuildOutcome.GONE:
            path = SegmentPath(self.root, task.collection_id, task.partition_id, task.segment_id)
            try:
                await delete_index(self.objects, path, task.index.field_id, task.index.index_id)  # type: ignore[arg-type]
            except CanopyError as exc:
                log.warning("could not delete the files of dropped build %s: %s", task.key, exc)
        return outcome

    async def _report(self, call: Callable[[], Awaitable[BuildOutcome]]) -> BuildOutcome:
        """A report to the source, retried while the error is retryable (the lease may run out
        meanwhile: then the next holder redoes the build, which finds the files in place)."""
        return await report_retrying(call, self.clock, self.retry_delay, self.max_retry_delay)


# --- shared with the compaction worker (cluster/datanode/compaction.py) --------------------------


async def heartbeat_until_done(
    clock: Clock,
    lease: float,
    work: asyncio.Future[object],
    heartbeat: Callable[[], Awaitable[BuildOutcome]],
    what: str,
) -> BuildOutcome | None:
    """Call ``heartbeat`` every ``lease / 3`` seconds until ``work`` is done (then None) or a
    heartbeat answers other than ``OK`` (returned: the task was lost). A failed heartbeat is
    logged and retried at the next beat (the lease may still hold)."""
    interval = max(lease / 3, 0.01)
    while True:
        sleeper = asyncio.ensure_future(clock.sleep(interval))
        try:
            await asyncio.wait({work, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if work.done():
            return None
        try:
            outcome = await heartbeat()
        except CanopyError as exc:
            log.warning("heartbeat of %s failed: %s", what, exc)
            continue
        if outcome is not BuildOutcome.OK:
            return outcome


async def report_retrying(
    call: Callable[[], Awaitable[BuildOutcome]],
    clock: Clock,
    retry_delay: float,
    max_retry_delay: float,
) -> BuildOutcome:
    """``call()``, retried with back-off while its error is retryable."""
    delay = retry_delay
    while True:
        try:
            return await call()
        except CanopyError as exc:
            if not exc.retryable:
                raise
            log.warning("task report failed: %s; retrying in %.2f s", exc, delay)
            await clock.sleep(delay)
            delay = min(delay * 2, max_retry_delay)
