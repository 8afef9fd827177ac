"""Everything the sync and async clients share: each client method is an *operation*, a
generator that yields :class:`Call` (one RPC) or :class:`Sleep` (a poll interval) and receives
the reply; the client only drives it over its transport (``grpc`` or ``grpc.aio``).

Contracts:

* A :class:`Call` whose reply status is not success raises the typed error
  (:func:`sdk.errors.error_from_status`) unless ``check=False``.
* Retries (:func:`retry_delay`): retryable statuses (not ready, unavailable, rate limited, or
  flagged ``retriable``) and gRPC ``UNAVAILABLE`` are retried with exponential back-off and
  jitter within the call's deadline -- but a non-idempotent call (insert, upsert, delete,
  create ...) is retried only on "not ready" / "rate limited", which the server answers before
  doing anything; after ``UNAVAILABLE`` its outcome is unknown, so the error is raised.
* Session consistency: :class:`State` keeps the largest ``MutationResult.timestamp`` this
  client has seen; reads send it as ``guarantee_timestamp`` (with ``use_default_consistency``
  when no level is named, so the collection's level applies, as pymilvus does).
* Schemas are cached per (database, collection) from DescribeCollection; a SchemaMismatch answer
  to Insert/Upsert drops the cache entry and the write is rebuilt and sent once more.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymilvus.client.types import LoadState
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from sdk import columns
from sdk.errors import (
    CanopyError,
    InvalidArgument,
    SchemaMismatch,
    error_from_status,
    is_success,
)
from sdk.schema import (
    CollectionSchema,
    DataType,
    IndexParams,
    SchemaInfo,
    describe_dict,
    index_specs,
    schema_proto,
)

DEFAULT_TIMEOUT = 120.0  # seconds, when neither the call nor the client names one
POLL_INTERVAL = 0.2
MAX_ATTEMPTS = 8
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
EVENTUALLY_TS = 1  # pymilvus' markers: "no wait" / "bounded"
BOUNDED_TS = 2
_Level = common_pb2.ConsistencyLevel
_LEVELS = {"strong": 0, "session": 1, "bounded": 2, "eventually": 3, "customized": 4}


@dataclass
class Call:
    """One RPC of an operation."""

    method: str
    request: Any
    idempotent: bool = True
    check: bool = True


@dataclass
class Sleep:
    seconds: float


Op = Generator[Call | Sleep, Any, Any]


@dataclass
class State:
    """Per-client state: database, last write timestamp, schema cache."""

    db_name: str = "default"
    last_write_ts: int = 0
    schemas: dict[tuple[str, str], SchemaInfo] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw_write(self, ts: int) -> None:
        with self.lock:
            if ts > self.last_write_ts:
                self.last_write_ts = ts

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("dbname", self.db_name),)


# --- driver helpers -----------------------------------------------------------------------------


def reply_status(reply: Any) -> common_pb2.Status:
    return reply if isinstance(reply, common_pb2.Status) else reply.status


def check_reply(call: Call, reply: Any) -> Any:
    """Raise the typed error of a failed reply (when the call checks)."""
    if call.check:
        status = reply_status(reply)
        if not is_success(status):
            raise error_from_status(status)
    return reply


def retry_delay(call: Call, err: CanopyError, attempt: int, remaining: float) -> float | None:
    """Seconds to wait before resending ``call`` after ``err``, or None to give up."""
    if attempt + 1 >= MAX_ATTEMPTS or not err.retriable:
        return None
    if not call.idempotent and (err.transport or err.code not in (1, 8)):
        return None  # the server may have applied it: the outcome is unknown
    delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0)
    return delay if delay < remaining else None


def resolve_timeout(timeout: float | None, default: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    return float(default) if default is not None else DEFAULT_TIMEOUT


# --- consistency ----------------------------------------------------------------------------------


def level_value(level: Any) -> int:
    if isinstance(level, str):
        try:
            return _LEVELS[level.lower()]
        except KeyError:
            raise InvalidArgument(f"unknown consistency level {level!r}") from None
    return int(level)


def consistency(state: State, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``guarantee_timestamp`` / ``consistency_level`` / ``use_default_consistency`` of a read."""
    level = kwargs.get("consistency_level")
    session_ts = state.last_write_ts or EVENTUALLY_TS
    if level is None:
        return {"guarantee_timestamp": session_ts, "use_default_consistency": True}
    lv = level_value(level)
    ts = {
        _Level.Strong: 0,
        _Level.Session: session_ts,
        _Level.Bounded: BOUNDED_TS,
        _Level.Eventually: EVENTUALLY_TS,
    }.get(lv, kwargs.get("guarantee_timestamp", EVENTUALLY_TS))
    return {"guarantee_timestamp": ts, "consistency_level": lv, "use_default_consistency": False}


# --- small operations ---------------------------------------------------------------------------


def simple(method: str, request: Any, *, idempotent: bool = True) -> Op:
    """One RPC whose reply is only a status."""
    yield Call(method, request, idempotent=idempotent)


def get_schema(state: State, name: str, *, refresh: bool = False) -> Op:
    key = (state.db_name, name)
    if not refresh and key in state.schemas:
        return state.schemas[key]
    req = milvus_pb2.DescribeCollectionRequest(collection_name=name)
    resp = yield Call("DescribeCollection", req)
    info = SchemaInfo.from_describe(resp)
    state.schemas[key] = info
    return info


def describe_collection(state: State, name: str) -> Op:
    req = milvus_pb2.DescribeCollectionRequest(collection_name=name)
    resp = yield Call("DescribeCollection", req)
    state.schemas[(state.db_name, name)] = SchemaInfo.from_describe(resp)
    return describe_dict(resp)


def has_collection(name: str) -> Op:
    req = milvus_pb2.DescribeCollectionRequest(collection_name=name)
    resp = yield Call("DescribeCollection", req, check=False)
    if is_success(resp.status):
        return True
    if resp.status.code == 100 or resp.status.error_code == common_pb2.CollectionNotExists:
        return False
    raise error_from_status(resp.status)


def list_collections() -> Op:
    resp = yield Call("ShowCollections", milvus_pb2.ShowCollectionsRequest())
    return list(resp.collection_names)


def drop_collection(state: State, name: str) -> Op:
    state.schemas.pop((state.db_name, name), None)
    yield Call("DropCollection", milvus_pb2.DropCollectionRequest(collection_name=name))


def rename_collection(state: State, old: str, new: str, target_db: str = "") -> Op:
    state.schemas.pop((state.db_name, old), None)
    req = milvus_pb2.RenameCollectionRequest(oldName=old, newName=new, newDBName=target_db or "")
    yield Call("RenameCollection", req, idempotent=False)


def create_collection(
    state: State,
    collection_name: str,
    dimension: int | None = None,
    primary_field_name: str = "id",
    id_type: str = "int",
    vector_field_name: str = "vector",
    metric_type: str = "COSINE",
    auto_id: bool = False,
    schema: Any = None,
    index_params: Any = None,
    **kwargs: Any,
) -> Op:
    """Quick setup (``dimension``: create, AUTOINDEX, load) or an explicit ``schema``."""
    quick = schema is None
    if quick:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension <= 0:
            raise InvalidArgument(f"dimension must be a positive int, got {dimension!r}")
        schema = CollectionSchema(
            auto_id=auto_id, enable_dynamic_field=kwargs.get("enable_dynamic_field", True)
        )
        if id_type in ("int", DataType.INT64):
            schema.add_field(primary_field_name, DataType.INT64, is_primary=True)
        elif id_type in ("string", "str", DataType.VARCHAR):
            schema.add_field(
                primary_field_name,
                DataType.VARCHAR,
                is_primary=True,
                max_length=kwargs.get("max_length", 65535),
            )
        else:
            raise InvalidArgument(f"id_type must be 'int' or 'string', got {id_type!r}")
        schema.add_field(vector_field_name, DataType.FLOAT_VECTOR, dim=dimension)
        index_params = IndexParams()
        index_params.add_index(vector_field_name, index_type="AUTOINDEX", metric_type=metric_type)
    req = milvus_pb2.CreateCollectionRequest(
        collection_name=collection_name,
        schema=schema_proto(schema, collection_name).SerializeToString(),
        consistency_level=level_value(kwargs.get("consistency_level", "Bounded")),
    )
    shards = kwargs.get("num_shards", kwargs.get("shards_num"))
    if shards is not None:
        req.shards_num = int(shards)
    if kwargs.get("num_partitions") is not None:
        req.num_partitions = int(kwargs["num_partitions"])
    for k, v in (kwargs.get("properties") or {}).items():
        req.properties.append(common_pb2.KeyValuePair(key=str(k), value=str(v)))
    state.schemas.pop((state.db_name, collection_name), None)
    yield Call("CreateCollection", req, idempotent=False)
    if index_params:
        yield from create_index(collection_name, index_params)
        yield from load_collection(collection_name)


# --- partitions and databases ---------------------------------------------------------------------


def has_partition(collection: str, partition: str) -> Op:
    req = milvus_pb2.HasPartitionRequest(collection_name=collection, partition_name=partition)
    resp = yield Call("HasPartition", req)
    return resp.value


def list_partitions(collection: str) -> Op:
    req = milvus_pb2.ShowPartitionsRequest(collection_name=collection)
    resp = yield Call("ShowPartitions", req)
    return list(resp.partition_names)


def list_databases() -> Op:
    resp = yield Call("ListDatabases", milvus_pb2.ListDatabasesRequest())
    return list(resp.db_names)


def describe_database(name: str) -> Op:
    resp = yield Call("DescribeDatabase", milvus_pb2.DescribeDatabaseRequest(db_name=name))
    out: dict[str, Any] = {"name": resp.db_name}
    out.update({p.key: p.value for p in resp.properties})
    return out


def create_database(name: str, properties: dict | None = None) -> Op:
    req = milvus_pb2.CreateDatabaseRequest(db_name=name)
    for k, v in (properties or {}).items():
        req.properties.append(common_pb2.KeyValuePair(key=str(k), value=str(v)))
    yield Call("CreateDatabase", req, idempotent=False)


# --- writes ---------------------------------------------------------------------------------------


def _names_of(name: Any, what: str) -> list[str]:
    if name is None:
        return []
    if isinstance(name, str):
        return [name] if name else []
    if isinstance(name, (list, tuple)) and all(isinstance(n, str) for n in name):
        return list(name)
    raise InvalidArgument(f"{what} must be a string or a list of strings, got {name!r}")


def write(
    state: State,
    collection: str,
    data: Any,
    partition_name: str | None,
    *,
    upsert: bool,
) -> Op:
    """Insert or upsert: encode against the cached schema; re-describe once on mismatch."""
    if isinstance(data, list) and not data:
        return {"upsert_count" if upsert else "insert_count": 0, "ids": []}
    for attempt in (0, 1):
        info = yield from get_schema(state, collection, refresh=attempt > 0)
        fields_data, n = columns.encode_insert(data, info, upsert=upsert)
        cls = milvus_pb2.UpsertRequest if upsert else milvus_pb2.InsertRequest
        req = cls(
            collection_name=collection,
            partition_name=partition_name or "",
            num_rows=n,
            schema_timestamp=info.update_timestamp,
        )
        req.fields_data.extend(fields_data)
        try:
            resp = yield Call("Upsert" if upsert else "Insert", req, idempotent=False)
        except SchemaMismatch:
            state.schemas.pop((state.db_name, collection), None)
            if attempt:
                raise
            continue
        state.saw_write(resp.timestamp)
        ids = _ids(resp.IDs)
        if upsert:
            return {"upsert_count": resp.upsert_cnt, "cost": _cost(resp), "ids": ids}
        return {"insert_count": resp.insert_cnt, "ids": ids, "cost": _cost(resp)}
    raise AssertionError("unreachable")


def _cost(resp: Any) -> int:
    """The ``cost`` pymilvus reports (the server's ``report_value``, else 0)."""
    return int(resp.status.extra_info.get("report_value", 0) or 0)


def _ids(ids: schema_pb2.IDs) -> list:
    if ids.HasField("str_id"):
        return list(ids.str_id.data)
    return list(ids.int_id.data)


def pk_expr(info: SchemaInfo, ids: Any) -> str:
    """``pk in [..]`` for a list of primary keys (strings quoted as JSON strings)."""
    if not isinstance(ids, (list, tuple)):
        ids = list(ids) if hasattr(ids, "__iter__") and not isinstance(ids, str) else [ids]
    pk = info.primary
    if pk.dtype == DataType.VARCHAR:
        if not all(isinstance(i, str) for i in ids):
            raise InvalidArgument(f"primary key {pk.name!r} is VARCHAR: ids must be strings")
        return f"{pk.name} in [{', '.join(orjson.dumps(i).decode() for i in ids)}]"
    try:
        values = [int(i) for i in ids if not isinstance(i, (bool, str))]
    except (TypeError, ValueError):
        values = []
    if len(values) != len(ids):
        raise InvalidArgument(f"primary key {pk.name!r} is INT64: ids must be integers")
    return f"{pk.name} in [{', '.join(map(str, values))}]"


def delete(
    state: State,
    collection: str,
    ids: Any = None,
    filter: str | None = None,
    partition_name: str | None = None,
    **kwargs: Any,
) -> Op:
    if ids is not None and filter:
        raise InvalidArgument("pass either ids or filter to delete, not both")
    if ids is not None:
        if isinstance(ids, (int, str)):
            ids = [ids]
        if len(ids) == 0:
            return {"delete_count": 0}
        info = yield from get_schema(state, collection)
        expr = pk_expr(info, ids)
    elif isinstance(filter, str) and filter:
        expr = filter
    else:
        raise InvalidArgument("delete needs ids or a non-empty filter string")
    req = milvus_pb2.DeleteRequest(
        collection_name=collection, partition_name=partition_name or "", expr=expr
    )
    _template_values(req.expr_template_values, kwargs.get("filter_params"))
    resp = yield Call("Delete", req, idempotent=False)
    state.saw_write(resp.timestamp)
    return {"delete_count": resp.delete_cnt, "cost": _cost(resp)}


def _template_values(target: Any, params: dict | None) -> None:
    for key, value in (params or {}).items():
        target[key].CopyFrom(_template_value(value))


def _template_value(value: Any) -> schema_pb2.TemplateValue:
    tv = schema_pb2.TemplateValue()
    if isinstance(value, bool):
        tv.bool_val = value
    elif isinstance(value, int):
        tv.int64_val = value
    elif isinstance(value, float):
        tv.float_val = value
    elif isinstance(value, str):
        tv.string_val = value
    elif isinstance(value, (list, tuple)):
        tv.array_val.CopyFrom(_template_array(list(value)))
    else:
        raise InvalidArgument(f"unsupported filter_params value {value!r}")
    return tv


def _template_array(values: list) -> schema_pb2.TemplateArrayValue:
    arr = schema_pb2.TemplateArrayValue()
    if all(isinstance(v, bool) for v in values):
        arr.bool_data.data.extend(values)
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        arr.long_data.data.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        arr.double_data.data.extend(float(v) for v in values)
    elif all(isinstance(v, str) for v in values):
        arr.string_data.data.extend(values)
    else:
        arr.json_data.data.extend(orjson.dumps(v) for v in values)
    return arr


def flush(collection: str) -> Op:
    resp = yield Call("Flush", milvus_pb2.FlushRequest(collection_names=[collection]))
    seg_ids = list(resp.coll_segIDs[collection].data) if collection in resp.coll_segIDs else []
    flush_ts = resp.coll_flush_ts.get(collection, 0)
    req = milvus_pb2.GetFlushStateRequest(
        segmentIDs=seg_ids, flush_ts=flush_ts, collection_name=collection
    )
    while True:
        state = yield Call("GetFlushState", req)
        if state.flushed:
            return None
        yield Sleep(POLL_INTERVAL)


# --- reads ----------------------------------------------------------------------------------------


def query(
    state: State,
    collection: str,
    filter: str = "",
    output_fields: list[str] | None = None,
    ids: Any = None,
    partition_names: list[str] | None = None,
    **kwargs: Any,
) -> Op:
    if filter and ids is not None:
        raise InvalidArgument("pass either ids or filter to query, not both")
    if filter and not isinstance(filter, str):
        raise InvalidArgument(f"filter must be a string, got {type(filter).__name__}")
    if ids is not None:
        if isinstance(ids, (int, str)):
            ids = [ids]
        if len(ids) == 0:
            return []
        info = yield from get_schema(state, collection)
        filter = pk_expr(info, ids)
    if output_fields is not None and not isinstance(output_fields, list):
        raise InvalidArgument("output_fields must be a list")
    req = milvus_pb2.QueryRequest(
        collection_name=collection,
        expr=filter or "",
        output_fields=output_fields or ["*"],
        partition_names=_names_of(partition_names, "partition_names"),
        **consistency(state, kwargs),
    )
    for key in ("limit", "offset"):
        if kwargs.get(key) is not None:
            req.query_params.append(common_pb2.KeyValuePair(key=key, value=str(kwargs[key])))
    _template_values(req.expr_template_values, kwargs.get("filter_params"))
    resp = yield Call("Query", req, check=False)
    if common_pb2.EmptyCollection in (resp.status.code, resp.status.error_code):
        return []
    check_reply(Call("Query", req), resp)
    return columns.query_rows(resp.fields_data, resp.output_fields)


def search(
    state: State,
    collection: str,
    data: Any,
    filter: str = "",
    limit: int = 10,
    output_fields: list[str] | None = None,
    search_params: dict | None = None,
    partition_names: list[str] | None = None,
    anns_field: str | None = None,
    output_type: str | None = None,
    **kwargs: Any,
) -> Op:
    if output_type not in (None, "numpy", "arrow"):
        raise InvalidArgument(f"output_type must be None, 'numpy' or 'arrow', not {output_type!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise InvalidArgument(f"limit must be a positive int, got {limit!r}")
    vectors = columns.query_vectors(data)
    req = milvus_pb2.SearchRequest(
        collection_name=collection,
        dsl=filter or "",
        dsl_type=common_pb2.DslType.BoolExprV1,
        partition_names=_names_of(partition_names, "partition_names"),
        output_fields=output_fields or [],
        nq=len(vectors),
        placeholder_group=columns.placeholder_group(vectors),
        **consistency(state, kwargs),
    )
    req.search_params.extend(
        common_pb2.KeyValuePair(key=k, value=v)
        for k, v in _search_params(limit, search_params or {}, anns_field, kwargs).items()
    )
    _template_values(req.expr_template_values, kwargs.get("filter_params"))
    resp = yield Call("Search", req)
    if output_type == "numpy":
        return columns.search_numpy(resp.results, limit)
    if output_type == "arrow":
        return columns.search_arrow(resp.results)
    return columns.search_hits(resp.results)


def _search_params(
    limit: int, param: dict, anns_field: str | None, kwargs: dict[str, Any]
) -> dict[str, str]:
    """The SearchRequest key/value list: plain ``str()`` values except JSON ``params``."""
    param = dict(param)
    inner = dict(param.get("params") or {})
    if "offset" in kwargs and "offset" in param:
        raise InvalidArgument("offset given both as an argument and in search_params")
    offset = kwargs.get("offset") or param.get("offset")
    out: dict[str, str] = {
        "topk": str(limit),
        "round_decimal": str(kwargs.get("round_decimal", -1)),
        "ignore_growing": str(bool(param.get("ignore_growing", kwargs.get("ignore_growing")))),
    }
    if offset is not None:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidArgument(f"offset must be a non-negative int, got {offset!r}")
        out["offset"] = str(offset)
    if param.get("metric_type") is not None:
        out["metric_type"] = str(param["metric_type"])
    if anns_field:
        out["anns_field"] = anns_field
    for k, v in param.items():
        if k == "params":
            continue
        if k in inner and inner[k] != v:
            raise InvalidArgument(f"ambiguous search parameter {k!r}: {v!r} vs {inner[k]!r}")
        inner.setdefault(k, v)
    out["params"] = orjson.dumps(inner).decode()
    return out


# --- indexes and load -----------------------------------------------------------------------------


def create_index(collection: str, index_params: Any) -> Op:
    specs = index_specs(index_params)
    if not specs:
        raise InvalidArgument("index_params is empty, no index can be created")
    for spec in specs:
        req = milvus_pb2.CreateIndexRequest(
            collection_name=collection, field_name=spec.field_name, index_name=spec.index_name
        )
        for k, v in spec.configs.items():
            if v is not None:
                value = orjson.dumps(v).decode() if isinstance(v, dict) else str(v)
                req.extra_params.append(common_pb2.KeyValuePair(key=str(k), value=value))
        yield Call("CreateIndex", req, idempotent=False)
        ts = yield Call("AllocTimestamp", milvus_pb2.AllocTimestampRequest())
        yield from _wait_index(collection, spec.index_name, spec.field_name, ts.timestamp)


def _wait_index(collection: str, index_name: str, field_name: str, ts: int) -> Op:
    req = milvus_pb2.DescribeIndexRequest(
        collection_name=collection, index_name=index_name, timestamp=ts
    )
    while True:
        resp = yield Call("DescribeIndex", req)
        descs = [d for d in resp.index_descriptions if len(resp.index_descriptions) == 1]
        descs = descs or [d for d in resp.index_descriptions if d.field_name == field_name]
        if not descs:
            raise InvalidArgument(f"index {index_name!r} on {field_name!r} is ambiguous")
        if descs[0].state == common_pb2.IndexState.Finished:
            return
        if descs[0].state == common_pb2.IndexState.Failed:
            raise CanopyError(f"index build failed: {descs[0].index_state_fail_reason}")
        yield Sleep(POLL_INTERVAL)


def list_indexes(collection: str, field_name: str = "") -> Op:
    req = milvus_pb2.DescribeIndexRequest(collection_name=collection)
    resp = yield Call("DescribeIndex", req, check=False)
    if resp.status.code == 700 or resp.status.error_code == common_pb2.IndexNotExist:
        return []
    check_reply(Call("DescribeIndex", req), resp)
    return [
        d.index_name
        for d in resp.index_descriptions
        if not field_name or d.field_name == field_name
    ]


def describe_index(collection: str, index_name: str) -> Op:
    req = milvus_pb2.DescribeIndexRequest(collection_name=collection, index_name=index_name)
    resp = yield Call("DescribeIndex", req, check=False)
    if resp.status.code == 700 or resp.status.error_code == common_pb2.IndexNotExist:
        return None
    check_reply(Call("DescribeIndex", req), resp)
    if len(resp.index_descriptions) != 1:
        raise InvalidArgument(f"index name {index_name!r} is ambiguous")
    d = resp.index_descriptions[0]
    info: dict[str, Any] = {kv.key: kv.value for kv in d.params}
    info["field_name"] = d.field_name
    info["index_name"] = d.index_name
    if info.get("params"):
        info["params"] = orjson.loads(info["params"])
    info["total_rows"] = d.total_rows
    info["indexed_rows"] = d.indexed_rows
    info["pending_index_rows"] = d.pending_index_rows
    info["state"] = common_pb2.IndexState.Name(d.state)
    return info


def drop_index(collection: str, index_name: str) -> Op:
    req = milvus_pb2.DropIndexRequest(collection_name=collection, index_name=index_name)
    yield Call("DropIndex", req)


def load_collection(collection: str, replica_number: int | None = None) -> Op:
    req = milvus_pb2.LoadCollectionRequest(collection_name=collection)
    if replica_number:
        req.replica_number = replica_number
    yield Call("LoadCollection", req)
    yield from _wait_loaded(collection, [])


def load_partitions(collection: str, partition_names: Any) -> Op:
    names = _names_of(partition_names, "partition_names")
    req = milvus_pb2.LoadPartitionsRequest(collection_name=collection, partition_names=names)
    yield Call("LoadPartitions", req)
    yield from _wait_loaded(collection, names)


def _wait_loaded(collection: str, partitions: list[str]) -> Op:
    req = milvus_pb2.GetLoadingProgressRequest(
        collection_name=collection, partition_names=partitions
    )
    while True:
        resp = yield Call("GetLoadingProgress", req)
        if resp.progress >= 100:
            return
        yield Sleep(POLL_INTERVAL)


def get_load_state(collection: str, partition_name: str = "") -> Op:
    names = [partition_name] if partition_name else []
    req = milvus_pb2.GetLoadStateRequest(collection_name=collection, partition_names=names)
    resp = yield Call("GetLoadState", req)
    state = LoadState(resp.state)
    out: dict[str, Any] = {"state": state}
    if state == LoadState.Loading:
        prog = yield Call(
            "GetLoadingProgress",
            milvus_pb2.GetLoadingProgressRequest(collection_name=collection, partition_names=names),
        )
        out["progress"] = prog.progress
    return out


def get_collection_stats(collection: str) -> Op:
    req = milvus_pb2.GetCollectionStatisticsRequest(collection_name=collection)
    resp = yield Call("GetCollectionStatistics", req)
    stats: dict[str, Any] = {kv.key: kv.value for kv in resp.stats}
    if "row_count" in stats:
        stats["row_count"] = int(stats["row_count"])
    return stats


def get_server_version() -> Op:
    resp = yield Call("GetVersion", milvus_pb2.GetVersionRequest())
    return resp.version
