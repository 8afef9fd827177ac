"""The proxy's view of a collection: the catalog record plus its parsed schema.

Contract: :meth:`Collections.get` reads the catalog record on every call (one MetaStore read),
so a collection dropped, recreated or renamed through another proxy is seen at once -- proxies
keep no record cache that could route writes to a dropped collection id. What is cached is the
parsed :class:`~cluster.schema.CollectionSchema`, keyed by collection id and the exact schema
bytes (which never change for an id), so the validation of ``from_request_bytes`` runs once per
collection, not once per request.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.records import DEFAULT_PARTITION, CollectionInfo, PartitionInfo
from cluster.milvus.status import ParameterInvalid, PartitionNotFound
from cluster.schema import CollectionSchema, FieldSchema, from_request_bytes

__all__ = ["PARTITION_KEY_MANUAL", "Collection", "Collections"]

PARTITION_KEY_MANUAL = (
    "not support manually specifying the partition names if partition key mode is used"
)


@dataclass(frozen=True, slots=True)
class Collection:
    """A live collection: ``info`` (catalog record) and ``schema`` (parsed, field ids from 100)."""

    info: CollectionInfo
    schema: CollectionSchema

    @property
    def partition_key(self) -> FieldSchema | None:
        return next((f for f in self.schema.fields if f.is_partition_key), None)

    def write_partition(self, name: str) -> PartitionInfo | None:
        """The partition a write names (``_default`` when empty), or None in partition-key
        mode, where rows are routed by key and naming a partition is refused (1100). Unknown
        partitions raise PartitionNotFound (200)."""
        if self.partition_key is not None:
            if name:
                raise ParameterInvalid(PARTITION_KEY_MANUAL)
            return None
        found = self.info.partition(name or DEFAULT_PARTITION)
        if found is None:
            raise PartitionNotFound(name or DEFAULT_PARTITION)
        return found


class Collections:
    """Catalog reads with a bounded cache of parsed schemas (``max_schemas`` entries, LRU)."""

    def __init__(self, catalog: Catalog, *, max_schemas: int = 1024) -> None:
        self.catalog = catalog
        self.max_schemas = max_schemas
        self._schemas: OrderedDict[int, tuple[bytes, CollectionSchema]] = OrderedDict()

    async def get(self, db: str, name_or_id: str | int) -> Collection:
        """The collection ``name`` in ``db`` (or by id); raises the catalog's
        ``CollectionNotFound`` (100) / ``DatabaseNotFound`` (800)."""
        info = await self.catalog.describe_collection(db, name_or_id)
        return Collection(info, self.schema_of(info))

    def schema_of(self, info: CollectionInfo) -> CollectionSchema:
        """The parsed schema of a catalog record (cached)."""
        cached = self._schemas.get(info.collection_id)
        if cached is not None and cached[0] == info.schema:
            self._schemas.move_to_end(info.collection_id)
            return cached[1]
        # Stored bytes are what CreateCollection received; the name check is skipped because a
        # renamed collection keeps its original schema bytes.
        schema = from_request_bytes(info.schema)
        self._schemas[info.collection_id] = (info.schema, schema)
        while len(self._schemas) > self.max_schemas:
            self._schemas.popitem(last=False)
        return schema

    def forget(self, collection_id: int) -> None:
        self._schemas.pop(collection_id, None)
