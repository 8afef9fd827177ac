"""The asyncio shell around :class:`~cluster.coordinator.channels.ChannelAssignment`.

:class:`ChannelManager` (coordinator side) persists the assignment under ``channels/{name}``
(JSON :class:`~cluster.coordinator.channels.ChannelRecord`) and feeds the state machine:

- streaming-node sessions from :class:`~cluster.coordinator.sessions.SessionRegistry` (joined ->
  ``NodeJoined``, draining -> ``NodeDraining``, closed or expired -> ``NodeLeft``);
- acknowledgements: a node acks by a CAS of its record from ``assigning`` to ``assigned``, which
  the manager sees on its watch of ``channels/``;
- a ``RebalanceTick`` every ``rebalance_interval`` seconds of the injected clock.

Every change is one MetaStore transaction comparing the version of each key it writes (all the
channels one event touches change atomically). A compare that fails because a node acked in
between is re-read and retried; one that fails because the record now carries a newer epoch than
the manager wrote means another manager is running: this one stops with
:class:`ChannelManagerFenced`. Retryable store errors are retried with backoff, so an etcd outage
delays assignments but loses none. On start the manager reads the persisted records and the live
sessions and only reassigns channels whose owner is gone (no reshuffle on restart).

The manager is about liveness only: a stale owner cannot append, because opening a woodpecker
writer bumps the log's epoch and fences the previous writer. Reassignment after a lease expiry
takes one watch event and one transaction.

:class:`AssignmentWatcher` (streaming-node side) yields ``(channel, epoch, kind)`` for the
node's own channels, and :meth:`AssignmentWatcher.ack` acknowledges one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

from cluster.coordinator.channels import (
    CHANNELS_PREFIX,
    UNASSIGNED,
    Assign,
    ChannelAcked,
    ChannelAssignment,
    ChannelRecord,
    ChannelState,
    Command,
    Event,
    NodeDraining,
    NodeJoined,
    NodeLeft,
    NodesSynced,
    RebalanceTick,
    channel_key,
)
from cluster.coordinator.errors import CoordinatorError
from cluster.coordinator.records import CatalogSettings
from cluster.coordinator.sessions import (
    STREAMING,
    NodeState,
    SessionEventKind,
    SessionRegistry,
    SessionWatch,
)
from cluster.coordinator.watching import Change, PrefixMirror
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import Compare, KeyValue, MetaStore, Put

log = logging.getLogger(__name__)

T = TypeVar("T")

_TXN_KEYS = 64  # channels per transaction (compares + puts stay far below etcd's 128 ops)


class ChannelManagerFenced(CoordinatorError):
    """A channel record carries an epoch this manager did not write: another manager runs."""

    milvus_code = 2


def _decode(kv: KeyValue | None) -> ChannelRecord | None:
    if kv is None:
        return None
    try:
        return ChannelRecord.decode(kv.value)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("corrupt channel record %r: %s", kv.key, exc)
        return None


class ChannelManager:
    """Assigns the physical channels ``{cluster_prefix}-dml_0 .. _{num_channels-1}`` to the live
    ``role`` nodes. ``await start()``, then it runs in background tasks until ``close()``; a
    crashed task or a fence stops it loudly (``wait()`` raises the error)."""

    def __init__(
        self,
        meta: MetaStore,
        registry: SessionRegistry,
        clock: Clock,
        num_channels: int,
        *,
        cluster_prefix: str = "canopy",
        role: str = STREAMING,
        rebalance_interval: float = 2.0,
        max_moves_per_tick: int = 2,
        retry_delay: float = 0.05,
        max_retry_delay: float = 1.0,
    ) -> None:
        if num_channels < 1:
            raise ValueError("num_channels must be positive")
        settings = CatalogSettings(num_channels, cluster_prefix)
        self.meta = meta
        self.registry = registry
        self.clock = clock
        self.role = role
        self.channels = tuple(settings.pchannel(i) for i in range(num_channels))
        self.rebalance_interval = rebalance_interval
        self.max_moves_per_tick = max_moves_per_tick
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.machine: ChannelAssignment | None = None
        self._persisted: dict[str, tuple[ChannelRecord, int]] = {}  # what meta holds, version
        self._sessions: SessionWatch | None = None
        self._records: PrefixMirror | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._changed = asyncio.Condition()
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the persisted records and the live sessions, reassign orphaned channels, then
        follow sessions, acks and ticks in the background."""
        if self.machine is not None:
            raise RuntimeError("ChannelManager.start() called twice")
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        log.info("channel manager started: %s", self.describe())

    async def _start(self) -> None:
        self._records = PrefixMirror(self.meta, CHANNELS_PREFIX, self.clock)
        kvs = await self._records.start()
        records: dict[str, ChannelRecord] = {}
        for channel in self.channels:
            kv = kvs.get(channel_key(channel))
            record = _decode(kv)
            if kv is not None and record is not None:
                records[channel] = record
                self._persisted[channel] = (record, kv.version)
            else:
                self._persisted[channel] = (UNASSIGNED, 0 if kv is None else kv.version)
        self.machine = ChannelAssignment(
            self.channels, records=records, max_moves_per_tick=self.max_moves_per_tick
        )
        self._sessions = self.registry.watch(self.role)
        live = await self._sessions.start()
        draining = frozenset(n for n, s in live.items() if s.state is NodeState.DRAINING)
        await self._handle(NodesSynced(frozenset(live) - draining, draining))
        for name, run in (
            ("sessions", self._follow_sessions),
            ("acks", self._follow_records),
            ("ticks", self._tick),
        ):
            task = asyncio.get_running_loop().create_task(run(), name=f"channel-manager-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError(f"{task.get_name()} ended unexpectedly")
        log.error("channel manager: %s failed; stopping", task.get_name(), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        for other in self._tasks:
            other.cancel()
        self._stopped.set()

    async def wait(self) -> None:
        """Return when the manager is closed; raise what stopped it if a task failed."""
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    async def close(self) -> None:
        """Stop following events (the persisted assignment stays for the next manager)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        # closing the watches also ends the iterations the tasks may be blocked in
        for source in (self._sessions, self._records):
            if source is not None:
                with contextlib.suppress(CanopyError):
                    await source.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._stopped.set()

    async def __aenter__(self) -> ChannelManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- views ---------------------------------------------------------------------------------

    def assignments(self) -> dict[str, ChannelRecord]:
        """The current assignment as decided (and, once ``_handle`` returned, persisted)."""
        return dict(self.machine.records) if self.machine is not None else {}

    def describe(self) -> str:
        if self.machine is None:
            return "not started"
        per_node = {n: len(self.machine.owned(n)) for n in sorted(self.machine.nodes)}
        unassigned = sum(r.owner is None for r in self.machine.records.values())
        return f"channels per node {per_node}, unassigned {unassigned}"

    async def wait_until(
        self, predicate: Callable[[dict[str, ChannelRecord]], bool]
    ) -> dict[str, ChannelRecord]:
        """Wait until ``predicate(assignments())`` holds (checked after each handled event, once
        its changes are persisted); bound it with ``asyncio.timeout``."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.assignments()))
        return self.assignments()

    # --- the loop bodies -----------------------------------------------------------------------

    async def _follow_sessions(self) -> None:
        assert self._sessions is not None
        async for event in self._sessions:
            node = event.session.node_id
            if event.kind is SessionEventKind.LEFT:
                await self._handle(NodeLeft(node))
            elif event.session.state is NodeState.DRAINING:
                await self._handle(NodeDraining(node))
            else:
                await self._handle(NodeJoined(node))
        if not self._closed:
            raise RuntimeError("the session watch ended (meta store closed?)")

    async def _follow_records(self) -> None:
        assert self._records is not None
        async for change in self._records:
            await self._observe(change)
        if not self._closed:
            raise RuntimeError("the channel watch ended (meta store closed?)")

    async def _tick(self) -> None:
        while True:
            await self.clock.sleep(self.rebalance_interval)
            await self._handle(RebalanceTick())

    async def _observe(self, change: Change) -> None:
        """A record changed in meta: adopt its version; an ack becomes ``ChannelAcked``."""
        channel = change.key[len(CHANNELS_PREFIX) :]
        if channel not in self._persisted or change.new is None:
            return
        async with self._lock:
            _, version = self._persisted[channel]
            if change.new.version <= version:
                return  # our own write, or older
            record = _decode(change.new)
            if record is None:
                return
            self._persisted[channel] = (record, change.new.version)
            if record.state is ChannelState.ASSIGNED and record.node_id is not None:
                await self._handle_locked(ChannelAcked(channel, record.node_id, record.epoch))

    # --- the state machine and persistence -----------------------------------------------------

    async def _handle(self, event: Event) -> None:
        async with self._lock:
            await self._handle_locked(event)

    async def _handle_locked(self, event: Event) -> None:
        assert self.machine is not None
        commands = self.machine.handle(event)
        if commands:
            log.info("channel manager: %s -> %s", event, _summary(commands))
            touched = list(dict.fromkeys(c.channel for c in commands))
            for i in range(0, len(touched), _TXN_KEYS):
                await self._persist(touched[i : i + _TXN_KEYS])
        async with self._changed:
            self._changed.notify_all()

    async def _persist(self, channels: list[str]) -> None:
        """Write the machine's records of ``channels`` in one transaction, retrying lost
        compares (a node's ack) and retryable errors until it lands."""
        assert self.machine is not None
        delay = self.retry_delay
        while True:
            wanted = {c: self.machine.records[c] for c in channels}
            compares = [Compare.version(channel_key(c), self._persisted[c][1]) for c in channels]
            puts = [Put(channel_key(c), wanted[c].encode()) for c in channels]
            try:
                result = await self.meta.txn(compares, puts)
            except CanopyError as exc:
                if not exc.retryable or self._closed:
                    raise
                log.warning("channel manager: persisting %s failed (%s); retrying", channels, exc)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                await self._refresh(channels)  # the write may have landed (outcome unknown)
                channels = [c for c in channels if self._persisted[c][0] != self.machine.records[c]]
                if not channels:
                    return
                continue
            if result.succeeded:
                for c in channels:
                    self._persisted[c] = (wanted[c], self._persisted[c][1] + 1)
                return
            await self._refresh(channels)
            channels = [c for c in channels if self._persisted[c][0] != self.machine.records[c]]
            if not channels:
                return

    async def _refresh(self, channels: list[str]) -> None:
        """Re-read records whose compare failed. Only an ack (same node and epoch as we last
        wrote) or our own write (a reply lost) may have happened; a record with another node or
        epoch as new as ours means another manager writes them: ``ChannelManagerFenced``."""
        assert self.machine is not None
        for channel in channels:
            kv = await _retrying(
                lambda c=channel: self.meta.get(channel_key(c)), self.clock, self.retry_delay
            )
            known, version = self._persisted[channel]
            current = _decode(kv)
            if kv is None or current is None:
                self._persisted[channel] = (UNASSIGNED, 0 if kv is None else kv.version)
                continue
            if kv.version == version:
                continue
            wanted = self.machine.records[channel]
            ours = (current.node_id, current.epoch) in {
                (known.node_id, known.epoch),
                (wanted.node_id, wanted.epoch),
            }
            if not ours and current.epoch >= wanted.epoch:
                raise ChannelManagerFenced(
                    f"{channel_key(channel)} holds epoch {current.epoch} (node "
                    f"{current.node_id}) that this manager did not write: another one is running"
                )
            self._persisted[channel] = (current, kv.version)
            if (
                (current.node_id, current.epoch) == (wanted.node_id, wanted.epoch)
                and current.state is ChannelState.ASSIGNED
                and wanted.state is ChannelState.ASSIGNING
            ):
                # our write landed (outcome unknown) and the node acked it since; an ack never
                # produces commands, the machine only records it
                self.machine.handle(ChannelAcked(channel, current.node_id, current.epoch))


async def _retrying(call: Callable[[], Awaitable[T]], clock: Clock, delay: float) -> T:
    while True:
        try:
            return await call()
        except CanopyError as exc:
            if not exc.retryable:
                raise
            await clock.sleep(delay)
            delay = min(delay * 2, 1.0)


def _summary(commands: list[Command]) -> str:
    return ", ".join(
        f"assign {c.channel}@{c.epoch} to node {c.node_id}"
        if isinstance(c, Assign)
        else f"revoke {c.channel}@{c.epoch} from node {c.node_id}"
        for c in commands
    )


# --- the streaming node's side -------------------------------------------------------------------


class AssignmentKind(enum.StrEnum):
    ASSIGNED = "assigned"
    REVOKED = "revoked"


class AssignmentEvent(NamedTuple):
    """``channel`` was assigned to this node at ``epoch``, or revoked from it (``epoch``: the
    epoch it held)."""

    channel: str
    epoch: int
    kind: AssignmentKind


class AssignmentWatcher:
    """The channels assigned to ``node_id``: an async iterator of :class:`AssignmentEvent`.

    First one ``assigned`` event per channel the node owns now (``assigning`` or ``assigned``),
    then every change: a new assignment (or a higher epoch of one it holds: ``revoked`` of the
    old epoch first) and every loss. After taking a channel over (fencing the WAL, replaying),
    the node calls :meth:`ack`. :attr:`owned` is the node's view after the events yielded."""

    def __init__(self, meta: MetaStore, node_id: int, clock: Clock | None = None) -> None:
        self.meta = meta
        self.node_id = node_id
        self.clock: Clock = clock or RealClock()
        self.owned: dict[str, int] = {}
        self._mirror = PrefixMirror(meta, CHANNELS_PREFIX, self.clock)
        self._queue: list[AssignmentEvent] = []
        self._started = False

    async def start(self) -> dict[str, int]:
        if not self._started:
            kvs = await self._mirror.start()
            for key in sorted(kvs):
                self._queue.extend(self._update(key[len(CHANNELS_PREFIX) :], _decode(kvs[key])))
            self._started = True
        return dict(self.owned)

    def _update(self, channel: str, record: ChannelRecord | None) -> list[AssignmentEvent]:
        held = self.owned.get(channel)
        mine = record is not None and record.owner == self.node_id
        out: list[AssignmentEvent] = []
        if held is not None and (not mine or (record is not None and record.epoch != held)):
            del self.owned[channel]
            out.append(AssignmentEvent(channel, held, AssignmentKind.REVOKED))
        if mine and record is not None and channel not in self.owned:
            self.owned[channel] = record.epoch
            out.append(AssignmentEvent(channel, record.epoch, AssignmentKind.ASSIGNED))
        return out

    def __aiter__(self) -> AssignmentWatcher:
        return self

    async def __anext__(self) -> AssignmentEvent:
        await self.start()
        while not self._queue:
            change = await self._mirror.__anext__()
            channel = change.key[len(CHANNELS_PREFIX) :]
            self._queue.extend(self._update(channel, _decode(change.new)))
        return self._queue.pop(0)

    async def ack(self, channel: str, epoch: int) -> bool:
        """Record that this node serves ``channel`` at ``epoch`` (CAS ``assigning`` ->
        ``assigned``). False if the channel has meanwhile gone to another node or epoch."""
        key = channel_key(channel)
        while True:
            kv = await self.meta.get(key)
            record = _decode(kv)
            if kv is None or record is None:
                return False
            if record.owner != self.node_id or record.epoch != epoch:
                return False
            if record.state is ChannelState.ASSIGNED:
                return True
            done = ChannelRecord(self.node_id, epoch, ChannelState.ASSIGNED)
            if await self.meta.cas(key, done.encode(), expected_version=kv.version):
                return True

    async def close(self) -> None:
        await self._mirror.close()

    async def __aenter__(self) -> AssignmentWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
