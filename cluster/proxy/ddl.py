"""DDL handlers of the proxy: databases, collections, partitions (Milvus semantics).

Each method takes the request message and the database it addresses (see
:func:`cluster.proxy.rpc.request_db`) and returns the reply message (or raises; the servicer's
:func:`~cluster.proxy.rpc.rpc` wrapper turns errors into statuses). Mutations go to the
:class:`~cluster.coordinator.catalog.Catalog` with a fresh TSO timestamp from the coordinator.

Milvus behaviours kept on purpose (clients and test suites rely on them):

- CreateCollection with the same name and the same parameters (schema, shards, consistency
  level, properties) as an existing collection succeeds; different parameters fail with
  "create duplicate collection with different parameters".
- DropCollection of a missing collection, DropDatabase of a missing database, DropPartition of
  a missing partition and CreatePartition of an existing one all succeed.
- A schema with a partition key gets ``num_partitions`` partitions (default 16) named
  ``_default_0..``; CreatePartition/DropPartition are refused on such a collection, and
  ``num_partitions`` without a partition key is refused.
- DescribeCollection reports field ids from 100, the consistency level as created, the
  collection's current name (also after a rename), no dynamic ``$meta`` field, and
  ``update_timestamp`` (pymilvus sends it back as ``schema_timestamp`` on writes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import (
    CollectionExists,
    CollectionNotFound,
    DatabaseNotFound,
    PartitionExists,
    PartitionNotFound,
)
from cluster.coordinator.records import DEFAULT_PARTITION, CollectionInfo
from cluster.coordinator.tso import physical_ms
from cluster.interfaces import CoordinatorService
from cluster.milvus.status import ParameterInvalid, ok_status
from cluster.milvus.status import PartitionNotFound as PartitionMissing
from cluster.milvus.validate import (
    validate_collection_name,
    validate_database_name,
    validate_partition_name,
)
from cluster.proxy.collections import Collection, Collections
from cluster.proxy.routing import StreamingRouter, group_by_service
from cluster.schema import CollectionSchema, from_proto

__all__ = ["DEFAULT_KEY_PARTITIONS", "MAX_KEY_PARTITIONS", "DdlHandlers"]

log = logging.getLogger(__name__)

DEFAULT_KEY_PARTITIONS = 16  # Milvus common.defaultPartitionsWithPartitionKey
MAX_KEY_PARTITIONS = 1024  # Milvus rootCoord.maxPartitionNum


def _props(pairs: Iterable[common_pb2.KeyValuePair]) -> dict[str, str]:
    return {kv.key: kv.value for kv in pairs}


def _kv(props: dict[str, str]) -> list[common_pb2.KeyValuePair]:
    return [common_pb2.KeyValuePair(key=k, value=v) for k, v in sorted(props.items())]


class DdlHandlers:
    """Databases, collections and partitions. Stateless apart from the schema cache."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        catalog: Catalog,
        router: StreamingRouter,
        collections: Collections,
    ) -> None:
        self.coordinator = coordinator
        self.catalog = catalog
        self.router = router
        self.collections = collections

    async def _ts(self) -> int:
        return await self.coordinator.allocate_timestamp()

    # --- databases -----------------------------------------------------------------------------

    async def create_database(self, req: milvus_pb2.CreateDatabaseRequest) -> common_pb2.Status:
        name = validate_database_name(req.db_name)
        await self.catalog.create_database(name, _props(req.properties), create_ts=await self._ts())
        return ok_status()

    async def list_databases(
        self, req: milvus_pb2.ListDatabasesRequest
    ) -> milvus_pb2.ListDatabasesResponse:
        dbs = sorted(await self.catalog.list_databases(), key=lambda d: d.db_id)
        return milvus_pb2.ListDatabasesResponse(
            status=ok_status(),
            db_names=[d.name for d in dbs],
            created_timestamp=[d.create_ts for d in dbs],
            db_ids=[d.db_id for d in dbs],
        )

    async def drop_database(self, req: milvus_pb2.DropDatabaseRequest) -> common_pb2.Status:
        name = validate_database_name(req.db_name)
        try:
            await self.catalog.drop_database(name)
        except DatabaseNotFound:
            pass  # Milvus: dropping a missing database succeeds
        return ok_status()

    async def describe_database(
        self, req: milvus_pb2.DescribeDatabaseRequest
    ) -> milvus_pb2.DescribeDatabaseResponse:
        info = await self.catalog.describe_database(req.db_name.strip() or "default")
        return milvus_pb2.DescribeDatabaseResponse(
            status=ok_status(),
            db_name=info.name,
            dbID=info.db_id,
            created_timestamp=info.create_ts,
            properties=_kv(info.properties),
        )

    async def alter_database(self, req: milvus_pb2.AlterDatabaseRequest) -> common_pb2.Status:
        await self.catalog.alter_database(
            req.db_name.strip() or "default", _props(req.properties), delete_keys=req.delete_keys
        )
        return ok_status()

    # --- collections ---------------------------------------------------------------------------

    async def create_collection(
        self, req: milvus_pb2.CreateCollectionRequest, db: str
    ) -> common_pb2.Status:
        name = validate_collection_name(req.collection_name)
        proto = schema_pb2.CollectionSchema()
        try:
            proto.ParseFromString(req.schema)
        except Exception as exc:  # protobuf's DecodeError
            raise ParameterInvalid(f"failed to unmarshal collection schema: {exc}") from exc
        schema = from_proto(proto, name)
        if not proto.name:  # store a schema that names its collection (re-parsed later)
            proto.name = name
        stored = proto.SerializeToString(deterministic=True)

        partitions: tuple[str, ...] = (DEFAULT_PARTITION,)
        if any(f.is_partition_key for f in schema.fields):
            n = req.num_partitions or DEFAULT_KEY_PARTITIONS
            if not 1 <= n <= MAX_KEY_PARTITIONS:
                raise ParameterInvalid(
                    f"partition number ({n}) exceeds max configuration ({MAX_KEY_PARTITIONS})"
                )
            partitions = tuple(f"{DEFAULT_PARTITION}_{i}" for i in range(n))
        elif req.num_partitions:
            raise ParameterInvalid(
                "num_partitions should only be specified with partition key field enabled"
            )
        props = _props(req.properties)
        shards = req.shards_num if req.shards_num > 0 else 1
        try:
            await self.catalog.create_collection(
                db,
                name,
                stored,
                create_ts=await self._ts(),
                shards_num=shards,
                consistency_level=int(req.consistency_level),
                properties=props,
                partitions=partitions,
            )
        except CollectionExists as exc:
            existing = exc.existing
            if not (
                isinstance(existing, CollectionInfo)
                and self._same(existing, schema, shards, int(req.consistency_level), props)
            ):
                raise
        return ok_status()

    def _same(
        self,
        existing: CollectionInfo,
        schema: CollectionSchema,
        shards: int,
        consistency: int,
        props: dict[str, str],
    ) -> bool:
        old = self.collections.schema_of(existing)
        return (
            old.fields == schema.fields
            and old.description == schema.description
            and old.enable_dynamic_field == schema.enable_dynamic_field
            and existing.shards_num == shards
            and existing.consistency_level == consistency
            and existing.properties == props
        )

    async def _collection(self, db: str, name: str, collection_id: int = 0) -> Collection:
        if not name and collection_id:
            return await self.collections.get(db, collection_id)
        return await self.collections.get(db, name)

    async def describe_collection(
        self, req: milvus_pb2.DescribeCollectionRequest, db: str
    ) -> milvus_pb2.DescribeCollectionResponse:
        coll = await self._collection(db, req.collection_name, req.collectionID)
        info = coll.info
        schema = coll.schema.to_proto()
        schema.name = info.name
        created_ms = physical_ms(info.create_ts)
        return milvus_pb2.DescribeCollectionResponse(
            status=ok_status(),
            schema=schema,
            collectionID=info.collection_id,
            virtual_channel_names=list(info.vchannels),
            physical_channel_names=list(info.pchannels),
            created_timestamp=info.create_ts,
            created_utc_timestamp=created_ms,
            shards_num=info.shards_num,
            aliases=[],
            consistency_level=info.consistency_level,
            collection_name=info.name,
            properties=_kv(info.properties),
            db_name=info.db,
            num_partitions=len(info.partitions),
            db_id=info.db_id,
            update_timestamp=info.update_ts,
            update_timestamp_str=str(info.update_ts),
        )

    async def has_collection(
        self, req: milvus_pb2.HasCollectionRequest, db: str
    ) -> milvus_pb2.BoolResponse:
        try:
            await self.catalog.describe_collection(db, req.collection_name)
        except CollectionNotFound:
            return milvus_pb2.BoolResponse(status=ok_status(), value=False)
        return milvus_pb2.BoolResponse(status=ok_status(), value=True)

    async def show_collections(
        self, req: milvus_pb2.ShowCollectionsRequest, db: str
    ) -> milvus_pb2.ShowCollectionsResponse:
        infos = await self.catalog.list_collections(db)
        if req.collection_names:
            by_name = {i.name: i for i in infos}
            missing = [n for n in req.collection_names if n not in by_name]
            if missing:
                raise CollectionNotFound(db, missing[0])
            infos = [by_name[n] for n in req.collection_names]
        return milvus_pb2.ShowCollectionsResponse(
            status=ok_status(),
            collection_names=[i.name for i in infos],
            collection_ids=[i.collection_id for i in infos],
            created_timestamps=[i.create_ts for i in infos],
            created_utc_timestamps=[physical_ms(i.create_ts) for i in infos],
            inMemory_percentages=[0] * len(infos),
            shards_num=[i.shards_num for i in infos],
        )

    async def drop_collection(
        self, req: milvus_pb2.DropCollectionRequest, db: str
    ) -> common_pb2.Status:
        try:
            tomb = await self.catalog.drop_collection(
                db, req.collection_name, drop_ts=await self._ts()
            )
        except CollectionNotFound:
            return ok_status()  # Milvus: dropping a missing collection succeeds
        self.collections.forget(tomb.collection_id)
        # Best effort: the catalog tombstone is the record of the drop; garbage collection
        # of dropped collections is the backstop for a streaming node that missed this call.
        try:
            for service, vchannels in await group_by_service(self.router, tomb.vchannels):
                await service.drop_collection(tomb.collection_id, vchannels)
        except Exception:
            log.warning(
                "collection %s.%s (id %d) dropped; its streaming nodes were not told",
                db,
                req.collection_name,
                tomb.collection_id,
                exc_info=True,
            )
        return ok_status()

    async def alter_collection(
        self, req: milvus_pb2.AlterCollectionRequest, db: str
    ) -> common_pb2.Status:
        coll = await self._collection(db, req.collection_name, req.collectionID)
        await self.catalog.alter_collection(
            coll.info.db, coll.info.name, _props(req.properties), delete_keys=req.delete_keys
        )
        return ok_status()

    async def rename_collection(
        self, req: milvus_pb2.RenameCollectionRequest, db: str
    ) -> common_pb2.Status:
        new = validate_collection_name(req.newName)
        new_db = req.newDBName.strip() or None
        if new_db is not None:
            validate_database_name(new_db)
        await self.catalog.rename_collection(db, req.oldName, new, new_db=new_db)
        return ok_status()

    # --- partitions ----------------------------------------------------------------------------

    async def create_partition(
        self, req: milvus_pb2.CreatePartitionRequest, db: str
    ) -> common_pb2.Status:
        name = validate_partition_name(req.partition_name)
        coll = await self.collections.get(db, req.collection_name)
        if coll.partition_key is not None:
            raise ParameterInvalid("disable create partition if partition key mode is used")
        try:
            await self.catalog.create_partition(
                db, req.collection_name, name, create_ts=await self._ts()
            )
        except PartitionExists:
            pass  # Milvus: creating an existing partition succeeds
        return ok_status()

    async def show_partitions(
        self, req: milvus_pb2.ShowPartitionsRequest, db: str
    ) -> milvus_pb2.ShowPartitionsResponse:
        coll = await self._collection(db, req.collection_name, req.collectionID)
        parts = list(coll.info.partitions)
        if req.partition_names:
            by_name = {p.name: p for p in parts}
            missing = [n for n in req.partition_names if n not in by_name]
            if missing:
                raise PartitionMissing(missing[0])
            parts = [by_name[n] for n in req.partition_names]
        return milvus_pb2.ShowPartitionsResponse(
            status=ok_status(),
            partition_names=[p.name for p in parts],
            partitionIDs=[p.partition_id for p in parts],
            created_timestamps=[p.create_ts for p in parts],
            created_utc_timestamps=[physical_ms(p.create_ts) for p in parts],
            inMemory_percentages=[0] * len(parts),
        )

    async def has_partition(
        self, req: milvus_pb2.HasPartitionRequest, db: str
    ) -> milvus_pb2.BoolResponse:
        coll = await self.collections.get(db, req.collection_name)
        found = coll.info.partition(req.partition_name) is not None
        return milvus_pb2.BoolResponse(status=ok_status(), value=found)

    async def drop_partition(
        self, req: milvus_pb2.DropPartitionRequest, db: str
    ) -> common_pb2.Status:
        name = validate_partition_name(req.partition_name)
        coll = await self.collections.get(db, req.collection_name)
        if coll.partition_key is not None:
            raise ParameterInvalid("disable drop partition if partition key mode is used")
        try:
            await self.catalog.drop_partition(
                db, req.collection_name, name, drop_ts=await self._ts()
            )
        except PartitionNotFound:
            pass  # Milvus: dropping a missing partition succeeds
        return ok_status()
