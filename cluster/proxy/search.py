"""The proxy's Search: request parsing, scatter to the streaming nodes, reduce, reply encoding.

Contract of :meth:`SearchHandlers.search`:

* The collection (or the named partitions) must be loaded (101/201, see
  :mod:`cluster.proxy.reads`). Only growing data is searched today -- rows in memory on the
  streaming nodes; rows whose segments were flushed are served by query nodes, which do not
  exist yet.
* ``search_params`` as pymilvus sends them (:func:`parse_search_params`): ``topk`` (1..16384),
  ``offset`` (``offset + topk <= 16384``), ``round_decimal`` (-1, or 0..6 decimals),
  ``metric_type``, ``anns_field``, ``params`` (JSON: ``ef``, ``nprobe``, ... are accepted and
  ignored by exact search; ``radius`` keeps only hits strictly better than it; ``range_filter``,
  grouping and search iterators answer 3000). ``anns_field`` may be omitted when the schema has
  one vector field. The metric must equal the metric of the field's index when it has one
  (Milvus: ``metric type not match``); without a metric the index's is used (COSINE without
  an index).
* Query vectors: ``placeholder_group`` is a serialized ``PlaceholderGroup`` with one
  ``FloatVector`` placeholder of ``nq`` values, each ``dim`` little-endian float32s, decoded
  with ``np.frombuffer`` straight from the bytes. Or ``ids`` (search by primary keys): the
  vectors of those keys are read first (a query at the same guarantee timestamp), in order.
* ``dsl`` is the filter, ``expr_template_values`` its ``{name}`` parameters; ``output_fields``
  follow :func:`~cluster.proxy.reads.resolve_outputs`; ``partition_names`` restrict the search.
* The consistency level gives the guarantee timestamp (:mod:`cluster.proxy.reads`); every
  streaming node owning a vchannel answers its top ``offset + topk`` per query and the partial
  results are merged by :func:`cluster.results.reduce_search` (newest version per primary key,
  best first by the metric, ``offset`` applied), so sealed-segment results of query nodes will
  merge the same way.
* Reply: ``SearchResultData`` with ``num_queries``, ``top_k``, ``topks``, flat ``ids`` and
  ``scores`` (rounded when asked), ``fields_data`` aligned with the hits (dynamic keys inside
  ``$meta``), ``output_fields``, ``primary_field_name``; ``session_ts`` is the smallest
  ``visible_ts`` the nodes read at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.interfaces import (
    CoordinatorService,
    GrowingQuery,
    GrowingSearch,
    GrowingSearchResult,
    StreamingService,
)
from cluster.milvus.columns import arrow_schema, decode_ids, encode_field_data, encode_ids
from cluster.milvus.status import NotSupportedYet, ParameterInvalid, ok_status
from cluster.proxy.collections import Collection, Collections
from cluster.proxy.reads import (
    Outputs,
    ReadSupport,
    resolve_outputs,
    resolve_partitions,
    template_values,
)
from cluster.proxy.routing import StreamingRouter, scatter
from cluster.results import PartialResult, reduce_query, reduce_search
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.search import Metric

__all__ = [
    "DEFAULT_METRIC",
    "MAX_NQ",
    "MAX_TOPK",
    "SearchHandlers",
    "SearchParams",
    "decode_placeholders",
    "encode_search_results",
    "parse_search_params",
]

MAX_TOPK = 16384  # Milvus quotaAndLimits.limits.topK (also offset + topk)
MAX_NQ = 16384  # Milvus quotaAndLimits.limits.nq
DEFAULT_METRIC = "COSINE"  # AUTOINDEX's metric
_SCORES_TAG = b"\x22"  # SearchResultData.scores: field 4, length-delimited (packed floats)
_UNSUPPORTED_KEYS = {
    "group_by_field": "search with group_by_field",
    "group_by_fields": "search with group_by_fields",
    "search_iter_v2": "search iterators",
    "iterator": "search iterators",
    "order_by_fields": "search with order_by_fields",
    "json_path": "search with json_path",
}


@dataclass(frozen=True)
class SearchParams:
    """``search_params`` of a SearchRequest, parsed (see the module docstring)."""

    topk: int
    offset: int = 0
    round_decimal: int = -1
    metric_type: str | None = None
    anns_field: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    radius: float | None = None


def _int_param(raw: dict[str, str], key: str, default: int | None = None) -> int:
    value = raw.get(key)
    if value is None or value == "":
        if default is None:
            raise ParameterInvalid(f"{key} not found in search_params")
        return default
    try:
        return int(value)
    except ValueError:
        raise ParameterInvalid(f"{key} [{value}] is invalid, should be an integer") from None


def parse_search_params(pairs: Iterable[common_pb2.KeyValuePair]) -> SearchParams:
    """Validate and parse ``search_params`` (key/value strings; ``params`` is JSON)."""
    raw = {kv.key: kv.value for kv in pairs}
    for key, what in _UNSUPPORTED_KEYS.items():
        if raw.get(key) not in (None, "", "False", "false"):
            raise NotSupportedYet(what)
    topk = _int_param(raw, "topk")
    if not 1 <= topk <= MAX_TOPK:
        raise ParameterInvalid(f"topk [{topk}] is invalid, it should be in range [1, {MAX_TOPK}]")
    offset = _int_param(raw, "offset", 0)
    if offset < 0 or offset + topk > MAX_TOPK:
        raise ParameterInvalid(
            f"(offset+limit) should be in range [1, {MAX_TOPK}], but got {offset + topk}"
        )
    round_decimal = _int_param(raw, "round_decimal", -1)
    if not (round_decimal == -1 or 0 <= round_decimal <= 6):
        raise ParameterInvalid(
            f"round_decimal {round_decimal} is invalid, should be -1 or an integer in range [0, 6]"
        )
    params: dict[str, Any] = {}
    if raw.get("params"):
        try:
            params = json.loads(raw["params"])
        except json.JSONDecodeError as exc:
            raise ParameterInvalid(f"search params is not a JSON object: {exc}") from None
        if not isinstance(params, dict):
            raise ParameterInvalid("search params is not a JSON object")
    for key, what in _UNSUPPORTED_KEYS.items():
        if params.get(key) not in (None, "", False):
            raise NotSupportedYet(what)
    if params.get("range_filter") is not None:
        raise NotSupportedYet("range search with range_filter")
    metric = raw.get("metric_type") or params.get("metric_type") or None
    radius = params.get("radius")
    try:
        radius_value = None if radius is None else float(radius)
    except (TypeError, ValueError):
        raise ParameterInvalid(f"radius [{radius}] is invalid, should be a number") from None
    return SearchParams(
        topk=topk,
        offset=offset,
        round_decimal=round_decimal,
        metric_type=str(metric).upper() if metric else None,
        anns_field=raw.get("anns_field", ""),
        params=params,
        radius=radius_value,
    )


def anns_field_of(schema: CollectionSchema, name: str) -> FieldSchema:
    """The vector field searched: ``name``, or the only vector field when empty."""
    if not name:
        vectors = schema.vector_fields
        if len(vectors) != 1:
            raise ParameterInvalid(
                "multiple anns_fields exist, please specify a anns_field in search_params"
            )
        name = vectors[0].name
    f = schema.get_field(name)
    if f is None or not f.is_vector:
        raise ParameterInvalid(f"failed to get field schema by name: fieldName({name}) not found")
    if f.dtype != DataType.FLOAT_VECTOR:
        raise NotSupportedYet(f"search on {f.dtype.milvus_name} field {name}")
    return f


def decode_placeholders(data: bytes, nq: int, f: FieldSchema) -> np.ndarray:
    """The ``(nq, dim)`` float32 query vectors of a serialized ``PlaceholderGroup``."""
    group = common_pb2.PlaceholderGroup.FromString(data)
    if len(group.placeholders) != 1:
        raise ParameterInvalid(
            f"expected one placeholder in the placeholder group, got {len(group.placeholders)}"
        )
    holder = group.placeholders[0]
    if holder.type != common_pb2.PlaceholderType.FloatVector:
        name = common_pb2.PlaceholderType.Name(holder.type)
        raise NotSupportedYet(f"search with {name} query data on FloatVector field {f.name}")
    values = holder.values
    dim = f.dim or 0
    if nq and len(values) != nq:
        raise ParameterInvalid(f"nq [{nq}] does not match the {len(values)} query vectors")
    if not len(values):
        raise ParameterInvalid("nq [0] is invalid, should be in range [1, 16384]")
    if len(values) > MAX_NQ:
        raise ParameterInvalid(f"nq [{len(values)}] is invalid, should be in range [1, {MAX_NQ}]")
    sizes = set(map(len, values))
    if sizes != {4 * dim}:
        got = min(sizes - {4 * dim}) // 4
        raise ParameterInvalid(
            f"the dim ({got}) of field data({f.name}) is not equal to schema dim ({dim})"
        )
    raw = values[0] if len(values) == 1 else b"".join(values)
    queries = np.frombuffer(raw, dtype="<f4").reshape(len(values), dim)
    if not np.isfinite(queries).all():
        raise ParameterInvalid("query vectors must not contain NaN or Inf")
    return queries


def _packed_floats(values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    n, out = len(raw), bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return _SCORES_TAG + bytes(out) + raw


def encode_search_results(
    hits: PartialResult,
    schema: CollectionSchema,
    outputs: Outputs,
    top_k: int,
    round_decimal: int = -1,
) -> schema_pb2.SearchResultData:
    """``SearchResultData`` of merged hits (see the module docstring)."""
    scores = hits.scores
    if round_decimal >= 0:
        scores = np.round(scores.astype(np.float64), round_decimal)
    data = schema_pb2.SearchResultData(
        num_queries=hits.nq,
        top_k=top_k,
        topks=hits.topks.tolist(),
        output_fields=list(outputs.names),
        primary_field_name=schema.primary_field.name,
    )
    if hits.num_hits:
        data.ids.CopyFrom(encode_ids(hits.pks))
        data.MergeFromString(_packed_floats(scores))
    elif schema.primary_field.dtype == DataType.VARCHAR:
        data.ids.str_id.SetInParent()
    else:
        data.ids.int_id.SetInParent()
    if outputs.stored:
        table = hits.fields
        if table is None or table.num_rows != hits.num_hits:
            table = arrow_schema(schema).empty_table()
        data.fields_data.extend(encode_field_data(table, outputs.fields, outputs.dynamic_keys))
    return data


def _within_radius(hits: PartialResult, radius: float, metric: Metric) -> PartialResult:
    """Only the hits strictly better than ``radius`` (a prefix of each query's hits)."""
    keep = hits.scores > radius if metric.higher_is_better else hits.scores < radius
    if keep.all():
        return hits
    topks = np.bincount(hits.query_of_hits()[keep], minlength=hits.nq).astype(np.int64)
    fields = hits.fields.filter(pa.array(keep)) if hits.fields is not None else None
    return PartialResult(topks, hits.pks[keep], hits.scores[keep], hits.ts[keep], fields)


class SearchHandlers:
    """Search over the streaming nodes (see the module docstring). Stateless."""

    def __init__(
        self,
        coordinator: CoordinatorService,
        catalog: Catalog,
        router: StreamingRouter,
        collections: Collections,
        reads: ReadSupport,
        *,
        read_wait: float = 10.0,
    ) -> None:
        self.coordinator = coordinator
        self.catalog = catalog
        self.router = router
        self.collections = collections
        self.reads = reads
        self.read_wait = read_wait

    async def search(self, req: milvus_pb2.SearchRequest, db: str) -> milvus_pb2.SearchResults:
        coll = await self.collections.get(db, req.collection_name)
        schema = coll.schema
        partition_ids = resolve_partitions(coll, req.partition_names)
        if req.sub_reqs or req.HasField("function_score") or len(req.function_chains):
            raise NotSupportedYet("search with sub-requests, rankers or function chains")
        if req.HasField("search_aggregation"):
            raise NotSupportedYet("search with search_aggregation")
        params = parse_search_params(req.search_params)
        vector = anns_field_of(schema, params.anns_field)
        metric = await self._metric(db, coll, vector, params.metric_type)
        outputs = resolve_outputs(schema, req.output_fields)
        templates = template_values(req.expr_template_values)
        await self.reads.check_loaded(db, coll, req.partition_names)
        guarantee = await self.reads.guarantee_ts(
            coll, req.use_default_consistency, req.consistency_level, req.guarantee_timestamp
        )
        if req.HasField("ids"):
            queries = await self._vectors_of(coll, vector, req.ids, partition_ids, guarantee)
        else:
            queries = decode_placeholders(req.placeholder_group, req.nq, vector)
        request = GrowingSearch(
            collection_id=coll.info.collection_id,
            vchannels=(),
            anns_field=vector.name,
            metric=metric.value,
            k=params.offset + params.topk,
            queries=queries,
            partition_ids=partition_ids,
            filter=req.dsl,
            template_values=templates,
            output_fields=outputs.stored,
            guarantee_ts=guarantee,
            wait_timeout=self.read_wait,
            params=params.params,
        )

        async def ask(service: StreamingService, vchannels: tuple[str, ...]):
            return await service.search(_with_vchannels(request, vchannels))

        parts: list[GrowingSearchResult] = await scatter(self.router, coll.info.vchannels, ask)
        nq = len(queries)
        hits = reduce_search([p.hits for p in parts], nq, metric, params.topk, params.offset)
        if params.radius is not None:
            hits = _within_radius(hits, params.radius, metric)
        data = encode_search_results(hits, schema, outputs, params.topk, params.round_decimal)
        session_ts = min((p.visible_ts for p in parts), default=guarantee)
        return milvus_pb2.SearchResults(
            status=ok_status(),
            results=data,
            collection_name=coll.info.name,
            session_ts=session_ts,
        )

    async def _metric(
        self, db: str, coll: Collection, vector: FieldSchema, requested: str | None
    ) -> Metric:
        """The request's metric, checked against the field's index (see the module
        docstring)."""
        indexes = await self.catalog.list_indexes(db, coll.info.name)
        index = next((i for i in indexes if i.field_id == vector.field_id), None)
        if requested is not None:
            try:
                metric = Metric.parse(requested)
            except ValueError:
                raise NotSupportedYet(f"metric type {requested}") from None
            if index is not None and index.metric_type.upper() != metric.value:
                raise ParameterInvalid(
                    "metric type not match", expected=index.metric_type, actual=metric.value
                )
            return metric
        name = index.metric_type if index is not None else DEFAULT_METRIC
        try:
            return Metric.parse(name)
        except ValueError:
            raise NotSupportedYet(f"metric type {name}") from None

    async def _vectors_of(
        self,
        coll: Collection,
        vector: FieldSchema,
        ids: schema_pb2.IDs,
        partition_ids: tuple[int, ...] | None,
        guarantee: int,
    ) -> np.ndarray:
        """The vectors of the rows with primary keys ``ids`` (search by primary keys)."""
        keys = decode_ids(ids)
        key_list = keys.tolist() if isinstance(keys, np.ndarray) else keys.to_pylist()
        if not key_list:
            raise ParameterInvalid("search by primary keys: no ids given")
        pk = coll.schema.primary_field.name
        request = GrowingQuery(
            collection_id=coll.info.collection_id,
            vchannels=(),
            partition_ids=partition_ids,
            filter=f"{pk} in {json.dumps(key_list)}",
            output_fields=(vector.name,),
            guarantee_ts=guarantee,
            wait_timeout=self.read_wait,
        )

        async def ask(service: StreamingService, vchannels: tuple[str, ...]) -> pa.Table:
            return await service.query(_with_vchannels(request, vchannels))

        tables = await scatter(self.router, coll.info.vchannels, ask)
        found = reduce_query(tables, pk)
        where = {k: i for i, k in enumerate(found.column(pk).to_pylist())}
        missing = [k for k in key_list if k not in where]
        if missing:
            raise ParameterInvalid(f"search by primary keys: ids {missing[:10]} not found")
        rows = (
            found.column(vector.name).combine_chunks().take(pa.array([where[k] for k in key_list]))
        )
        dim = vector.dim or 0
        return rows.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def _with_vchannels(request: Any, vchannels: tuple[str, ...]) -> Any:
    return replace(request, vchannels=vchannels)
