"""The proxy's Query (also what ``get`` and ``count(*)`` send): parse, scatter, reduce, encode.

Contract of :meth:`QueryHandlers.query`:

* The collection (or the named partitions) must be loaded (101/201). Only growing data is read
  today (rows in memory on the streaming nodes; flushed segments wait for query nodes).
* ``expr`` is the filter (``get`` sends ``<pk> in [..]``), ``expr_template_values`` its
  parameters; an empty ``expr`` needs a ``limit`` ("empty expression should be used with
  limit", 1100) unless the query is a count.
* ``query_params``: ``limit`` and ``offset`` (``offset + limit <= 16384``); others are ignored.
* ``output_fields``: the primary key always comes back, first; the rest follow
  :func:`~cluster.proxy.reads.resolve_outputs`. ``["count(*)"]`` (alone, without pagination)
  answers one Int64 column named ``count(*)``: the number of matching rows, summed over the
  streaming nodes (their vchannels hold disjoint keys).
* Consistency as for Search. Each node answers its matching rows in key order, at most
  ``offset + limit``; :func:`cluster.results.reduce_query` keeps the newest version per key,
  orders by key and cuts ``offset``/``limit``. Rows come back in primary-key order.
* Reply: ``fields_data`` (every output column, empty when nothing matched), ``output_fields``,
  ``primary_field_name``, ``session_ts``.

:meth:`QueryHandlers.primary_keys` is the same query of the primary key for a delete by filter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import pyarrow as pa
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.interfaces import COUNT_COLUMN, GrowingQuery, StreamingService, visible_ts_of
from cluster.milvus.columns import arrow_schema, encode_field_data
from cluster.milvus.status import ParameterInvalid, ok_status
from cluster.proxy.collections import Collections
from cluster.proxy.reads import (
    ReadSupport,
    resolve_outputs,
    resolve_partitions,
    template_values,
)
from cluster.proxy.routing import StreamingRouter, scatter
from cluster.results import reduce_query
from cluster.schema import DataType

__all__ = ["MAX_QUERY_WINDOW", "QueryHandlers", "parse_query_params"]

MAX_QUERY_WINDOW = 16384  # Milvus quotaAndLimits.limits.maxQueryResultWindow


def _int(raw: dict[str, str], key: str) -> int | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ParameterInvalid(f"{key} [{value}] is invalid, should be an integer") from None


def parse_query_params(pairs: Iterable[common_pb2.KeyValuePair]) -> tuple[int | None, int]:
    """``(limit, offset)`` of ``query_params`` (limit None: no limit)."""
    raw = {kv.key: kv.value for kv in pairs}
    limit, offset = _int(raw, "limit"), _int(raw, "offset") or 0
    if offset < 0:
        raise ParameterInvalid(f"offset [{offset}] is invalid, should be gte than 0")
    if limit is not None:
        if limit <= 0:
            raise ParameterInvalid(f"limit [{limit}] is invalid, should be greater than 0")
        if offset + limit > MAX_QUERY_WINDOW:
            raise ParameterInvalid(
                f"invalid max query result window, (offset+limit) should be in range "
                f"[1, {MAX_QUERY_WINDOW}], but got {offset + limit}"
            )
    return limit, offset


def _count_reply(name: str, total: int, session_ts: int) -> milvus_pb2.QueryResults:
    fd = schema_pb2.FieldData(type=int(DataType.INT64), field_name=COUNT_COLUMN)
    fd.scalars.long_data.data.append(total)
    return milvus_pb2.QueryResults(
        status=ok_status(),
        fields_data=[fd],
        collection_name=name,
        output_fields=[COUNT_COLUMN],
        session_ts=session_ts,
    )


class QueryHandlers:
    """Query over the streaming nodes (see the module docstring). Stateless."""

    def __init__(
        self,
        router: StreamingRouter,
        collections: Collections,
        reads: ReadSupport,
        *,
        read_wait: float = 10.0,
    ) -> None:
        self.router = router
        self.collections = collections
        self.reads = reads
        self.read_wait = read_wait

    async def query(self, req: milvus_pb2.QueryRequest, db: str) -> milvus_pb2.QueryResults:
        coll = await self.collections.get(db, req.collection_name)
        schema = coll.schema
        partition_ids = resolve_partitions(coll, req.partition_names)
        limit, offset = parse_query_params(req.query_params)
        requested = [name.strip() for name in req.output_fields]
        count = COUNT_COLUMN in requested
        if count:
            if len(set(requested)) > 1:
                raise ParameterInvalid(
                    f"{COUNT_COLUMN} cannot be combined with other output fields: {requested}"
                )
            if limit is not None or offset:
                raise ParameterInvalid("count entities with pagination is not allowed")
        expr = req.expr.strip()
        if not expr and limit is None and not count:
            raise ParameterInvalid("empty expression should be used with limit")
        pk = schema.primary_field.name
        outputs = resolve_outputs(schema, [] if count else requested, always=[pk])
        templates = template_values(req.expr_template_values)
        await self.reads.check_loaded(db, coll, req.partition_names)
        guarantee = await self.reads.guarantee_ts(
            coll, req.use_default_consistency, req.consistency_level, req.guarantee_timestamp
        )
        request = GrowingQuery(
            collection_id=coll.info.collection_id,
            vchannels=(),
            partition_ids=partition_ids,
            filter=expr,
            template_values=templates,
            output_fields=outputs.stored,
            limit=None if limit is None else offset + limit,
            count=count,
            guarantee_ts=guarantee,
            wait_timeout=self.read_wait,
        )

        async def ask(service: StreamingService, vchannels: tuple[str, ...]) -> pa.Table:
            return await service.query(replace(request, vchannels=vchannels))

        tables = await scatter(self.router, coll.info.vchannels, ask)
        session_ts = min((visible_ts_of(t) for t in tables), default=guarantee)
        if count:
            total = sum(t.column(COUNT_COLUMN)[0].as_py() for t in tables)
            return _count_reply(coll.info.name, total, session_ts)
        table = reduce_query(tables, pk, offset=offset, limit=limit) if tables else None
        if table is None or table.num_rows == 0:
            table = arrow_schema(schema).empty_table()
        fields_data = encode_field_data(table, outputs.fields, outputs.dynamic_keys)
        return milvus_pb2.QueryResults(
            status=ok_status(),
            fields_data=fields_data,
            collection_name=coll.info.name,
            output_fields=list(outputs.names),
            primary_field_name=pk,
            session_ts=session_ts,
        )

    async def primary_keys(self, req: milvus_pb2.DeleteRequest, db: str) -> np.ndarray | pa.Array:
        """The keys of the rows a delete's filter selects (Milvus' "complex delete"): a query of
        the primary key over ``req.partition_name`` (every partition when empty) at the
        request's consistency level, so it needs the collection loaded like any query. An int64
        numpy array or an Arrow string array, as :func:`~cluster.proxy.pk_expr.parse_pk_list`."""
        coll = await self.collections.get(db, req.collection_name)
        pk = coll.schema.primary_field
        query = milvus_pb2.QueryRequest(
            collection_name=req.collection_name,
            expr=req.expr,
            output_fields=[pk.name],
            partition_names=[req.partition_name] if req.partition_name else [],
            consistency_level=req.consistency_level,
        )
        for key, value in req.expr_template_values.items():
            query.expr_template_values[key].CopyFrom(value)
        column = (await self.query(query, db)).fields_data[0].scalars
        if pk.dtype == DataType.INT64:
            return np.asarray(column.long_data.data, dtype=np.int64)
        return pa.array(list(column.string_data.data), pa.string())
