"""``etcd://host:port[,host:port...]/prefix`` — the MetaStore on etcd v3, through ``aetcd``.

Every key lives under the URI's prefix (``prefix/``); results and events carry keys with the
prefix stripped. Revisions, versions and compares are etcd's own. KV requests are built as etcd
protobufs and sent on aetcd's stubs (aetcd's helpers lack ``limit`` and full compares), and so
are watches (one gRPC Watch stream each, see below); leases use aetcd's client. Requests carry a
deadline (``timeout``, default 5 s).

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
- Cancellation: a cancellation of the calling task always propagates. Each watch runs on its own
  gRPC Watch stream (not aetcd's shared watcher, whose watch creation, on Python 3.11, could
  drop a cancellation that arrived as the creation completed: the task then waited for events
  forever), read by its own task into a queue: a consumer only ever awaits that queue, so
  cancelling it (a timeout around ``__anext__``, a task being stopped) leaves the stream intact,
  and ``close`` cancels the gRPC call and its reader and waits for the reader (bounded). Every
  RPC also checks, via ``Task.cancelling()``, that a cancellation requested while it ran was
  not swallowed inside grpc.aio or aetcd (:func:`_reraise_cancel`), and raises it if it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


def _cancel_requests() -> tuple[asyncio.Task[Any] | None, int]:
    """The current task and how many cancellations of it are pending, to pass to
    :func:`_reraise_cancel` after awaiting grpc.aio/aetcd code."""
    task = asyncio.current_task()
    return task, (task.cancelling() if task is not None else 0)


def _reraise_cancel(mark: tuple[asyncio.Task[Any] | None, int]) -> None:
    """Raise ``CancelledError`` if the task was asked to cancel since ``mark`` was taken and the
    code in between returned (or failed otherwise) instead of raising it. grpc.aio runs an RPC in
    inner tasks that catch ``CancelledError`` (``_invoke``, ``_prepare_rpc``): a cancellation
    that coincides with the RPC's completion comes out as the response or as an ``AioRpcError``
    with status OK. ``asyncio.wait_for`` on Python 3.11 (used inside aetcd) returns the result
    when the cancellation and the completion coincide (gh-86296). ``asyncio.timeout`` balances
    its own cancellation with ``uncancel()``, so it does not count here."""
    task, before = mark
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


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


@dataclass(frozen=True, slots=True)
class _StreamEnded:
    """The reader of a watch stream stopped: the stream ended cleanly or was cancelled (``error``
    None), or failed with ``error``."""

    error: BaseException | None


class _WatchStream:
    """One etcd watch on its own gRPC Watch stream. A reader task moves the responses into an
    unbounded queue and ends it with a :class:`_StreamEnded`, so consumers only ever await
    ``queue.get()``: a consumer's cancellation never reaches gRPC (which would cancel the call)
    and never gets lost in it. :meth:`abort` cancels the call and the reader at once;
    :meth:`close` also waits (bounded) until the reader has stopped."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="etcd-watch")
        self._reader.add_done_callback(self._read_done)

    @classmethod
    async def open(cls, client: aetcd.Client, create: Any, within: float) -> _WatchStream:
        """Start a stream and create the watch on it; raises what etcd or gRPC report (the
        caller translates), ``TimeoutError`` if etcd does not confirm it ``within`` seconds."""
        stream = cls(rpc.WatchStub(client.channel).Watch(metadata=client.metadata))
        try:
            async with asyncio.timeout(within):
                try:
                    await stream._call.write(rpc.WatchRequest(create_request=create))
                except asyncio.InvalidStateError:
                    pass  # the call has already ended: the reader reports why
                reply = await stream.get()
            if isinstance(reply, _StreamEnded):
                if reply.error is not None:
                    raise reply.error
                raise Unavailable("the watch stream ended before etcd created the watch")
            if reply.canceled or not reply.created:
                raise StorageError(f"etcd refused the watch: {reply.cancel_reason or reply}")
        except BaseException:
            stream.abort()
            raise
        return stream

    async def _read(self) -> None:
        while True:
            reply = await self._call.read()
            if reply is grpc.aio.EOF:
                return
            self._queue.put_nowait(reply)

    def _read_done(self, task: asyncio.Task[None]) -> None:
        # a cancelled reader: aborted by us, or grpc.aio reporting its call cancelled locally
        self._queue.put_nowait(_StreamEnded(None if task.cancelled() else task.exception()))

    async def get(self) -> Any:
        """The next ``WatchResponse``, or a :class:`_StreamEnded` (the last item)."""
        return await self._queue.get()

    def abort(self) -> None:
        self._call.cancel()
        self._reader.cancel()

    async def close(self, within: float) -> None:
        self.abort()
        if not self._reader.done():
            await asyncio.wait({self._reader}, timeout=within)


class EtcdWatch:
    """A watch on a key prefix. Events come in revision order; a broken stream is resumed from
    the next revision; compaction raises ``WatchCompacted``. See the module docstring for how
    cancellation and :meth:`close` work."""

    def __init__(self, store: EtcdMetaStore, prefix: str, start_revision: int | None) -> None:
        self._store = store
        self._prefix = prefix
        self._next = start_revision  # the first revision not yet received from etcd
        self._events: deque[WatchEvent] = deque()  # received, not yet delivered
        self._stream: _WatchStream | None = None
        self._closed = False

    @property
    def _what(self) -> str:
        return f"watch {self._prefix!r}"

    async def _establish(self) -> None:
        store = self._store
        deadline = store._clock.monotonic() + store._reconnect_timeout
        delay = 0.05
        while True:
            try:
                if self._next is None:
                    self._next = await store.revision() + 1
                key, end = store._bounds(self._prefix)
                create = rpc.WatchCreateRequest(key=key, range_end=end, start_revision=self._next)
                with store._errors(self._what, write=False):
                    client = await store._connected()
                    stream = await _WatchStream.open(client, create, store._timeout)
            except Unavailable:
                if store._clock.monotonic() >= deadline or store._closed or self._closed:
                    raise
            else:
                if self._closed:  # closed while we were creating it
                    await stream.close(store._timeout)
                else:
                    self._stream = stream
                return
            await store._clock.sleep(delay)
            delay = min(delay * 2, 1.0)

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._closed:
            if self._events:
                return self._events.popleft()
            stream = self._stream
            if stream is None:
                try:
                    await self._establish()
                except CanopyError:
                    if self._closed or self._store._closed:
                        break
                    raise
                continue
            reply = await stream.get()  # a plain queue: a cancellation here always propagates
            if self._closed:
                break
            if isinstance(reply, _StreamEnded):
                self._drop(stream)
                self._check_resumable(reply.error)
                continue
            self._receive(stream, reply)
        raise StopAsyncIteration

    def _drop(self, stream: _WatchStream) -> None:
        stream.abort()
        if self._stream is stream:
            self._stream = None

    def _check_resumable(self, exc: BaseException | None) -> None:
        """The stream ended: return to resume it, or raise what ended it if that is final."""
        if exc is not None:
            error = _translate(exc, self._what, write=False)
            if error is None:
                raise exc
            if not isinstance(error, Unavailable):
                raise error from exc
        log.info("%s: stream %s; resuming at %s", self._what, exc or "ended", self._next)

    def _receive(self, stream: _WatchStream, reply: Any) -> None:
        if reply.compact_revision:
            self._drop(stream)
            raise WatchCompacted(
                f"{self._what}: revision compacted; resume from {reply.compact_revision} or later",
                compact_revision=reply.compact_revision,
            )
        if reply.canceled:
            self._drop(stream)
            reason = reply.cancel_reason or "no reason given"
            if "leader" in reason:
                raise Unavailable(f"{self._what}: canceled by etcd: {reason}")
            raise StorageError(f"{self._what}: canceled by etcd: {reason}")
        for event in reply.events:
            kv = event.kv
            self._next = max(self._next or 0, kv.mod_revision + 1)
            put = event.type != rpc.Event.DELETE
            self._events.append(
                WatchEvent(
                    EventType.PUT if put else EventType.DELETE,
                    self._store._unkey(kv.key),
                    kv.value if put else b"",
                    kv.mod_revision,
                    kv.version if put else 0,
                )
            )

    async def close(self) -> None:
        """End the iteration (a task blocked in ``__anext__`` gets ``StopAsyncIteration``):
        cancel the gRPC call, stop its reader and wait for it (at most the store's ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        self._store._watches.discard(self)
        self._events.clear()
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close(self._store._timeout)

    async def __aenter__(self) -> EtcdWatch:
        if self._stream is None and not self._closed:
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
        """Translate errors of the calls in the block; re-raise a cancellation of the calling
        task that grpc.aio or aetcd swallowed in it (see :func:`_reraise_cancel`)."""
        mark = _cancel_requests()
        try:
            yield
        except Exception as exc:
            try:
                _reraise_cancel(mark)
            except asyncio.CancelledError as cancel:
                raise cancel from exc
            error = _translate(exc, what, write=write)
            if error is None or error is exc:
                raise
            if isinstance(error, Unavailable) and len(self._endpoints) > 1:
                self._current = (self._current + 1) % len(self._endpoints)
            raise error from exc
        _reraise_cancel(mark)

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
                async with asyncio.timeout(self._timeout):
                    await client.close()
            except Exception:  # a wedged stream: close the channel directly
                if client.channel is not None:
                    with contextlib.suppress(Exception):
                        await client.channel.close()
        self._clients.clear()
