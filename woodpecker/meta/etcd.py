"""``etcd://host:port[,host:port...]/prefix`` — the MetaStore on etcd v3, through ``aetcd``.

Every key lives under the URI's prefix (``prefix/``); results and events carry keys with the
prefix stripped. Revisions, versions and compares are etcd's own. KV requests are built as etcd
protobufs and sent on aetcd's stubs (aetcd's helpers lack ``limit`` and full compares); leases
and watches use aetcd's client. Requests carry a deadline (``timeout``, default 5 s).

- Errors: translated in :func:`_translate`, the only place that knows grpc/aetcd exceptions.
  UNAVAILABLE, DEADLINE_EXCEEDED and connection failures become ``Unavailable`` (retryable;
  ``outcome_unknown`` for writes that may have been sent); with several endpoints the next call
  goes to the next endpoint.
- Leases: etcd TTLs are whole seconds and have a floor (2 s with etcd's default heartbeat), so
  ``ttl`` is rounded up and :attr:`EtcdLease.ttl` reports what etcd granted.
- Watches are established lazily (``__aenter__`` or the first ``__anext__``); without
  ``start_revision`` they start after the revision current at that moment. A broken stream is
  re-established from the next revision for up to ``reconnect_timeout`` seconds (no event lost
  or repeated), then ``Unavailable`` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import aetcd
import aetcd.exceptions as aetcd_errors
import grpc
from aetcd import rpc

from woodpecker.clock import Clock, RealClock
from woodpecker.errors import (
    CanopyError,
    InvalidArgument,
    LeaseExpired,
    StorageError,
    Unavailable,
    WatchCompacted,
)
from woodpecker.meta.base import (
    Compare,
    CompareTarget,
    Delete,
    EventType,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
)
from woodpecker.meta.engine import check_key, check_ops
from woodpecker.meta.tasks import BackgroundTasks

log = logging.getLogger(__name__)

_TARGETS = {
    CompareTarget.VERSION: (rpc.Compare.VERSION, "version"),
    CompareTarget.MOD_REVISION: (rpc.Compare.MOD, "mod_revision"),
    CompareTarget.CREATE_REVISION: (rpc.Compare.CREATE, "create_revision"),
    CompareTarget.VALUE: (rpc.Compare.VALUE, "value"),
}
_NOT_SENT = ("failed to connect", "connection refused", "dns resolution failed")


def _translate(exc: BaseException, what: str, *, write: bool) -> CanopyError | None:
    """Map an aetcd/grpc/socket exception to the error model; None if it is not one."""
    if isinstance(exc, CanopyError):
        return exc
    if isinstance(exc, aetcd_errors.RevisionCompactedError):
        return WatchCompacted(
            f"{what}: revision compacted; resume from {exc.compacted_revision} or later",
            compact_revision=exc.compacted_revision,
        )
    cause = exc if isinstance(exc, grpc.aio.AioRpcError) else exc.__cause__
    if isinstance(cause, grpc.aio.AioRpcError):
        code, details = cause.code(), cause.details() or ""
    elif isinstance(exc, aetcd_errors.ConnectionTimeoutError | aetcd_errors.WatchTimeoutError):
        code, details = grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "timed out"
    elif isinstance(exc, TimeoutError):  # before OSError, its base class
        code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"
    elif isinstance(exc, aetcd_errors.ConnectionFailedError | OSError):
        code, details = grpc.StatusCode.UNAVAILABLE, str(exc)
    elif isinstance(exc, aetcd_errors.InvalidArgumentError):
        code, details = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    elif isinstance(exc, aetcd_errors.ClientError):
        code, details = grpc.StatusCode.UNKNOWN, str(exc)
    else:
        return None
    message = f"{what}: etcd {code.name}: {details}"
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ):
        sent = not any(s in details.lower() for s in _NOT_SENT)
        return Unavailable(message, outcome_unknown=write and sent)
    if code is grpc.StatusCode.NOT_FOUND and "lease" in details:
        return LeaseExpired(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "larger than max" in details:
            return InvalidArgument(message)
        return Unavailable(message)  # rate limited; nothing was applied
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidArgument(message)
    return StorageError(message)


def _range_end(prefix: bytes) -> bytes:
    """The smallest key above every key starting with ``prefix`` (``\\0``: no upper bound)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class EtcdLease:
    """An etcd lease. ``ttl`` is the TTL etcd granted (whole seconds, at least its floor)."""

    def __init__(self, store: EtcdMetaStore, lease_id: int, ttl: float) -> None:
        self._store = store
        self._id = lease_id
        self._ttl = ttl
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
        """Refresh once; raises ``LeaseExpired`` (and marks the lease lost) if etcd has no such
        lease any more, ``Unavailable`` if etcd cannot be reached."""
        request = rpc.LeaseKeepAliveRequest(ID=self._id)
        with self._store._errors(f"keepalive lease {self._id:x}", write=False):
            client = await self._store._connected()
            call = client.leasestub.LeaseKeepAlive(
                iter([request]), timeout=self._store._timeout, metadata=client.metadata
            )
            try:
                reply = await call.read()
            finally:
                call.cancel()
        if reply is grpc.aio.EOF or reply.TTL <= 0:
            self._mark_lost()
            raise LeaseExpired(f"lease {self._id:x} has expired or was revoked")

    def start_keepalive(self) -> None:
        """Refresh every ttl/3 until revoke()/close(); the lease is marked lost when etcd says
        it is gone, or when no refresh has succeeded for a whole ttl."""
        if self._task is None and self.alive:
            self._task = self._store._tasks.spawn(self._keepalive_loop(), f"lease-{self._id:x}")
            self._task.add_done_callback(lambda _: self._mark_lost())

    async def _keepalive_loop(self) -> None:
        clock = self._store._clock
        last_ok = clock.monotonic()
        while self.alive:
            await clock.sleep(self._ttl / 3)
            try:
                await self.keepalive()
                last_ok = clock.monotonic()
            except LeaseExpired:
                return
            except Unavailable as exc:
                if clock.monotonic() - last_ok >= self._ttl:
                    log.warning(
                        "lease %x lost: no keepalive for %.1fs (%s)", self._id, self._ttl, exc
                    )
                    return
                log.info("lease %x keepalive failed, retrying: %s", self._id, exc)

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def revoke(self) -> None:
        """Revoke the lease, deleting its keys; a no-op if it is already gone."""
        self._mark_lost()
        try:
            with self._store._errors(f"revoke lease {self._id:x}", write=True):
                client = await self._store._connected()
                await client.leasestub.LeaseRevoke(
                    rpc.LeaseRevokeRequest(ID=self._id),
                    timeout=self._store._timeout,
                    metadata=client.metadata,
                )
        except LeaseExpired:
            pass

    def _mark_lost(self) -> None:
        self._lost.set()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def __repr__(self) -> str:
        return f"EtcdLease(id={self._id:x}, ttl={self._ttl}, alive={self.alive})"


class EtcdWatch:
    """A watch on a key prefix. Events come in revision order; a broken stream is resumed from
    the next revision; compaction raises ``WatchCompacted``."""

    def __init__(self, store: EtcdMetaStore, prefix: str, start_revision: int | None) -> None:
        self._store = store
        self._prefix = prefix
        self._next = start_revision  # the first revision not yet delivered
        self._watch: Any = None  # aetcd.rtypes.Watch
        self._events: Any = None  # its async iterator
        self._closed = False

    async def _establish(self) -> None:
        store = self._store
        deadline = store._clock.monotonic() + store._reconnect_timeout
        delay = 0.05
        while True:
            try:
                if self._next is None:
                    self._next = await store.revision() + 1
                key = store._key(self._prefix)
                with store._errors(f"watch {self._prefix!r}", write=False):
                    client = await store._connected()
                    self._watch = await client.watch(
                        key, range_end=_range_end(key), start_revision=self._next
                    )
                self._events = self._watch.__aiter__()
                return
            except Unavailable:
                if store._clock.monotonic() >= deadline or store._closed:
                    raise
            await store._clock.sleep(delay)
            delay = min(delay * 2, 1.0)

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._closed:
            if self._events is None:
                await self._establish()
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:
                if self._closed or self._store._closed:
                    break
                self._events = None  # the stream ended under us: resume
                continue
            except Exception as exc:
                error = _translate(exc, f"watch {self._prefix!r}", write=False)
                if error is None:
                    raise
                if not isinstance(error, Unavailable) or self._closed:
                    raise error from exc
                log.info(
                    "watch %r: stream broken (%s); resuming at %s", self._prefix, error, self._next
                )
                self._events = None
                continue
            kv = event.kv
            self._next = kv.mod_revision + 1  # etcd never splits a revision across responses
            kind = EventType.PUT if event.kind == "PUT" else EventType.DELETE
            return WatchEvent(
                kind,
                self._store._unkey(kv.key),
                kv.value if kind is EventType.PUT else b"",
                kv.mod_revision,
                kv.version if kind is EventType.PUT else 0,
            )
        raise StopAsyncIteration

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store._watches.discard(self)
        if self._watch is not None:
            # aetcd queues the cancel request on a bounded queue that a dead stream never drains
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watch.cancel(), self._store._timeout)

    async def __aenter__(self) -> EtcdWatch:
        if self._events is None and not self._closed:
            await self._establish()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EtcdMetaStore:
    """The MetaStore on an etcd v3 cluster."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        prefix: str = "",
        *,
        clock: Clock | None = None,
        timeout: float = 5.0,
        reconnect_timeout: float = 10.0,
    ) -> None:
        if not endpoints:
            raise InvalidArgument("etcd meta store needs at least one endpoint")
        self._endpoints = list(endpoints)
        prefix = prefix.strip("/")
        self._prefix = prefix
        self._ns = (prefix + "/").encode() if prefix else b""
        self._clock: Clock = clock or RealClock()
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._clients: dict[int, aetcd.Client] = {}
        self._current = 0
        self._watches: set[EtcdWatch] = set()
        self._tasks = BackgroundTasks(lambda: self.uri)
        self._closed = False

    @property
    def uri(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self._endpoints)
        return f"etcd://{hosts}/{self._prefix}"

    # --- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, what: str, *, write: bool) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = _translate(exc, what, write=write)
            if error is None or error is exc:
                raise
            if isinstance(error, Unavailable) and len(self._endpoints) > 1:
                self._current = (self._current + 1) % len(self._endpoints)
            raise error from exc

    async def _connected(self) -> aetcd.Client:
        if self._closed:
            raise StorageError(f"meta store {self.uri} is closed")
        index = self._current
        client = self._clients.get(index)
        if client is None:
            host, port = self._endpoints[index]
            client = aetcd.Client(host, port, timeout=self._timeout)  # type: ignore[arg-type]
            self._clients[index] = client
        await client.connect()
        return client

    async def _call(self, method: str, request: Any, what: str, *, write: bool) -> Any:
        with self._errors(what, write=write):
            client = await self._connected()
            return await getattr(client.kvstub, method)(
                request, timeout=self._timeout, metadata=client.metadata
            )

    def _key(self, key: str) -> bytes:
        return self._ns + key.encode("utf-8", "surrogateescape")

    def _unkey(self, key: bytes) -> str:
        # a foreign non-UTF-8 key still round-trips through _key
        return key[len(self._ns) :].decode("utf-8", "surrogateescape")

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(
            self._unkey(kv.key), kv.value, kv.version, kv.create_revision, kv.mod_revision, kv.lease
        )

    def _bounds(self, prefix: str) -> tuple[bytes, bytes]:
        start = self._key(prefix)
        return (start or b"\0"), _range_end(start)

    def _op(self, op: Op) -> Any:
        if isinstance(op, Put):
            put = rpc.PutRequest(key=self._key(op.key), value=bytes(op.value), lease=op.lease)
            return rpc.RequestOp(request_put=put)
        if isinstance(op, Delete):
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(op.key)))
        key, end = self._bounds(op.prefix)
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))

    def _compare(self, c: Compare) -> Any:
        target, field = _TARGETS[c.target]
        return rpc.Compare(
            result=rpc.Compare.EQUAL, target=target, key=self._key(c.key), **{field: c.expected}
        )

    # --- MetaStore -----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        resp = await self._call(
            "Range", rpc.RangeRequest(key=self._key(key)), f"get {key!r}", write=False
        )
        return self._kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str, *, limit: int | None = None) -> list[KeyValue]:
        if limit is not None and limit < 0:
            raise InvalidArgument(f"range limit must be >= 0, got {limit}")
        key, end = self._bounds(prefix)
        request = rpc.RangeRequest(key=key, range_end=end, limit=limit or 0)
        resp = await self._call("Range", request, f"range {prefix!r}", write=False)
        return [self._kv(kv) for kv in resp.kvs]

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        check_ops((), [Put(key, value, lease)])
        request = rpc.PutRequest(key=self._key(key), value=bytes(value), lease=lease)
        resp = await self._call("Put", request, f"put {key!r}", write=True)
        return int(resp.header.revision)

    async def delete(self, key: str) -> bool:
        check_key(key)
        request = rpc.DeleteRangeRequest(key=self._key(key))
        resp = await self._call("DeleteRange", request, f"delete {key!r}", write=True)
        return resp.deleted > 0

    async def delete_prefix(self, prefix: str) -> int:
        key, end = self._bounds(prefix)
        request = rpc.DeleteRangeRequest(key=key, range_end=end)
        resp = await self._call("DeleteRange", request, f"delete prefix {prefix!r}", write=True)
        return int(resp.deleted)

    async def txn(
        self, compares: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        failure = failure or []
        check_ops(compares, success, failure)
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        resp = await self._call("Txn", request, "txn", write=True)
        return TxnResult(bool(resp.succeeded), int(resp.header.revision))

    async def cas(self, key: str, value: bytes, *, expected_version: int, lease: int = 0) -> bool:
        compare = Compare.version(key, expected_version)
        return (await self.txn([compare], [Put(key, value, lease)])).succeeded

    async def revision(self) -> int:
        request = rpc.RangeRequest(key=self._ns or b"\0", count_only=True)
        resp = await self._call("Range", request, "revision", write=False)
        return int(resp.header.revision)

    async def grant_lease(self, ttl: float) -> EtcdLease:
        if not ttl > 0:
            raise InvalidArgument(f"lease ttl must be > 0, got {ttl}")
        with self._errors(f"grant lease ttl={ttl}", write=True):
            client = await self._connected()
            resp = await client.leasestub.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=math.ceil(ttl)),
                timeout=self._timeout,
                metadata=client.metadata,
            )
        if resp.error:
            raise StorageError(f"grant lease ttl={ttl}: etcd: {resp.error}")
        return EtcdLease(self, int(resp.ID), float(resp.TTL))

    async def compact(self, revision: int) -> None:
        """Compact etcd's history (for the whole cluster, not only this prefix) below
        ``revision``; already compacted is not an error. Not part of the MetaStore protocol."""
        request = rpc.CompactionRequest(revision=revision)
        try:
            await self._call("Compact", request, f"compact {revision}", write=True)
        except InvalidArgument as exc:
            if "compacted" not in str(exc):
                raise

    def watch(self, prefix: str, *, start_revision: int | None = None) -> EtcdWatch:
        if start_revision is not None and start_revision < 1:
            raise InvalidArgument(f"start_revision must be >= 1, got {start_revision}")
        watch = EtcdWatch(self, prefix, start_revision)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """End every watch, stop keepalives (leases are not revoked) and disconnect."""
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            await watch.close()
        await self._tasks.cancel_all()
        for client in self._clients.values():
            try:
                await asyncio.wait_for(client.close(), self._timeout)
            except Exception:  # a wedged watcher stream: close the channel directly
                if client.channel is not None:
                    with contextlib.suppress(Exception):
                        await client.channel.close()
        self._clients.clear()
