"""The MilvusClient method set, written once for both clients.

Every method builds an operation from :mod:`sdk._rpc` and hands it to ``self._run(op,
timeout)``: :class:`sdk.Client` runs it to completion and returns the result; ``sdk.AsyncClient``
returns a coroutine (so ``await client.insert(...)``). Argument names and result shapes follow
pymilvus 3's ``MilvusClient``; ``timeout`` bounds the whole method (polling included).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlparse

from pymilvus.grpc_gen import milvus_pb2

from sdk import _bulk, _rpc
from sdk.errors import InvalidArgument
from sdk.schema import CollectionSchema, IndexParams

MAX_MESSAGE = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
]


def target_of(uri: str) -> str:
    """A gRPC target from a Milvus-style uri (``http://h:p``, ``tcp://h:p``, ``h:p``,
    ``unix:/path``)."""
    if uri.startswith("unix:"):
        return uri
    if "://" not in uri:
        return uri
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "tcp", "grpc"):
        raise InvalidArgument(f"unsupported uri scheme {parsed.scheme!r} (TLS is not supported)")
    return f"{parsed.hostname}:{parsed.port or 19530}"


def auth_metadata(user: str, password: str, token: str) -> tuple[tuple[str, str], ...]:
    secret = token or (f"{user}:{password}" if user else "")
    if not secret:
        return ()
    return (("authorization", base64.b64encode(secret.encode()).decode()),)


class ClientAPI:
    """Shared methods; subclasses provide ``_run(op, timeout)``, ``_state`` and ``_channel``."""

    _state: _rpc.State

    def _run(self, op: _rpc.Op, timeout: float | None) -> Any:  # pragma: no cover
        raise NotImplementedError

    @property
    def _db_name(self) -> str:
        return self._state.db_name

    @property
    def last_write_timestamp(self) -> int:
        """The newest write timestamp this client saw (its Session guarantee)."""
        return self._state.last_write_ts

    # --- schema helpers (no RPC) ---

    @staticmethod
    def create_schema(**kwargs: Any) -> CollectionSchema:
        return CollectionSchema(**kwargs)

    @staticmethod
    def prepare_index_params(field_name: str = "", **kwargs: Any) -> IndexParams:
        params = IndexParams()
        if field_name:
            params.add_index(field_name, **kwargs)
        return params

    # --- collections ---

    def create_collection(
        self,
        collection_name: str,
        dimension: int | None = None,
        primary_field_name: str = "id",
        id_type: str = "int",
        vector_field_name: str = "vector",
        metric_type: str = "COSINE",
        auto_id: bool = False,
        timeout: float | None = None,
        schema: Any = None,
        index_params: Any = None,
        **kwargs: Any,
    ) -> Any:
        op = _rpc.create_collection(
            self._state,
            collection_name,
            dimension,
            primary_field_name=primary_field_name,
            id_type=id_type,
            vector_field_name=vector_field_name,
            metric_type=metric_type,
            auto_id=auto_id,
            schema=schema,
            index_params=index_params,
            **kwargs,
        )
        return self._run(op, timeout)

    def drop_collection(self, collection_name: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.drop_collection(self._state, collection_name), timeout)

    def has_collection(self, collection_name: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.has_collection(collection_name), timeout)

    def list_collections(self, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.list_collections(), timeout)

    def describe_collection(
        self, collection_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.describe_collection(self._state, collection_name), timeout)

    def rename_collection(
        self,
        old_name: str,
        new_name: str,
        target_db: str | None = "",
        timeout: float | None = None,
        **kw: Any,
    ) -> Any:
        op = _rpc.rename_collection(self._state, old_name, new_name, target_db or "")
        return self._run(op, timeout)

    def get_collection_stats(
        self, collection_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.get_collection_stats(collection_name), timeout)

    # --- partitions ---

    def create_partition(
        self, collection_name: str, partition_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        req = milvus_pb2.CreatePartitionRequest(
            collection_name=collection_name, partition_name=partition_name
        )
        return self._run(_rpc.simple("CreatePartition", req, idempotent=False), timeout)

    def drop_partition(
        self, collection_name: str, partition_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        req = milvus_pb2.DropPartitionRequest(
            collection_name=collection_name, partition_name=partition_name
        )
        return self._run(_rpc.simple("DropPartition", req, idempotent=False), timeout)

    def has_partition(
        self, collection_name: str, partition_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.has_partition(collection_name, partition_name), timeout)

    def list_partitions(self, collection_name: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.list_partitions(collection_name), timeout)

    def load_partitions(
        self, collection_name: str, partition_names: Any, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.load_partitions(collection_name, partition_names), timeout)

    def release_partitions(
        self, collection_name: str, partition_names: Any, timeout: float | None = None, **kw: Any
    ) -> Any:
        names = [partition_names] if isinstance(partition_names, str) else list(partition_names)
        req = milvus_pb2.ReleasePartitionsRequest(
            collection_name=collection_name, partition_names=names
        )
        return self._run(_rpc.simple("ReleasePartitions", req), timeout)

    # --- databases ---

    def use_database(self, db_name: str, **kwargs: Any) -> Any:
        """Switch this client to ``db_name`` (which must exist)."""
        return self._run(_use_database(self._state, db_name), kwargs.get("timeout"))

    using_database = use_database

    def create_database(
        self, db_name: str, properties: dict | None = None, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.create_database(db_name, properties), timeout)

    def drop_database(self, db_name: str, timeout: float | None = None, **kw: Any) -> Any:
        req = milvus_pb2.DropDatabaseRequest(db_name=db_name)
        return self._run(_rpc.simple("DropDatabase", req, idempotent=False), timeout)

    def list_databases(self, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.list_databases(), timeout)

    def describe_database(self, db_name: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.describe_database(db_name), timeout)

    # --- writes ---

    def insert(
        self,
        collection_name: str,
        data: Any,
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> Any:
        """As pymilvus's ``insert``; columnar data over ~4 MiB is sent as several requests, three
        in flight (:mod:`sdk._bulk`: order, answers and the one caveat)."""
        chunks = _bulk.split(data)
        if chunks is None:
            op = _rpc.write(self._state, collection_name, data, partition_name, upsert=False)
            return self._run(op, timeout)
        ops = [
            _rpc.write(self._state, collection_name, chunk, partition_name, upsert=False)
            for chunk in chunks
        ]
        return self._run_bulk(ops, timeout)

    def _run_bulk(self, ops: list[_rpc.Op], timeout: float | None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def upsert(
        self,
        collection_name: str,
        data: Any,
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> Any:
        op = _rpc.write(self._state, collection_name, data, partition_name, upsert=True)
        return self._run(op, timeout)

    def delete(
        self,
        collection_name: str,
        ids: Any = None,
        timeout: float | None = None,
        filter: str | None = None,
        partition_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        op = _rpc.delete(self._state, collection_name, ids, filter, partition_name, **kwargs)
        return self._run(op, timeout)

    def flush(self, collection_name: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.flush(collection_name), timeout)

    # --- reads ---

    def get(
        self,
        collection_name: str,
        ids: Any,
        output_fields: list[str] | None = None,
        timeout: float | None = None,
        partition_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if not isinstance(ids, (list, tuple)):
            ids = [ids]
        op = _rpc.query(
            self._state,
            collection_name,
            output_fields=output_fields,
            ids=list(ids),
            partition_names=partition_names,
            **kwargs,
        )
        return self._run(op, timeout)

    def query(
        self,
        collection_name: str,
        filter: str = "",
        output_fields: list[str] | None = None,
        timeout: float | None = None,
        ids: Any = None,
        partition_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        op = _rpc.query(
            self._state, collection_name, filter, output_fields, ids, partition_names, **kwargs
        )
        return self._run(op, timeout)

    def search(
        self,
        collection_name: str,
        data: Any = None,
        filter: str = "",
        limit: int = 10,
        output_fields: list[str] | None = None,
        search_params: dict | None = None,
        timeout: float | None = None,
        partition_names: list[str] | None = None,
        anns_field: str | None = None,
        output_type: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """pymilvus' search; ``output_type="numpy"`` gives ``(ids, distances)`` arrays of shape
        ``(nq, limit)`` (padded with -1 / NaN), ``"arrow"`` a table (query, rank, id, distance,
        output fields)."""
        op = _rpc.search(
            self._state,
            collection_name,
            data,
            filter,
            limit,
            output_fields,
            search_params,
            partition_names,
            anns_field,
            output_type,
            **kwargs,
        )
        return self._run(op, timeout)

    # --- indexes and load ---

    def create_index(
        self, collection_name: str, index_params: Any, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.create_index(collection_name, index_params), timeout)

    def list_indexes(self, collection_name: str, field_name: str | None = "", **kw: Any) -> Any:
        op = _rpc.list_indexes(collection_name, field_name or "")
        return self._run(op, kw.get("timeout"))

    def describe_index(
        self, collection_name: str, index_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.describe_index(collection_name, index_name), timeout)

    def drop_index(
        self, collection_name: str, index_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        return self._run(_rpc.drop_index(collection_name, index_name), timeout)

    def load_collection(self, collection_name: str, timeout: float | None = None, **kw: Any) -> Any:
        op = _rpc.load_collection(collection_name, kw.get("replica_number"))
        return self._run(op, timeout)

    def release_collection(
        self, collection_name: str, timeout: float | None = None, **kw: Any
    ) -> Any:
        req = milvus_pb2.ReleaseCollectionRequest(collection_name=collection_name)
        return self._run(_rpc.simple("ReleaseCollection", req), timeout)

    def get_load_state(
        self,
        collection_name: str,
        partition_name: str | None = "",
        timeout: float | None = None,
        **kw: Any,
    ) -> Any:
        return self._run(_rpc.get_load_state(collection_name, partition_name or ""), timeout)

    def get_server_version(self, timeout: float | None = None, **kw: Any) -> Any:
        return self._run(_rpc.get_server_version(), timeout)


def _use_database(state: _rpc.State, db_name: str) -> _rpc.Op:
    yield from _rpc.describe_database(db_name)
    state.db_name = db_name
