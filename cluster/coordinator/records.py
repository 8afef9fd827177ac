"""Catalog records, their meta keys and name rules (pure data, no I/O).

Keys are documented in ``cluster/coordinator/META.md``. Records are JSON (the schema as base64)
so they can be read with ``etcdctl`` or ``sqlite3`` during an incident.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cluster.coordinator.errors import InvalidParameter

DEFAULT_DB = "default"
DEFAULT_PARTITION = "_default"
MAX_NAME_LENGTH = 255  # Milvus proxy.maxNameLength
_NAME_CHARS = re.compile(r"^[A-Za-z0-9_]*$")

# --- keys ----------------------------------------------------------------------------------------

SETTINGS_KEY = "catalog/settings"
IDS_KEY = "catalog/ids"
DATABASES_PREFIX = "catalog/databases/"
DROPPED_COLLECTIONS_PREFIX = "catalog/dropped/collections/"
DROPPED_PARTITIONS_PREFIX = "catalog/dropped/partitions/"


def database_key(db: str) -> str:
    return f"{DATABASES_PREFIX}{db}"


def collections_prefix(db: str) -> str:
    return f"catalog/collections/{db}/"


def collection_key(db: str, name: str) -> str:
    return f"{collections_prefix(db)}{name}"


def collection_id_key(collection_id: int) -> str:
    return f"catalog/collection_ids/{collection_id:020d}"


def dropped_collection_key(collection_id: int) -> str:
    return f"{DROPPED_COLLECTIONS_PREFIX}{collection_id:020d}"


def dropped_partition_key(partition_id: int) -> str:
    return f"{DROPPED_PARTITIONS_PREFIX}{partition_id:020d}"


# --- names ---------------------------------------------------------------------------------------


def check_name(kind: str, name: object) -> str:
    """Milvus's rule for database, collection and partition names: 1-255 letters, digits and
    underscores, not starting with a digit. Raises ``InvalidParameter`` in Milvus's wording."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameter(f"{kind} name should not be empty")
    prefix = f"Invalid {kind} name: {name}."
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidParameter(
            f"{prefix} the length of a {kind} name must be less than {MAX_NAME_LENGTH} characters"
        )
    if not (name[0] == "_" or (name[0].isascii() and name[0].isalpha())):
        raise InvalidParameter(
            f"{prefix} the first character of a {kind} name must be an underscore or letter"
        )
    if not _NAME_CHARS.match(name):
        raise InvalidParameter(
            f"{prefix} {kind} name can only contain numbers, letters and underscores"
        )
    return name


# --- records -------------------------------------------------------------------------------------


class DatabaseState(enum.StrEnum):
    CREATED = "created"
    DROPPING = "dropping"  # drop_database in progress: no new collections may enter


class CollectionState(enum.StrEnum):
    CREATING = "creating"  # reserved: create_collection writes a collection whole, in one txn
    CREATED = "created"
    DROPPING = "dropping"  # dropped: the record waits under a tombstone key for garbage collection


@dataclass(frozen=True)
class CatalogSettings:
    """Catalog-wide settings, persisted on first start and fixed from then on."""

    num_physical_channels: int
    cluster_prefix: str

    def pchannel(self, index: int) -> str:
        """The name of physical channel ``index`` (one WAL log)."""
        return f"{self.cluster_prefix}-dml_{index}"

    def channels(self, collection_id: int, shards_num: int) -> tuple[tuple[str, ...], ...]:
        """``(vchannels, pchannels)`` of a collection: shard ``i`` is vchannel
        ``{prefix}-dml_{p}_{collection_id}v{i}`` on physical channel
        ``p = (collection_id + i) % num_physical_channels``."""
        nums = [(collection_id + i) % self.num_physical_channels for i in range(shards_num)]
        vchannels = tuple(f"{self.pchannel(p)}_{collection_id}v{i}" for i, p in enumerate(nums))
        return vchannels, tuple(self.pchannel(p) for p in nums)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> CatalogSettings:
        raw = json.loads(value)
        return CatalogSettings(int(raw["num_physical_channels"]), str(raw["cluster_prefix"]))


@dataclass(frozen=True)
class DatabaseInfo:
    db_id: int
    name: str
    properties: dict[str, str] = field(default_factory=dict)
    create_ts: int = 0
    state: DatabaseState = DatabaseState.CREATED

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> DatabaseInfo:
        raw = json.loads(value)
        raw["state"] = DatabaseState(raw["state"])
        return DatabaseInfo(**raw)


@dataclass(frozen=True)
class PartitionInfo:
    partition_id: int
    name: str
    create_ts: int = 0


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as the catalog stores it. ``schema`` is the serialized
    ``schema_pb2.CollectionSchema`` exactly as given; ``consistency_level`` is the
    ``common_pb2.ConsistencyLevel`` value. ``vchannels[i]`` (shard i) lives on physical channel
    ``pchannels[i]``."""

    collection_id: int
    db: str
    db_id: int
    name: str
    schema: bytes
    shards_num: int
    consistency_level: int
    properties: dict[str, str]
    create_ts: int
    update_ts: int
    state: CollectionState
    vchannels: tuple[str, ...]
    pchannels: tuple[str, ...]
    partitions: tuple[PartitionInfo, ...]
    drop_ts: int = 0

    def partition(self, name: str) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.name == name), None)

    def encode(self) -> bytes:
        raw: dict[str, Any] = asdict(self)
        raw["schema"] = base64.b64encode(self.schema).decode()
        return json.dumps(raw, sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> CollectionInfo:
        raw = json.loads(value)
        raw["schema"] = base64.b64decode(raw["schema"])
        raw["state"] = CollectionState(raw["state"])
        raw["vchannels"] = tuple(raw["vchannels"])
        raw["pchannels"] = tuple(raw["pchannels"])
        raw["partitions"] = tuple(PartitionInfo(**p) for p in raw["partitions"])
        return CollectionInfo(**raw)


@dataclass(frozen=True)
class DroppedPartition:
    """A dropped partition awaiting garbage collection of its data."""

    partition_id: int
    name: str
    collection_id: int
    db: str
    collection: str
    create_ts: int
    drop_ts: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> DroppedPartition:
        return DroppedPartition(**json.loads(value))


def encode_id_index(db: str, name: str) -> bytes:
    return json.dumps({"db": db, "name": name}, sort_keys=True).encode()


def decode_id_index(value: bytes) -> tuple[str, str]:
    raw = json.loads(value)
    return str(raw["db"]), str(raw["name"])


def merge_properties(
    current: Mapping[str, str], updates: Mapping[str, str], delete_keys: tuple[str, ...] | list[str]
) -> dict[str, str]:
    """``current`` with ``updates`` applied and ``delete_keys`` removed (values as str)."""
    merged = {**current, **{str(k): str(v) for k, v in updates.items()}}
    for key in delete_keys:
        merged.pop(key, None)
    return merged
