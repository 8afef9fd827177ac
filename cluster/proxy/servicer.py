"""``ProxyServicer``: the Milvus gRPC API (``milvus_pb2_grpc.MilvusServiceServicer``) over the
coordinator, the catalog (through the metadata cache of :mod:`cluster.proxy.meta_cache` in
deployments) and the streaming nodes.

Contract:

- Every implemented RPC is an ``async`` method wrapped by :func:`cluster.proxy.rpc.rpc`: it never
  raises; errors come back as the reply's ``Status`` (Milvus codes and wording, mapped in one
  place). Every other RPC of ``MilvusService`` answers gRPC UNIMPLEMENTED ("<RPC> is not
  implemented by Canopy"), which pymilvus does not retry (Search, Query, aliases, ...).
- Indexes and load state are catalog metadata (:mod:`cluster.proxy.indexes`): CreateIndex,
  DescribeIndex, DropIndex, GetIndexState, GetIndexBuildProgress, LoadCollection,
  ReleaseCollection, LoadPartitions, ReleasePartitions, GetLoadingProgress, GetLoadState.
  DescribeIndex reports the data nodes' real build progress and GetLoadingProgress what the
  query nodes (in standalone, the streaming node) hold (see that module).
- Search and Query (:mod:`cluster.proxy.search`, :mod:`cluster.proxy.query`) are scattered to
  the streaming nodes owning the collection's shards, which read their growing data and, as
  shard delegators, the sealed segments (themselves or through the query nodes that loaded
  them; ``cluster/READ_PATH.md``), with MVCC at the consistency level's guarantee timestamp,
  merged across shards (newest version per key).
- The database of a request is its ``db_name`` field, else the ``dbname`` header pymilvus sends,
  else ``default``. The ``authorization`` header is accepted and ignored (no authentication
  yet); ``identifier`` echoes are ignored too.
- The servicer is stateless apart from caches (parsed schemas, issued flush tickets): any number
  of proxies may serve the same cluster.

Implemented: Connect, GetVersion, CheckHealth, AllocTimestamp; CreateDatabase, ListDatabases,
DropDatabase, DescribeDatabase, AlterDatabase; CreateCollection, DescribeCollection,
HasCollection, ShowCollections, DropCollection, AlterCollection, RenameCollection;
CreatePartition, ShowPartitions, HasPartition, DropPartition; Insert, Upsert, Delete, Flush,
GetFlushState; Search, Query; the index and load RPCs above. See :mod:`cluster.proxy.ddl`,
:mod:`cluster.proxy.dml` and :mod:`cluster.proxy.indexes` for the semantics.
"""

from __future__ import annotations

import itertools
from importlib import metadata

import grpc
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc

from cluster.coordinator.catalog import Catalog
from cluster.interfaces import CoordinatorService
from cluster.milvus.status import ok_status
from cluster.proxy.collections import Collections
from cluster.proxy.ddl import DdlHandlers
from cluster.proxy.dml import DmlHandlers
from cluster.proxy.indexes import IndexHandlers
from cluster.proxy.query import QueryHandlers
from cluster.proxy.reads import ReadSupport
from cluster.proxy.routing import StreamingRouter
from cluster.proxy.rpc import request_db, rpc
from cluster.proxy.search import SearchHandlers
from woodpecker.clock import Clock

__all__ = ["MILVUS_API_VERSION", "ProxyServicer"]

MILVUS_API_VERSION = "v2.6.0"
"""What GetVersion answers: the Milvus release whose API this proxy follows (clients compare it
to enable features); Canopy's own version is in Connect's ``server_info.build_tags``."""

Ctx = grpc.aio.ServicerContext


def _canopy_version() -> str:
    try:
        return metadata.version("canopy")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class ProxyServicer(milvus_pb2_grpc.MilvusServiceServicer):
    """The Milvus API of one proxy. ``coordinator`` allocates timestamps and ids, ``catalog``
    holds the DDL state, ``streaming_router`` finds the streaming node of a vchannel, ``clock``
    is the injected time source."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        catalog: Catalog,
        streaming_router: StreamingRouter,
        clock: Clock,
        *,
        deploy_mode: str = "STANDALONE",
    ) -> None:
        self.coordinator = coordinator
        self.catalog = catalog
        self.router = streaming_router
        self.clock = clock
        self.deploy_mode = deploy_mode
        self.collections = Collections(catalog)
        self.ddl = DdlHandlers(coordinator, catalog, streaming_router, self.collections)
        self.indexes = IndexHandlers(coordinator, catalog)
        reads = ReadSupport(coordinator, catalog)
        self.searches = SearchHandlers(
            coordinator, catalog, streaming_router, self.collections, reads
        )
        self.queries = QueryHandlers(streaming_router, self.collections, reads)
        self.dml = DmlHandlers(
            coordinator,
            streaming_router,
            self.collections,
            clock,
            match_keys=self.queries.primary_keys,
        )
        # Connection identifiers: unique per proxy process, increasing (ms at start, then +1).
        self._identifiers = itertools.count(int(clock.now() * 1000))
        self._version = _canopy_version()

    # --- connection ----------------------------------------------------------------------------

    @rpc(milvus_pb2.ConnectResponse)
    async def Connect(self, request: milvus_pb2.ConnectRequest, context: Ctx):
        info = common_pb2.ServerInfo(
            build_tags=f"canopy-{self._version}",
            deploy_mode=self.deploy_mode,
            reserved={"canopy_version": self._version, "milvus_api": MILVUS_API_VERSION},
        )
        return milvus_pb2.ConnectResponse(
            status=ok_status(), server_info=info, identifier=next(self._identifiers)
        )

    @rpc(milvus_pb2.GetVersionResponse)
    async def GetVersion(self, request: milvus_pb2.GetVersionRequest, context: Ctx):
        return milvus_pb2.GetVersionResponse(status=ok_status(), version=MILVUS_API_VERSION)

    @rpc(milvus_pb2.CheckHealthResponse)
    async def CheckHealth(self, request: milvus_pb2.CheckHealthRequest, context: Ctx):
        await self.catalog.start()  # answers once the catalog (the coordinator) does
        unserved = getattr(self.router, "unserved", None)  # distributed routers know this
        reasons = [f"channel {ch} has no live streaming node" for ch in (unserved or list)()]
        return milvus_pb2.CheckHealthResponse(
            status=ok_status(), isHealthy=not reasons, reasons=reasons
        )

    @rpc(milvus_pb2.AllocTimestampResponse)
    async def AllocTimestamp(self, request: milvus_pb2.AllocTimestampRequest, context: Ctx):
        ts = await self.coordinator.allocate_timestamp()
        return milvus_pb2.AllocTimestampResponse(status=ok_status(), timestamp=ts)

    # --- databases -----------------------------------------------------------------------------

    @rpc(common_pb2.Status)
    async def CreateDatabase(self, request: milvus_pb2.CreateDatabaseRequest, context: Ctx):
        return await self.ddl.create_database(request)

    @rpc(milvus_pb2.ListDatabasesResponse)
    async def ListDatabases(self, request: milvus_pb2.ListDatabasesRequest, context: Ctx):
        return await self.ddl.list_databases(request)

    @rpc(common_pb2.Status)
    async def DropDatabase(self, request: milvus_pb2.DropDatabaseRequest, context: Ctx):
        return await self.ddl.drop_database(request)

    @rpc(milvus_pb2.DescribeDatabaseResponse)
    async def DescribeDatabase(self, request: milvus_pb2.DescribeDatabaseRequest, context: Ctx):
        return await self.ddl.describe_database(request)

    @rpc(common_pb2.Status)
    async def AlterDatabase(self, request: milvus_pb2.AlterDatabaseRequest, context: Ctx):
        return await self.ddl.alter_database(request)

    # --- collections ---------------------------------------------------------------------------

    @rpc(common_pb2.Status)
    async def CreateCollection(self, request: milvus_pb2.CreateCollectionRequest, context: Ctx):
        return await self.ddl.create_collection(request, request_db(request, context))

    @rpc(milvus_pb2.DescribeCollectionResponse)
    async def DescribeCollection(self, request: milvus_pb2.DescribeCollectionRequest, context: Ctx):
        return await self.ddl.describe_collection(request, request_db(request, context))

    @rpc(milvus_pb2.BoolResponse)
    async def HasCollection(self, request: milvus_pb2.HasCollectionRequest, context: Ctx):
        return await self.ddl.has_collection(request, request_db(request, context))

    @rpc(milvus_pb2.ShowCollectionsResponse)
    async def ShowCollections(self, request: milvus_pb2.ShowCollectionsRequest, context: Ctx):
        return await self.ddl.show_collections(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def DropCollection(self, request: milvus_pb2.DropCollectionRequest, context: Ctx):
        return await self.ddl.drop_collection(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def AlterCollection(self, request: milvus_pb2.AlterCollectionRequest, context: Ctx):
        return await self.ddl.alter_collection(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def RenameCollection(self, request: milvus_pb2.RenameCollectionRequest, context: Ctx):
        return await self.ddl.rename_collection(request, request_db(request, context))

    # --- partitions ----------------------------------------------------------------------------

    @rpc(common_pb2.Status)
    async def CreatePartition(self, request: milvus_pb2.CreatePartitionRequest, context: Ctx):
        return await self.ddl.create_partition(request, request_db(request, context))

    @rpc(milvus_pb2.ShowPartitionsResponse)
    async def ShowPartitions(self, request: milvus_pb2.ShowPartitionsRequest, context: Ctx):
        return await self.ddl.show_partitions(request, request_db(request, context))

    @rpc(milvus_pb2.BoolResponse)
    async def HasPartition(self, request: milvus_pb2.HasPartitionRequest, context: Ctx):
        return await self.ddl.has_partition(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def DropPartition(self, request: milvus_pb2.DropPartitionRequest, context: Ctx):
        return await self.ddl.drop_partition(request, request_db(request, context))

    # --- writes --------------------------------------------------------------------------------

    @rpc(milvus_pb2.MutationResult)
    async def Insert(self, request: milvus_pb2.InsertRequest, context: Ctx):
        return await self.dml.insert(request, request_db(request, context))

    @rpc(milvus_pb2.MutationResult)
    async def Upsert(self, request: milvus_pb2.UpsertRequest, context: Ctx):
        return await self.dml.upsert(request, request_db(request, context))

    @rpc(milvus_pb2.MutationResult)
    async def Delete(self, request: milvus_pb2.DeleteRequest, context: Ctx):
        return await self.dml.delete(request, request_db(request, context))

    @rpc(milvus_pb2.FlushResponse)
    async def Flush(self, request: milvus_pb2.FlushRequest, context: Ctx):
        return await self.dml.flush(request, request_db(request, context))

    @rpc(milvus_pb2.GetFlushStateResponse)
    async def GetFlushState(self, request: milvus_pb2.GetFlushStateRequest, context: Ctx):
        return await self.dml.get_flush_state(request, request_db(request, context))

    # --- reads --------------------------------------------------------------------------------

    @rpc(milvus_pb2.SearchResults)
    async def Search(self, request: milvus_pb2.SearchRequest, context: Ctx):
        return await self.searches.search(request, request_db(request, context))

    @rpc(milvus_pb2.QueryResults)
    async def Query(self, request: milvus_pb2.QueryRequest, context: Ctx):
        return await self.queries.query(request, request_db(request, context))

    # --- indexes ------------------------------------------------------------------------------

    @rpc(common_pb2.Status)
    async def CreateIndex(self, request: milvus_pb2.CreateIndexRequest, context: Ctx):
        return await self.indexes.create_index(request, request_db(request, context))

    @rpc(milvus_pb2.DescribeIndexResponse)
    async def DescribeIndex(self, request: milvus_pb2.DescribeIndexRequest, context: Ctx):
        return await self.indexes.describe_index(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def DropIndex(self, request: milvus_pb2.DropIndexRequest, context: Ctx):
        return await self.indexes.drop_index(request, request_db(request, context))

    @rpc(milvus_pb2.GetIndexStateResponse)
    async def GetIndexState(self, request: milvus_pb2.GetIndexStateRequest, context: Ctx):
        return await self.indexes.get_index_state(request, request_db(request, context))

    @rpc(milvus_pb2.GetIndexBuildProgressResponse)
    async def GetIndexBuildProgress(
        self, request: milvus_pb2.GetIndexBuildProgressRequest, context: Ctx
    ):
        return await self.indexes.get_index_build_progress(request, request_db(request, context))

    # --- load ----------------------------------------------------------------------------------

    @rpc(common_pb2.Status)
    async def LoadCollection(self, request: milvus_pb2.LoadCollectionRequest, context: Ctx):
        return await self.indexes.load_collection(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def ReleaseCollection(self, request: milvus_pb2.ReleaseCollectionRequest, context: Ctx):
        return await self.indexes.release_collection(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def LoadPartitions(self, request: milvus_pb2.LoadPartitionsRequest, context: Ctx):
        return await self.indexes.load_partitions(request, request_db(request, context))

    @rpc(common_pb2.Status)
    async def ReleasePartitions(self, request: milvus_pb2.ReleasePartitionsRequest, context: Ctx):
        return await self.indexes.release_partitions(request, request_db(request, context))

    @rpc(milvus_pb2.GetLoadingProgressResponse)
    async def GetLoadingProgress(self, request: milvus_pb2.GetLoadingProgressRequest, context: Ctx):
        return await self.indexes.get_loading_progress(request, request_db(request, context))

    @rpc(milvus_pb2.GetLoadStateResponse)
    async def GetLoadState(self, request: milvus_pb2.GetLoadStateRequest, context: Ctx):
        return await self.indexes.get_load_state(request, request_db(request, context))


def _unimplemented(name: str):
    async def handler(self: ProxyServicer, request: object, context: Ctx) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by Canopy")

    handler.__name__ = handler.__qualname__ = name
    return handler


# Every other RPC answers gRPC UNIMPLEMENTED (pymilvus does not retry it) from an async handler:
# the generated defaults are sync functions that raise, which grpc.aio runs in a thread and logs
# as an error with a traceback on every call.
for _method in milvus_pb2.DESCRIPTOR.services_by_name["MilvusService"].methods:
    if _method.name not in ProxyServicer.__dict__:
        setattr(ProxyServicer, _method.name, _unimplemented(_method.name))
