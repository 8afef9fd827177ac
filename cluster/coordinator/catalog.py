"""The DDL catalog: databases, collections and partitions in the MetaStore, with Milvus semantics.

Contract (checked by ``tests/contract/test_coordinator_catalog.py`` on every MetaStore backend):

- Every mutation is one MetaStore transaction whose compares pin what it read (the database
  record's version, the collection record's version, absent target keys), so concurrent
  coordinators, and retries, never corrupt the catalog: of two creates of one name exactly one
  wins and the other raises ``CollectionExists``. A lost race is retried from a fresh read
  (``CatalogConflict`` after ``max_attempts``).
- Names are unique per database across collections; ids (databases, collections, partitions)
  come from one counter key, reserved by CAS in blocks, so they are unique across coordinators
  and restarts and never reused.
- ``default`` always exists and cannot be dropped; a database can only be dropped when empty.
- A dropped collection leaves the catalog's name index at once (the name is free, a re-create
  gets a new id) and its record moves to a tombstone key, found by ``list_dropped_collections``
  until garbage collection purges it; dropped partitions likewise.
- Vchannel ``i`` of collection ``c`` is ``{prefix}-dml_{p}_{c}v{i}`` on physical channel
  ``p = (c + i) % num_physical_channels``; that number and the prefix are persisted on first start.
- Indexes and load state (what Milvus's datacoord and querycoord keep) are records keyed by
  collection id: one record holds every index of a collection, so "one index per field" and
  unique names hold under CAS; load requires an index on every vector field and an index of a
  loaded collection cannot be dropped, both enforced in one transaction (each side compares
  the other's key). Dropping a collection deletes its load record; its index record stays
  with the tombstone (unreachable: ids are never reused) until ``purge_dropped_collection``.

Keys: ``cluster/coordinator/META.md``. Errors: ``cluster/coordinator/errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from cluster.coordinator.catalog_indexes import IndexesAndLoads, pin
from cluster.coordinator.errors import (
    CatalogConflict,
    CollectionExists,
    CollectionNotFound,
    DatabaseExists,
    DatabaseNotEmpty,
    DatabaseNotFound,
    InvalidParameter,
    LimitExceeded,
    NotAllowed,
    PartitionExists,
    PartitionNotFound,
)
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.records import (
    DEFAULT_DB,
    DEFAULT_PARTITION,
    DROPPED_COLLECTIONS_PREFIX,
    DROPPED_PARTITIONS_PREFIX,
    IDS_KEY,
    SETTINGS_KEY,
    CatalogSettings,
    CollectionInfo,
    CollectionState,
    DatabaseInfo,
    DatabaseState,
    DroppedPartition,
    LoadInfo,
    PartitionInfo,
    check_name,
    collection_id_key,
    collection_key,
    collections_prefix,
    database_key,
    decode_id_index,
    dropped_collection_key,
    dropped_partition_key,
    encode_id_index,
    indexes_key,
    load_key,
    merge_properties,
)
from woodpecker.meta.base import Compare, Delete, MetaStore, Put

log = logging.getLogger(__name__)

BOUNDED = 2  # common_pb2.ConsistencyLevel.Bounded, Milvus's default


class Catalog(IndexesAndLoads):
    """Typed, CAS-safe access to the catalog keys. Call ``await start()`` first (every method
    does it lazily too). Many ``Catalog`` objects may share one MetaStore."""

    def __init__(
        self,
        meta: MetaStore,
        *,
        num_physical_channels: int = 16,
        cluster_prefix: str = "canopy",
        max_partitions: int = 1024,
        max_shards: int = 16,
        id_batch: int = 64,
        max_attempts: int = 200,
    ) -> None:
        if num_physical_channels < 1 or max_partitions < 1 or max_shards < 1 or id_batch < 1:
            raise ValueError("catalog limits must be positive")
        self.meta = meta
        self.max_partitions = max_partitions
        self.max_shards = max_shards
        self.max_attempts = max_attempts
        self._wanted = CatalogSettings(num_physical_channels, cluster_prefix)
        self._settings: CatalogSettings | None = None
        self._ids = IdAllocator(meta, IDS_KEY, batch=id_batch, max_attempts=max_attempts)
        self._start_lock = asyncio.Lock()

    # --- start, settings, ids ----------------------------------------------------------------

    async def start(self) -> CatalogSettings:
        """Persist the settings on first start (later starts keep the persisted ones), make sure
        ``default`` exists, and finish or undo drops of databases interrupted by a crash."""
        async with self._start_lock:
            if self._settings is not None:
                return self._settings
            while (kv := await self.meta.get(SETTINGS_KEY)) is None:
                await self.meta.cas(SETTINGS_KEY, self._wanted.encode(), expected_version=0)
            self._settings = CatalogSettings.decode(kv.value)
            if self._settings != self._wanted:
                log.warning("persisted settings %s win over %s", self._settings, self._wanted)
            if await self.meta.get(database_key(DEFAULT_DB)) is None:
                try:
                    await self._create_database(DEFAULT_DB, {}, 0)
                except DatabaseExists:
                    pass
            for kv in await self.meta.range(database_key("")):
                info = DatabaseInfo.decode(kv.value)
                if info.state is DatabaseState.DROPPING:  # a drop interrupted by a crash
                    with contextlib.suppress(DatabaseNotEmpty, CatalogConflict):
                        await self._finish_drop(info, kv.version)
            return self._settings

    @property
    def settings(self) -> CatalogSettings:
        if self._settings is None:
            raise RuntimeError("Catalog.start() has not run")
        return self._settings

    async def _ready(self) -> CatalogSettings:
        return self._settings or await self.start()

    async def allocate_ids(self, count: int = 1, *, from_end: bool = False) -> int:
        """Unique ids from the catalog's counter (see ``IdAllocator``): collections and
        databases from the front of a reserved block, partitions from its back, so consecutive
        collections get consecutive ids and spread evenly over the physical channels."""
        return await self._ids.allocate(count, from_end=from_end)

    # --- databases ---------------------------------------------------------------------------

    async def create_database(
        self, name: str, properties: Mapping[str, str] | None = None, *, create_ts: int = 0
    ) -> DatabaseInfo:
        """Raises ``DatabaseExists`` (also while a drop of that name is in progress)."""
        await self._ready()
        check_name("database", name)
        return await self._create_database(
            name, merge_properties({}, properties or {}, ()), create_ts
        )

    async def _create_database(
        self, name: str, properties: dict[str, str], create_ts: int
    ) -> DatabaseInfo:
        info = DatabaseInfo(await self.allocate_ids(), name, properties, create_ts)
        key = database_key(name)
        if not (await self.meta.txn([Compare.absent(key)], [Put(key, info.encode())])).succeeded:
            raise DatabaseExists(name)
        return info

    async def list_databases(self) -> list[DatabaseInfo]:
        await self._ready()
        infos = [DatabaseInfo.decode(kv.value) for kv in await self.meta.range(database_key(""))]
        return [i for i in infos if i.state is DatabaseState.CREATED]

    async def describe_database(self, name: str) -> DatabaseInfo:
        await self._ready()
        return (await self._database(name))[0]

    async def alter_database(
        self, name: str, properties: Mapping[str, str], *, delete_keys: Sequence[str] = ()
    ) -> DatabaseInfo:
        """Set ``properties`` and remove ``delete_keys``; returns the new record."""
        await self._ready()
        for _ in range(self.max_attempts):
            info, version = await self._database(name)
            updated = replace(
                info, properties=merge_properties(info.properties, properties, list(delete_keys))
            )
            if await self.meta.cas(database_key(name), updated.encode(), expected_version=version):
                return updated
        raise CatalogConflict(f"alter database {name}: too much contention")

    async def drop_database(self, name: str) -> None:
        """Refuses ``default`` (``NotAllowed``) and a database holding collections
        (``DatabaseNotEmpty``). The database is first marked dropping, so no collection can
        enter it, then removed if it is empty, else the mark is undone."""
        await self._ready()
        if name == DEFAULT_DB:
            raise NotAllowed("can not drop default database")
        for _ in range(self.max_attempts):
            info, version = await self._database(name)
            dropping = replace(info, state=DatabaseState.DROPPING)
            if await self.meta.cas(database_key(name), dropping.encode(), expected_version=version):
                await self._finish_drop(dropping, version + 1)
                return
        raise CatalogConflict(f"drop database {name}: too much contention")

    async def _finish_drop(self, marked: DatabaseInfo, version: int) -> None:
        """Delete the database ``marked`` dropping (at ``version``) if it is empty; else undo
        the mark and raise ``DatabaseNotEmpty``."""
        key = database_key(marked.name)
        # Creates and renames into a database compare its record's version, which the mark
        # changed: once marked, nothing can enter, so an empty range stays empty.
        if not await self.meta.range(collections_prefix(marked.name), limit=1):
            if (await self.meta.txn([Compare.version(key, version)], [Delete(key)])).succeeded:
                return
            kv = await self.meta.get(key)  # someone else finished or undid this drop
            if kv is None:
                return
            if DatabaseInfo.decode(kv.value).state is DatabaseState.CREATED:
                raise DatabaseNotEmpty(marked.name)
            raise CatalogConflict(f"drop database {marked.name}: raced with another drop")
        restored = replace(marked, state=DatabaseState.CREATED)
        await self.meta.cas(key, restored.encode(), expected_version=version)
        raise DatabaseNotEmpty(marked.name)

    async def _database(self, name: str) -> tuple[DatabaseInfo, int]:
        """The database record and its version; ``DatabaseNotFound`` if absent or dropping."""
        kv = await self.meta.get(database_key(name))
        if kv is None and name == DEFAULT_DB:  # removed behind our back: recreate lazily
            try:
                await self._create_database(DEFAULT_DB, {}, 0)
            except DatabaseExists:
                pass
            kv = await self.meta.get(database_key(name))
        if kv is None:
            raise DatabaseNotFound(name)
        info = DatabaseInfo.decode(kv.value)
        if info.state is not DatabaseState.CREATED:
            raise DatabaseNotFound(name)
        return info, kv.version

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
        """Create a collection with ``partitions`` (``_default``; a partition-key collection
        passes its own list). ``shards_num`` 0 means 1. ``create_ts`` (a TSO timestamp) is also
        the first ``update_ts``. Raises ``CollectionExists`` (with ``existing``),
        ``DatabaseNotFound``, ``InvalidParameter``."""
        settings = await self._ready()
        db = db or DEFAULT_DB
        check_name("collection", name)
        shards_num = shards_num or 1
        limit = min(self.max_shards, settings.num_physical_channels)
        if not 1 <= shards_num <= limit:
            raise InvalidParameter(f"shards number {shards_num} must be in [1, {limit}]")
        for partition in partitions:
            check_name("partition", partition)
        if not partitions or len(set(partitions)) != len(partitions):
            raise InvalidParameter(f"partition names {list(partitions)} must be unique, not empty")
        if len(partitions) > self.max_partitions:
            raise InvalidParameter(
                f"partition number ({len(partitions)}) exceeds max configuration "
                f"({self.max_partitions})"
            )
        key = collection_key(db, name)
        cid = first_pid = 0
        for _ in range(self.max_attempts):
            db_info, db_version = await self._database(db)
            if (kv := await self.meta.get(key)) is not None:
                raise CollectionExists(db, name, existing=CollectionInfo.decode(kv.value))
            cid = cid or await self.allocate_ids()
            first_pid = first_pid or await self.allocate_ids(len(partitions), from_end=True)
            vchannels, pchannels = settings.channels(cid, shards_num)
            info = CollectionInfo(
                collection_id=cid,
                db=db,
                db_id=db_info.db_id,
                name=name,
                schema=bytes(schema),
                shards_num=shards_num,
                consistency_level=int(consistency_level),
                properties=merge_properties({}, properties or {}, ()),
                create_ts=create_ts,
                update_ts=create_ts,
                state=CollectionState.CREATED,
                vchannels=vchannels,
                pchannels=pchannels,
                partitions=tuple(
                    PartitionInfo(first_pid + i, p, create_ts) for i, p in enumerate(partitions)
                ),
            )
            result = await self.meta.txn(
                [
                    Compare.version(database_key(db), db_version),
                    Compare.absent(key),
                    Compare.absent(collection_id_key(cid)),
                ],
                [Put(key, info.encode()), Put(collection_id_key(cid), encode_id_index(db, name))],
            )
            if result.succeeded:
                return info
        raise CatalogConflict(f"create collection {db}.{name}: too much contention")

    async def describe_collection(self, db: str | None, name_or_id: str | int) -> CollectionInfo:
        """By name in ``db``, or by id (``db`` is then ignored). Raises ``CollectionNotFound``
        (``DatabaseNotFound`` when ``db`` itself does not exist)."""
        await self._ready()
        return (await self._collection(db, name_or_id))[0]

    async def has_collection(self, db: str, name: str) -> bool:
        await self._ready()
        return await self.meta.get(collection_key(db or DEFAULT_DB, name)) is not None

    async def list_collections(self, db: str) -> list[CollectionInfo]:
        """The live collections of ``db`` in name order (``DatabaseNotFound`` if ``db`` does
        not exist)."""
        await self._ready()
        db = db or DEFAULT_DB
        infos = [
            CollectionInfo.decode(kv.value) for kv in await self.meta.range(collections_prefix(db))
        ]
        if not infos:
            await self._database(db)
        return infos

    async def drop_collection(self, db: str, name: str, *, drop_ts: int) -> CollectionInfo:
        """Free the name and move the record, state dropping with ``drop_ts``, to its tombstone
        key, releasing it (the load record goes; index records stay until the purge). Returns
        the tombstone. Raises ``CollectionNotFound`` (Milvus's DropCollection turns
        that into success: the proxy decides)."""
        await self._ready()
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, name)
            tomb = replace(info, state=CollectionState.DROPPING, drop_ts=drop_ts)
            key = collection_key(info.db, info.name)
            result = await self.meta.txn(
                [Compare.version(key, version)],
                [
                    Delete(key),
                    Delete(collection_id_key(info.collection_id)),
                    Delete(load_key(info.collection_id)),  # a dropped collection is released
                    Put(dropped_collection_key(info.collection_id), tomb.encode()),
                ],
            )
            if result.succeeded:
                return tomb
        raise CatalogConflict(f"drop collection {db}.{name}: too much contention")

    async def rename_collection(
        self, db: str, old: str, new: str, *, new_db: str | None = None
    ) -> CollectionInfo:
        """Rename ``db.old`` to ``new_db.new`` (same id, partitions and channels)."""
        await self._ready()
        check_name("collection", new)
        db = db or DEFAULT_DB
        target_db = new_db or db
        if (target_db, new) == (db, old):
            raise CollectionExists(db, new, message=_duplicate_rename(target_db, new))
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, old)
            compares = [Compare.version(collection_key(db, old), version)]
            db_id = info.db_id
            if target_db != db:
                target, target_version = await self._database(target_db)
                compares.append(Compare.version(database_key(target_db), target_version))
                db_id = target.db_id
            new_key = collection_key(target_db, new)
            if await self.meta.get(new_key) is not None:
                raise CollectionExists(target_db, new, message=_duplicate_rename(target_db, new))
            renamed = replace(info, db=target_db, db_id=db_id, name=new)
            result = await self.meta.txn(
                [*compares, Compare.absent(new_key)],
                [
                    Delete(collection_key(db, old)),
                    Put(new_key, renamed.encode()),
                    Put(collection_id_key(info.collection_id), encode_id_index(target_db, new)),
                ],
            )
            if result.succeeded:
                return renamed
        raise CatalogConflict(f"rename collection {db}.{old}: too much contention")

    async def alter_collection(
        self,
        db: str,
        name: str,
        properties: Mapping[str, str],
        *,
        delete_keys: Sequence[str] = (),
        update_ts: int | None = None,
    ) -> CollectionInfo:
        """Set ``properties`` and remove ``delete_keys``; ``update_ts``, when given, becomes the
        collection's ``update_ts`` (pass it when the change invalidates cached schemas)."""
        return await self._update(
            db,
            name,
            lambda info: replace(
                info,
                properties=merge_properties(info.properties, properties, list(delete_keys)),
                update_ts=info.update_ts if update_ts is None else update_ts,
            ),
        )

    async def list_dropped_collections(self) -> list[CollectionInfo]:
        """Tombstones of dropped collections whose data garbage collection has not purged."""
        return [
            CollectionInfo.decode(kv.value)
            for kv in await self.meta.range(DROPPED_COLLECTIONS_PREFIX)
        ]

    async def purge_dropped_collection(self, collection_id: int) -> bool:
        """Forget a dropped collection (after its data is gone), with its dropped partitions
        and its index record. False if there was no such tombstone."""
        for part in await self.list_dropped_partitions():
            if part.collection_id == collection_id:
                await self.meta.delete(dropped_partition_key(part.partition_id))
        if await self.meta.get(dropped_collection_key(collection_id)) is not None:
            await self.meta.delete(indexes_key(collection_id))
        return await self.meta.delete(dropped_collection_key(collection_id))

    async def _collection(
        self, db: str | None, name_or_id: str | int
    ) -> tuple[CollectionInfo, int]:
        if isinstance(name_or_id, int):
            index = await self.meta.get(collection_id_key(name_or_id))
            if index is None:
                raise CollectionNotFound(None, name_or_id)
            db, name = decode_id_index(index.value)
        else:
            name = name_or_id
        db = db or DEFAULT_DB
        kv = await self.meta.get(collection_key(db, name))
        if kv is None:
            await self._database(db)  # DatabaseNotFound takes precedence, as in Milvus
            raise CollectionNotFound(db, name_or_id)
        return CollectionInfo.decode(kv.value), kv.version

    async def _update(
        self, db: str, name: str, change: Callable[[CollectionInfo], CollectionInfo]
    ) -> CollectionInfo:
        """CAS loop: apply ``change(info) -> CollectionInfo`` to the collection record."""
        await self._ready()
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, name)
            updated = change(info)
            key = collection_key(info.db, info.name)
            if await self.meta.cas(key, updated.encode(), expected_version=version):
                return updated
        raise CatalogConflict(f"update collection {db}.{name}: too much contention")

    # --- partitions --------------------------------------------------------------------------

    async def create_partition(
        self, db: str, collection: str, partition: str, *, create_ts: int
    ) -> PartitionInfo:
        """Raises ``PartitionExists``, ``LimitExceeded`` (``max_partitions``),
        ``CollectionNotFound``."""
        await self._ready()
        check_name("partition", partition)
        partition_id = 0
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, collection)
            if info.partition(partition) is not None:
                raise PartitionExists(collection, partition)
            if len(info.partitions) >= self.max_partitions:
                raise LimitExceeded(
                    f"partition number ({len(info.partitions)}) exceeds max configuration "
                    f"({self.max_partitions}), collection: {collection}"
                )
            partition_id = partition_id or await self.allocate_ids(from_end=True)
            created = PartitionInfo(partition_id, partition, create_ts)
            updated = replace(info, partitions=(*info.partitions, created))
            key = collection_key(info.db, info.name)
            if await self.meta.cas(key, updated.encode(), expected_version=version):
                return created
        raise CatalogConflict(f"create partition {collection}.{partition}: too much contention")

    async def list_partitions(self, db: str, collection: str) -> list[PartitionInfo]:
        """In creation order."""
        return list((await self.describe_collection(db, collection)).partitions)

    async def has_partition(self, db: str, collection: str, partition: str) -> bool:
        info = await self.describe_collection(db, collection)
        return info.partition(partition) is not None

    async def describe_partition(self, db: str, collection: str, partition: str) -> PartitionInfo:
        info = await self.describe_collection(db, collection)
        if (found := info.partition(partition)) is None:
            raise PartitionNotFound(partition, collection)
        return found

    async def drop_partition(
        self, db: str, collection: str, partition: str, *, drop_ts: int
    ) -> DroppedPartition:
        """Remove the partition and leave a tombstone for garbage collection. ``_default`` and
        loaded partitions are refused (``NotAllowed``, Milvus's wording); a missing one raises
        ``PartitionNotFound``."""
        await self._ready()
        if partition == DEFAULT_PARTITION:
            raise NotAllowed("default partition cannot be deleted")
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, collection)
            found = info.partition(partition)
            if found is None:
                raise PartitionNotFound(partition, collection)
            load_kv = await self.meta.get(load_key(info.collection_id))
            if load_kv is not None and LoadInfo.decode(load_kv.value).loads(found.partition_id):
                raise NotAllowed(
                    "partition cannot be dropped, partition is loaded, please release it first"
                )
            tomb = DroppedPartition(
                found.partition_id,
                partition,
                info.collection_id,
                info.db,
                info.name,
                found.create_ts,
                drop_ts,
            )
            updated = replace(
                info, partitions=tuple(p for p in info.partitions if p.name != partition)
            )
            key = collection_key(info.db, info.name)
            result = await self.meta.txn(
                [Compare.version(key, version), pin(load_key(info.collection_id), load_kv)],
                [
                    Put(key, updated.encode()),
                    Put(dropped_partition_key(found.partition_id), tomb.encode()),
                ],
            )
            if result.succeeded:
                return tomb
        raise CatalogConflict(f"drop partition {collection}.{partition}: too much contention")

    async def list_dropped_partitions(self) -> list[DroppedPartition]:
        return [
            DroppedPartition.decode(kv.value)
            for kv in await self.meta.range(DROPPED_PARTITIONS_PREFIX)
        ]

    async def purge_dropped_partition(self, partition_id: int) -> bool:
        return await self.meta.delete(dropped_partition_key(partition_id))


def _duplicate_rename(db: str, name: str) -> str:
    return (
        f"duplicated new collection name {name} in database {db} with other collection name "
        "or alias"
    )
