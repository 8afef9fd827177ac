"""Errors of the coordinator (timestamp oracle and DDL catalog), each carrying its Milvus code.

``milvus_code`` is the ``Status.code`` a proxy returns for the error (Milvus ``merr`` codes, see
``milvus-io/milvus`` ``pkg/util/merr/errors.go``; pymilvus' own ``pymilvus.exceptions.ErrorCode``
names 100 and 700 only). Milvus answers plain, unclassified errors with 65535 (``errUnexpected``);
errors that Milvus raises that way keep 65535 here. Messages follow Milvus's wording
(``merr`` ``wrapFields`` style: ``collection not found[database=db][collection=c]``), so clients
and test suites that match on them keep working. The proxy maps these in one place.
"""

from __future__ import annotations

from woodpecker.errors import CanopyError

UNEXPECTED = 65535  # merr errUnexpected: what Milvus returns for errors without a merr kind


class CoordinatorError(CanopyError):
    """Base of coordinator errors."""

    milvus_code: int = UNEXPECTED


# --- timestamp oracle ----------------------------------------------------------------------------


class TsoFenced(CoordinatorError):
    """Another oracle wrote the high-water key since this one did: this oracle must stop issuing.

    Milvus code 2 (``ErrServiceUnavailable``): the caller should retry against the new owner."""

    milvus_code = 2


class TsoClosed(CoordinatorError):
    """The oracle was closed (or never started)."""

    milvus_code = 1  # ErrServiceNotReady


# --- catalog -----------------------------------------------------------------------------------


class InvalidParameter(CoordinatorError):
    """A bad name, shard count, or other argument (merr ``ErrParameterInvalid``, 1100)."""

    milvus_code = 1100

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}: invalid parameter")
        self.detail = detail


class DatabaseNotFound(CoordinatorError):
    milvus_code = 800

    def __init__(self, db: str) -> None:
        super().__init__(f"database not found[database={db}]")
        self.db = db


class DatabaseExists(CoordinatorError):
    def __init__(self, db: str) -> None:
        super().__init__(f"database already exist: {db}")
        self.db = db


class DatabaseNotEmpty(CoordinatorError):
    def __init__(self, db: str) -> None:
        super().__init__(f"database:{db} not empty, must drop all collections before drop database")
        self.db = db


class CollectionNotFound(CoordinatorError):
    """``db`` is None when the lookup was by id (``collection not found[collection=123]``)."""

    milvus_code = 100

    def __init__(self, db: str | None, collection: str | int) -> None:
        where = f"[database={db}]" if db is not None else ""
        super().__init__(f"collection not found{where}[collection={collection}]")
        self.db = db
        self.collection = collection


class CollectionExists(CoordinatorError):
    """The name is taken (by a collection or an alias). Milvus treats a repeated create with the
    same parameters as success; ``existing`` (a ``CollectionInfo`` or None) lets the proxy do so."""

    def __init__(
        self, db: str, collection: str, *, existing: object = None, message: str | None = None
    ) -> None:
        super().__init__(
            message
            or f"create duplicate collection with different parameters, collection: {collection}"
        )
        self.db = db
        self.collection = collection
        self.existing = existing


class PartitionNotFound(CoordinatorError):
    milvus_code = 200

    def __init__(self, partition: str, collection: str | None = None) -> None:
        super().__init__(f"partition not found[partition={partition}]")
        self.partition = partition
        self.collection = collection


class PartitionExists(CoordinatorError):
    """Milvus's rootcoord treats a repeated create_partition as success; the proxy may too."""

    def __init__(self, collection: str, partition: str) -> None:
        super().__init__(
            f"partition already exists[collection={collection}][partition={partition}]"
        )
        self.collection = collection
        self.partition = partition


class IndexNotFound(CoordinatorError):
    """``index not found[indexName=x]``, or ``index not found[collection=c]`` when a collection
    has no index (what Milvus answers a load without one). pymilvus reads code 700 as "no
    index" in ``describe_index`` / ``list_indexes``."""

    milvus_code = 700

    def __init__(self, *, index_name: str | None = None, collection: str | None = None) -> None:
        where = f"[indexName={index_name}]" if index_name is not None else ""
        if collection is not None:
            where += f"[collection={collection}]"
        super().__init__(f"index not found{where}")
        self.index_name = index_name
        self.collection = collection


class IndexNotSupported(CoordinatorError):
    """An index type Canopy does not build (yet): ``<detail>: index type not
    supported[indexType=X]`` (merr ``ErrIndexNotSupported``, 701)."""

    milvus_code = 701

    def __init__(self, index_type: str, detail: str) -> None:
        super().__init__(f"{detail}: index type not supported[indexType={index_type}]")
        self.index_type = index_type


class IndexExists(CoordinatorError):
    """A CreateIndex conflicting with an existing index of the collection: the same name with
    another definition ("at most one distinct index is allowed per field") or a second index
    on one field. Milvus's datacoord raises these as plain errors, so the code is 65535 (its
    test suites match that code and the wording)."""

    def __init__(self, detail: str, *, existing: object = None) -> None:
        super().__init__(f"CreateIndex failed: {detail}")
        self.existing = existing


class IndexDuplicate(CoordinatorError):
    """An empty index name where the collection has several indexes (merr
    ``ErrIndexDuplicate``, 702, as Milvus's GetIndexState answers an ambiguous name)."""

    milvus_code = 702

    def __init__(self, index_name: str, detail: str | None = None) -> None:
        prefix = f"{detail}: " if detail else ""
        super().__init__(f"{prefix}index duplicates[indexName={index_name}]")
        self.index_name = index_name


class FieldNotFound(CoordinatorError):
    """CreateIndex on a field the schema does not have (Milvus: a plain error, 65535)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"cannot create index on non-exist field: {field}")
        self.field = field


class NotAllowed(CoordinatorError):
    """A refused operation: dropping ``default`` or ``_default``, dropping an index of a loaded
    collection or a loaded partition (Milvus: plain errors, 65535)."""


class LimitExceeded(CoordinatorError):
    """A configured maximum (partitions per collection) would be exceeded."""


class CatalogConflict(CoordinatorError):
    """An operation kept losing compare-and-swap races; the same call may succeed later."""

    retryable = True
    milvus_code = 2  # ErrServiceUnavailable (retriable in Milvus)
