"""The coordinator: timestamp oracle (``tso``) and DDL catalog (``catalog``) over a MetaStore.

Keys are documented in ``cluster/coordinator/META.md``; errors (with their Milvus codes) in
``cluster/coordinator/errors.py``.
"""

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import (
    CatalogConflict,
    CollectionExists,
    CollectionNotFound,
    CoordinatorError,
    DatabaseExists,
    DatabaseNotEmpty,
    DatabaseNotFound,
    InvalidParameter,
    LimitExceeded,
    NotAllowed,
    PartitionExists,
    PartitionNotFound,
    TsoClosed,
    TsoFenced,
)
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.records import (
    DEFAULT_DB,
    DEFAULT_PARTITION,
    CatalogSettings,
    CollectionInfo,
    CollectionState,
    DatabaseInfo,
    DatabaseState,
    DroppedPartition,
    PartitionInfo,
)
from cluster.coordinator.tso import TimestampOracle

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_PARTITION",
    "Catalog",
    "CatalogConflict",
    "CatalogSettings",
    "CollectionExists",
    "CollectionInfo",
    "CollectionNotFound",
    "CollectionState",
    "CoordinatorError",
    "DatabaseExists",
    "DatabaseInfo",
    "DatabaseNotEmpty",
    "DatabaseNotFound",
    "DatabaseState",
    "DroppedPartition",
    "IdAllocator",
    "InvalidParameter",
    "LimitExceeded",
    "NotAllowed",
    "PartitionExists",
    "PartitionInfo",
    "PartitionNotFound",
    "TimestampOracle",
    "TsoClosed",
    "TsoFenced",
]
