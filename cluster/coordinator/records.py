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

from cluster.coordinator.errors import IndexNotSupported, InvalidParameter

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
INDEXES_PREFIX = "catalog/indexes/"
LOADS_PREFIX = "catalog/loads/"


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


def indexes_key(collection_id: int) -> str:
    """All index definitions of one collection (one record, so uniqueness holds under CAS)."""
    return f"{INDEXES_PREFIX}{collection_id:020d}"


def load_key(collection_id: int) -> str:
    """The load record of one collection; absent means released (not loaded)."""
    return f"{LOADS_PREFIX}{collection_id:020d}"


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


# --- indexes -------------------------------------------------------------------------------------

INDEX_TYPE_KEY = "index_type"
METRIC_TYPE_KEY = "metric_type"
INDEX_PARAMS_KEY = "params"  # a JSON object of build params (older clients); merged flat
AUTOINDEX = "AUTOINDEX"
SUPPORTED_INDEX_TYPES = ("FLAT", "HNSW", AUTOINDEX)
SUPPORTED_METRICS = ("L2", "IP", "COSINE")
DEFAULT_METRIC = "COSINE"  # Milvus's default metric for float vectors when none is given
HNSW_M_RANGE = (2, 2048)  # knowhere's bounds
HNSW_EF_CONSTRUCTION_RANGE = (1, 2**31 - 1)
MILVUS_VECTOR_INDEX_TYPES = frozenset(
    {
        "FLAT",
        "HNSW",
        "HNSW_SQ",
        "HNSW_PQ",
        "HNSW_PRQ",
        "IVF_FLAT",
        "IVF_SQ8",
        "IVF_PQ",
        "IVF_RABITQ",
        "SCANN",
        "DISKANN",
        "GPU_CAGRA",
        "GPU_IVF_FLAT",
        "GPU_IVF_PQ",
        "GPU_BRUTE_FORCE",
        "BIN_FLAT",
        "BIN_IVF_FLAT",
        "SPARSE_INVERTED_INDEX",
        "SPARSE_WAND",
        "MINHASH_LSH",
    }
)
"""Vector index types Milvus knows (Canopy accepts only ``SUPPORTED_INDEX_TYPES``)."""
MILVUS_SCALAR_INDEX_TYPES = frozenset(
    {"STL_SORT", "INVERTED", "BITMAP", "TRIE", "NGRAM", "RTREE", "HYBRID"}
)


class IndexState(enum.StrEnum):
    """``finished``: the definition is complete. Build progress lives in the per-segment build
    records (``cluster/coordinator/index_builds.py``), not here."""

    FINISHED = "finished"


def _param_text(value: object) -> str:
    """A build param value as Milvus keeps it (flat strings): JSON for non-strings."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _int_param(params: Mapping[str, str], key: str, bounds: tuple[int, int]) -> None:
    if key not in params:
        return
    low, high = bounds
    text = params[key]
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameter(f"param '{key}' ({text}) should be integer") from None
    if not low <= value <= high:
        raise InvalidParameter(f"param '{key}' ({value}) should be in range [{low}, {high}]")


def parse_index_params(raw: Mapping[str, str]) -> tuple[str, str, dict[str, str]]:
    """``(index_type, metric_type, build_params)`` of a float-vector index from CreateIndex's
    flat ``extra_params``. ``build_params`` are every other key plus the keys of a ``params``
    JSON object (later keys win), values as strings. Index type and metric are upper-cased; an
    empty index type means ``AUTOINDEX`` and an empty metric ``COSINE`` (both as in Milvus).

    Raises ``IndexNotSupported`` (701) for index types other than FLAT, HNSW, AUTOINDEX (with
    Milvus's "invalid index type" wording for names Milvus does not know either) and
    ``InvalidParameter`` (1100) for an unknown metric, a bad ``params`` JSON, or HNSW ``M`` /
    ``efConstruction`` that are not integers in knowhere's range."""
    build: dict[str, str] = {}
    index_type = metric = ""
    for key, value in raw.items():
        if key == INDEX_TYPE_KEY:
            index_type = value.strip().upper()
        elif key == METRIC_TYPE_KEY:
            metric = value.strip().upper()
        elif key == INDEX_PARAMS_KEY:
            try:
                nested = json.loads(value) if value.strip() else {}
            except ValueError:
                nested = None
            if not isinstance(nested, dict):
                raise InvalidParameter(f"index params should be a JSON object, got: {value}")
            build.update({str(k): _param_text(v) for k, v in nested.items()})
        else:
            build[str(key)] = str(value)
    index_type = index_type or AUTOINDEX
    if index_type not in SUPPORTED_INDEX_TYPES:
        if index_type in MILVUS_VECTOR_INDEX_TYPES:
            detail = f"index type {index_type} is not supported yet"
        elif index_type in MILVUS_SCALAR_INDEX_TYPES:
            detail = f"scalar index {index_type} is not supported yet"
        else:
            detail = f"invalid index type: {index_type}"
        raise IndexNotSupported(
            index_type, f"{detail} (supported: {', '.join(SUPPORTED_INDEX_TYPES)})"
        )
    metric = metric or DEFAULT_METRIC
    if metric not in SUPPORTED_METRICS:
        raise InvalidParameter(
            f"metric type {metric} not found or not supported, supported: "
            f"[{' '.join(SUPPORTED_METRICS)}]"
        )
    if index_type == "HNSW":
        _int_param(build, "M", HNSW_M_RANGE)
        _int_param(build, "efConstruction", HNSW_EF_CONSTRUCTION_RANGE)
    return index_type, metric, build


@dataclass(frozen=True)
class IndexInfo:
    """One index definition. ``params`` are the build params (flat strings, without
    ``index_type`` / ``metric_type``) that decide whether two definitions are the same;
    ``user_params`` are the request's ``extra_params`` as received, which DescribeIndex echoes
    like Milvus (with ``index_type`` / ``metric_type`` as resolved)."""

    index_id: int
    collection_id: int
    index_name: str
    field_id: int
    field_name: str
    index_type: str
    metric_type: str
    params: dict[str, str]
    user_params: dict[str, str]
    create_ts: int
    state: IndexState = IndexState.FINISHED

    def same_definition(self, other: IndexInfo) -> bool:
        """Same field, type, metric and build params (what makes a CreateIndex a repeat)."""
        return (self.field_id, self.index_type, self.metric_type, self.params) == (
            other.field_id,
            other.index_type,
            other.metric_type,
            other.params,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> IndexInfo:
        return IndexInfo(
            index_id=int(raw["index_id"]),
            collection_id=int(raw["collection_id"]),
            index_name=str(raw["index_name"]),
            field_id=int(raw["field_id"]),
            field_name=str(raw["field_name"]),
            index_type=str(raw["index_type"]),
            metric_type=str(raw["metric_type"]),
            params={str(k): str(v) for k, v in raw["params"].items()},
            user_params={str(k): str(v) for k, v in raw["user_params"].items()},
            create_ts=int(raw["create_ts"]),
            state=IndexState(raw.get("state", IndexState.FINISHED)),
        )

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> IndexInfo:
        return IndexInfo.from_dict(json.loads(value))


@dataclass(frozen=True)
class CollectionIndexes:
    """The value of ``catalog/indexes/{collection_id}``: every index of the collection, in
    creation order. Names and fields are unique within it."""

    collection_id: int
    indexes: tuple[IndexInfo, ...] = ()

    def by_name(self, name: str) -> IndexInfo | None:
        return next((i for i in self.indexes if i.index_name == name), None)

    def by_field(self, field_id: int) -> IndexInfo | None:
        return next((i for i in self.indexes if i.field_id == field_id), None)

    def encode(self) -> bytes:
        raw = {"collection_id": self.collection_id, "indexes": [i.to_dict() for i in self.indexes]}
        return json.dumps(raw, sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> CollectionIndexes:
        raw = json.loads(value)
        return CollectionIndexes(
            int(raw["collection_id"]), tuple(IndexInfo.from_dict(i) for i in raw["indexes"])
        )


# --- load state ----------------------------------------------------------------------------------


class LoadState(enum.StrEnum):
    """Milvus's ``LoadState`` as far as the catalog knows it. ``loading`` will come with query
    nodes; today a load is metadata and complete when recorded."""

    NOT_LOAD = "not_load"
    LOADED = "loaded"


@dataclass(frozen=True)
class LoadInfo:
    """A collection's load record (the value of ``catalog/loads/{collection_id}``; absent means
    released). ``load_all``: loaded as a collection (LoadCollection), so every partition,
    including ones created later, is loaded; otherwise exactly ``partition_ids`` are
    (LoadPartitions). ``state`` is ``loaded`` in a stored record; ``Catalog.load_state``
    answers with it computed for the partitions asked about."""

    collection_id: int
    state: LoadState
    load_all: bool = False
    partition_ids: tuple[int, ...] = ()
    replicas: int = 0

    def loads(self, partition_id: int) -> bool:
        """Whether ``partition_id`` (a live partition of the collection) is loaded."""
        return self.state is LoadState.LOADED and (
            self.load_all or partition_id in self.partition_ids
        )

    def encode(self) -> bytes:
        raw: dict[str, Any] = asdict(self)
        raw["partition_ids"] = list(self.partition_ids)
        return json.dumps(raw, sort_keys=True).encode()

    @staticmethod
    def decode(value: bytes) -> LoadInfo:
        raw = json.loads(value)
        return LoadInfo(
            collection_id=int(raw["collection_id"]),
            state=LoadState(raw["state"]),
            load_all=bool(raw.get("load_all", False)),
            partition_ids=tuple(int(p) for p in raw.get("partition_ids", ())),
            replicas=int(raw.get("replicas", 0)),
        )
