"""Canopy's Python SDK: ``from sdk import Client`` instead of ``from pymilvus import
MilvusClient`` -- the same methods, arguments and result shapes over the Milvus gRPC protocol,
plus columnar inserts (numpy / Arrow / pandas), numpy / Arrow search results, automatic Session
consistency, typed errors and bounded retries. ``AsyncClient`` is the asyncio twin.
"""

from sdk.aio import AsyncClient
from sdk.client import Client
from sdk.columns import Hit
from sdk.errors import (
    CanopyError,
    CollectionNotFound,
    CollectionNotLoaded,
    DatabaseNotFound,
    EmptyCollection,
    IndexNotFound,
    InvalidArgument,
    NotSupported,
    PartitionNotFound,
    RateLimited,
    SchemaMismatch,
    Timeout,
    Unavailable,
)
from sdk.schema import CollectionSchema, DataType, FieldSchema, IndexParams

__all__ = [
    "AsyncClient",
    "CanopyError",
    "Client",
    "CollectionNotFound",
    "CollectionNotLoaded",
    "CollectionSchema",
    "DataType",
    "DatabaseNotFound",
    "EmptyCollection",
    "FieldSchema",
    "Hit",
    "IndexNotFound",
    "IndexParams",
    "InvalidArgument",
    "NotSupported",
    "PartitionNotFound",
    "RateLimited",
    "SchemaMismatch",
    "Timeout",
    "Unavailable",
]
