"""A sealed segment loaded on a query node: lazy columns, pk map, MVCC deletes, search, query.

Contracts:

* Everything is read through the node's :class:`~cluster.query.cache.LocalCache`: insert-file
  columns as projected range reads (cached as blocks), delete logs and index files whole.
* :meth:`SealedSegment.load` reads the pk and ``_ts`` columns, builds the pk -> offsets map,
  applies every listed delete log and loads the HNSW graphs of the given index manifests. Other
  columns are read on first use, only those a request names, and kept in memory (vectors as one
  contiguous float32 matrix, with their norms for exact search).
* Deletes: the segment's delete logs (:meth:`apply_delta_files` for logs added later) and
  deletes applied by the caller (:meth:`apply_deletes`), both by the MVCC rule of
  ``cluster/storage/LAYOUT.md``. ``visible_ts`` selects the rows visible at that timestamp
  (None: the newest state).
* :meth:`search` scores like Milvus (L2 squared distance ascending, IP / COSINE similarity
  descending) and returns ``k' = min(k, candidates)`` hits per query; the strategy (exact, HNSW,
  HNSW post-filter, allow-list fallback) comes from :mod:`cluster.query.plan`. Work per request
  scales with ``k``, ``ef`` and the candidates, with no Python loop over rows; a filter mask
  (or a read at an old timestamp) adds a few vectorised ``O(n)`` bool passes (~10 us per 100k
  rows).
* Heavy work (estimated above ``INLINE_COST`` distance evaluations) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from cluster.index.build import load_index, read_index_manifest_at
from cluster.index.hnsw import HnswGraph, ShortResult, vector_matrix
from cluster.index.layout import IndexManifest, segment_source
from cluster.query import plan
from cluster.query.cache import LocalCache
from cluster.query.plan import Strategy
from cluster.query.rows import Deletes, PkIndex
from cluster.storage.deltas import read_deltas
from cluster.storage.errors import SegmentCorrupt
from cluster.storage.layout import SegmentManifest
from cluster.storage.parquet_io import TS
from cluster.storage.segment_reader import SegmentReader
from cluster.streaming.search import Metric, exact_search, row_norms
from woodpecker.errors import InvalidArgument, ObjectNotFound

INLINE_COST = 200_000  # distance evaluations (~2 ms) below which a search runs on the loop


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Per query, best first: keys (int64 or object), scores (float32), row offsets (int64),
    each ``(nq, k')``; ``strategy`` says how the segment was searched."""

    pks: np.ndarray
    distances: np.ndarray
    offsets: np.ndarray
    strategy: Strategy

    def __iter__(self) -> Iterator[np.ndarray]:
        """``pks, distances, offsets = result``."""
        return iter((self.pks, self.distances, self.offsets))


@dataclass(frozen=True, slots=True)
class _Vectors:
    matrix: np.ndarray
    norm2: np.ndarray
    inv_norm: np.ndarray


class SealedSegment:
    """One sealed segment, searchable and queryable (create with :meth:`load`)."""

    def __init__(self, manifest: SegmentManifest, cache: LocalCache) -> None:
        self.manifest = manifest
        self.cache = cache
        self.rows = manifest.row_count
        self._reader = SegmentReader(cache.view(), manifest)
        self._columns: dict[str, pa.ChunkedArray] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._vectors: dict[str, _Vectors] = {}
        self._indexes: dict[str, IndexManifest] = {}
        self._graphs: dict[str, HnswGraph] = {}
        self._seen_deltas: set[str] = set()
        self.pk_index: PkIndex
        self.deletes: Deletes
        self._pks: np.ndarray

    @classmethod
    async def load(
        cls,
        manifest: SegmentManifest,
        cache: LocalCache,
        indexes: Iterable[IndexManifest] = (),
        *,
        fields: Sequence[str] = (),
    ) -> SealedSegment:
        """Load the pk, ``_ts``, delete logs and index graphs (plus ``fields``, a warm-up)."""
        seg = cls(manifest, cache)
        pk = manifest.pk_field
        await seg._ensure([pk, TS, *fields])
        pks = seg._columns[pk]
        seg.pk_index = PkIndex(pks)
        seg._pks = (
            pks.to_numpy().astype(np.int64, copy=False)
            if seg.pk_index.int_pk
            else np.array(pks.to_pylist(), dtype=object)
        )
        seg.deletes = Deletes(seg._columns[TS].to_numpy())
        await seg.apply_delta_files(manifest)
        for im in indexes:
            await seg.add_index(im)
        return seg

    @property
    def segment_id(self) -> int:
        return self.manifest.segment_id

    @property
    def loaded_columns(self) -> list[str]:
        return list(self._columns)

    @property
    def indexes(self) -> dict[str, IndexManifest]:
        return dict(self._indexes)

    # --- indexes ---------------------------------------------------------------------------

    async def add_index(self, im: IndexManifest) -> None:
        """Use the build ``im`` for its field (loading its graph through the cache; if a rebuild
        replaced its file meanwhile, the current manifest is read and used instead)."""
        if im.segment_id != self.segment_id or im.source != segment_source(self.manifest):
            raise SegmentCorrupt(
                f"index {im.prefix} was built from other data than segment {self.segment_id}"
            )
        try:
            graph = await load_index(self.cache.store, im, fetch=self.cache.lease)
        except ObjectNotFound:  # a rebuild replaced the file since ``im`` was read
            current = await read_index_manifest_at(self.cache.store, im.prefix)
            if current is None or current.files == im.files:
                raise SegmentCorrupt(f"index {im.prefix}: a listed file is missing") from None
            im = current
            graph = await load_index(self.cache.store, im, fetch=self.cache.lease)
        self._indexes[im.field_name] = im
        if graph is None:
            self._graphs.pop(im.field_name, None)
        else:
            self._graphs[im.field_name] = graph

    def drop_index(self, field: str) -> None:
        """Stop using the index of ``field`` (searches of it are exact again)."""
        self._indexes.pop(field, None)
        self._graphs.pop(field, None)

    # --- columns ---------------------------------------------------------------------------

    async def _ensure(self, columns: Iterable[str]) -> None:
        """Load the named columns that are not in memory (one read for all of them)."""
        names = list(dict.fromkeys(columns))
        unknown = [c for c in names if c not in self.manifest.column_names]
        if unknown:
            raise InvalidArgument(f"segment {self.segment_id} has no column(s) {unknown}")
        missing = [c for c in names if c not in self._columns and c not in self._loading]
        if missing:
            task = asyncio.ensure_future(self._load_columns(missing))
            for c in missing:
                self._loading[c] = task
        waits = {id(t): t for c in names if (t := self._loading.get(c)) is not None}
        for task in waits.values():
            await asyncio.shield(task)

    async def _load_columns(self, names: list[str]) -> None:
        try:
            table = await self._reader.read(names)
            for name in names:
                self._columns[name] = table[name]
        finally:
            for name in names:
                self._loading.pop(name, None)

    async def column(self, name: str) -> pa.ChunkedArray:
        await self._ensure([name])
        return self._columns[name]

    async def vectors(self, field: str) -> np.ndarray:
        """The field's vectors as one C-contiguous ``(rows, dim)`` float32 matrix."""
        return (await self._vector_state(field)).matrix

    async def _vector_state(self, field: str) -> _Vectors:
        state = self._vectors.get(field)
        if state is not None:
            return state
        column = await self.column(field)
        matrix = await asyncio.to_thread(vector_matrix, column)
        norm2, inv = await asyncio.to_thread(row_norms, matrix)
        state = self._vectors.setdefault(field, _Vectors(matrix, norm2, inv))
        # Keep one copy: the Arrow column becomes a zero-copy view of the matrix.
        values = pa.array(state.matrix.reshape(-1))
        self._columns[field] = pa.chunked_array(
            [pa.FixedSizeListArray.from_arrays(values, type=column.type)]
        )
        return state

    def release(self, columns: Iterable[str] | None = None) -> None:
        """Drop loaded columns (default: all but pk and ``_ts``) from memory."""
        keep = {self.manifest.pk_field, TS}
        for name in list(self._columns if columns is None else columns):
            if name not in keep:
                self._columns.pop(name, None)
                self._vectors.pop(name, None)

    # --- deletes ---------------------------------------------------------------------------

    def apply_deletes(self, pks: Any, ts: Any) -> int:
        """Deletes of keys ``pks`` at timestamps ``ts`` (one per key, or one for all): each
        hides the rows of its key with ``_ts < ts``. Returns rows newly hidden."""
        which, offsets = self.pk_index.lookup(pks)
        stamps = np.asarray(ts, dtype=np.uint64)
        stamps = np.broadcast_to(stamps, (len(which),)) if stamps.ndim == 0 else stamps[which]
        return self.deletes.apply(offsets, stamps)

    async def apply_delta_files(self, manifest: SegmentManifest) -> int:
        """Apply the delete logs ``manifest`` lists that were not applied yet (a newer version
        of this segment's manifest). Returns rows newly hidden."""
        if manifest.segment_id != self.segment_id:
            raise InvalidArgument(
                f"manifest of segment {manifest.segment_id}, not {self.segment_id}"
            )
        new = tuple(d for d in manifest.delta_files if d.path not in self._seen_deltas)
        self.manifest = replace(self.manifest, delta_files=manifest.delta_files)
        if not new:
            return 0
        pks, tss = await read_deltas(self.cache.view(), replace(manifest, delta_files=new))
        hidden = self.apply_deletes(pks, tss.to_numpy())
        self._seen_deltas.update(d.path for d in new)
        return hidden

    def visible(self, visible_ts: int | None = None) -> np.ndarray | None:
        """Bool per row visible at ``visible_ts`` (None when all are); do not modify it."""
        return self.deletes.visible(visible_ts)

    def _candidates(self, mask: np.ndarray | None, visible_ts: int | None) -> np.ndarray | None:
        vis = self.deletes.visible(visible_ts)
        if mask is None:
            return vis
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.rows,):
            raise InvalidArgument(
                f"mask must have one bool per row ({self.rows}), not {mask.shape}"
            )
        return mask if vis is None else mask & vis

    # --- search ----------------------------------------------------------------------------

    async def search(
        self,
        queries: np.ndarray,
        field: str,
        k: int,
        metric: Metric | str,
        *,
        ef: int | None = None,
        mask: np.ndarray | None = None,
        visible_ts: int | None = None,
        strategy: Strategy | None = None,
        exact_on_other_metric: bool = False,
    ) -> SearchResult:
        """Top-``k`` rows per query among those visible at ``visible_ts`` and selected by
        ``mask`` (bool per row). ``ef`` (default 64, at least ``k``) is HNSW's search width;
        ``strategy`` forces one (tests, benchmarks). A metric other than the index's raises
        ``InvalidArgument``, as in Milvus, unless ``exact_on_other_metric`` (then the index is
        ignored and the search is exact)."""
        metric = Metric.parse(metric)
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise InvalidArgument(f"queries must be (nq, dim), got shape {q.shape}")
        if k < 1:
            raise InvalidArgument(f"k must be positive, got {k}")
        if field not in self.manifest.column_names:
            raise InvalidArgument(f"segment {self.segment_id} has no field {field!r}")
        im = self._indexes.get(field)
        if im is not None and im.metric_type != metric and exact_on_other_metric:
            im = None
        if im is not None and im.metric_type != metric:
            raise InvalidArgument(
                f"metric type not match: index of {field!r} is {im.metric_type}, not {metric}"
            )
        if im is not None and q.shape[1] != im.dim:
            raise InvalidArgument(f"queries must be (nq, {im.dim}), got shape {q.shape}")
        allowed = self._candidates(mask, visible_ts)
        candidates = self.rows if allowed is None else int(np.count_nonzero(allowed))
        k_eff = min(k, candidates)
        nq = q.shape[0]
        if k_eff == 0 or nq == 0:
            return self._result(
                np.empty((nq, 0), np.int64), np.empty((nq, 0), np.float32), Strategy.EXACT
            )
        ef = max(ef or plan.DEFAULT_EF, k_eff)
        graph = self._graphs.get(field) if im is not None else None
        chosen = strategy or plan.choose(self.rows, candidates, nq, ef, has_graph=graph is not None)
        if chosen is not Strategy.EXACT and graph is None:
            raise InvalidArgument(f"field {field!r} of segment {self.segment_id} has no HNSW index")
        if chosen is Strategy.HNSW and allowed is not None:
            chosen = Strategy.POST_FILTER
        if chosen is Strategy.EXACT:
            vec = await self._vector_state(field)
            if q.shape[1] != vec.matrix.shape[1]:
                raise InvalidArgument(f"queries must be (nq, {vec.matrix.shape[1]}), got {q.shape}")
            cost = plan.exact_cost(self.rows, candidates, nq)
            offsets, scores = await self._run(cost, self._exact, vec, q, k_eff, metric, allowed)
        else:
            cost = plan.graph_cost(self.rows, candidates, nq, ef)
            offsets, scores, chosen = await self._run(
                cost, self._graph_search, graph, q, k_eff, ef, allowed, chosen
            )
            if chosen is Strategy.EXACT:  # the graph came up short: exact for those queries
                vec = await self._vector_state(field)
                offsets, scores = await self._run(
                    plan.exact_cost(self.rows, candidates, nq),
                    self._fill_short, vec, q, k_eff, metric, allowed, offsets, scores,
                )  # fmt: skip
        return self._result(offsets, scores, chosen)

    @staticmethod
    async def _run(cost: float, fn: Any, *args: Any) -> Any:
        if cost <= INLINE_COST:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _result(self, offsets: np.ndarray, scores: np.ndarray, strategy: Strategy) -> SearchResult:
        return SearchResult(self._pks[offsets], scores, offsets, strategy)

    def _exact(
        self,
        vec: _Vectors,
        q: np.ndarray,
        k: int,
        metric: Metric,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(
            [(0, vec.matrix)], q, k, metric, n=self.rows,
            norm2=vec.norm2, inv_norm=vec.inv_norm, mask=allowed,
        )  # fmt: skip

    def _graph_search(
        self,
        graph: HnswGraph,
        q: np.ndarray,
        k: int,
        ef: int,
        allowed: np.ndarray | None,
        strategy: Strategy,
    ) -> tuple[np.ndarray, np.ndarray, Strategy]:
        """Graph search; returns offsets (-1 where a query came up short) and the strategy
        used (``EXACT`` when some query needs the exact fallback)."""
        if allowed is None:
            labels, scores = graph.search(q, k, ef)
            return labels, scores, Strategy.HNSW
        offsets = np.full((len(q), k), -1, np.int64)
        scores = np.zeros((len(q), k), np.float32)
        rows = np.arange(len(q))
        if strategy is Strategy.POST_FILTER:
            fetch = plan.post_filter_fetch(self.rows, int(np.count_nonzero(allowed)), ef)
            with contextlib.suppress(ShortResult):
                labels, dist = graph.search(q, fetch, fetch)
                keep = allowed[labels]
                order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # first k kept, by rank
                offsets = np.take_along_axis(labels, order, axis=1)
                scores = np.take_along_axis(dist, order, axis=1)
                short = np.take_along_axis(keep, order, axis=1).sum(axis=1) < k
                if not short.any():
                    return offsets, scores, strategy
                rows = np.flatnonzero(short)
                offsets[rows] = -1
        try:  # the allow-list finds every reachable candidate
            sub_offsets, sub_scores = graph.search(q[rows], k, ef, allow=allowed)
        except ShortResult:
            return offsets, scores, Strategy.EXACT
        offsets[rows], scores[rows] = sub_offsets, sub_scores
        return offsets, scores, strategy

    def _fill_short(
        self,
        vec: _Vectors,
        q: np.ndarray,
        k: int,
        metric: Metric,
        allowed: np.ndarray | None,
        offsets: np.ndarray,
        scores: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero((offsets < 0).any(axis=1))
        sub_offsets, sub_scores = self._exact(vec, q[rows], k, metric, allowed)
        offsets[rows], scores[rows] = sub_offsets, sub_scores
        return offsets, scores

    # --- query -----------------------------------------------------------------------------

    async def take(self, offsets: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows at ``offsets`` (flattened, in that order) with ``columns`` (default: every
        column of the segment), loading the columns first if needed."""
        names = list(self.manifest.column_names if columns is None else columns)
        await self._ensure(names)
        flat = pa.array(np.asarray(offsets, dtype=np.int64).ravel())
        return pa.table({name: self._columns[name].take(flat) for name in names})

    async def query(
        self,
        mask: np.ndarray | None = None,
        columns: Sequence[str] | None = None,
        visible_ts: int | None = None,
    ) -> pa.Table:
        """The rows visible at ``visible_ts`` and selected by ``mask``, in offset order, with
        ``columns`` (default: every column)."""
        names = list(self.manifest.column_names if columns is None else columns)
        allowed = self._candidates(mask, visible_ts)
        if allowed is None:
            await self._ensure(names)
            return pa.table({name: self._columns[name] for name in names})
        return await self.take(np.flatnonzero(allowed), names)

    async def columns(self, names: Sequence[str]) -> pa.Table:
        """Every row (visible or not) with ``names``: what a filter expression is evaluated
        over to build a ``mask``."""
        await self._ensure(names)
        return pa.table({name: self._columns[name] for name in names})
