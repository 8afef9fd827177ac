"""``memory://`` — the in-process MetaStore, and the asyncio shell it shares with ``sqlite://``.

:class:`MemoryMetaStore` wraps a :class:`~woodpecker.meta.engine.MetaEngine` with what needs a
loop: lease timers driven by the injected :class:`~woodpecker.clock.Clock` (with a ManualClock,
``await clock.advance(ttl)`` expires a lease and emits its DELETE events), keepalive tasks, and
watches (an unbounded queue each, so a slow watcher never blocks a writer). Subclasses make
commits durable by overriding :meth:`MemoryMetaStore._persist` and :meth:`MemoryMetaStore._load`.

``memory://`` always names a fresh, private store; share one instance to share state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, InvalidArgument, LeaseExpired, StorageError
from woodpecker.meta.base import (
    Compare,
    Delete,
    DeletePrefix,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
)
from woodpecker.meta.engine import DEFAULT_HISTORY, MetaEngine, Plan, check_key
from woodpecker.meta.tasks import BackgroundTasks

log = logging.getLogger(__name__)

_RETRY_EXPIRY_AFTER = 1.0  # seconds before retrying a lease expiry whose commit failed


class LocalLease:
    """A lease of a :class:`MemoryMetaStore` (or subclass); expiry runs on the store's clock."""

    def __init__(self, store: MemoryMetaStore, lease_id: int, ttl: float) -> None:
        self._store = store
        self._id = lease_id
        self._ttl = ttl
        self._lost = asyncio.Event()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._expiry_task: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def alive(self) -> bool:
        return not self._lost.is_set()

    async def keepalive(self) -> None:
        """Push the deadline to now + ttl; raises ``LeaseExpired`` if the lease is gone."""
        try:
            await self._store._refresh_lease(self._id, self._ttl)
        except LeaseExpired:
            self._mark_lost()
            raise

    def start_keepalive(self) -> None:
        """Refresh every ttl/3 on the store's clock until the lease is lost or revoked."""
        if self._keepalive_task is None and self.alive:
            self._keepalive_task = self._store._tasks.spawn(
                self._keepalive_loop(), f"lease-{self._id}-keepalive"
            )

    async def _keepalive_loop(self) -> None:
        while self.alive:
            await self._store._clock.sleep(self._ttl / 3)
            try:
                await self.keepalive()
            except LeaseExpired:
                return

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def revoke(self) -> None:
        """Delete the lease and its keys (one revision); a no-op if it is already gone."""
        await self._store._remove_lease(self._id)
        self._mark_lost()

    def _mark_lost(self) -> None:
        self._lost.set()
        for task in (self._keepalive_task, self._expiry_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    def __repr__(self) -> str:
        return f"LocalLease(id={self._id}, ttl={self._ttl}, alive={self.alive})"


class LocalWatch:
    """A watch on a local store: an engine subscriber feeding an unbounded queue.

    Registration is synchronous in :meth:`MemoryMetaStore.watch`, so no change after the call is
    missed; errors (``WatchCompacted``) surface on the first ``__anext__``."""

    def __init__(self, store: MemoryMetaStore, prefix: str, start_revision: int | None) -> None:
        self.prefix = prefix
        self.start = 0  # set at registration
        self.requested_start = start_revision
        self._store = store
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._error: CanopyError | None = None
        self._closed = False

    def deliver(self, event: WatchEvent) -> None:
        self._queue.put_nowait(event)

    def _fail(self, error: CanopyError) -> None:
        self._error = error

    def __aiter__(self) -> LocalWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._error is not None:
            raise self._error
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # every later call stops too
            raise StopAsyncIteration
        return event

    async def close(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._forget_watch(self)
            self._queue.put_nowait(None)

    async def __aenter__(self) -> LocalWatch:
        await self._store._ready()  # a lazily opened store registers pending watches here
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class MemoryMetaStore:
    """etcd semantics in process memory: MVCC bookkeeping, atomic txns, leases, resumable watches
    (the last ``history_limit`` events; older start revisions raise ``WatchCompacted``)."""

    def __init__(self, clock: Clock | None = None, *, history_limit: int = DEFAULT_HISTORY) -> None:
        self._clock: Clock = clock or RealClock()
        self._engine = MetaEngine(history_limit=history_limit)
        self._leases: dict[int, LocalLease] = {}
        self._watches: set[LocalWatch] = set()
        self._pending_watches: list[LocalWatch] = []
        self._tasks = BackgroundTasks(lambda: self.uri)
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def uri(self) -> str:
        return "memory://"

    # --- hooks for persistent subclasses -------------------------------------------------------

    async def _load(self) -> None:
        """Bring the engine up to date before the first operation (sqlite: read the file)."""

    async def _persist(self, plan: Plan) -> None:
        """Make ``plan`` durable before it is applied. Must not suspend when there is nothing to
        do: the memory store relies on plan -> apply running without a suspension point."""

    async def _commit(
        self, make_plan: Callable[[], Plan], after: Callable[[], None] | None = None
    ) -> tuple[Plan, TxnResult]:
        """Compute a plan from the current state, persist it, apply it, then run ``after``.
        Here nothing suspends between planning and applying (``_persist`` is a no-op), so a
        commit is atomic with respect to other tasks; persistent subclasses add a lock."""
        plan = make_plan()
        if plan.changes:
            await self._persist(plan)
        result = self._engine.apply(plan)
        if after is not None:
            after()
        return plan, result

    async def _transact(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> tuple[Plan, TxnResult]:
        await self._ready()
        return await self._commit(lambda: self._engine.plan(compares, success, failure))

    async def _ready(self) -> None:
        if self._closed:
            raise StorageError(f"meta store {self.uri} is closed")
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self._load()
                self._started = True
                pending, self._pending_watches = self._pending_watches, []
                for watch in pending:
                    self._register(watch)
        if self._closed:
            raise StorageError(f"meta store {self.uri} is closed")

    # --- MetaStore -----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        await self._ready()
        return self._engine.get(key)

    async def range(self, prefix: str, *, limit: int | None = None) -> list[KeyValue]:
        await self._ready()
        return self._engine.range(prefix, limit)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return (await self._transact([], [Put(key, value, lease)], []))[1].revision

    async def delete(self, key: str) -> bool:
        plan, _ = await self._transact([], [Delete(key)], [])
        return bool(plan.changes)

    async def delete_prefix(self, prefix: str) -> int:
        plan, _ = await self._transact([], [DeletePrefix(prefix)], [])
        return len(plan.changes)

    async def txn(
        self, compares: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        return (await self._transact(compares, success, failure or []))[1]

    async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0) -> bool:
        compare = Compare.version(key, expected_version)
        return (await self._transact([compare], [Put(key, value, lease)], []))[1].succeeded

    async def revision(self) -> int:
        await self._ready()
        return self._engine.revision

    async def grant_lease(self, ttl: float) -> LocalLease:
        if not ttl > 0:
            raise InvalidArgument(f"lease ttl must be > 0, got {ttl}")
        await self._ready()
        lease_id = self._engine.grant(ttl, self._clock.monotonic() + ttl)
        lease = LocalLease(self, lease_id, ttl)
        self._leases[lease_id] = lease
        lease._expiry_task = self._tasks.spawn(
            self._expire_when_due(lease_id), f"lease-{lease_id}-expiry"
        )
        return lease

    async def compact(self, revision: int) -> None:
        """Discard watch history below ``revision`` (as etcd's compaction): a watch starting
        earlier raises ``WatchCompacted``. Not part of the MetaStore protocol."""
        await self._ready()
        self._engine.compact(revision)

    def watch(self, prefix: str, *, start_revision: int | None = None) -> LocalWatch:
        if start_revision is not None and start_revision < 1:
            raise InvalidArgument(f"start_revision must be >= 1, got {start_revision}")
        watch = LocalWatch(self, prefix, start_revision)
        if self._closed:
            watch._fail(StorageError(f"meta store {self.uri} is closed"))
        elif self._started:
            self._register(watch)
        else:
            self._pending_watches.append(watch)
        return watch

    async def close(self) -> None:
        """Stop timers and keepalives (leases are not revoked), end every watch."""
        if self._closed:
            return
        self._closed = True
        for watch in [*self._watches, *self._pending_watches]:
            watch._end()
        for lease in self._leases.values():
            lease._mark_lost()
        await self._tasks.cancel_all()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Release backend resources after every task has stopped."""

    # --- internals -----------------------------------------------------------------------------

    def _register(self, watch: LocalWatch) -> None:
        requested = watch.requested_start
        watch.start = self._engine.revision + 1 if requested is None else requested
        try:
            self._engine.subscribe(watch)
        except CanopyError as exc:
            watch._fail(exc)
            return
        self._watches.add(watch)

    def _forget_watch(self, watch: LocalWatch) -> None:
        self._engine.unsubscribe(watch)
        self._watches.discard(watch)
        if watch in self._pending_watches:
            self._pending_watches.remove(watch)

    async def _refresh_lease(self, lease_id: int, ttl: float) -> None:
        await self._ready()
        deadline = self._engine.lease_deadline(lease_id)
        now = self._clock.monotonic()
        if deadline is None or deadline <= now:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        self._engine.refresh(lease_id, now + ttl)

    async def _remove_lease(self, lease_id: int, *, only_if_due: bool = False) -> bool:
        """Delete the lease's keys at one revision and forget the lease, atomically with respect
        to other commits. With ``only_if_due``, do nothing if a keepalive moved the deadline.
        Returns whether the lease was removed (False: already gone, or not due)."""
        await self._ready()
        removed = False

        def make_plan() -> Plan:
            nonlocal removed
            deadline = self._engine.lease_deadline(lease_id)
            if deadline is None or (only_if_due and deadline > self._clock.monotonic()):
                return self._engine.plan_ops([])
            removed = True
            return self._engine.plan_ops([Delete(k) for k in self._engine.lease_keys(lease_id)])

        def forget() -> None:
            if removed:
                self._engine.drop_lease(lease_id)
                lease = self._leases.pop(lease_id, None)
                if lease is not None:
                    lease._mark_lost()

        await self._commit(make_plan, forget)
        return removed

    async def _expire_when_due(self, lease_id: int) -> None:
        while True:
            deadline = self._engine.lease_deadline(lease_id)
            if deadline is None:
                return
            delay = deadline - self._clock.monotonic()
            if delay > 0:
                await self._clock.sleep(delay)
                continue
            try:
                await self._remove_lease(lease_id, only_if_due=True)
            except CanopyError as exc:
                if self._closed:
                    return
                log.warning(
                    "meta store %s: expiring lease %d failed (%s); will retry",
                    self.uri,
                    lease_id,
                    exc,
                )
                await self._clock.sleep(_RETRY_EXPIRY_AFTER)
