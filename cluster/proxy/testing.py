"""In-memory test doubles for the proxy's collaborators (unit and compat tests).

* :class:`MemoryCoordinator` -- a :class:`~cluster.interfaces.CoordinatorService` over a real
  :class:`~cluster.coordinator.tso.TimestampOracle` and
  :class:`~cluster.coordinator.catalog.Catalog` (row ids from their own counter key).
* :class:`MemoryStreamingService` -- a :class:`~cluster.interfaces.StreamingService` that
  records every call (:attr:`calls`), stamps writes with the coordinator's timestamps (an upsert
  with one), keeps the rows and deletes in memory (:meth:`live_rows` applies deletes by
  timestamp, as MVCC would: a delete at ``t`` hides rows stamped below ``t``),
  seals one segment per vchannel holding data on flush, and reports a flush durable after
  ``polls_until_flushed`` calls of ``flush_state``. :attr:`fail_with` makes the next write raise.

* :class:`ProxyHarness` -- a :class:`~cluster.proxy.servicer.ProxyServicer` wired to the two
  above on a ``memory://`` MetaStore; :class:`FakeContext` stands in for the gRPC context when
  a test calls servicer methods directly (``dbname`` header and all).

Not for production: nothing is durable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.tso import TimestampOracle
from cluster.interfaces import FlushTicket, SegmentInfo, WriteAck
from cluster.proxy.routing import StaticRouter
from cluster.proxy.servicer import ProxyServicer
from woodpecker.clock import Clock, RealClock
from woodpecker.meta.memory import MemoryMetaStore

__all__ = [
    "Call",
    "FakeContext",
    "MemoryCoordinator",
    "MemoryStreamingService",
    "ProxyHarness",
    "Upserted",
]


class MemoryCoordinator:
    """CoordinatorService over a TimestampOracle and a Catalog on one MetaStore."""

    def __init__(self, tso: TimestampOracle, catalog: Catalog) -> None:
        self.tso = tso
        self.catalog = catalog
        self._ids = IdAllocator(catalog.meta, "test/row_ids", batch=4096)
        self.flushed: list[tuple[int, int, int, str, int]] = []

    async def allocate_timestamp(self, count: int = 1) -> int:
        return await self.tso.allocate(count)

    async def allocate_ids(self, count: int = 1) -> int:
        return await self._ids.allocate(count)

    async def describe_collection_by_id(self, collection_id: int) -> CollectionInfo:
        return await self.catalog.describe_collection(None, collection_id)

    async def report_flushed_segment(
        self, collection_id: int, partition_id: int, segment_id: int, vchannel: str, rows: int
    ) -> None:
        if all(f[2] != segment_id for f in self.flushed):  # idempotent
            self.flushed.append((collection_id, partition_id, segment_id, vchannel, rows))

    async def list_segments(self, collection_id: int) -> list[SegmentInfo]:
        return sorted(
            (SegmentInfo(*f) for f in self.flushed if f[0] == collection_id),
            key=lambda s: s.segment_id,
        )


@dataclass(frozen=True)
class Upserted:
    """What one upsert call carried."""

    inserts: tuple[tuple[int, pa.Table], ...]  # (partition_id, rows)
    delete_pks: pa.Array


@dataclass(frozen=True)
class Call:
    """One recorded call: ``kind`` is insert/delete/upsert/flush/drop; ``data`` the table
    (insert), the primary keys (delete), an :class:`Upserted` (upsert; ``partition_id`` is then
    its delete's partition) or the vchannels (flush, drop)."""

    kind: str
    collection_id: int
    partition_id: int | None
    vchannel: str
    data: object
    ts: int


class MemoryStreamingService:
    """A StreamingService in memory (see the module docstring)."""

    def __init__(self, coordinator: MemoryCoordinator, *, polls_until_flushed: int = 1) -> None:
        self.coordinator = coordinator
        self.polls_until_flushed = polls_until_flushed
        self.calls: list[Call] = []
        self.fail_with: BaseException | None = None
        self._unflushed: dict[tuple[int, str], int] = defaultdict(int)  # rows since last flush
        self._polls: dict[FlushTicket, int] = defaultdict(int)
        self.dropped: set[int] = set()

    def _check_fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        self._check_fail()
        ts = await self.coordinator.allocate_timestamp()
        self.calls.append(Call("insert", collection_id, partition_id, vchannel, table, ts))
        self._unflushed[(collection_id, vchannel)] += table.num_rows
        return WriteAck(ts, table.num_rows)

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        self._check_fail()
        ts = await self.coordinator.allocate_timestamp()
        self.calls.append(Call("delete", collection_id, partition_id, vchannel, pks, ts))
        return WriteAck(ts, len(pks))

    async def upsert(
        self,
        collection_id: int,
        vchannel: str,
        inserts: Sequence[tuple[int, pa.Table]],
        delete_pks: pa.Array,
        delete_partition_id: int | None,
    ) -> WriteAck:
        self._check_fail()
        ts = await self.coordinator.allocate_timestamp()
        data = Upserted(tuple((pid, t) for pid, t in inserts), delete_pks)
        self.calls.append(Call("upsert", collection_id, delete_partition_id, vchannel, data, ts))
        rows = sum(t.num_rows for _, t in inserts)
        self._unflushed[(collection_id, vchannel)] += rows
        return WriteAck(ts, rows)

    async def flush(self, collection_id: int, vchannels: list[str]) -> FlushTicket:
        self._check_fail()
        ts = await self.coordinator.allocate_timestamp()
        self.calls.append(Call("flush", collection_id, None, "", list(vchannels), ts))
        segments = []
        for vchannel in vchannels:
            if self._unflushed.pop((collection_id, vchannel), 0):
                segments.append(await self.coordinator.allocate_ids())
        return FlushTicket(collection_id, tuple(segments), ts)

    async def flush_state(self, ticket: FlushTicket) -> bool:
        self._polls[ticket] += 1
        return self._polls[ticket] >= self.polls_until_flushed

    async def drop_collection(self, collection_id: int, vchannels: list[str]) -> None:
        self.calls.append(Call("drop", collection_id, None, "", list(vchannels), 0))
        self.dropped.add(collection_id)

    # --- inspection ----------------------------------------------------------------------------

    def of(self, kind: str, collection_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.kind == kind and (collection_id is None or c.collection_id == collection_id)
        ]

    def deleted_keys(self, call: Call) -> pa.Array | None:
        """The keys a delete or upsert call deleted (None for other calls)."""
        if call.kind == "delete":
            return call.data  # type: ignore[return-value]
        if call.kind == "upsert":
            return call.data.delete_pks  # type: ignore[attr-defined,no-any-return]
        return None

    def inserted(self, call: Call) -> list[tuple[int, pa.Table]]:
        """The ``(partition_id, rows)`` an insert or upsert call wrote (empty for others)."""
        if call.kind == "insert":
            return [(call.partition_id, call.data)]  # type: ignore[list-item]
        if call.kind == "upsert":
            return list(call.data.inserts)  # type: ignore[attr-defined]
        return []

    def live_rows(self, collection_id: int, pk: str) -> pa.Table:
        """The collection's rows with deletes applied by timestamp (a delete at ``t`` removes
        rows of that key stamped before ``t``, not an upsert's own rows stamped ``t``), in
        write order."""
        deleted: dict[object, int] = {}
        calls = [c for c in self.calls if c.collection_id == collection_id]
        for c in calls:
            keys = self.deleted_keys(c)
            for key in keys.to_pylist() if keys is not None else ():
                deleted[key] = max(deleted.get(key, 0), c.ts)
        parts = []
        for c in calls:
            for _, table in self.inserted(c):
                keys = table.column(pk).to_pylist()
                keep = [deleted.get(k, 0) <= c.ts for k in keys]
                parts.append(table.filter(pa.array(keep)))
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts)

    def rows_in(self, collection_id: int, vchannel: str) -> int:
        return sum(
            t.num_rows
            for c in self.calls
            if c.collection_id == collection_id and c.vchannel == vchannel
            for _, t in self.inserted(c)
        )


class FakeContext:
    """The slice of ``grpc.aio.ServicerContext`` the servicer uses: metadata and abort."""

    def __init__(self, db: str | None = None, **headers: str) -> None:
        self.headers = dict(headers)
        if db is not None:
            self.headers["dbname"] = db
        self.aborted: tuple[object, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.headers.items())

    async def abort(self, code: object, details: str = "") -> None:
        self.aborted = (code, details)
        raise RuntimeError(f"aborted: {code} {details}")


@dataclass
class ProxyHarness:
    """A servicer over real Catalog + TimestampOracle on memory://, and a memory streaming node
    behind a :class:`~cluster.proxy.routing.StaticRouter`. ``await ProxyHarness.start()``,
    ``await harness.close()``."""

    meta: MemoryMetaStore
    tso: TimestampOracle
    catalog: Catalog
    coordinator: MemoryCoordinator
    streaming: MemoryStreamingService
    servicer: ProxyServicer

    @classmethod
    async def start(
        cls, *, num_physical_channels: int = 4, clock: Clock | None = None
    ) -> ProxyHarness:
        clock = clock or RealClock()
        meta = MemoryMetaStore(clock)
        tso = TimestampOracle(meta, clock)
        await tso.start()
        catalog = Catalog(meta, num_physical_channels=num_physical_channels)
        await catalog.start()
        coordinator = MemoryCoordinator(tso, catalog)
        streaming = MemoryStreamingService(coordinator)
        servicer = ProxyServicer(coordinator, catalog, StaticRouter(streaming), clock)
        return cls(meta, tso, catalog, coordinator, streaming, servicer)

    async def close(self) -> None:
        await self.tso.close()
        await self.meta.close()
