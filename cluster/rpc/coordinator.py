"""The coordinator over gRPC: :class:`CoordinatorServicer` (server side of the ``Coordinator``
and ``Catalog`` services) and :class:`CoordinatorClient` (a
:class:`~cluster.interfaces.CoordinatorService`, with :class:`RemoteCatalog` as ``.catalog``).

Contract: a client call has the semantics, return types and exceptions of the in-process call
(:class:`~cluster.coordinator.service.LocalCoordinator`,
:class:`~cluster.coordinator.catalog.Catalog`); errors are re-raised as the same class
(:mod:`cluster.rpc.errors`). Records travel in their own byte encoding
(``CollectionInfo.encode()``, ...). Transport failures raise
:class:`~woodpecker.errors.Unavailable`. Idempotent calls (allocations, reads,
``report_flushed_segment``, ``catalog.start``) are retried with back-off for up to ``retry_for``
seconds, so a coordinator restart costs them latency only; DDL mutations are never retried (their
outcome is unknown after a transport failure: ``Unavailable.outcome_unknown``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from cluster.coordinator.catalog import BOUNDED, Catalog
from cluster.coordinator.index_builds import IndexBuildProgress, ProgressState
from cluster.coordinator.records import (
    DEFAULT_PARTITION,
    CatalogSettings,
    CollectionInfo,
    DatabaseInfo,
    DroppedPartition,
    IndexInfo,
    LoadInfo,
    PartitionInfo,
)
from cluster.interfaces import CoordinatorService, SegmentInfo
from cluster.proto import canopy_pb2 as pb
from cluster.proto import canopy_pb2_grpc as pb_grpc
from cluster.rpc.errors import call
from cluster.rpc.server import MAX_MESSAGE_BYTES, RpcChannel, handler
from woodpecker.clock import Clock, RealClock

__all__ = ["CoordinatorClient", "CoordinatorServicer", "RemoteCatalog"]

Ctx = grpc.aio.ServicerContext


# --- conversions ----------------------------------------------------------------------------


def _kvs(mapping: Mapping[str, Any] | None) -> list[pb.KeyValue]:
    return [pb.KeyValue(key=str(k), value=str(v)) for k, v in (mapping or {}).items()]


def _props(kvs: Sequence[pb.KeyValue]) -> dict[str, str]:
    return {kv.key: kv.value for kv in kvs}


def _partition_pb(p: PartitionInfo) -> pb.Partition:
    return pb.Partition(partition_id=p.partition_id, name=p.name, create_ts=p.create_ts)


def _partition(p: pb.Partition) -> PartitionInfo:
    return PartitionInfo(p.partition_id, p.name, p.create_ts)


def _segment_pb(s: SegmentInfo) -> pb.SegmentInfo:
    return pb.SegmentInfo(
        collection_id=s.collection_id,
        partition_id=s.partition_id,
        segment_id=s.segment_id,
        vchannel=s.vchannel,
        rows=s.rows,
        state=s.state,
    )


def _segment(s: pb.SegmentInfo) -> SegmentInfo:
    return SegmentInfo(s.collection_id, s.partition_id, s.segment_id, s.vchannel, s.rows, s.state)


def _progress_pb(p: IndexBuildProgress) -> pb.IndexBuildProgressReply:
    return pb.IndexBuildProgressReply(
        indexed_rows=p.indexed_rows,
        total_rows=p.total_rows,
        pending_rows=p.pending_rows,
        state=p.state.value,
        fail_reason=p.fail_reason,
    )


def _progress(r: pb.IndexBuildProgressReply) -> IndexBuildProgress:
    return IndexBuildProgress(
        r.indexed_rows, r.total_rows, r.pending_rows, ProgressState(r.state), r.fail_reason
    )


# --- server ---------------------------------------------------------------------------------


class CoordinatorServicer(pb_grpc.CoordinatorServicer, pb_grpc.CatalogServicer):
    """Serves ``coordinator`` (the ``Coordinator`` service) and ``catalog`` (``Catalog``); both
    must be started by the caller. Pass it to :class:`~cluster.rpc.server.RpcServer`."""

    def __init__(self, coordinator: CoordinatorService, catalog: Catalog) -> None:
        self.coordinator = coordinator
        self.catalog = catalog

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_CoordinatorServicer_to_server(self, server)
        pb_grpc.add_CatalogServicer_to_server(self, server)

    # --- Coordinator ---------------------------------------------------------------------------

    @handler(pb.TimestampReply)
    async def AllocateTimestamp(self, request: pb.AllocateRequest, context: Ctx):
        ts = await self.coordinator.allocate_timestamp(request.count)
        return pb.TimestampReply(timestamp=ts)

    @handler(pb.IdsReply)
    async def AllocateIds(self, request: pb.AllocateRequest, context: Ctx):
        return pb.IdsReply(first=await self.coordinator.allocate_ids(request.count))

    @handler(pb.CollectionReply)
    async def DescribeCollectionById(self, request: pb.CollectionIdRequest, context: Ctx):
        info = await self.coordinator.describe_collection_by_id(request.collection_id)
        return pb.CollectionReply(info=info.encode())

    @handler(pb.EmptyReply)
    async def ReportFlushedSegment(self, request: pb.ReportFlushedSegmentRequest, context: Ctx):
        s = request.segment
        await self.coordinator.report_flushed_segment(
            s.collection_id, s.partition_id, s.segment_id, s.vchannel, s.rows
        )
        return pb.EmptyReply()

    @handler(pb.ListSegmentsReply)
    async def ListSegments(self, request: pb.CollectionIdRequest, context: Ctx):
        segments = await self.coordinator.list_segments(request.collection_id)
        return pb.ListSegmentsReply(segments=[_segment_pb(s) for s in segments])

    @handler(pb.IndexBuildProgressReply)
    async def IndexBuildProgress(self, request: pb.IndexBuildProgressRequest, context: Ctx):
        progress = await self.coordinator.index_build_progress(
            request.collection_id, request.index_id, request.as_of_ts
        )
        return _progress_pb(progress)

    @handler(pb.LoadProgressReply)
    async def LoadProgress(self, request: pb.LoadProgressRequest, context: Ctx):
        pids = list(request.partition_ids) if request.has_partitions else None
        percent = await self.coordinator.load_progress(request.collection_id, pids)
        return pb.LoadProgressReply(percent=percent)

    # --- Catalog -------------------------------------------------------------------------------

    @handler(pb.SettingsReply)
    async def Start(self, request: pb.Empty, context: Ctx):
        return pb.SettingsReply(settings=(await self.catalog.start()).encode())

    @handler(pb.DatabaseReply)
    async def CreateDatabase(self, request: pb.CreateDatabaseRequest, context: Ctx):
        info = await self.catalog.create_database(
            request.name, _props(request.properties), create_ts=request.create_ts
        )
        return pb.DatabaseReply(info=info.encode())

    @handler(pb.DatabasesReply)
    async def ListDatabases(self, request: pb.Empty, context: Ctx):
        infos = await self.catalog.list_databases()
        return pb.DatabasesReply(infos=[i.encode() for i in infos])

    @handler(pb.DatabaseReply)
    async def DescribeDatabase(self, request: pb.DatabaseRequest, context: Ctx):
        return pb.DatabaseReply(info=(await self.catalog.describe_database(request.name)).encode())

    @handler(pb.DatabaseReply)
    async def AlterDatabase(self, request: pb.AlterDatabaseRequest, context: Ctx):
        info = await self.catalog.alter_database(
            request.name, _props(request.properties), delete_keys=list(request.delete_keys)
        )
        return pb.DatabaseReply(info=info.encode())

    @handler(pb.EmptyReply)
    async def DropDatabase(self, request: pb.DatabaseRequest, context: Ctx):
        await self.catalog.drop_database(request.name)
        return pb.EmptyReply()

    @handler(pb.CollectionReply)
    async def CreateCollection(self, request: pb.CreateCollectionRequest, context: Ctx):
        info = await self.catalog.create_collection(
            request.db,
            request.name,
            request.schema,
            create_ts=request.create_ts,
            shards_num=request.shards_num,
            consistency_level=request.consistency_level,
            properties=_props(request.properties),
            partitions=tuple(request.partitions),
        )
        return pb.CollectionReply(info=info.encode())

    @handler(pb.CollectionReply)
    async def DescribeCollection(self, request: pb.DescribeCollectionRequest, context: Ctx):
        db = request.db if request.HasField("db") else None
        target = request.WhichOneof("target")
        key: str | int = request.collection_id if target == "collection_id" else request.name
        return pb.CollectionReply(info=(await self.catalog.describe_collection(db, key)).encode())

    @handler(pb.BoolReply)
    async def HasCollection(self, request: pb.CollectionRequest, context: Ctx):
        return pb.BoolReply(value=await self.catalog.has_collection(request.db, request.name))

    @handler(pb.CollectionsReply)
    async def ListCollections(self, request: pb.DatabaseRequest, context: Ctx):
        infos = await self.catalog.list_collections(request.name)
        return pb.CollectionsReply(infos=[i.encode() for i in infos])

    @handler(pb.CollectionReply)
    async def DropCollection(self, request: pb.DropCollectionRequest, context: Ctx):
        tomb = await self.catalog.drop_collection(request.db, request.name, drop_ts=request.drop_ts)
        return pb.CollectionReply(info=tomb.encode())

    @handler(pb.CollectionReply)
    async def RenameCollection(self, request: pb.RenameCollectionRequest, context: Ctx):
        info = await self.catalog.rename_collection(
            request.db,
            request.old_name,
            request.new_name,
            new_db=request.new_db if request.HasField("new_db") else None,
        )
        return pb.CollectionReply(info=info.encode())

    @handler(pb.CollectionReply)
    async def AlterCollection(self, request: pb.AlterCollectionRequest, context: Ctx):
        info = await self.catalog.alter_collection(
            request.db,
            request.name,
            _props(request.properties),
            delete_keys=list(request.delete_keys),
            update_ts=request.update_ts if request.HasField("update_ts") else None,
        )
        return pb.CollectionReply(info=info.encode())

    @handler(pb.PartitionReply)
    async def CreatePartition(self, request: pb.CreatePartitionRequest, context: Ctx):
        created = await self.catalog.create_partition(
            request.db, request.collection, request.partition, create_ts=request.create_ts
        )
        return pb.PartitionReply(partition=_partition_pb(created))

    @handler(pb.PartitionsReply)
    async def ListPartitions(self, request: pb.CollectionRequest, context: Ctx):
        parts = await self.catalog.list_partitions(request.db, request.name)
        return pb.PartitionsReply(partitions=[_partition_pb(p) for p in parts])

    @handler(pb.BoolReply)
    async def HasPartition(self, request: pb.PartitionRequest, context: Ctx):
        found = await self.catalog.has_partition(request.db, request.collection, request.partition)
        return pb.BoolReply(value=found)

    @handler(pb.PartitionReply)
    async def DescribePartition(self, request: pb.PartitionRequest, context: Ctx):
        found = await self.catalog.describe_partition(
            request.db, request.collection, request.partition
        )
        return pb.PartitionReply(partition=_partition_pb(found))

    @handler(pb.DroppedPartitionReply)
    async def DropPartition(self, request: pb.DropPartitionRequest, context: Ctx):
        tomb = await self.catalog.drop_partition(
            request.db, request.collection, request.partition, drop_ts=request.drop_ts
        )
        return pb.DroppedPartitionReply(dropped=tomb.encode())

    # --- indexes and load state ----------------------------------------------------------------

    @handler(pb.IndexReply)
    async def CreateIndex(self, request: pb.CreateIndexRequest, context: Ctx):
        info = await self.catalog.create_index(
            request.db,
            request.collection,
            request.field_name,
            request.index_name,
            _props(request.params),
            create_ts=request.create_ts,
        )
        return pb.IndexReply(info=info.encode())

    @handler(pb.IndexesReply)
    async def ListIndexes(self, request: pb.CollectionRequest, context: Ctx):
        infos = await self.catalog.list_indexes(request.db, request.name)
        return pb.IndexesReply(infos=[i.encode() for i in infos])

    @handler(pb.IndexReply)
    async def DescribeIndex(self, request: pb.IndexRequest, context: Ctx):
        info = await self.catalog.describe_index(request.db, request.collection, request.index_name)
        return pb.IndexReply(info=info.encode())

    @handler(pb.IndexReply)
    async def DropIndex(self, request: pb.IndexRequest, context: Ctx):
        info = await self.catalog.drop_index(request.db, request.collection, request.index_name)
        return pb.IndexReply(info=info.encode())

    @handler(pb.LoadReply)
    async def SetLoadState(self, request: pb.SetLoadStateRequest, context: Ctx):
        info = await self.catalog.set_load_state(
            request.db,
            request.collection,
            request.loaded,
            list(request.partitions) if request.has_partitions else None,
            request.replicas or 1,
        )
        return pb.LoadReply(info=info.encode())

    @handler(pb.LoadReply)
    async def GetLoadState(self, request: pb.LoadStateRequest, context: Ctx):
        info = await self.catalog.load_state(
            request.db,
            request.collection,
            list(request.partitions) if request.has_partitions else None,
        )
        return pb.LoadReply(info=info.encode())


# --- client ---------------------------------------------------------------------------------


class _Calls:
    """Calls of one service over a shared channel, with the client's timeout and retry window."""

    def __init__(
        self,
        channel: RpcChannel,
        stub: Any,
        service: str,
        timeout: float,
        retry_for: float,
        clock: Clock,
    ) -> None:
        self.channel = channel
        self.stub = stub
        self.service = service
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock = clock

    async def __call__(self, name: str, request: Any, *, idempotent: bool) -> Any:
        method = getattr(self.channel.stub(self.stub), name)
        return await call(
            method,
            request,
            what=f"{self.service}/{name} at {self.channel.target}",
            attempt_timeout=self.timeout,
            retry_for=self.retry_for if idempotent else 0.0,
            clock=self.clock,
        )


class RemoteCatalog:
    """The :class:`~cluster.coordinator.catalog.Catalog` methods the proxy and other roles use,
    with the same signatures, results and exceptions, answered by a coordinator over gRPC.
    Reads and ``start`` are retried on transport failures (see the module docstring); mutations
    are not."""

    def __init__(self, calls: _Calls) -> None:
        self._call = calls
        self._settings: CatalogSettings | None = None

    async def start(self) -> CatalogSettings:
        """The coordinator's catalog settings (it starts its catalog if needed)."""
        reply = await self._call("Start", pb.Empty(), idempotent=True)
        self._settings = CatalogSettings.decode(reply.settings)
        return self._settings

    @property
    def settings(self) -> CatalogSettings:
        if self._settings is None:
            raise RuntimeError("RemoteCatalog.start() has not run")
        return self._settings

    # --- databases ---------------------------------------------------------------------------

    async def create_database(
        self, name: str, properties: Mapping[str, str] | None = None, *, create_ts: int = 0
    ) -> DatabaseInfo:
        request = pb.CreateDatabaseRequest(
            name=name, properties=_kvs(properties), create_ts=create_ts
        )
        reply = await self._call("CreateDatabase", request, idempotent=False)
        return DatabaseInfo.decode(reply.info)

    async def list_databases(self) -> list[DatabaseInfo]:
        reply = await self._call("ListDatabases", pb.Empty(), idempotent=True)
        return [DatabaseInfo.decode(i) for i in reply.infos]

    async def describe_database(self, name: str) -> DatabaseInfo:
        reply = await self._call("DescribeDatabase", pb.DatabaseRequest(name=name), idempotent=True)
        return DatabaseInfo.decode(reply.info)

    async def alter_database(
        self, name: str, properties: Mapping[str, str], *, delete_keys: Sequence[str] = ()
    ) -> DatabaseInfo:
        request = pb.AlterDatabaseRequest(
            name=name, properties=_kvs(properties), delete_keys=list(delete_keys)
        )
        reply = await self._call("AlterDatabase", request, idempotent=False)
        return DatabaseInfo.decode(reply.info)

    async def drop_database(self, name: str) -> None:
        await self._call("DropDatabase", pb.DatabaseRequest(name=name), idempotent=False)

    # --- collections -------------------------------------------------------------------------

    async def create_collection(
        self,
        db: str,
        name: str,
        schema: bytes,
        *,
        create_ts: int,
        shards_num: int = 1,
        consistency_level: int = BOUNDED,
        properties: Mapping[str, str] | None = None,
        partitions: Sequence[str] = (DEFAULT_PARTITION,),
    ) -> CollectionInfo:
        request = pb.CreateCollectionRequest(
            db=db or "",
            name=name,
            schema=bytes(schema),
            create_ts=create_ts,
            shards_num=shards_num,
            consistency_level=int(consistency_level),
            properties=_kvs(properties),
            partitions=list(partitions),
        )
        reply = await self._call("CreateCollection", request, idempotent=False)
        return CollectionInfo.decode(reply.info)

    async def describe_collection(self, db: str | None, name_or_id: str | int) -> CollectionInfo:
        request = pb.DescribeCollectionRequest()
        if db is not None:
            request.db = db
        if isinstance(name_or_id, int):
            request.collection_id = name_or_id
        else:
            request.name = name_or_id
        reply = await self._call("DescribeCollection", request, idempotent=True)
        return CollectionInfo.decode(reply.info)

    async def has_collection(self, db: str, name: str) -> bool:
        request = pb.CollectionRequest(db=db or "", name=name)
        return bool((await self._call("HasCollection", request, idempotent=True)).value)

    async def list_collections(self, db: str) -> list[CollectionInfo]:
        request = pb.DatabaseRequest(name=db or "")
        reply = await self._call("ListCollections", request, idempotent=True)
        return [CollectionInfo.decode(i) for i in reply.infos]

    async def drop_collection(self, db: str, name: str, *, drop_ts: int) -> CollectionInfo:
        request = pb.DropCollectionRequest(db=db or "", name=name, drop_ts=drop_ts)
        reply = await self._call("DropCollection", request, idempotent=False)
        return CollectionInfo.decode(reply.info)

    async def rename_collection(
        self, db: str, old: str, new: str, *, new_db: str | None = None
    ) -> CollectionInfo:
        request = pb.RenameCollectionRequest(db=db or "", old_name=old, new_name=new)
        if new_db is not None:
            request.new_db = new_db
        reply = await self._call("RenameCollection", request, idempotent=False)
        return CollectionInfo.decode(reply.info)

    async def alter_collection(
        self,
        db: str,
        name: str,
        properties: Mapping[str, str],
        *,
        delete_keys: Sequence[str] = (),
        update_ts: int | None = None,
    ) -> CollectionInfo:
        request = pb.AlterCollectionRequest(
            db=db or "", name=name, properties=_kvs(properties), delete_keys=list(delete_keys)
        )
        if update_ts is not None:
            request.update_ts = update_ts
        reply = await self._call("AlterCollection", request, idempotent=False)
        return CollectionInfo.decode(reply.info)

    # --- partitions --------------------------------------------------------------------------

    async def create_partition(
        self, db: str, collection: str, partition: str, *, create_ts: int
    ) -> PartitionInfo:
        request = pb.CreatePartitionRequest(
            db=db or "", collection=collection, partition=partition, create_ts=create_ts
        )
        reply = await self._call("CreatePartition", request, idempotent=False)
        return _partition(reply.partition)

    async def list_partitions(self, db: str, collection: str) -> list[PartitionInfo]:
        request = pb.CollectionRequest(db=db or "", name=collection)
        reply = await self._call("ListPartitions", request, idempotent=True)
        return [_partition(p) for p in reply.partitions]

    async def has_partition(self, db: str, collection: str, partition: str) -> bool:
        request = pb.PartitionRequest(db=db or "", collection=collection, partition=partition)
        return bool((await self._call("HasPartition", request, idempotent=True)).value)

    async def describe_partition(self, db: str, collection: str, partition: str) -> PartitionInfo:
        request = pb.PartitionRequest(db=db or "", collection=collection, partition=partition)
        reply = await self._call("DescribePartition", request, idempotent=True)
        return _partition(reply.partition)

    async def drop_partition(
        self, db: str, collection: str, partition: str, *, drop_ts: int
    ) -> DroppedPartition:
        request = pb.DropPartitionRequest(
            db=db or "", collection=collection, partition=partition, drop_ts=drop_ts
        )
        reply = await self._call("DropPartition", request, idempotent=False)
        return DroppedPartition.decode(reply.dropped)

    # --- indexes and load state ----------------------------------------------------------------

    async def create_index(
        self,
        db: str,
        collection: str,
        field_name: str,
        index_name: str,
        params: Mapping[str, str],
        *,
        create_ts: int,
    ) -> IndexInfo:
        request = pb.CreateIndexRequest(
            db=db or "",
            collection=collection,
            field_name=field_name,
            index_name=index_name,
            params=_kvs(params),
            create_ts=create_ts,
        )
        reply = await self._call("CreateIndex", request, idempotent=False)
        return IndexInfo.decode(reply.info)

    async def list_indexes(self, db: str, collection: str) -> list[IndexInfo]:
        request = pb.CollectionRequest(db=db or "", name=collection)
        reply = await self._call("ListIndexes", request, idempotent=True)
        return [IndexInfo.decode(i) for i in reply.infos]

    async def describe_index(self, db: str, collection: str, index_name: str = "") -> IndexInfo:
        request = pb.IndexRequest(db=db or "", collection=collection, index_name=index_name)
        reply = await self._call("DescribeIndex", request, idempotent=True)
        return IndexInfo.decode(reply.info)

    async def drop_index(self, db: str, collection: str, index_name: str = "") -> IndexInfo:
        request = pb.IndexRequest(db=db or "", collection=collection, index_name=index_name)
        reply = await self._call("DropIndex", request, idempotent=False)
        return IndexInfo.decode(reply.info)

    async def set_load_state(
        self,
        db: str,
        collection: str,
        loaded: bool,
        partitions: Sequence[str] | None = None,
        replicas: int = 1,
    ) -> LoadInfo:
        request = pb.SetLoadStateRequest(
            db=db or "",
            collection=collection,
            loaded=loaded,
            has_partitions=partitions is not None,
            partitions=list(partitions or ()),
            replicas=replicas,
        )
        # Setting a state is idempotent (loading twice is a no-op): safe to retry.
        reply = await self._call("SetLoadState", request, idempotent=True)
        return LoadInfo.decode(reply.info)

    async def load_state(
        self, db: str, collection: str, partitions: Sequence[str] | None = None
    ) -> LoadInfo:
        request = pb.LoadStateRequest(
            db=db or "",
            collection=collection,
            has_partitions=partitions is not None,
            partitions=list(partitions or ()),
        )
        reply = await self._call("GetLoadState", request, idempotent=True)
        return LoadInfo.decode(reply.info)


class CoordinatorClient:
    """A :class:`~cluster.interfaces.CoordinatorService` answered by the coordinator at
    ``target`` (``host:port``), plus :attr:`catalog` (a :class:`RemoteCatalog`) on the same
    channel. ``timeout`` bounds each attempt; ``retry_for`` the retries of idempotent calls.
    ``await close()`` (or ``async with``) when done."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 30.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.target = target
        clock = clock or RealClock()
        self._channel = RpcChannel(target, max_message_bytes=max_message_bytes)
        self._call = _Calls(
            self._channel, pb_grpc.CoordinatorStub, "Coordinator", timeout, retry_for, clock
        )
        self.catalog = RemoteCatalog(
            _Calls(self._channel, pb_grpc.CatalogStub, "Catalog", timeout, retry_for, clock)
        )

    async def allocate_timestamp(self, count: int = 1) -> int:
        request = pb.AllocateRequest(count=count)
        return int((await self._call("AllocateTimestamp", request, idempotent=True)).timestamp)

    async def allocate_ids(self, count: int = 1) -> int:
        request = pb.AllocateRequest(count=count)
        return int((await self._call("AllocateIds", request, idempotent=True)).first)

    async def describe_collection_by_id(self, collection_id: int) -> CollectionInfo:
        request = pb.CollectionIdRequest(collection_id=collection_id)
        reply = await self._call("DescribeCollectionById", request, idempotent=True)
        return CollectionInfo.decode(reply.info)

    async def report_flushed_segment(
        self, collection_id: int, partition_id: int, segment_id: int, vchannel: str, rows: int
    ) -> None:
        segment = pb.SegmentInfo(
            collection_id=collection_id,
            partition_id=partition_id,
            segment_id=segment_id,
            vchannel=vchannel,
            rows=rows,
        )
        request = pb.ReportFlushedSegmentRequest(segment=segment)
        await self._call("ReportFlushedSegment", request, idempotent=True)

    async def list_segments(self, collection_id: int) -> list[SegmentInfo]:
        request = pb.CollectionIdRequest(collection_id=collection_id)
        reply = await self._call("ListSegments", request, idempotent=True)
        return [_segment(s) for s in reply.segments]

    async def index_build_progress(
        self, collection_id: int, index_id: int, as_of_ts: int = 0
    ) -> IndexBuildProgress:
        request = pb.IndexBuildProgressRequest(
            collection_id=collection_id, index_id=index_id, as_of_ts=as_of_ts
        )
        return _progress(await self._call("IndexBuildProgress", request, idempotent=True))

    async def load_progress(
        self, collection_id: int, partition_ids: Sequence[int] | None = None
    ) -> int:
        request = pb.LoadProgressRequest(
            collection_id=collection_id,
            has_partitions=partition_ids is not None,
            partition_ids=list(partition_ids or ()),
        )
        return int((await self._call("LoadProgress", request, idempotent=True)).percent)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
