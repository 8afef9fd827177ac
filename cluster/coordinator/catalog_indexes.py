"""Index definitions and load state in the catalog (what Milvus's datacoord and querycoord
keep): one record per collection holding every index of it, and one load record per collection.

:class:`IndexesAndLoads` is a mixin of :class:`~cluster.coordinator.catalog.Catalog` (it uses the
catalog's ``meta``, ``_ready``, ``_collection``, ``allocate_ids`` and ``max_attempts``); the
contract is in ``catalog.py``'s module docstring and the keys in ``META.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from cluster.coordinator.errors import (
    CatalogConflict,
    FieldNotFound,
    IndexDuplicate,
    IndexExists,
    IndexNotFound,
    IndexNotSupported,
    InvalidParameter,
    NotAllowed,
    PartitionNotFound,
)
from cluster.coordinator.records import (
    AUTOINDEX,
    INDEX_TYPE_KEY,
    METRIC_TYPE_KEY,
    MILVUS_SCALAR_INDEX_TYPES,
    MILVUS_VECTOR_INDEX_TYPES,
    CatalogSettings,
    CollectionIndexes,
    CollectionInfo,
    IndexInfo,
    IndexState,
    LoadInfo,
    LoadState,
    check_name,
    collection_key,
    indexes_key,
    load_key,
    parse_index_params,
)
from cluster.schema import CollectionSchema, from_request_bytes
from woodpecker.meta.base import Compare, Delete, KeyValue, MetaStore, Put

log = logging.getLogger(__name__)


class IndexesAndLoads:
    """Index and load-state methods of the Catalog (see the module docstring)."""

    meta: MetaStore
    max_attempts: int

    # provided by Catalog
    async def _ready(self) -> CatalogSettings:
        raise NotImplementedError

    async def _collection(
        self, db: str | None, name_or_id: str | int
    ) -> tuple[CollectionInfo, int]:
        raise NotImplementedError

    async def allocate_ids(self, count: int = 1, *, from_end: bool = False) -> int:
        raise NotImplementedError

    # --- indexes -----------------------------------------------------------------------------

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
        """Define an index on a float-vector field from CreateIndex's flat ``extra_params``
        (see ``records.parse_index_params``: FLAT, HNSW, AUTOINDEX; L2, IP, COSINE). An empty
        ``index_name`` means the name of the field's existing index, else the field name (as
        Milvus). The same definition again returns the existing record (idempotent).

        Raises ``IndexExists`` (the name is taken by another definition, or the field already
        has an index under another name), ``IndexNotSupported`` (other index types, indexes on
        scalar fields), ``InvalidParameter`` (metric, HNSW params, index name, a vector index
        type on a scalar field), ``FieldNotFound``, ``CollectionNotFound``."""
        await self._ready()
        if index_name:
            check_name("index", index_name)
        index_id = 0
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, collection)
            field = next((f for f in _schema(info).fields if f.name == field_name), None)
            if field is None:
                raise FieldNotFound(field_name)
            if not field.is_vector:
                _refuse_scalar_index(field.name, field.dtype.milvus_name, params)
            index_type, metric, build = parse_index_params(params)
            kv = await self.meta.get(indexes_key(info.collection_id))
            current = _decode_indexes(info.collection_id, kv)
            on_field = current.by_field(field.field_id)
            name = index_name or (on_field.index_name if on_field is not None else field.name)
            index_id = index_id or await self.allocate_ids()
            user = {str(k): str(v) for k, v in params.items()}
            user.update({INDEX_TYPE_KEY: index_type, METRIC_TYPE_KEY: metric})
            wanted = IndexInfo(
                index_id=index_id,
                collection_id=info.collection_id,
                index_name=name,
                field_id=field.field_id,
                field_name=field.name,
                index_type=index_type,
                metric_type=metric,
                params=build,
                user_params=user,
                create_ts=create_ts,
                state=IndexState.FINISHED,
            )
            if (same_name := current.by_name(name)) is not None:
                if same_name.same_definition(wanted):
                    return same_name
                raise IndexExists(
                    "at most one distinct index is allowed per field", existing=same_name
                )
            if on_field is not None:
                raise IndexExists(
                    "creating multiple indexes on same field is not supported", existing=on_field
                )
            updated = replace(current, indexes=(*current.indexes, wanted))
            result = await self.meta.txn(
                [
                    Compare.version(collection_key(info.db, info.name), version),
                    pin(indexes_key(info.collection_id), kv),
                ],
                [Put(indexes_key(info.collection_id), updated.encode())],
            )
            if result.succeeded:
                return wanted
        raise CatalogConflict(f"create index on {collection}.{field_name}: too much contention")

    async def list_indexes(self, db: str, collection: str | int) -> list[IndexInfo]:
        """Every index of the collection (by name or id) in creation order; empty if none."""
        await self._ready()
        info, _ = await self._collection(db, collection)
        kv = await self.meta.get(indexes_key(info.collection_id))
        return list(_decode_indexes(info.collection_id, kv).indexes)

    async def describe_index(self, db: str, collection: str, index_name: str = "") -> IndexInfo:
        """The index named ``index_name``; an empty name means the collection's only index.
        Raises ``IndexNotFound`` (``[indexName=x]``, or ``[collection=c]`` when the collection
        has no index), ``IndexDuplicate`` (empty name, several indexes), ``CollectionNotFound``.
        For all indexes use ``list_indexes``."""
        await self._ready()
        info, _ = await self._collection(db, collection)
        kv = await self.meta.get(indexes_key(info.collection_id))
        return _pick_index(info, _decode_indexes(info.collection_id, kv), index_name)

    async def drop_index(self, db: str, collection: str, index_name: str = "") -> IndexInfo:
        """Remove an index definition (``index_name`` resolved as in ``describe_index``);
        returns it. Refused while any part of the collection is loaded (``NotAllowed``, Milvus's
        wording); ``IndexNotFound`` when there is no such index (Milvus's DropIndex treats that
        as success: the proxy decides)."""
        await self._ready()
        for _ in range(self.max_attempts):
            info, _version = await self._collection(db, collection)
            key = indexes_key(info.collection_id)
            kv = await self.meta.get(key)
            current = _decode_indexes(info.collection_id, kv)
            target = _pick_index(info, current, index_name)
            if await self.meta.get(load_key(info.collection_id)) is not None:
                raise NotAllowed(
                    "index cannot be dropped, collection is loaded, please release it first"
                )
            remaining = tuple(i for i in current.indexes if i.index_id != target.index_id)
            op = Put(key, replace(current, indexes=remaining).encode()) if remaining else None
            result = await self.meta.txn(
                [pin(key, kv), Compare.absent(load_key(info.collection_id))],
                [op or Delete(key)],
            )
            if result.succeeded:
                return target
        raise CatalogConflict(f"drop index {collection}.{index_name}: too much contention")

    # --- load state --------------------------------------------------------------------------

    async def set_load_state(
        self,
        db: str,
        collection: str,
        loaded: bool,
        partitions: Sequence[str] | None = None,
        replicas: int = 1,
    ) -> LoadInfo:
        """Record a load (``loaded``) or release of the whole collection (``partitions`` None)
        or of the named partitions; returns the new record (state ``not_load`` once nothing is
        loaded, when the record is deleted). A collection load covers partitions created later;
        releasing partitions of a collection-loaded collection keeps the others loaded;
        releasing the last loaded partition releases the collection. Loading again is a no-op;
        releasing what is not loaded too.

        Loading requires an index on every vector field (``IndexNotFound``
        ``[collection=c]``, as Milvus) and the same ``replicas`` as a current load
        (``InvalidParameter``); ``replicas`` 0 means 1. Unknown partitions raise
        ``PartitionNotFound``, an empty list ``InvalidParameter``."""
        await self._ready()
        replicas = replicas or 1
        if replicas < 1:
            raise InvalidParameter(f"replica number {replicas} must be positive")
        if partitions is not None and not partitions:
            raise InvalidParameter("partition names should not be empty")
        for _ in range(self.max_attempts):
            info, version = await self._collection(db, collection)
            cid = info.collection_id
            part_ids = None if partitions is None else _partition_ids(info, partitions)
            load_kv = await self.meta.get(load_key(cid))
            current = LoadInfo.decode(load_kv.value) if load_kv is not None else None
            compares = [
                Compare.version(collection_key(info.db, info.name), version),
                pin(load_key(cid), load_kv),
            ]
            new: LoadInfo | None
            if loaded:
                index_kv = await self.meta.get(indexes_key(cid))
                indexes = _decode_indexes(cid, index_kv)
                schema = _schema(info)
                if any(f.is_vector and indexes.by_field(f.field_id) is None for f in schema.fields):
                    raise IndexNotFound(collection=info.name)
                compares.append(pin(indexes_key(cid), index_kv))
                if current is not None and current.replicas != replicas:
                    raise InvalidParameter(
                        f"collection with different replica number {current.replicas} existed, "
                        "release this collection first before changing its replica number"
                    )
                if part_ids is None or (current is not None and current.load_all):
                    new = LoadInfo(cid, LoadState.LOADED, load_all=True, replicas=replicas)
                else:
                    held = current.partition_ids if current is not None else ()
                    extra = tuple(p for p in part_ids if p not in held)
                    new = LoadInfo(cid, LoadState.LOADED, False, (*held, *extra), replicas)
            elif current is None:
                new = None
            elif part_ids is None:
                new = None
            else:
                held = (
                    tuple(p.partition_id for p in info.partitions)
                    if current.load_all
                    else current.partition_ids
                )
                keep = tuple(p for p in held if p not in part_ids)
                new = replace(current, load_all=False, partition_ids=keep) if keep else None
            if new == current:
                return new or LoadInfo(cid, LoadState.NOT_LOAD)
            op = Put(load_key(cid), new.encode()) if new is not None else Delete(load_key(cid))
            if (await self.meta.txn(compares, [op])).succeeded:
                return new or LoadInfo(cid, LoadState.NOT_LOAD)
        raise CatalogConflict(f"load/release {collection}: too much contention")

    async def load_state(
        self, db: str, collection: str, partitions: Sequence[str] | None = None
    ) -> LoadInfo:
        """The collection's load record with ``state`` for the scope asked about: without
        ``partitions`` ``loaded`` when anything is loaded, else when every named partition is.
        A released collection gives ``LoadInfo(collection_id, not_load)``. Raises
        ``PartitionNotFound``, ``CollectionNotFound``."""
        await self._ready()
        info, _ = await self._collection(db, collection)
        part_ids = _partition_ids(info, partitions) if partitions else None
        kv = await self.meta.get(load_key(info.collection_id))
        if kv is None:
            return LoadInfo(info.collection_id, LoadState.NOT_LOAD)
        current = LoadInfo.decode(kv.value)
        if part_ids is not None and not all(current.loads(p) for p in part_ids):
            return replace(current, state=LoadState.NOT_LOAD)
        return current


def pin(key: str, kv: KeyValue | None) -> Compare:
    """Compare ``key`` at the version read (absent when it was)."""
    return Compare.absent(key) if kv is None else Compare.version(key, kv.version)


def _schema(info: CollectionInfo) -> CollectionSchema:
    return from_request_bytes(info.schema)


def _decode_indexes(collection_id: int, kv: KeyValue | None) -> CollectionIndexes:
    if kv is None:
        return CollectionIndexes(collection_id)
    return CollectionIndexes.decode(kv.value)


def _pick_index(info: CollectionInfo, indexes: CollectionIndexes, name: str) -> IndexInfo:
    if name:
        if (found := indexes.by_name(name)) is None:
            raise IndexNotFound(index_name=name)
        return found
    if not indexes.indexes:
        raise IndexNotFound(collection=info.name)
    if len(indexes.indexes) > 1:
        raise IndexDuplicate("", "there are multiple indexes, please specify the index_name")
    return indexes.indexes[0]


def _partition_ids(info: CollectionInfo, names: Sequence[str]) -> list[int]:
    ids = []
    for name in names:
        if (found := info.partition(name)) is None:
            raise PartitionNotFound(name, info.name)
        ids.append(found.partition_id)
    return ids


def _refuse_scalar_index(field: str, dtype: str, params: Mapping[str, str]) -> None:
    """Indexes on scalar fields: a vector index type is invalid (1100), scalar ones (and
    AUTOINDEX, which Milvus maps to a scalar index there) are not supported yet (701)."""
    index_type = str(params.get(INDEX_TYPE_KEY, "")).strip().upper() or AUTOINDEX
    if index_type in MILVUS_VECTOR_INDEX_TYPES:
        raise InvalidParameter(f"data type {dtype} can't build with this index {index_type}")
    if index_type == AUTOINDEX or index_type in MILVUS_SCALAR_INDEX_TYPES:
        raise IndexNotSupported(
            index_type, f"indexes on scalar fields are not supported yet (field {field})"
        )
    raise IndexNotSupported(index_type, f"invalid index type: {index_type}")
