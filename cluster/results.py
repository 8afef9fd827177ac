"""Partial read results and their reduction: the one shape every source of a search answers
with (a growing segment, a streaming node, later a sealed segment or a query node), and the
merges the streaming node and the proxy apply to them.

Search. A :class:`PartialResult` holds the hits of ``nq`` queries from one source, flat and
query after query (the layout of Milvus' ``SearchResultData``): ``topks[q]`` hits for query
``q``, best first, each with its primary key, score, the row's ``_ts`` (its MVCC version) and,
optionally, output columns in ``fields`` aligned with the hits. Scores follow
:class:`~cluster.streaming.search.Metric`: L2 squared distances (lower is better), IP and
COSINE similarities (higher is better).

:func:`select_hits` / :func:`reduce_search` merge partial results of the same ``nq`` queries:

1. per query, every hit of every part is a candidate;
2. duplicates of a primary key (the same row served by two sources, or an older version of the
   key still visible somewhere) keep the newest version only (largest ``_ts``; a tie keeps the
   better score);
3. the survivors are ordered best first by the metric's direction (ties by primary key, so the
   result is deterministic), and ranks ``offset .. offset + limit - 1`` are kept.

Query. A partial query result is an Arrow table with the primary-key column, ``_ts`` and output
columns; :func:`reduce_query` concatenates partial tables, keeps the newest version of each key
and returns the rows in primary-key order, ``offset``/``limit`` applied.

No Python loop runs over hits or rows: everything is numpy / Arrow compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.streaming.messages import TS_FIELD
from cluster.streaming.search import Metric

__all__ = [
    "HIT_PK",
    "HIT_SCORE",
    "HIT_TS",
    "PartialResult",
    "Selection",
    "newest_per_key",
    "reduce_query",
    "reduce_search",
    "select_hits",
]

HIT_PK = "$pk"
HIT_SCORE = "$score"
HIT_TS = "$ts"
"""Column names of :meth:`PartialResult.to_table` (``$`` keeps them apart from user fields)."""


@dataclass(frozen=True, eq=False)
class PartialResult:
    """Hits of ``nq`` queries from one source (see the module docstring).

    ``topks``: int64 ``(nq,)``; ``pks``: int64, or object (str) for VARCHAR keys; ``scores``:
    float32; ``ts``: uint64 -- the last three ``topks.sum()`` long. ``fields``: output columns,
    one row per hit, or None when none were asked for."""

    topks: np.ndarray
    pks: np.ndarray
    scores: np.ndarray
    ts: np.ndarray
    fields: pa.Table | None = None

    def __post_init__(self) -> None:
        n = int(self.topks.sum()) if len(self.topks) else 0
        if not len(self.pks) == len(self.scores) == len(self.ts) == n:
            raise ValueError(
                f"{n} hits by topks, {len(self.pks)} pks, {len(self.scores)} scores, "
                f"{len(self.ts)} ts"
            )
        if self.fields is not None and self.fields.num_columns and self.fields.num_rows != n:
            raise ValueError(f"{self.fields.num_rows} field rows for {n} hits")

    @property
    def nq(self) -> int:
        return len(self.topks)

    @property
    def num_hits(self) -> int:
        return len(self.pks)

    @staticmethod
    def empty(nq: int, *, int_pks: bool = True, fields: pa.Schema | None = None) -> PartialResult:
        """``nq`` queries without hits."""
        return PartialResult(
            np.zeros(nq, np.int64),
            np.empty(0, np.int64 if int_pks else object),
            np.empty(0, np.float32),
            np.empty(0, np.uint64),
            None if fields is None else fields.empty_table(),
        )

    def query_of_hits(self) -> np.ndarray:
        """The query number of each hit (int64)."""
        return np.repeat(np.arange(self.nq, dtype=np.int64), self.topks)

    def to_table(self) -> pa.Table:
        """The hits as one Arrow table: ``$pk``, ``$score``, ``$ts``, then the fields (the
        wire form; ``topks`` travels beside it)."""
        pk_type = pa.int64() if self.pks.dtype.kind in "iu" else pa.string()
        table = pa.table(
            {
                HIT_PK: pa.array(self.pks, pk_type),
                HIT_SCORE: pa.array(self.scores, pa.float32()),
                HIT_TS: pa.array(self.ts, pa.uint64()),
            }
        )
        for i, name in enumerate(self.fields.column_names if self.fields is not None else ()):
            assert self.fields is not None
            table = table.append_column(self.fields.schema.field(i), self.fields.column(name))
        return table

    @staticmethod
    def from_table(table: pa.Table, topks: Sequence[int] | np.ndarray) -> PartialResult:
        """The inverse of :meth:`to_table`."""
        pks = table.column(HIT_PK)
        pk_np = (
            pks.to_numpy()
            if pa.types.is_integer(pks.type)
            else np.array(pks.to_pylist(), dtype=object)
        )
        rest = [n for n in table.column_names if n not in (HIT_PK, HIT_SCORE, HIT_TS)]
        return PartialResult(
            np.asarray(topks, dtype=np.int64),
            pk_np,
            table.column(HIT_SCORE).to_numpy().astype(np.float32, copy=False),
            table.column(HIT_TS).to_numpy().astype(np.uint64, copy=False),
            table.select(rest) if rest else None,
        )


class Selection(NamedTuple):
    """The merged hits as positions in the parts: hit ``i`` of the result is hit ``row[i]``
    of ``parts[part[i]]``; ``topks`` per query."""

    part: np.ndarray
    row: np.ndarray
    topks: np.ndarray


def _as_arrow_keys(keys: np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(keys, pa.ChunkedArray):
        return keys.combine_chunks()
    if isinstance(keys, pa.Array):
        return keys
    if keys.dtype.kind in "iu":
        return pa.array(keys, pa.int64())
    return pa.array(keys, pa.string())


def newest_per_key(
    keys: np.ndarray | pa.Array | pa.ChunkedArray,
    ts: np.ndarray,
    groups: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    *,
    higher_is_better: bool = False,
) -> np.ndarray:
    """Indices of the newest entry (largest ``ts``) of each key -- of each ``(group, key)``
    when ``groups`` is given -- ordered by group, then key. Among entries of the same ts the
    better ``score`` wins (lower, or higher with ``higher_is_better``), else the first."""
    int_keys = _int_keys(keys)
    if int_keys is not None:
        return _newest_int(int_keys, np.asarray(ts, np.uint64), groups, scores, higher_is_better)
    arrow_keys = _as_arrow_keys(keys)
    n = len(arrow_keys)
    if n == 0:
        return np.empty(0, np.int64)
    columns: dict[str, pa.Array] = {}
    sort_keys: list[tuple[str, str]] = []
    if groups is not None:
        columns["g"] = pa.array(groups, pa.int64())
        sort_keys.append(("g", "ascending"))
    columns["k"] = arrow_keys
    columns["t"] = pa.array(ts, pa.uint64())
    sort_keys += [("k", "ascending"), ("t", "descending")]
    if scores is not None:
        columns["s"] = pa.array(scores, pa.float32())
        sort_keys.append(("s", "descending" if higher_is_better else "ascending"))
    order = pc.sort_indices(pa.table(columns), sort_keys=sort_keys).to_numpy()
    first = np.ones(n, dtype=bool)
    if n > 1:
        sorted_keys = arrow_keys.take(pa.array(order))
        changed = pc.not_equal(sorted_keys.slice(1), sorted_keys.slice(0, n - 1))
        first[1:] = changed.to_numpy(zero_copy_only=False)
        if groups is not None:
            g = np.asarray(groups)[order]
            first[1:] |= g[1:] != g[:-1]
    return order[first]


def _int_keys(keys: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """Integer keys as an int64 numpy array (None for string keys)."""
    if isinstance(keys, np.ndarray):
        return keys.astype(np.int64, copy=False) if keys.dtype.kind in "iu" else None
    if pa.types.is_integer(keys.type):
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        return keys.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return None


def _newest_int(
    keys: np.ndarray,
    ts: np.ndarray,
    groups: np.ndarray | None,
    scores: np.ndarray | None,
    higher_is_better: bool,
) -> np.ndarray:
    """:func:`newest_per_key` for int64 keys, with numpy only (small inputs are the common
    case: an Arrow sort costs more to set up than to run)."""
    n = len(keys)
    if n == 0:
        return np.empty(0, np.int64)
    sort_keys: list[np.ndarray] = []  # np.lexsort: the last key is the primary one
    if scores is not None:
        s = np.asarray(scores, np.float64)
        sort_keys.append(-s if higher_is_better else s)
    sort_keys += [~ts, keys]  # ~ts: newest first
    if groups is not None:
        g = np.asarray(groups, np.int64)
        sort_keys.append(g)
    order = np.lexsort(sort_keys)
    k = keys[order]
    first = np.ones(n, dtype=bool)
    first[1:] = k[1:] != k[:-1]
    if groups is not None:
        gs = g[order]
        first[1:] |= gs[1:] != gs[:-1]
    return order[first]


def select_hits(
    parts: Sequence[PartialResult],
    nq: int,
    metric: Metric | str,
    limit: int,
    offset: int = 0,
) -> Selection:
    """Merge the hits of ``parts`` (each of ``nq`` queries) as the module docstring says and
    return where the kept hits are; see :func:`reduce_search` for the merged result."""
    metric = Metric.parse(metric)
    for p in parts:
        if p.nq != nq:
            raise ValueError(f"a partial result of {p.nq} queries merged into {nq}")
    used = [(i, p) for i, p in enumerate(parts) if p.num_hits]
    if not used or limit <= 0:
        return Selection(np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(nq, np.int64))
    part = np.concatenate([np.full(p.num_hits, i, np.int64) for i, p in used])
    row = np.concatenate([np.arange(p.num_hits, dtype=np.int64) for _, p in used])
    query = np.concatenate([p.query_of_hits() for _, p in used])
    pks = np.concatenate([p.pks for _, p in used])
    ts = np.concatenate([p.ts for _, p in used])
    scores = np.concatenate([p.scores for _, p in used]).astype(np.float32, copy=False)
    better = metric.higher_is_better
    kept = newest_per_key(pks, ts, query, scores, higher_is_better=better)
    # order the survivors by (query, score best first, key); the key order of `kept` is the
    # tie-break, so a stable sort by (query, score) is enough
    key = -scores[kept].astype(np.float64) if better else scores[kept].astype(np.float64)
    order = kept[np.lexsort((key, query[kept]))]
    q = query[order]
    starts = np.searchsorted(q, q, side="left")
    rank = np.arange(len(q)) - starts
    take = order[(rank >= offset) & (rank < offset + limit)]
    topks = np.bincount(query[take], minlength=nq).astype(np.int64)
    return Selection(part[take], row[take], topks)


def reduce_search(
    parts: Sequence[PartialResult],
    nq: int,
    metric: Metric | str,
    limit: int,
    offset: int = 0,
) -> PartialResult:
    """The merged :class:`PartialResult` of ``parts`` (see the module docstring). ``fields``
    are gathered from the parts (all parts must have the same columns, or none). When only
    one part has hits and merging would not change it, that part itself is returned."""
    metric = Metric.parse(metric)
    used = [p for p in parts if p.num_hits]
    if (
        len(used) == 1
        and offset == 0
        and all(p.nq == nq for p in parts)
        and _already_reduced(used[0], limit, metric.higher_is_better)
    ):
        return used[0]
    sel = select_hits(parts, nq, metric, limit, offset)
    int_pks = all(p.pks.dtype.kind in "iu" for p in parts) if parts else True
    if not len(sel.part):
        schema = next((p.fields.schema for p in parts if p.fields is not None), None)
        return PartialResult.empty(nq, int_pks=int_pks, fields=schema)
    starts = np.cumsum([0, *(p.num_hits for p in parts)])
    flat = starts[sel.part] + sel.row
    pks = np.concatenate([p.pks for p in parts])[flat]
    scores = np.concatenate([p.scores for p in parts])[flat]
    ts = np.concatenate([p.ts for p in parts])[flat]
    fields = None
    if any(p.fields is not None for p in parts if p.num_hits):
        if any(p.fields is None for p in parts if p.num_hits):
            raise ValueError("some partial results have output fields, others not")
        tables = [p.fields if p.num_hits else _no_rows(p.fields, parts) for p in parts]
        fields = pa.concat_tables(tables, promote_options="default").take(pa.array(flat))
    return PartialResult(sel.topks, pks, scores, ts, fields)


def _already_reduced(p: PartialResult, limit: int, higher_is_better: bool) -> bool:
    """Whether ``p`` alone is its own merge (offset 0): integer keys, at most ``limit`` hits
    per query, no key twice in one query, hits best first with equal scores in key order.
    A few vectorised checks: the merge itself costs several times more (one part with hits
    is the common case: one sealed segment, or a node's already merged answer)."""
    pks, scores = p.pks, p.scores
    if pks.dtype.kind not in "iu" or limit < 1 or int(p.topks.max()) > limit:
        return False
    if len(pks) < 2:
        return True
    query = p.query_of_hits()
    same = query[1:] == query[:-1]
    a, b = scores[:-1], scores[1:]
    better = a > b if higher_is_better else a < b
    in_order = better | ((a == b) & (pks[:-1] < pks[1:]))
    if not np.all(in_order | ~same):
        return False
    order = np.lexsort((pks, query))
    k, q = pks[order], query[order]
    return not np.any((k[1:] == k[:-1]) & (q[1:] == q[:-1]))


def _no_rows(fields: pa.Table | None, parts: Sequence[PartialResult]) -> pa.Table:
    """An empty table of the parts' field columns (for a part without hits)."""
    if fields is not None:
        return fields.slice(0, 0)
    schema = next(p.fields.schema for p in parts if p.fields is not None)
    return schema.empty_table()


def reduce_query(
    tables: Sequence[pa.Table],
    pk: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    ts_column: str = TS_FIELD,
) -> pa.Table:
    """Partial query results (each with the ``pk`` and ``ts_column`` columns) merged: the
    newest version of each key, in key order, rows ``offset .. offset + limit - 1``."""
    used = [t for t in tables if t.num_rows] or list(tables[:1])
    if not used:
        raise ValueError("reduce_query needs at least one table")
    table = used[0] if len(used) == 1 else pa.concat_tables(used, promote_options="default")
    if table.num_rows == 0:
        return table
    ts = table.column(ts_column).to_numpy()
    keep = newest_per_key(table.column(pk), ts)
    stop = len(keep) if limit is None else offset + limit
    keep = keep[offset:stop]
    return table.take(pa.array(keep))
