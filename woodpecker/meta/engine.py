"""The MetaStore state machine shared by the ``memory://`` and ``sqlite://`` backends.

Pure and synchronous: no I/O, no clock reads, no tasks. A write is two steps so a persistent
backend can make it durable in between: :meth:`MetaEngine.plan` validates a transaction and
computes its :class:`Plan` (the changes and the revision they commit at) without touching state;
:meth:`MetaEngine.apply` installs a plan, records its events in the bounded history and hands them
to the subscribers. The caller serialises plan -> (persist) -> apply; a plan is valid only against
the state it was computed from.

Limits mirror etcd's defaults so code that works here also works against etcd: at most
:data:`MAX_TXN_OPS` compares and ops per branch, :data:`MAX_REQUEST_BYTES` of keys and values per
request, and no two ops of one branch may write overlapping keys (a put may not repeat a key or
fall inside a delete of the same branch).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from woodpecker.errors import InvalidArgument, LeaseExpired, WatchCompacted
from woodpecker.meta.base import (
    Compare,
    CompareTarget,
    Delete,
    DeletePrefix,
    EventType,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
)

MAX_TXN_OPS = 128  # etcd --max-txn-ops default
MAX_REQUEST_BYTES = 1536 * 1024  # etcd --max-request-bytes default
DEFAULT_HISTORY = 100_000  # watch events kept for resuming watches
FIRST_REVISION = 1  # the revision of an empty store, as in etcd


@dataclass(frozen=True, slots=True)
class Change:
    """One key's effect in a plan: ``kv`` is the new state, ``None`` for a delete."""

    key: str
    kv: KeyValue | None
    prev: KeyValue | None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated transaction. ``revision`` is the revision the changes commit at (the current
    revision when there are none)."""

    succeeded: bool
    revision: int
    changes: tuple[Change, ...]


class Subscriber(Protocol):
    """A watch registered with :meth:`MetaEngine.subscribe`: gets every event under ``prefix``
    whose revision is at least ``start``."""

    prefix: str
    start: int

    def deliver(self, event: WatchEvent) -> None: ...


@dataclass(slots=True)
class _LeaseRecord:
    ttl: float
    deadline: float  # on the owner's monotonic clock
    keys: set[str] = field(default_factory=set)


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"meta keys are non-empty str, got {key!r}")


def check_ops(compares: Sequence[Compare], *branches: Sequence[Op]) -> None:
    """Reject what etcd rejects: too many ops, too large, overlapping writes, bad types."""
    if len(compares) > MAX_TXN_OPS:
        raise InvalidArgument(f"too many compares in txn ({len(compares)} > {MAX_TXN_OPS})")
    for c in compares:
        check_key(c.key)
        want = bytes if c.target is CompareTarget.VALUE else int
        if not isinstance(c.expected, want) or isinstance(c.expected, bool):
            raise InvalidArgument(f"compare on {c.target.value} expects {want.__name__}: {c!r}")
    size = 0
    for ops in branches:
        if len(ops) > MAX_TXN_OPS:
            raise InvalidArgument(f"too many operations in txn ({len(ops)} > {MAX_TXN_OPS})")
        puts: set[str] = set()
        deletes: list[str] = []
        prefixes: list[str] = []
        for op in ops:
            if isinstance(op, Put):
                check_key(op.key)
                if not isinstance(op.value, bytes | bytearray | memoryview):
                    raise InvalidArgument(f"meta values are bytes, got {type(op.value).__name__}")
                if op.key in puts:
                    raise InvalidArgument(f"duplicate key {op.key!r} given in txn")
                puts.add(op.key)
                size += len(op.key.encode()) + len(op.value)
            elif isinstance(op, Delete):
                check_key(op.key)
                deletes.append(op.key)
            elif isinstance(op, DeletePrefix):
                prefixes.append(op.prefix)
            else:
                raise InvalidArgument(f"unknown txn op {op!r}")
        for key in puts:
            if key in deletes or any(key.startswith(p) for p in prefixes):
                raise InvalidArgument(f"key {key!r} is both put and deleted in one txn")
    if size > MAX_REQUEST_BYTES:
        raise InvalidArgument(f"txn too large ({size} bytes > {MAX_REQUEST_BYTES})")


class MetaEngine:
    """Keys, revisions, leases and watch history of one store, in memory."""

    def __init__(self, *, history_limit: int = DEFAULT_HISTORY) -> None:
        if history_limit < 1:
            raise InvalidArgument("history_limit must be >= 1")
        self.revision = FIRST_REVISION
        # Events with revision <= compact_revision are (partly) gone from the history.
        self.compact_revision = 0
        self._kvs: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted; str order == UTF-8 byte order == etcd's order
        self._history: deque[WatchEvent] = deque(maxlen=history_limit)
        self._subscribers: list[Subscriber] = []
        self._leases: dict[int, _LeaseRecord] = {}
        self._next_lease_id = 1

    # --- loading -------------------------------------------------------------------------------

    def load(self, kvs: Iterable[KeyValue], revision: int) -> None:
        """Replace the state with ``kvs`` at ``revision``; the history before it is unknown."""
        self._kvs = {kv.key: kv for kv in kvs}
        self._keys = sorted(self._kvs)
        self.revision = revision
        self.compact_revision = revision
        self._history.clear()

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        return self._kvs.get(key)

    def range(self, prefix: str, limit: int | None = None) -> list[KeyValue]:
        if limit is not None and limit < 0:
            raise InvalidArgument(f"range limit must be >= 0, got {limit}")
        return [self._kvs[k] for k in self._prefix_keys(prefix, limit or None)]

    def _prefix_keys(self, prefix: str, limit: int | None = None) -> list[str]:
        keys = self._keys
        i = bisect.bisect_left(keys, prefix)
        out: list[str] = []
        while i < len(keys) and keys[i].startswith(prefix):
            out.append(keys[i])
            if limit is not None and len(out) >= limit:
                break
            i += 1
        return out

    # --- writes --------------------------------------------------------------------------------

    def plan(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> Plan:
        """Validate and evaluate a transaction against the current state; changes nothing."""
        check_ops(compares, success, failure)
        ok = all(self._holds(c) for c in compares)
        return self.plan_ops(success if ok else failure, succeeded=ok)

    def plan_ops(self, ops: Sequence[Op], *, succeeded: bool = True) -> Plan:
        """Evaluate ``ops`` without the request limits (internal deletes such as lease expiry)."""
        rev = self.revision + 1
        changes: list[Change] = []
        deleted: set[str] = set()
        for op in ops:
            if isinstance(op, Put):
                if op.lease and op.lease not in self._leases:
                    raise LeaseExpired(f"lease {op.lease} not found (expired or revoked)")
                prev = self._kvs.get(op.key)
                kv = KeyValue(
                    op.key,
                    bytes(op.value),
                    prev.version + 1 if prev else 1,
                    prev.create_revision if prev else rev,
                    rev,
                    op.lease,
                )
                changes.append(Change(op.key, kv, prev))
            else:
                keys = [op.key] if isinstance(op, Delete) else self._prefix_keys(op.prefix)
                for key in keys:
                    if key in self._kvs and key not in deleted:
                        deleted.add(key)
                        changes.append(Change(key, None, self._kvs[key]))
        return Plan(succeeded, rev if changes else self.revision, tuple(changes))

    def apply(self, plan: Plan) -> TxnResult:
        """Install ``plan`` (computed against the current state), record and deliver its events."""
        if not plan.changes:
            return TxnResult(plan.succeeded, self.revision)
        if plan.revision != self.revision + 1:
            raise RuntimeError(f"stale plan at {plan.revision}, store at {self.revision}")
        self.revision = rev = plan.revision
        events: list[WatchEvent] = []
        for ch in plan.changes:
            if ch.prev is not None and ch.prev.lease:
                record = self._leases.get(ch.prev.lease)
                if record is not None:
                    record.keys.discard(ch.key)
            if ch.kv is not None:
                if ch.prev is None:
                    bisect.insort(self._keys, ch.key)
                self._kvs[ch.key] = ch.kv
                if ch.kv.lease and ch.kv.lease in self._leases:
                    self._leases[ch.kv.lease].keys.add(ch.key)
                events.append(WatchEvent(EventType.PUT, ch.key, ch.kv.value, rev, ch.kv.version))
            else:
                del self._kvs[ch.key]
                del self._keys[bisect.bisect_left(self._keys, ch.key)]
                events.append(WatchEvent(EventType.DELETE, ch.key, b"", rev, 0))
        for event in events:
            if len(self._history) == self._history.maxlen:
                self.compact_revision = self._history[0].revision
            self._history.append(event)
            for sub in tuple(self._subscribers):
                if event.revision >= sub.start and event.key.startswith(sub.prefix):
                    sub.deliver(event)
        return TxnResult(plan.succeeded, rev)

    def _holds(self, c: Compare) -> bool:
        kv = self._kvs.get(c.key)
        if c.target is CompareTarget.VALUE:
            return kv is not None and kv.value == c.expected
        actual = 0 if kv is None else getattr(kv, c.target.value)
        return actual == c.expected

    # --- leases (deadlines are on the caller's clock) ------------------------------------------

    def grant(self, ttl: float, deadline: float) -> int:
        lease_id = self._next_lease_id
        self._next_lease_id += 1
        self._leases[lease_id] = _LeaseRecord(ttl, deadline)
        return lease_id

    def lease_deadline(self, lease_id: int) -> float | None:
        record = self._leases.get(lease_id)
        return None if record is None else record.deadline

    def refresh(self, lease_id: int, deadline: float) -> None:
        record = self._leases.get(lease_id)
        if record is None:
            raise LeaseExpired(f"lease {lease_id} not found (expired or revoked)")
        record.deadline = deadline

    def lease_keys(self, lease_id: int) -> list[str]:
        record = self._leases.get(lease_id)
        return sorted(record.keys) if record else []

    def drop_lease(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)

    # --- watch ---------------------------------------------------------------------------------

    def subscribe(self, sub: Subscriber) -> None:
        """Replay the history from ``sub.start`` into ``sub``, then deliver every new event.
        Raises ``WatchCompacted`` when the history no longer reaches back to ``sub.start``."""
        if sub.start <= self.compact_revision:
            raise WatchCompacted(
                f"revision {sub.start} is compacted; resume from {self.compact_revision + 1} "
                "or later",
                compact_revision=self.compact_revision + 1,
            )
        backlog: list[WatchEvent] = []
        for event in reversed(self._history):
            if event.revision < sub.start:
                break
            if event.key.startswith(sub.prefix):
                backlog.append(event)
        for event in reversed(backlog):
            sub.deliver(event)
        self._subscribers.append(sub)

    def compact(self, revision: int) -> None:
        """Forget the history below ``revision``; watches may still start at ``revision``."""
        if revision > self.revision:
            raise InvalidArgument(f"cannot compact at future revision {revision} > {self.revision}")
        while self._history and self._history[0].revision < revision:
            self._history.popleft()
        self.compact_revision = max(self.compact_revision, revision - 1)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
