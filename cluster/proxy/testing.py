"""In-memory test doubles for the proxy's collaborators (unit and compat tests).

* :class:`MemoryCoordinator` -- a :class:`~cluster.interfaces.CoordinatorService` over a real
  :class:`~cluster.coordinator.tso.TimestampOracle` and
  :class:`~cluster.coordinator.catalog.Catalog` (row ids from their own counter key). Nothing
  builds indexes: every index is ``Finished`` with its flushed rows pending.
* :class:`MemoryStreamingService` -- a :class:`~cluster.interfaces.StreamingService` that
  records every call (:attr:`calls`), stamps writes with the coordinator's timestamps (an upsert
  with one), keeps the rows and deletes in memory (:meth:`live_rows` applies deletes by
  timestamp, as MVCC would: a delete at ``t`` hides rows stamped below ``t``),
  seals one segment per vchannel holding data on flush, and reports a flush durable after
  ``polls_until_flushed`` calls of ``flush_state``. :attr:`fail_with` makes the next call
  raise. Reads (``search``, ``query``) run the streaming node's read functions
  (:mod:`cluster.streaming.reads`) over one in-memory growing segment per (collection,
  partition, vchannel) fed by the writes, at ``visible_ts = max(guarantee_ts, last write ts)``.

* :class:`ProxyHarness` -- a :class:`~cluster.proxy.servicer.ProxyServicer` wired to the two
  above on a ``memory://`` MetaStore; :class:`FakeContext` stands in for the gRPC context when
  a test calls servicer methods directly (``dbname`` header and all).

Not for production: nothing is durable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.index_builds import IndexBuildProgress, ProgressState
from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.tso import TimestampOracle
from cluster.interfaces import (
    VISIBLE_TS_KEY,
    FlushTicket,
    GrowingQuery,
    GrowingSearch,
    GrowingSearchResult,
    SegmentInfo,
    WriteAck,
)
from cluster.milvus.columns import arrow_schema
from cluster.proxy.routing import StaticRouter
from cluster.proxy.servicer import ProxyServicer
from cluster.schema import CollectionSchema, from_request_bytes
from cluster.streaming.growing import GrowingSegment, stored_schema
from cluster.streaming.messages import with_system_columns
from cluster.streaming.reads import compile_read_filter, query_segments, search_segments
from cluster.streaming.routing import conform_insert
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

    async def index_build_progress(
        self, collection_id: int, index_id: int, as_of_ts: int = 0
    ) -> IndexBuildProgress:
        total = sum(s.rows for s in await self.list_segments(collection_id))
        return IndexBuildProgress(0, total, total, ProgressState.FINISHED)

    async def load_progress(
        self, collection_id: int, partition_ids: Sequence[int] | None = None
    ) -> int:
        return 100  # no query nodes


@dataclass(frozen=True)
class Upserted:
    """What one upsert call carried."""

    inserts: tuple[tuple[int, pa.Table], ...]  # (partition_id, rows)
    delete_pks: pa.Array


@dataclass(frozen=True)
class Call:
    """One recorded call: ``kind`` is insert/delete/upsert/flush/drop/search/query; ``data``
    the table (insert), the primary keys (delete), an :class:`Upserted` (upsert;
    ``partition_id`` is then its delete's partition), the vchannels (flush, drop) or the
    request (search, query; ``ts`` is then the visible_ts)."""

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
        self.segments: dict[tuple[int, int, str], GrowingSegment] = {}
        self.last_ts = 0

    def _check_fail(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    async def insert(
        self, collection_id: int, partition_id: int, vchannel: str, table: pa.Table
    ) -> WriteAck:
        self._check_fail()
        schema = await self._schema(collection_id)
        row_ids = await self._row_ids(table.num_rows)
        ts = await self.coordinator.allocate_timestamp()
        self.calls.append(Call("insert", collection_id, partition_id, vchannel, table, ts))
        self._unflushed[(collection_id, vchannel)] += table.num_rows
        self._append(schema, collection_id, partition_id, vchannel, table, row_ids, ts)
        return WriteAck(ts, table.num_rows)

    async def delete(
        self, collection_id: int, partition_id: int | None, vchannel: str, pks: pa.Array
    ) -> WriteAck:
        self._check_fail()
        ts = await self.coordinator.allocate_timestamp()
        self.calls.append(Call("delete", collection_id, partition_id, vchannel, pks, ts))
        self._delete(collection_id, partition_id, vchannel, pks, ts)
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
        schema = await self._schema(collection_id)
        ids = [await self._row_ids(t.num_rows) for _, t in inserts]
        ts = await self.coordinator.allocate_timestamp()
        data = Upserted(tuple((pid, t) for pid, t in inserts), delete_pks)
        self.calls.append(Call("upsert", collection_id, delete_partition_id, vchannel, data, ts))
        rows = sum(t.num_rows for _, t in inserts)
        self._unflushed[(collection_id, vchannel)] += rows
        self._delete(collection_id, delete_partition_id, vchannel, delete_pks, ts)
        for (pid, table), row_ids in zip(inserts, ids, strict=True):
            self._append(schema, collection_id, pid, vchannel, table, row_ids, ts)
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
        for key in [k for k in self.segments if k[0] == collection_id and k[2] in vchannels]:
            del self.segments[key]

    async def search(self, request: GrowingSearch) -> GrowingSearchResult:
        self._check_fail()
        schema = await self._schema(request.collection_id)
        visible_ts = max(request.guarantee_ts, self.last_ts)
        self.calls.append(Call("search", request.collection_id, None, "", request, visible_ts))
        plan = compile_read_filter(request.filter, schema, request.template_values)
        segments = self._read_segments(request.collection_id, request.vchannels, request)
        stored = stored_schema(schema)
        hits = search_segments(segments, request, plan, visible_ts, schema, stored)
        return GrowingSearchResult(hits, visible_ts)

    async def query(self, request: GrowingQuery) -> pa.Table:
        self._check_fail()
        schema = await self._schema(request.collection_id)
        visible_ts = max(request.guarantee_ts, self.last_ts)
        self.calls.append(Call("query", request.collection_id, None, "", request, visible_ts))
        plan = compile_read_filter(request.filter, schema, request.template_values)
        segments = self._read_segments(request.collection_id, request.vchannels, request)
        table = query_segments(segments, request, plan, visible_ts, schema, stored_schema(schema))
        return table.replace_schema_metadata({VISIBLE_TS_KEY: str(visible_ts).encode()})

    # --- growing data --------------------------------------------------------------------------

    async def _schema(self, collection_id: int) -> CollectionSchema:
        info = await self.coordinator.describe_collection_by_id(collection_id)
        return from_request_bytes(info.schema)

    async def _row_ids(self, n: int) -> np.ndarray:
        first = await self.coordinator.allocate_ids(max(n, 1))
        return np.arange(first, first + n, dtype=np.int64)

    def _append(
        self,
        schema: CollectionSchema,
        cid: int,
        pid: int,
        vchannel: str,
        table: pa.Table,
        row_ids: np.ndarray,
        ts: int,
    ) -> None:
        if not table.num_rows:
            return
        key = (cid, pid, vchannel)
        seg = self.segments.get(key)
        if seg is None:
            seg = GrowingSegment(
                schema, segment_id=len(self.segments) + 1, collection_id=cid,
                partition_id=pid, vchannel=vchannel,
            )  # fmt: skip
            self.segments[key] = seg
        rows = conform_insert(table, schema, arrow_schema(schema))
        seg.append(with_system_columns(rows, row_ids, ts))
        self.last_ts = max(self.last_ts, ts)

    def _delete(self, cid: int, pid: int | None, vchannel: str, pks: pa.Array, ts: int) -> None:
        for (c, p, v), seg in self.segments.items():
            if c == cid and v == vchannel and (pid is None or p == pid) and len(pks):
                seg.apply_delete(pks, ts)
        self.last_ts = max(self.last_ts, ts)

    def _read_segments(
        self, cid: int, vchannels: Sequence[str], request: GrowingSearch | GrowingQuery
    ) -> list[GrowingSegment]:
        pids = request.partition_ids
        return [
            seg
            for (c, p, v), seg in sorted(self.segments.items())
            if c == cid and v in vchannels and (pids is None or p in pids)
        ]

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
