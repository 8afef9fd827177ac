"""Node sessions: the registry of live nodes, one leased key per node.

Contract:

- :class:`NodeSession` registers ``sessions/{role}/{node_id}`` (JSON :class:`SessionInfo`)
  attached to a lease of ``ttl`` seconds that it keeps alive every ``ttl/3`` (on the injected
  clock). The key exists
  exactly while the session is live: :meth:`NodeSession.close` revokes the lease (the key goes at
  once); a crashed or partitioned node's key goes when the lease expires. Node ids come from the
  counter ``node_ids`` (CAS increment, see :class:`~cluster.coordinator.ids.IdAllocator`), so
  they are unique across nodes, roles and restarts and never reused. Registering a node id that
  already has a live session raises :class:`SessionExists` (retryable: the old one expires).
- A session whose lease is lost (the meta store says it is gone, or a keepalive fails for a
  reason that is not retryable) is over: :attr:`NodeSession.alive` turns false and
  :meth:`NodeSession.wait_lost` returns. The coordinator will have moved the node's work; the
  node must stop serving and register anew.
- A session whose keepalives have failed for a whole ttl with retryable errors (the meta store
  is unreachable: restarting, or this node is partitioned from it) is *unconfirmed*
  (:attr:`NodeSession.confirmed` false): its lease may have expired, so the node must not serve
  work that could have moved. The keepalive goes on; when the store answers, either the lease is
  still there (an etcd restart keeps leases: nothing moved, the session is confirmed again) or
  it is gone (the session is lost).
- :class:`SessionRegistry` lists live sessions per role and :meth:`SessionRegistry.watch` yields
  :class:`SessionEvent` (joined / updated / left) after a consistent snapshot, with no event
  missed or repeated across watch reconnects (see ``cluster/coordinator/watching.py``).

Keys: ``cluster/coordinator/META.md``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
from dataclasses import asdict, dataclass, replace

from cluster.coordinator.errors import CoordinatorError
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.watching import Change, PrefixMirror
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError, LeaseExpired
from woodpecker.meta.base import Compare, KeyValue, Lease, MetaStore, Put

log = logging.getLogger(__name__)

SESSIONS_PREFIX = "sessions/"
NODE_IDS_KEY = "node_ids"
DEFAULT_TTL = 10.0
STREAMING = "streaming"
_ROLE = re.compile(r"^[a-z][a-z0-9_-]*$")


def role_prefix(role: str) -> str:
    return f"{SESSIONS_PREFIX}{check_role(role)}/"


def session_key(role: str, node_id: int) -> str:
    return f"{role_prefix(role)}{node_id}"


def check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE.match(role):
        raise ValueError(f"a role is lowercase letters, digits, '_' and '-', got {role!r}")
    return role


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("canopy")
    except Exception:  # not installed as a distribution
        return "0"


class SessionExists(CoordinatorError):
    """A live session already holds this node id (another process, or a previous incarnation
    whose lease has not expired yet: retrying after its ttl succeeds)."""

    retryable = True
    milvus_code = 2


class SessionLost(CoordinatorError):
    """The session's lease is gone; the node must stop serving and register anew."""

    milvus_code = 2


class NodeState(enum.StrEnum):
    SERVING = "serving"
    DRAINING = "draining"  # shutting down gracefully: move its work elsewhere


@dataclass(frozen=True)
class SessionInfo:
    """The value of a session key. ``version`` is the node's software version."""

    node_id: int
    role: str
    address: str
    started_at: float
    version: str
    state: NodeState = NodeState.SERVING

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> SessionInfo:
        raw = json.loads(value)
        return SessionInfo(
            node_id=int(raw["node_id"]),
            role=str(raw["role"]),
            address=str(raw["address"]),
            started_at=float(raw["started_at"]),
            version=str(raw.get("version", "")),
            state=NodeState(raw.get("state", NodeState.SERVING)),
        )


class NodeSession:
    """One node's registration. ``await start()`` (or ``async with``) registers it; ``close()``
    revokes it. ``clock`` stamps ``started_at``; the lease keepalive runs on the store's clock."""

    def __init__(
        self,
        meta: MetaStore,
        role: str,
        *,
        address: str,
        clock: Clock,
        node_id: int | None = None,
        ttl: float = DEFAULT_TTL,
        version: str | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl}")
        if node_id is not None and node_id < 1:
            raise ValueError(f"node ids are positive, got {node_id}")
        self.meta = meta
        self.role = check_role(role)
        self.address = address
        self.clock = clock
        self.ttl = ttl
        self.version = version if version is not None else _software_version()
        self._node_id = node_id
        self._lease: Lease | None = None
        self._info: SessionInfo | None = None
        self._key_version = 0
        self._keepalive: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._lost = asyncio.Event()
        self._closed = False

    @property
    def node_id(self) -> int:
        if self._node_id is None:
            raise RuntimeError("NodeSession.start() has not run")
        return self._node_id

    @property
    def key(self) -> str:
        return session_key(self.role, self.node_id)

    @property
    def info(self) -> SessionInfo:
        if self._info is None:
            raise RuntimeError("NodeSession.start() has not run")
        return self._info

    @property
    def lease_id(self) -> int:
        """The session's lease: keys put with it go when the session does."""
        if self._lease is None:
            raise RuntimeError("NodeSession.start() has not run")
        return self._lease.id

    @property
    def lease_ttl(self) -> float:
        """The ttl the store granted (etcd rounds up to whole seconds, at least its floor)."""
        return self._lease.ttl if self._lease is not None else self.ttl

    @property
    def lease_deadline(self) -> float:
        """When the lease expires unless refreshed again, on ``clock.monotonic()``: the send
        time of the last successful refresh (or of the grant) plus the granted ttl. The store
        expires it at this moment or a little later, never earlier."""
        return self._refreshed_at + self.lease_ttl

    @property
    def alive(self) -> bool:
        """True from ``start`` until the session is closed, abandoned or its lease lost."""
        return self._lease is not None and self._lease.alive and not self._lost.is_set()

    @property
    def confirmed(self) -> bool:
        """Alive, and a keepalive succeeded less than a ttl ago (see the module docstring)."""
        if not self.alive:
            return False
        assert self._lease is not None
        return self.clock.monotonic() - self._refreshed_at < self._lease.ttl

    def unconfirmed_reason(self) -> str | None:
        """Why the session cannot be relied on right now; None when it is confirmed."""
        if not self.alive:
            return f"session {self.key} is lost"
        if not self.confirmed:
            since = self.clock.monotonic() - self._refreshed_at
            return (
                f"session {self.key} is unconfirmed: no keepalive for {since:.1f}s (the meta "
                "store is unreachable)"
            )
        return None

    async def start(self) -> SessionInfo:
        """Allocate a node id if none was given, grant the lease, create the key (it must not
        exist: ``SessionExists``) and start the keepalive."""
        if self._lease is not None:
            raise RuntimeError("NodeSession.start() called twice")
        if self._node_id is None:
            self._node_id = await IdAllocator(self.meta, NODE_IDS_KEY, batch=1).allocate()
        info = SessionInfo(self.node_id, self.role, self.address, self.clock.now(), self.version)
        self._refreshed_at = self.clock.monotonic()
        lease = await self.meta.grant_lease(self.ttl)
        try:
            result = await self.meta.txn(
                [Compare.absent(self.key)], [Put(self.key, info.encode(), lease.id)]
            )
        except BaseException:
            await _quiet_revoke(lease)
            raise
        if not result.succeeded:
            await _quiet_revoke(lease)
            raise SessionExists(f"node {self.node_id} ({self.role}) already has a live session")
        self._lease, self._info, self._key_version = lease, info, 1
        self._keepalive = asyncio.get_running_loop().create_task(
            self._keepalive_loop(lease), name=f"session-{self.key}-keepalive"
        )
        self._keepalive.add_done_callback(self._keepalive_done)
        log.info("session %s registered (lease ttl %.1fs)", self.key, lease.ttl)
        return info

    async def _keepalive_loop(self, lease: Lease) -> None:
        """Refresh every ttl/3; give up (the session is lost) when the store says the lease is
        gone or a refresh fails for a reason that is not retryable. Retryable failures go on
        being retried; after a whole ttl of them the session is unconfirmed until one works."""
        unconfirmed = False
        while lease.alive:
            await self.clock.sleep(lease.ttl / 3)
            sent = self.clock.monotonic()
            try:
                await lease.keepalive()
            except LeaseExpired:
                log.warning("session %s lost: its lease expired", self.key)
                return
            except CanopyError as exc:
                if not exc.retryable:
                    log.warning("session %s lost: keepalive failed: %s", self.key, exc)
                    return
                if not unconfirmed and not self.confirmed:
                    unconfirmed = True
                    log.warning(
                        "session %s unconfirmed: no keepalive for %.1fs (%s); not serving until "
                        "the meta store answers",
                        self.key,
                        self.clock.monotonic() - self._refreshed_at,
                        exc,
                    )
                else:
                    log.info("session %s keepalive failed, retrying: %s", self.key, exc)
                continue
            self._refreshed_at = sent
            if unconfirmed:
                unconfirmed = False
                log.warning("session %s confirmed again: its lease outlived the outage", self.key)

    def _keepalive_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("session %s: keepalive crashed", self.key, exc_info=exc)
        self._lost.set()

    def abandon(self) -> None:
        """Stop the keepalive without revoking, as a crashed process would: the key goes when
        the lease expires (for tests and simulations)."""
        if self._keepalive is not None:
            self._keepalive.cancel()

    async def wait_lost(self) -> None:
        """Return once the session is over: lease lost, session closed or abandoned."""
        if self._lease is None:
            raise RuntimeError("NodeSession.start() has not run")
        await self._lost.wait()

    async def set_state(self, state: NodeState) -> SessionInfo:
        """Publish ``state`` (e.g. ``DRAINING`` before a graceful shutdown): a CAS that keeps the
        lease. Raises :class:`SessionLost` if the key is gone."""
        if self._lease is None or not self.alive:
            raise SessionLost(f"session {self.key} is not live")
        info = replace(self.info, state=state)
        while True:
            ok = await self.meta.txn(
                [Compare.version(self.key, self._key_version)],
                [Put(self.key, info.encode(), self._lease.id)],
            )
            if ok.succeeded:
                self._info, self._key_version = info, self._key_version + 1
                return info
            kv = await self.meta.get(self.key)
            if kv is None or kv.lease != self._lease.id or kv.version <= self._key_version:
                raise SessionLost(f"session {self.key} is gone or was taken over")
            self._key_version = kv.version  # an earlier write of ours whose reply was lost

    async def close(self) -> None:
        """Revoke the lease: the key goes at once (idempotent). If the store cannot be reached
        the error is logged and the key goes when the lease expires."""
        if self._closed:
            return
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._lost.set()
        if self._lease is not None:
            await _quiet_revoke(self._lease)
            log.info("session %s closed", self.key)

    async def __aenter__(self) -> NodeSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _quiet_revoke(lease: Lease) -> None:
    try:
        await lease.revoke()
    except CanopyError as exc:  # it expires on its own
        log.warning("revoking lease %d failed: %s", lease.id, exc)


class SessionEventKind(enum.StrEnum):
    JOINED = "joined"
    UPDATED = "updated"  # same session, new value (e.g. draining)
    LEFT = "left"  # closed or expired


@dataclass(frozen=True)
class SessionEvent:
    """A change of one session; for ``LEFT`` ``session`` is its last known value."""

    kind: SessionEventKind
    session: SessionInfo
    revision: int


def _decode(kv: KeyValue) -> SessionInfo | None:
    try:
        return SessionInfo.decode(kv.value)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring corrupt session key %r: %s", kv.key, exc)
        return None


class SessionWatch:
    """Live sessions of a role, then their changes: enter it (takes the snapshot, available as
    :attr:`sessions`), then iterate :class:`SessionEvent`. With ``include_initial`` the sessions
    of the snapshot are yielded first as ``JOINED`` events. :attr:`sessions` always reflects the
    events yielded so far."""

    def __init__(self, mirror: PrefixMirror, include_initial: bool) -> None:
        self._mirror = mirror
        self._include_initial = include_initial
        self._queue: list[SessionEvent] = []
        self.sessions: dict[int, SessionInfo] = {}
        self._started = False

    async def start(self) -> dict[int, SessionInfo]:
        if not self._started:
            kvs = await self._mirror.start()
            revision = self._mirror.next_revision - 1
            for kv in kvs.values():
                info = _decode(kv)
                if info is not None:
                    self.sessions[info.node_id] = info
                    if self._include_initial:
                        self._queue.append(SessionEvent(SessionEventKind.JOINED, info, revision))
            self._started = True
        return dict(self.sessions)

    def __aiter__(self) -> SessionWatch:
        return self

    async def __anext__(self) -> SessionEvent:
        await self.start()
        while not self._queue:
            self._queue.extend(self._events(await self._mirror.__anext__()))
        return self._queue.pop(0)

    def _events(self, change: Change) -> list[SessionEvent]:
        old = self.sessions.get(_node_id(change.key))
        new = _decode(change.new) if change.new is not None else None
        rev = change.revision
        if new is None:
            if old is None:
                return []
            del self.sessions[old.node_id]
            return [SessionEvent(SessionEventKind.LEFT, old, rev)]
        self.sessions[new.node_id] = new
        if old is None:
            return [SessionEvent(SessionEventKind.JOINED, new, rev)]
        if change.old is None or change.old.create_revision != change.new.create_revision:
            # a new incarnation (missed delete across a compaction): leave, then join
            return [
                SessionEvent(SessionEventKind.LEFT, old, rev),
                SessionEvent(SessionEventKind.JOINED, new, rev),
            ]
        return [SessionEvent(SessionEventKind.UPDATED, new, rev)]

    async def close(self) -> None:
        await self._mirror.close()

    async def __aenter__(self) -> SessionWatch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _node_id(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return -1


class SessionRegistry:
    """Read side of the sessions: who is live, and who joins and leaves."""

    def __init__(self, meta: MetaStore, clock: Clock | None = None) -> None:
        self.meta = meta
        self.clock: Clock = clock or RealClock()

    async def list(self, role: str) -> list[SessionInfo]:
        """The live sessions of ``role``, by node id."""
        infos = [_decode(kv) for kv in await self.meta.range(role_prefix(role))]
        return sorted((i for i in infos if i is not None), key=lambda i: i.node_id)

    def watch(self, role: str, *, include_initial: bool = False) -> SessionWatch:
        """Sessions of ``role``: a snapshot, then every join, update and leave (see
        :class:`SessionWatch`)."""
        return SessionWatch(PrefixMirror(self.meta, role_prefix(role), self.clock), include_initial)
