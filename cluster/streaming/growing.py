"""The growing segment: rows of one (collection, partition, vchannel) held in memory, with MVCC.

A streaming node appends each insert it writes to the WAL (and, on takeover, each one it replays)
to a :class:`GrowingSegment`, applies deletes to it, searches and queries it, and finally seals it
and flushes :meth:`GrowingSegment.to_table` to Parquet.

Storage. Rows are kept as the list of Arrow tables they arrived in (zero copy: a decoded WAL
payload is referenced, not copied), and each FLOAT_VECTOR column is viewed as a ``(rows, dim)``
float32 numpy matrix over the same buffer. Small batches are merged binary-counter style (two
trailing chunks below ``merge_below_rows`` merge when the newer is at least as large as the
older), so 1-row inserts leave ``O(log merge_below_rows)`` small chunks and copy each row
``O(log merge_below_rows)`` times, while big batches are never copied. Measured against one
numpy buffer per vector field that doubles: taking 100 batches of 5,000 x 128-d as views cost
~1 ms, copying them into the doubling buffer ~700 ms (copies and page faults), and the chunk list
holds no spare capacity. Search is as fast over 5,000-row chunks as over one matrix.
Per-row bookkeeping lives in growable numpy arrays: insert ``_ts``, the MVCC end timestamp, the
primary key, and per vector field the squared and inverse row norms (for L2/COSINE search).

MVCC. Messages of a channel are stamped in append order, so rows arrive with non-decreasing
``_ts`` and every insert or delete must carry a timestamp no lower than any the segment applied
(else :class:`TimestampRegression`). Row ``i`` is *visible at* ``ts`` iff
``_ts[i] <= ts < end[i]``, where ``end[i]`` is the earliest of

* the ``_ts`` of the next insert of the same primary key (an upsert; within one batch the last
  duplicate wins), and
* the ts of the first delete of that key with ``delete_ts > _ts[i]`` (a delete hides the rows
  of its key inserted *before* it; a later insert of the key is visible again). Strictly
  before: an upsert deletes the old keys and inserts the new rows at one ts ``T``, and its
  delete hides the versions below ``T``, never its own rows stamped ``T``.

``end`` is maintained on write from a ``pk -> latest row`` dict (built per batch with
``dict(zip(keys, offsets))`` and looked up with ``map(dict.get, ...)``: C-level loops, measured
~0.3 µs per row (1.7 ms per 5,000-row batch at 500k keys) plus ~100 bytes per distinct key).
While every batch has ascending int64 keys above all earlier ones (auto ids) nothing can be
superseded, and the dict is only built, from the pk array, when a repeat or a delete needs it.
:meth:`GrowingSegment.visible_mask` is then two vectorised comparisons, never a Python loop.

Deletes are recorded as ``(pk, ts)``. :meth:`GrowingSegment.deltas` returns the ones that hid no
row of this segment: their targets live in other (older) segments, so they must go to the
delete log. A delete that did hide a row here may also target an older copy of the key in
another segment (a plain insert of an existing key); ``include_matched=True`` returns those too,
for a node that cannot rule that out (e.g. with per-segment primary-key statistics).

Concurrency. Methods are synchronous. Writers (append, delete, seal) must run on one thread;
readers (search, query, visible_mask, to_table) may run in worker threads meanwhile: they work on
a snapshot (the chunk tuple and row count read once), and a concurrent delete only changes rows'
``end`` to a timestamp above any the node already serves, which a reader at its ``ts`` ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pyarrow as pa

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType
from cluster.streaming.errors import SchemaMismatch, SegmentSealed, TimestampRegression
from cluster.streaming.messages import PK_FIELD, ROW_ID_FIELD, TS_FIELD
from cluster.streaming.policy import SealReason, SegmentPolicy, SegmentStats
from cluster.streaming.search import Metric, exact_search, row_norms
from woodpecker.clock import Clock, RealClock
from woodpecker.message import MessageId

__all__ = [
    "MAX_TS",
    "GrowingSegment",
    "Metric",
    "SealReason",
    "SegmentPolicy",
    "SegmentStats",
    "stored_schema",
]

MAX_TS = np.uint64(np.iinfo(np.uint64).max)
"""``end`` of a row nothing has superseded or deleted yet."""

Keys = np.ndarray | pa.Array | pa.ChunkedArray | list[int] | list[str]


def stored_schema(schema: CollectionSchema) -> pa.Schema:
    """The Arrow schema of a segment's stored rows: the fields in schema order (as
    :func:`cluster.milvus.columns.arrow_schema`), then ``_row_id`` (int64) and ``_ts``
    (uint64)."""
    return (
        arrow_schema(schema)
        .append(pa.field(ROW_ID_FIELD, pa.int64(), nullable=False))
        .append(pa.field(TS_FIELD, pa.uint64(), nullable=False))
    )


class _Growable:
    """A 1-D numpy array with amortised O(1) append (capacity doubles). A grown buffer is a new
    array, so views taken earlier stay valid."""

    __slots__ = ("buf", "n")

    def __init__(self, dtype: type | np.dtype, capacity: int = 1024) -> None:
        self.buf = np.empty(capacity, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.buf):
            grown = np.empty(max(need, 2 * len(self.buf)), dtype=self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : need] = values
        self.n = need

    def view(self, n: int | None = None) -> np.ndarray:
        return self.buf[: self.n if n is None else n]


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int
    table: pa.Table  # one Arrow chunk per column
    vectors: dict[str, np.ndarray]  # (rows, dim) float32 views of the FLOAT_VECTOR columns

    @property
    def rows(self) -> int:
        return self.table.num_rows


class GrowingSegment:
    """In-memory rows of one (collection, partition, vchannel) with MVCC visibility.

    Rows are numbered (``offsets``) from 0 in append order. Stored columns are the schema's
    fields in schema order (as :func:`cluster.milvus.columns.arrow_schema`) plus ``_row_id``
    (int64) and ``_ts`` (uint64). The primary key must be INT64 or VARCHAR. ``clock`` stamps
    write times for :class:`SegmentPolicy` (give both the same clock); chunks of fewer than
    ``merge_below_rows`` rows are merged as described in the module docstring.
    """

    def __init__(
        self,
        schema: CollectionSchema,
        *,
        segment_id: int,
        collection_id: int = 0,
        partition_id: int = 0,
        vchannel: str = "",
        clock: Clock | None = None,
        merge_below_rows: int = 4096,
    ) -> None:
        self.schema = schema
        self.segment_id = segment_id
        self.collection_id = collection_id
        self.partition_id = partition_id
        self.vchannel = vchannel
        self._clock = clock or RealClock()
        self._merge_below = merge_below_rows
        self.arrow_schema = stored_schema(schema)
        pk = schema.primary_field
        if pk.dtype not in (DataType.INT64, DataType.VARCHAR):
            raise SchemaMismatch(f"primary key {pk.name} must be INT64 or VARCHAR")
        self._pk_name = pk.name
        self._int_pk = pk.dtype == DataType.INT64
        self._dims = {
            f.name: int(f.dim or 0) for f in schema.fields if f.dtype == DataType.FLOAT_VECTOR
        }
        self._chunks: tuple[_Chunk, ...] = ()
        self._n = 0
        self._row_ts = _Growable(np.uint64)
        self._end = _Growable(np.uint64)
        self._pks = _Growable(np.int64 if self._int_pk else object)
        self._norm2 = {name: _Growable(np.float32) for name in self._dims}
        self._inv_norm = {name: _Growable(np.float32) for name in self._dims}
        # pk -> offset of its latest row; None while every int64 batch so far had strictly
        # increasing keys above all earlier ones (auto ids): built on first need
        self._latest: dict[int | str, int] | None = None if self._int_pk else {}
        self._max_pk: int | None = None
        self._deletes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # pks, ts, matched
        self._delete_count = 0
        self._last_ts = 0  # the highest insert or delete ts applied
        self._bytes = 0
        self._sealed = False
        self._first_mid: MessageId | None = None
        self._last_mid: MessageId | None = None
        self._first_write_at: float | None = None
        self._last_write_at: float | None = None

    # --- state ---------------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        return self._n

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def stats(self) -> SegmentStats:
        n = self._n
        ts = self._row_ts.view(n)
        return SegmentStats(
            segment_id=self.segment_id,
            rows=n,
            bytes=self._bytes,
            deletes=self._delete_count,
            min_ts=int(ts[0]) if n else None,
            max_ts=int(ts[-1]) if n else None,
            first_message_id=self._first_mid,
            last_message_id=self._last_mid,
            first_write_at=self._first_write_at,
            last_write_at=self._last_write_at,
            sealed=self._sealed,
        )

    def seal(self) -> SegmentStats:
        """Refuse further inserts (:class:`SegmentSealed`). Deletes are still applied, so the
        segment answers correctly until a query node serves its flushed copy."""
        self._sealed = True
        return self.stats

    # --- writes --------------------------------------------------------------------------------

    def append(
        self, batch: pa.Table | pa.RecordBatch, message_id: MessageId | None = None
    ) -> tuple[int, int]:
        """Append an insert batch (every stored column, ``_ts`` non-decreasing and not below any
        applied ts); returns its offsets ``(start, stop)``. The batch's buffers are kept, not
        copied. Raises :class:`SegmentSealed`, :class:`SchemaMismatch`,
        :class:`TimestampRegression`."""
        if self._sealed:
            raise SegmentSealed(f"segment {self.segment_id} is sealed")
        table = self._conform(batch)
        m = table.num_rows
        start = self._n
        if m == 0:
            return start, start
        ts = table.column(TS_FIELD).chunk(0).to_numpy(zero_copy_only=False)
        if int(ts[0]) < self._last_ts or (m > 1 and bool(np.any(ts[1:] < ts[:-1]))):
            raise TimestampRegression(
                f"segment {self.segment_id}: insert ts {int(ts.min())} after ts {self._last_ts}"
            )
        vectors = self._vector_views(table)
        for name, matrix in vectors.items():
            norm2, inv = row_norms(matrix)
            self._norm2[name].extend(norm2)
            self._inv_norm[name].extend(inv)
        pks = self._keys(table.column(self._pk_name).chunk(0))
        end = self._index_rows(pks, ts, start)
        self._row_ts.extend(ts)
        self._end.extend(end)
        self._pks.extend(pks)
        chunks = [*self._chunks, _Chunk(start, table, vectors)]
        self._merge_tail(chunks)
        self._chunks = tuple(chunks)  # publish after the per-row arrays have grown
        self._n = start + m
        self._bytes += table.nbytes
        self._last_ts = int(ts[-1])
        now = self._clock.monotonic()
        if self._first_write_at is None:
            self._first_write_at = now
        self._last_write_at = now
        self._note(message_id)
        return start, start + m

    def apply_delete(
        self, pks: Keys, ts: int | np.ndarray, message_id: MessageId | None = None
    ) -> int:
        """Record deletes of ``pks`` at ``ts`` (one ts, or one per key) and hide the rows of
        those keys inserted before them. Allowed after :meth:`seal`. Returns how many rows
        became hidden. Raises :class:`TimestampRegression` for a ts below one applied."""
        arr = self._keys(pks)
        count = len(arr)
        if count == 0:
            return 0
        stamps = np.broadcast_to(np.asarray(ts, dtype=np.uint64), (count,)).copy()
        if int(stamps.min()) < self._last_ts:
            raise TimestampRegression(
                f"segment {self.segment_id}: delete ts {int(stamps.min())} after ts {self._last_ts}"
            )
        keys = arr.tolist()
        rows = np.fromiter(map(self._index().get, keys, repeat(-1)), np.int64, count)
        matched = rows >= 0
        hidden = 0
        if matched.any():
            hit = np.flatnonzero(matched)
            older = self._row_ts.buf[rows[hit]] < stamps[hit]
            matched[hit[~older]] = False
            target, when = rows[matched], stamps[matched]
            end = self._end.buf
            hidden = len(np.unique(target[end[target] == MAX_TS]))
            np.minimum.at(end, target, when)
        self._deletes.append((arr, stamps, matched))
        self._delete_count += count
        self._last_ts = max(self._last_ts, int(stamps.max()))
        self._note(message_id)
        return hidden

    # --- reads ---------------------------------------------------------------------------------

    def visible_mask(self, ts: int, n: int | None = None) -> np.ndarray:
        """Bool per row (of the first ``n``, default all): visible at ``ts`` (see the module
        docstring)."""
        n = self._n if n is None else n
        stamp = np.uint64(ts)
        prefix = int(np.searchsorted(self._row_ts.view(n), stamp, side="right"))
        mask = np.zeros(n, dtype=bool)
        np.greater(self._end.buf[:prefix], stamp, out=mask[:prefix])
        return mask

    def search(
        self,
        queries: np.ndarray,
        field: str,
        k: int,
        metric: Metric | str,
        visible_ts: int,
        filter_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` of the rows visible at ``visible_ts`` (and in ``filter_mask``):
        ``(ids, distances)``, both ``(nq, k')`` with ``k' = min(k, candidates)``, best first.
        ``ids`` are primary keys (int64, or object array of str). Distances as in
        :func:`cluster.streaming.search.exact_search` (L2 squared, ascending; IP/COSINE
        descending)."""
        offsets, distances = self.search_offsets(queries, field, k, metric, visible_ts, filter_mask)
        return self._pks.buf[offsets], distances

    def search_offsets(
        self,
        queries: np.ndarray,
        field: str,
        k: int,
        metric: Metric | str,
        visible_ts: int,
        filter_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` returning row offsets (for :meth:`take`) instead of keys.
        ``filter_mask`` is a bool per row, evaluated over the rows there were; rows appended
        since (beyond its length) are left out."""
        dim = self._dims.get(field)
        if dim is None:
            raise ValueError(f"{field!r} is not a float vector field of the segment")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != dim:
            raise ValueError(f"queries must be (nq, {dim}), got shape {q.shape}")
        chunks = self._chunks
        n = chunks[-1].start + chunks[-1].rows if chunks else 0
        mask = self._candidates(visible_ts, n, filter_mask)
        return exact_search(
            [(c.start, c.vectors[field]) for c in chunks],
            q,
            k,
            metric,
            n=n,
            norm2=self._norm2[field].buf,
            inv_norm=self._inv_norm[field].buf,
            mask=mask,
        )

    def query(
        self, visible_ts: int, mask: np.ndarray | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """The rows visible at ``visible_ts`` and selected by ``mask`` (bool per row, as in
        :meth:`search_offsets`), in offset order, with ``columns`` (default: every stored
        column, ``_row_id``/``_ts`` included). An unknown column raises KeyError."""
        chunks = self._chunks
        n = chunks[-1].start + chunks[-1].rows if chunks else 0
        keep = self._candidates(visible_ts, n, mask)
        return self._table(chunks, columns).filter(pa.array(keep))

    def take(self, offsets: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Rows at ``offsets`` (flattened, in that order) with ``columns`` (default all)."""
        flat = np.asarray(offsets, dtype=np.int64).ravel()
        return self._table(self._chunks, columns).take(pa.array(flat))

    def visible_offsets(self, visible_ts: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Offsets (int64, ascending) of the rows visible at ``visible_ts`` and selected by
        ``mask`` (as in :meth:`search_offsets`)."""
        chunks = self._chunks
        n = chunks[-1].start + chunks[-1].rows if chunks else 0
        return np.flatnonzero(self._candidates(visible_ts, n, mask))

    def columns(self, names: list[str]) -> pa.Table:
        """Every stored row, visible or not, in offset order, with the ``names`` columns: a
        snapshot (the rows there were), e.g. to evaluate a filter into a ``mask``."""
        return self._table(self._chunks, names)

    def keys_at(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(primary keys, _ts)`` of the rows at ``offsets`` (flattened): int64 or object
        (str) keys, uint64 timestamps."""
        flat = np.asarray(offsets, dtype=np.int64).ravel()
        return self._pks.buf[flat], self._row_ts.buf[flat]

    def latest_rows(self, pks: Keys) -> np.ndarray:
        """The offset of the latest row of each key in this segment, -1 for keys it never
        held: ``O(len(pks))`` dict lookups (the first call on an auto-id segment builds the
        ``pk -> row`` index, which writes keep up to date from then on). Call it on the
        writer's thread."""
        keys = self._keys(pks).tolist()
        return np.fromiter(map(self._index().get, keys, repeat(-1)), np.int64, len(keys))

    def to_table(self, visible_at: int | None = None) -> pa.Table:
        """Every stored row (``visible_at=None``), or only those visible at ``visible_at``, with
        every stored column: what a flush writes to Parquet."""
        chunks = self._chunks
        table = self._table(chunks, None)
        if visible_at is None:
            return table
        return table.filter(pa.array(self.visible_mask(visible_at, table.num_rows)))

    def deltas(self, include_matched: bool = False) -> pa.Table:
        """Recorded deletes as a ``(pk, _ts)`` table, in arrival order: those that hid no row of
        this segment, or all of them with ``include_matched`` (see the module docstring)."""
        pk_type = pa.int64() if self._int_pk else pa.string()
        if not self._deletes:
            return pa.table({PK_FIELD: pa.array([], pk_type), TS_FIELD: pa.array([], pa.uint64())})
        pks = np.concatenate([d[0] for d in self._deletes])
        stamps = np.concatenate([d[1] for d in self._deletes])
        if not include_matched:
            keep = ~np.concatenate([d[2] for d in self._deletes])
            pks, stamps = pks[keep], stamps[keep]
        return pa.table({PK_FIELD: pa.array(pks, pk_type), TS_FIELD: pa.array(stamps)})

    # --- internals -----------------------------------------------------------------------------

    def _note(self, message_id: MessageId | None) -> None:
        if message_id is None:
            return
        if self._first_mid is None:
            self._first_mid = message_id
        self._last_mid = message_id

    def _candidates(self, ts: int, n: int, mask: np.ndarray | None) -> np.ndarray:
        keep = self.visible_mask(ts, n)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.ndim != 1 or len(mask) > n:
                raise ValueError(f"mask must be 1-D with at most {n} entries")
            keep[: len(mask)] &= mask
            keep[len(mask) :] = False
        return keep

    def _table(self, chunks: tuple[_Chunk, ...], columns: list[str] | None) -> pa.Table:
        if not chunks:
            table = self.arrow_schema.empty_table()
        else:
            table = pa.concat_tables([c.table for c in chunks])
        return table if columns is None else table.select(columns)

    def _conform(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """The batch with the segment's columns, in order, under its Arrow schema; one chunk."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        expected = self.arrow_schema
        if not table.schema.equals(expected, check_metadata=True):
            present = set(table.column_names)
            missing = [name for name in expected.names if name not in present]
            if missing:
                raise SchemaMismatch(f"insert batch lacks column(s) {', '.join(missing)}")
            table = table.select(expected.names)
            for want, got in zip(expected, table.schema, strict=True):
                if not want.type.equals(got.type):
                    raise SchemaMismatch(
                        f"column {want.name}: expected {want.type}, got {got.type}"
                    )
            table = pa.Table.from_arrays(table.columns, schema=expected)
        if table.num_rows and any(col.num_chunks != 1 for col in table.columns):
            table = table.combine_chunks()
        return table

    def _vector_views(self, table: pa.Table) -> dict[str, np.ndarray]:
        views = {}
        for name, dim in self._dims.items():
            col = table.column(name).chunk(0)
            if col.null_count:
                raise SchemaMismatch(f"vector field {name} has nulls")
            flat = col.flatten().to_numpy(zero_copy_only=False)
            views[name] = flat.reshape(-1, dim)
        return views

    def _keys(self, pks: Keys) -> np.ndarray:
        """Primary keys as int64 or object (str) numpy array, checked against the pk type."""
        if isinstance(pks, pa.ChunkedArray):
            pks = pks.combine_chunks()
        if isinstance(pks, pa.Array):
            is_int = pa.types.is_integer(pks.type)
            if is_int:
                arr = pks.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            else:
                arr = np.array(pks.to_pylist(), dtype=object)
        else:
            arr = np.asarray(pks)
            is_int = arr.dtype.kind in "iu" or (arr.size == 0 and self._int_pk)
            arr = arr.astype(np.int64 if is_int else object, copy=False)
        if is_int != self._int_pk:
            raise SchemaMismatch(
                f"primary keys must be {'int64' if self._int_pk else 'strings'} in segment "
                f"{self.segment_id}"
            )
        return arr

    def _index_rows(self, pks: np.ndarray, ts: np.ndarray, start: int) -> np.ndarray:
        """Update ``pk -> latest row`` for a new batch at ``start``; end the versions it
        supersedes. Returns the batch's own ``end`` column."""
        m = len(pks)
        end = np.full(m, MAX_TS, dtype=np.uint64)
        if self._latest is None:
            fresh = self._max_pk is None or int(pks[0]) > self._max_pk
            if fresh and (m == 1 or bool(np.all(pks[1:] > pks[:-1]))):
                self._max_pk = int(pks[-1])  # all keys new, none twice: nothing to supersede
                return end
        latest = self._index()
        keys = pks.tolist()
        batch_map = dict(zip(keys, range(start, start + m), strict=True))
        if len(batch_map) == m:
            first_keys, first_ts = keys, ts
        else:  # duplicate keys in the batch: each copy is superseded by the next one
            order = np.argsort(pks, kind="stable")
            ordered = pks[order]
            same = ordered[1:] == ordered[:-1]
            dup = np.flatnonzero(same)
            end[order[dup]] = ts[order[dup + 1]]
            firsts = order[np.concatenate(([True], ~same))]
            first_keys, first_ts = pks[firsts].tolist(), ts[firsts]
        prev = np.fromiter(map(latest.get, first_keys, repeat(-1)), np.int64, len(first_keys))
        hit = prev >= 0
        if hit.any():
            rows = prev[hit]
            buf = self._end.buf
            buf[rows] = np.minimum(buf[rows], first_ts[hit])
        latest.update(batch_map)
        return end

    def _index(self) -> dict[int | str, int]:
        """The ``pk -> latest row`` dict, built from the rows so far on first need."""
        if self._latest is None:
            n = self._pks.n
            self._latest = dict(zip(self._pks.view().tolist(), range(n), strict=True))
        return self._latest

    def _merge_tail(self, chunks: list[_Chunk]) -> None:
        """Binary-counter merge of small trailing chunks (see the module docstring)."""
        while len(chunks) >= 2:
            older, newer = chunks[-2], chunks[-1]
            if older.rows >= self._merge_below or newer.rows >= self._merge_below:
                return
            if newer.rows < older.rows:
                return
            table = pa.concat_tables([older.table, newer.table]).combine_chunks()
            chunks[-2:] = [_Chunk(older.start, table, self._vector_views(table))]
