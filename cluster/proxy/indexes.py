"""Index and load handlers of the proxy: the catalog side of Milvus's read path.

Each method takes the request message and the database it addresses (see
:func:`cluster.proxy.rpc.request_db`) and returns the reply message (or raises; the servicer's
:func:`~cluster.proxy.rpc.rpc` wrapper turns errors into statuses). Everything goes through
:class:`~cluster.coordinator.catalog.Catalog` methods (which own the index definitions and load
records) with plain arguments, so the catalog can be remote.

What is true today, and answered as such:

- Index builds: the coordinator tracks them (``index_build_progress``: in process in
  ``canopy standalone``, over gRPC in a cluster) and DescribeIndex reports Milvus's numbers:
  ``total_rows`` = rows of the collection's flushed segments, ``indexed_rows`` = rows of
  segments whose build finished,
  ``pending_index_rows`` the rest, and the state as of the request's ``timestamp`` (else the
  index's create timestamp): ``Failed`` (with ``index_state_fail_reason``) if a build failed for
  good, ``InProgress`` while a segment registered by then is not built, else ``Finished``.
  pymilvus' ``create_index`` polls DescribeIndex with a timestamp taken after the CreateIndex,
  so it returns once the segments flushed before are indexed; on an empty collection at once
  (segments flushed later build in the background, ``pending_index_rows > 0`` meanwhile).
  GetIndexState and GetIndexBuildProgress use the index's create timestamp (as Milvus).
- A load is a catalog record; GetLoadState answers ``Loaded`` once it is written (reads work at
  once: the streaming nodes serve what no query node has loaded yet). GetLoadingProgress
  answers the percentage of the loaded scope's sealed segments that live query nodes have
  loaded (``load_progress``; 100 without query nodes), so pymilvus' ``load_collection``, which
  polls it, returns once the query nodes hold the data, as with Milvus.

Milvus behaviours kept on purpose (clients and test suites rely on them):

- CreateIndex with the same definition again succeeds; an empty index name is the field's
  index name, else the field name. DescribeIndex params echo the request's ``extra_params``
  (with ``index_type`` / ``metric_type`` as resolved: AUTOINDEX, COSINE by default).
- DropIndex of a missing index succeeds; of a loaded collection fails ("index cannot be
  dropped, collection is loaded, please release it first", 65535).
- Load needs an index on every vector field ("index not found[collection=c]", 700); loading
  again, and releasing what is not loaded, succeed. GetLoadingProgress of something not loaded
  answers "collection not loaded" (101) / "partition not loaded" (201).
- Partial loads (``load_fields``, ``skip_load_dynamic_field``) and resource groups are refused
  with code 3000 (not supported yet), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymilvus.grpc_gen import common_pb2, milvus_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import IndexNotFound
from cluster.coordinator.index_builds import IndexBuildProgress, ProgressState
from cluster.coordinator.records import INDEX_TYPE_KEY, METRIC_TYPE_KEY, IndexInfo, LoadState
from cluster.interfaces import CoordinatorService
from cluster.milvus.status import (
    CollectionNotLoaded,
    NotSupportedYet,
    PartitionNotLoaded,
    ok_status,
)

__all__ = ["IndexHandlers"]

LOADED = common_pb2.LoadState.LoadStateLoaded
NOT_LOAD = common_pb2.LoadState.LoadStateNotLoad
FINISHED = common_pb2.IndexState.Finished
INDEX_STATES = {
    ProgressState.FINISHED: FINISHED,
    ProgressState.IN_PROGRESS: common_pb2.IndexState.InProgress,
    ProgressState.FAILED: common_pb2.IndexState.Failed,
}


def _pairs(info: IndexInfo) -> list[common_pb2.KeyValuePair]:
    """DescribeIndex's ``params``: index_type, metric_type, then the request's other params."""
    head = [(INDEX_TYPE_KEY, info.index_type), (METRIC_TYPE_KEY, info.metric_type)]
    rest = [
        (k, v) for k, v in info.user_params.items() if k not in (INDEX_TYPE_KEY, METRIC_TYPE_KEY)
    ]
    return [common_pb2.KeyValuePair(key=k, value=v) for k, v in (*head, *rest)]


def _names(values: Iterable[str]) -> list[str] | None:
    names = list(values)
    return names or None


class IndexHandlers:
    """CreateIndex ... GetLoadState over the catalog. Stateless."""

    def __init__(self, coordinator: CoordinatorService, catalog: Catalog) -> None:
        self.coordinator = coordinator
        self.catalog = catalog

    async def _progress(self, info: IndexInfo, as_of_ts: int = 0) -> IndexBuildProgress:
        """The index's build progress as of ``as_of_ts`` (default: its create timestamp)."""
        return await self.coordinator.index_build_progress(
            info.collection_id, info.index_id, as_of_ts or info.create_ts
        )

    async def _index(self, db: str, collection: str, index_name: str, field_name: str) -> IndexInfo:
        """The index a request names: by name, else by field, else the only one."""
        if not index_name and field_name:
            for info in await self.catalog.list_indexes(db, collection):
                if info.field_name == field_name:
                    return info
            raise IndexNotFound(index_name=field_name)
        return await self.catalog.describe_index(db, collection, index_name)

    # --- indexes -------------------------------------------------------------------------------

    async def create_index(self, req: milvus_pb2.CreateIndexRequest, db: str) -> common_pb2.Status:
        params = {kv.key: kv.value for kv in req.extra_params}
        await self.catalog.create_index(
            db,
            req.collection_name,
            req.field_name,
            req.index_name,
            params,
            create_ts=await self.coordinator.allocate_timestamp(),
        )
        return ok_status()

    async def describe_index(
        self, req: milvus_pb2.DescribeIndexRequest, db: str
    ) -> milvus_pb2.DescribeIndexResponse:
        if req.index_name:
            infos = [await self.catalog.describe_index(db, req.collection_name, req.index_name)]
        else:
            infos = await self.catalog.list_indexes(db, req.collection_name)
            if req.field_name:
                infos = [i for i in infos if i.field_name == req.field_name]
            if not infos:
                raise IndexNotFound(collection=req.collection_name)
        descriptions = []
        for i in infos:
            p = await self._progress(i, req.timestamp)
            descriptions.append(
                milvus_pb2.IndexDescription(
                    index_name=i.index_name,
                    indexID=i.index_id,
                    params=_pairs(i),
                    field_name=i.field_name,
                    indexed_rows=p.indexed_rows,
                    total_rows=p.total_rows,
                    pending_index_rows=p.pending_rows,
                    state=INDEX_STATES[p.state],
                    index_state_fail_reason=p.fail_reason,
                )
            )
        return milvus_pb2.DescribeIndexResponse(status=ok_status(), index_descriptions=descriptions)

    async def drop_index(self, req: milvus_pb2.DropIndexRequest, db: str) -> common_pb2.Status:
        try:
            info = await self._index(db, req.collection_name, req.index_name, req.field_name)
            await self.catalog.drop_index(db, req.collection_name, info.index_name)
        except IndexNotFound:
            pass  # Milvus: dropping a missing index succeeds
        return ok_status()

    async def get_index_state(
        self, req: milvus_pb2.GetIndexStateRequest, db: str
    ) -> milvus_pb2.GetIndexStateResponse:
        info = await self._index(db, req.collection_name, req.index_name, req.field_name)
        p = await self._progress(info)
        return milvus_pb2.GetIndexStateResponse(
            status=ok_status(), state=INDEX_STATES[p.state], fail_reason=p.fail_reason
        )

    async def get_index_build_progress(
        self, req: milvus_pb2.GetIndexBuildProgressRequest, db: str
    ) -> milvus_pb2.GetIndexBuildProgressResponse:
        info = await self._index(db, req.collection_name, req.index_name, req.field_name)
        p = await self._progress(info)
        return milvus_pb2.GetIndexBuildProgressResponse(
            status=ok_status(), indexed_rows=p.indexed_rows, total_rows=p.total_rows
        )

    # --- load ----------------------------------------------------------------------------------

    @staticmethod
    def _check_load_options(
        req: milvus_pb2.LoadCollectionRequest | milvus_pb2.LoadPartitionsRequest,
    ) -> None:
        if req.load_fields or req.skip_load_dynamic_field:
            raise NotSupportedYet("partial load (load_fields, skip_load_dynamic_field)")
        if req.resource_groups:
            raise NotSupportedYet("loading into resource groups")

    async def load_collection(
        self, req: milvus_pb2.LoadCollectionRequest, db: str
    ) -> common_pb2.Status:
        self._check_load_options(req)
        await self.catalog.set_load_state(
            db, req.collection_name, True, replicas=req.replica_number
        )
        return ok_status()

    async def release_collection(
        self, req: milvus_pb2.ReleaseCollectionRequest, db: str
    ) -> common_pb2.Status:
        await self.catalog.set_load_state(db, req.collection_name, False)
        return ok_status()

    async def load_partitions(
        self, req: milvus_pb2.LoadPartitionsRequest, db: str
    ) -> common_pb2.Status:
        self._check_load_options(req)
        await self.catalog.set_load_state(
            db,
            req.collection_name,
            True,
            list(req.partition_names),
            replicas=req.replica_number,
        )
        return ok_status()

    async def release_partitions(
        self, req: milvus_pb2.ReleasePartitionsRequest, db: str
    ) -> common_pb2.Status:
        await self.catalog.set_load_state(db, req.collection_name, False, list(req.partition_names))
        return ok_status()

    async def get_loading_progress(
        self, req: milvus_pb2.GetLoadingProgressRequest, db: str
    ) -> milvus_pb2.GetLoadingProgressResponse:
        partitions = _names(req.partition_names)
        state = await self.catalog.load_state(db, req.collection_name, partitions)
        if state.state is not LoadState.LOADED:
            for name in partitions or ():
                one = await self.catalog.load_state(db, req.collection_name, [name])
                if one.state is not LoadState.LOADED:
                    raise PartitionNotLoaded(name)
            raise CollectionNotLoaded(req.collection_name)
        pids: list[int] | None = None  # the scope asked about: named, else what is loaded
        if partitions:
            coll = await self.catalog.describe_collection(db, req.collection_name)
            by_name = {p.name: p.partition_id for p in coll.partitions}
            pids = [by_name[n] for n in partitions if n in by_name]
        elif not state.load_all:
            pids = list(state.partition_ids)
        percent = await self.coordinator.load_progress(state.collection_id, pids)
        return milvus_pb2.GetLoadingProgressResponse(
            status=ok_status(), progress=percent, refresh_progress=percent
        )

    async def get_load_state(
        self, req: milvus_pb2.GetLoadStateRequest, db: str
    ) -> milvus_pb2.GetLoadStateResponse:
        state = await self.catalog.load_state(db, req.collection_name, _names(req.partition_names))
        return milvus_pb2.GetLoadStateResponse(
            status=ok_status(), state=LOADED if state.state is LoadState.LOADED else NOT_LOAD
        )
