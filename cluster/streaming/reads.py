"""Search and query over in-memory segments: the pure part of a streaming node's reads.

Contract (the I/O -- routing, waiting for the read timestamp -- is the node's):

* :func:`compile_read_filter` compiles a request's filter once, against the node's schema of
  the collection (:mod:`cluster.expr`); None means "every row".
* :func:`filter_mask` evaluates a plan over one segment's stored rows (a snapshot): a filter
  naming primary keys (``pk in [..]``, what ``get`` sends) looks the keys up in the segment's
  ``pk -> row`` index and evaluates the plan over those rows only; any other filter is
  evaluated vectorised over the columns it reads.
* :func:`search_segments` searches each segment exactly (rows visible at ``visible_ts`` and in
  the filter), merges the segments' hits as every source's are merged
  (:func:`cluster.results.select_hits`: newest version per key, best first, top ``k``), and
  reads the output columns of the winners only.
* :func:`query_segments` collects the matching visible rows' keys, keeps the newest version of
  each key in key order (then ``limit``), and reads the output columns of those rows only; or
  counts distinct matching keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.expr import FilterPlan, compile_filter
from cluster.interfaces import COUNT_COLUMN, GrowingQuery, GrowingSearch
from cluster.results import PartialResult, newest_per_key, select_hits
from cluster.schema import CollectionSchema, DataType
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import TS_FIELD

__all__ = [
    "compile_read_filter",
    "filter_mask",
    "query_segments",
    "search_segments",
]


def compile_read_filter(
    expr: str, schema: CollectionSchema, templates: Mapping[str, Any] | None = None
) -> FilterPlan | None:
    """The compiled filter, or None when it selects every row (blank).
    Raises :class:`cluster.expr.ExprError` (code 1100) for a bad expression."""
    if not expr.strip():
        return None
    plan = compile_filter(expr, schema, templates or None)
    return None if plan.always_true else plan


def _plan_columns(plan: FilterPlan, pk: str) -> list[str]:
    """The columns a plan reads, with the primary key (so a table always has its rows)."""
    return sorted(set(plan.fields) | {pk})


def _as_keys(values: Any) -> np.ndarray | pa.Array | list:
    if isinstance(values, np.ndarray | pa.Array | pa.ChunkedArray | list):
        return values
    return list(values)


def filter_mask(
    seg: GrowingSegment, plan: FilterPlan | None, visible_ts: int, pk: str
) -> np.ndarray | None:
    """Bool per stored row of ``seg`` (the rows there are now; later ones count as not
    selected), or None without a plan. A ``pk in [..]`` plan looks keys up in the segment's
    ``pk -> row`` index: build it first on the writer's thread (``seg.latest_rows([])``) when
    this runs in another thread."""
    if plan is None:
        return None
    keys = plan.pk_values()
    if keys is not None:
        n = seg.num_rows  # rows below n are complete (a reader thread may race an append)
        rows = seg.latest_rows(_as_keys(keys))
        rows = np.unique(rows[rows >= 0])
        # a key whose latest row is newer than the read (or still being appended) may have an
        # older visible version: only then evaluate over every row
        if not len(rows) or int(rows[-1]) < n:
            _, row_ts = seg.keys_at(rows)
            if not bool(np.any(row_ts > np.uint64(visible_ts))):
                mask = np.zeros(n, dtype=bool)
                if len(rows):
                    sub = seg.take(rows, _plan_columns(plan, pk))
                    mask[rows] = np.asarray(plan.evaluate(sub), dtype=bool)
                return mask
    return np.asarray(plan.evaluate(seg.columns(_plan_columns(plan, pk))), dtype=bool)


def _gather(
    sources: Sequence[tuple[GrowingSegment, np.ndarray]],
    part: np.ndarray,
    row: np.ndarray,
    columns: list[str],
) -> pa.Table:
    """The ``columns`` of the selected rows (``sources[part[i]]``'s row ``row[i]``), in
    selection order, reading each segment once."""
    tables, positions = [], []
    for i, (seg, offsets) in enumerate(sources):
        at = np.flatnonzero(part == i)
        if len(at):
            tables.append(seg.take(offsets[row[at]], columns))
            positions.append(at)
    table = pa.concat_tables(tables)
    return table.take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))


def search_segments(
    segments: Sequence[GrowingSegment],
    request: GrowingSearch,
    plan: FilterPlan | None,
    visible_ts: int,
    schema: CollectionSchema,
    stored: pa.Schema,
) -> PartialResult:
    """The request's top ``k`` over ``segments`` at ``visible_ts`` (see the module
    docstring); ``stored`` is the segments' Arrow schema (for an empty result's columns)."""
    queries = np.asarray(request.queries, dtype=np.float32)
    nq = len(queries)
    pk = schema.primary_field.name
    columns = list(request.output_fields)
    parts: list[PartialResult] = []
    sources: list[tuple[GrowingSegment, np.ndarray]] = []
    for seg in segments:
        if not seg.num_rows:
            continue
        mask = filter_mask(seg, plan, visible_ts, pk)
        if mask is not None and not mask.any():
            continue
        offsets, distances = seg.search_offsets(
            queries, request.anns_field, request.k, request.metric, visible_ts, mask
        )
        if offsets.shape[1] == 0:
            continue
        flat = offsets.ravel()
        pks, ts = seg.keys_at(flat)
        topks = np.full(nq, offsets.shape[1], dtype=np.int64)
        parts.append(PartialResult(topks, pks, distances.ravel(), ts))
        sources.append((seg, flat))
    empty_fields = stored.empty_table().select(columns) if columns else None
    if not parts:
        int_pks = schema.primary_field.dtype == DataType.INT64
        fields = empty_fields.schema if empty_fields is not None else None
        return PartialResult.empty(nq, int_pks=int_pks, fields=fields)
    sel = select_hits(parts, nq, request.metric, request.k)
    flat = np.cumsum([0, *(p.num_hits for p in parts)])[sel.part] + sel.row
    pks = np.concatenate([p.pks for p in parts])[flat]
    scores = np.concatenate([p.scores for p in parts])[flat]
    ts = np.concatenate([p.ts for p in parts])[flat]
    fields = None
    if columns:
        fields = _gather(sources, sel.part, sel.row, columns) if len(flat) else empty_fields
    return PartialResult(sel.topks, pks, scores, ts, fields)


def query_segments(
    segments: Sequence[GrowingSegment],
    request: GrowingQuery,
    plan: FilterPlan | None,
    visible_ts: int,
    schema: CollectionSchema,
    stored: pa.Schema,
) -> pa.Table:
    """The request's rows (or count) over ``segments`` at ``visible_ts``: the primary key,
    ``request.output_fields`` (stored names) and ``_ts``, in key order, newest version per
    key, at most ``limit`` rows."""
    pk = schema.primary_field.name
    sources: list[tuple[GrowingSegment, np.ndarray]] = []
    keys: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    for seg in segments:
        if not seg.num_rows:
            continue
        mask = filter_mask(seg, plan, visible_ts, pk)
        if mask is not None and not mask.any():
            continue
        offsets = seg.visible_offsets(visible_ts, mask)
        if len(offsets):
            pks, ts = seg.keys_at(offsets)
            sources.append((seg, offsets))
            keys.append(pks)
            stamps.append(ts)
    if request.count:
        if len(keys) <= 1:
            total = sum(len(k) for k in keys)
        else:
            total = pc.count_distinct(pa.chunked_array([pa.array(k) for k in keys])).as_py()
        return pa.table({COUNT_COLUMN: pa.array([total], pa.int64())})
    columns = [pk, *(c for c in request.output_fields if c not in (pk, TS_FIELD)), TS_FIELD]
    if not sources:
        return stored.empty_table().select(columns)
    part = np.concatenate([np.full(len(k), i, np.int64) for i, k in enumerate(keys)])
    row = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys])
    keep = newest_per_key(np.concatenate(keys), np.concatenate(stamps))
    if request.limit is not None:
        keep = keep[: request.limit]
    if not len(keep):
        return stored.empty_table().select(columns)
    return _gather(sources, part[keep], row[keep], columns)
