"""Reads over SEALED segments: the streaming node (the shard delegator) reads with it the
segments no query node serves, and a query node the segments assigned to it
(``cluster/query/node.py``; its snapshots come from the delegator with each read).

Contract of :class:`SealedReader` (one per streaming node):

* **Which segments**: those the coordinator registry lists for the collection
  (``list_segments``, state ``flushed``) on the vchannel, read through their ``cluster.storage``
  manifests (state ``dropped`` is skipped). The list and the manifests are re-read at most every
  ``sealed_refresh_interval`` seconds, and at once when the channel's memory says something
  became durable (:attr:`ChannelMemory.generation`: a segment registered and dropped from memory,
  buffered deletes written to delete logs). The flush path registers a segment before it leaves
  memory, so a row is always in the growing set, the sealed set, or both (then with the same
  ``(pk, _ts)``, and the reduce de-duplicates it).
* **Loading**: a segment is loaded (:class:`~cluster.query.segment.SealedSegment`, through a
  :class:`~cluster.query.cache.LocalCache`) on the first read that needs it and kept.
* **Deletes**, applied by timestamp (a delete at ``D`` hides rows with ``_ts < D``; older reads
  still see them): every primary key hashes to one vchannel, so this node sees every delete of
  the rows it serves. Two sources, together complete: (1) every delete log of every segment of
  the vchannel, applied to every loaded segment of the same partition (a later segment's log
  may target rows of an earlier one); (2) the channel's delete buffer
  (:attr:`ChannelMemory.deletes`: applied in memory, not yet in the delete logs), snapshotted
  with the generation *before* the manifests are refreshed, so a delete that moves from the
  buffer to a log meanwhile is in one of the two. Both are idempotent and tracked per segment.
* **Indexes**: each refresh also lists every listed segment's ``index/`` prefix in object
  storage and reads the ``index/{field_id}/{index_id}/index.json`` manifests it has not read yet
  (same key and etag: reused). The node cannot see the build records (``index_builds/`` in the
  meta store) nor the catalog's index list: the :class:`CoordinatorService` protocol has no call
  for either, and :class:`~cluster.coordinator.records.CollectionInfo` carries no indexes. The
  manifest stands in for a finished build: a data node writes it last, after the index files,
  and only for a complete build of exactly the segment's data (its ``source`` is checked again
  by :meth:`SealedSegment.add_index`). A read of field ``f`` (``segments(..., field=f)``) uses
  the newest build of ``f`` (largest index id) on each segment, loading its graph through the
  :class:`LocalCache`; one that disappeared from the listing is dropped (exact again). A graph
  that fails to load is logged and retried after ``INDEX_RETRY`` seconds; reads meanwhile are
  exact. :func:`search_sealed` passes the request's ``ef`` and searches exactly when the
  request's metric is not the index's.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.expr import FilterPlan
from cluster.index import IndexManifest, read_index_manifest
from cluster.index.layout import INDEX_MANIFEST_NAME, segment_source
from cluster.interfaces import CoordinatorService, GrowingQuery, GrowingSearch
from cluster.query.cache import LocalCache
from cluster.query.plan import Strategy
from cluster.query.segment import SealedSegment
from cluster.results import PartialResult, newest_per_key
from cluster.storage import (
    STATE_DROPPED,
    SegmentCorrupt,
    SegmentManifest,
    SegmentNotFound,
    read_deltas,
    read_manifest,
)
from cluster.streaming.channel_state import ChannelMemory
from cluster.streaming.flushing import BufferedDelete
from cluster.streaming.messages import TS_FIELD
from woodpecker.clock import Clock
from woodpecker.message import MessageId
from woodpecker.objectstore.base import ObjectStore

__all__ = [
    "SealedReader",
    "SealedSnapshot",
    "count_distinct",
    "query_sealed",
    "search_ef",
    "search_sealed",
]

log = logging.getLogger(__name__)

INDEX_RETRY = 5.0  # seconds before a graph that failed to load is tried again


@dataclass(frozen=True, slots=True)
class SealedSnapshot:
    """What a read knew of one vchannel's memory when it took its growing segments.
    ``source`` names that memory (:attr:`ChannelMemory.token`: one incarnation of the channel
    on one node); ``generation`` is its :attr:`ChannelMemory.generation` then. A query node gets
    both from the streaming node with the read."""

    collection_id: int
    vchannel: str
    source: str
    generation: int
    deletes: tuple[BufferedDelete, ...]


@dataclass(slots=True)
class _DeltaLog:
    partition_id: int
    pks: pa.Array
    ts: np.ndarray


@dataclass(slots=True)
class _Loaded:
    seg: SealedSegment
    partition_id: int
    logs_applied: int = 0  # prefix of _View.logs applied
    buffered: set[MessageId] = field(default_factory=set)  # buffered deletes applied
    # per field: (prefix, etag) of the index manifest in use, or of the last failed attempt
    index_from: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    index_failed_at: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _View:
    """The sealed segments of one (collection, vchannel)."""

    manifests: dict[int, SegmentManifest] = field(default_factory=dict)
    loaded: dict[int, _Loaded] = field(default_factory=dict)
    logs: list[_DeltaLog] = field(default_factory=list)  # append-only
    seen_logs: set[tuple[int, str]] = field(default_factory=set)
    indexes: dict[int, tuple[IndexManifest, ...]] = field(default_factory=dict)  # by segment
    index_manifests: dict[str, IndexManifest] = field(default_factory=dict)  # by object key
    refreshed_at: float | None = None
    source: str | None = None
    generation: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SealedReader:
    """See the module docstring. ``cache_dir`` None: a temporary directory, removed on close."""

    def __init__(
        self,
        objects: ObjectStore,
        coordinator: CoordinatorService,
        *,
        root: str,
        clock: Clock,
        cache_dir: str | None,
        cache_bytes: int,
        refresh_interval: float = 1.0,
    ) -> None:
        self.objects = objects
        self.coordinator = coordinator
        self.root = root
        self.clock = clock
        self.cache_dir = cache_dir
        self.cache_bytes = cache_bytes
        self.refresh_interval = refresh_interval
        self._views: dict[tuple[int, str], _View] = {}
        self._cache: LocalCache | None = None
        self._cache_lock = asyncio.Lock()
        self._tmp: str | None = None
        self._finalizer: weakref.finalize | None = None
        self.strategies: Counter[Strategy] = Counter()  # segment searches by strategy

    @staticmethod
    def snapshot(collection_id: int, vchannel: str, mem: ChannelMemory) -> SealedSnapshot:
        """Take synchronously, together with the growing segments of the read."""
        deletes = tuple(
            d for d in mem.deletes if d.collection_id == collection_id and d.vchannel == vchannel
        )
        return SealedSnapshot(collection_id, vchannel, mem.token, mem.generation, deletes)

    async def _open_cache(self) -> LocalCache:
        async with self._cache_lock:
            if self._cache is None:
                directory = self.cache_dir
                if directory is None:
                    directory = self._tmp = tempfile.mkdtemp(prefix="canopy-sealed-")
                    # also removed at interpreter exit when the node is never closed
                    self._finalizer = weakref.finalize(self, shutil.rmtree, directory, True)
                self._cache = await LocalCache.open(
                    self.objects, directory, max_bytes=self.cache_bytes
                )
            return self._cache

    async def _view(self, snap: SealedSnapshot) -> _View:
        """The snapshot's view, refreshed when the snapshot is of another memory or generation
        than the last refresh, or ``refresh_interval`` has passed (call under ``view.lock``)."""
        view = self._views.setdefault((snap.collection_id, snap.vchannel), _View())
        now = self.clock.monotonic()
        if (
            view.refreshed_at is None
            or view.source != snap.source
            or view.generation != snap.generation
            or now - view.refreshed_at >= self.refresh_interval
        ):
            await self._refresh(view, snap)
            view.refreshed_at, view.source, view.generation = now, snap.source, snap.generation
        return view

    def _lock(self, snap: SealedSnapshot) -> asyncio.Lock:
        return self._views.setdefault((snap.collection_id, snap.vchannel), _View()).lock

    async def segment_ids(
        self, snap: SealedSnapshot, partition_ids: Sequence[int] | None
    ) -> list[int]:
        """The sealed segments of the snapshot's vchannel (of ``partition_ids``; None: all),
        by id, without loading any."""
        async with self._lock(snap):
            view = await self._view(snap)
            return [
                sid
                for sid, m in sorted(view.manifests.items())
                if partition_ids is None or m.partition_id in partition_ids
            ]

    async def segments(
        self,
        snap: SealedSnapshot,
        partition_ids: Sequence[int] | None,
        *,
        field: str | None = None,
        only: Collection[int] | None = None,
    ) -> list[SealedSegment]:
        """The loaded sealed segments of the snapshot's vchannel (of ``partition_ids``; None:
        all; and among ``only`` when given), every known delete applied, and with ``field`` the
        newest index build of that field attached (see the module docstring). A segment of
        ``only`` the registry does not list (any more) is left out."""
        async with self._lock(snap):
            view = await self._view(snap)
            wanted = [
                m
                for sid, m in sorted(view.manifests.items())
                if (partition_ids is None or m.partition_id in partition_ids)
                and (only is None or sid in only)
            ]
            out = []
            for manifest in wanted:
                entry = await self._load(view, manifest)
                _apply_deletes(entry, view.logs, snap.deletes)
                if field is not None:
                    await self._attach_index(
                        entry, view.indexes.get(manifest.segment_id, ()), field
                    )
                out.append(entry.seg)
            return out

    async def _load(self, view: _View, manifest: SegmentManifest) -> _Loaded:
        entry = view.loaded.get(manifest.segment_id)
        if entry is None:
            cache = await self._open_cache()
            seg = await SealedSegment.load(replace(manifest, delta_files=()), cache)
            entry = view.loaded[manifest.segment_id] = _Loaded(seg, manifest.partition_id)
        return entry

    async def preload(self, snap: SealedSnapshot, segment_id: int, fields: Sequence[str]) -> bool:
        """Load ``segment_id`` of the snapshot's vchannel (only its collection and vchannel
        are used) with the delete logs known now and the newest index of each of ``fields`` (a
        query node taking a segment over, or keeping it current). The registry is re-read when
        it does not list the segment yet or ``refresh_interval`` has passed; False when it still
        does not (dropped meanwhile, or not registered yet)."""
        async with self._lock(snap):
            view = self._views[(snap.collection_id, snap.vchannel)]
            now = self.clock.monotonic()
            if (
                view.refreshed_at is None
                or segment_id not in view.manifests
                or now - view.refreshed_at >= self.refresh_interval
            ):
                await self._refresh(view, snap)
                view.refreshed_at = now
            manifest = view.manifests.get(segment_id)
            if manifest is None:
                return False
            entry = await self._load(view, manifest)
            _apply_deletes(entry, view.logs, None)
            for name in fields:
                await self._attach_index(entry, view.indexes.get(segment_id, ()), name)
            return True

    def release(self, collection_id: int, vchannel: str, segment_ids: Collection[int]) -> int:
        """Forget these loaded segments (served elsewhere now); returns how many were loaded.
        A read holding one keeps using it."""
        view = self._views.get((collection_id, vchannel))
        if view is None:
            return 0
        return sum(view.loaded.pop(sid, None) is not None for sid in segment_ids)

    def loaded_ids(self, collection_id: int, vchannel: str) -> set[int]:
        view = self._views.get((collection_id, vchannel))
        return set(view.loaded) if view is not None else set()

    async def _attach_index(
        self, entry: _Loaded, builds: Sequence[IndexManifest], field: str
    ) -> None:
        """Make ``entry`` use the newest of ``builds`` on ``field`` (none: no index)."""
        seg = entry.seg
        want = max(
            (b for b in builds if b.field_name == field), key=lambda b: b.index_id, default=None
        )
        if want is None:
            if entry.index_from.pop(field, None) is not None:
                seg.drop_index(field)
            entry.index_failed_at.pop(field, None)
            return
        source = (want.prefix, want.etag)
        now = self.clock.monotonic()
        if entry.index_from.get(field) == source:
            failed_at = entry.index_failed_at.get(field)
            if failed_at is None or now - failed_at < INDEX_RETRY:
                return
        entry.index_from[field] = source
        try:
            await seg.add_index(want)
        except Exception:  # an index only speeds reads up: search exactly meanwhile
            log.warning(
                "sealed segment %d: cannot load index %s; searching exactly",
                seg.segment_id, want.prefix, exc_info=True,
            )  # fmt: skip
            seg.drop_index(field)
            entry.index_failed_at[field] = now
        else:
            entry.index_failed_at.pop(field, None)

    async def _list_indexes(self, view: _View, m: SegmentManifest) -> tuple[IndexManifest, ...]:
        """The index builds under the segment's ``index/`` prefix (manifests read once per
        key and etag)."""
        found = []
        base = m.prefix + "index/"
        async for info in self.objects.list(base):
            parts = info.key[len(base) :].split("/")
            if (
                len(parts) != 3
                or parts[2] != INDEX_MANIFEST_NAME
                or not (parts[0].isdigit() and parts[1].isdigit())
            ):
                continue
            im = view.index_manifests.get(info.key)
            if im is None or im.etag != info.etag:
                try:
                    im = await read_index_manifest(self.objects, m, int(parts[0]), int(parts[1]))
                except SegmentCorrupt:
                    log.warning("ignoring unreadable index manifest %s", info.key, exc_info=True)
                    continue
                if im is None or im.source != segment_source(m):
                    continue
            found.append(im)
        return tuple(found)

    async def _refresh(self, view: _View, snap: SealedSnapshot) -> None:
        """Re-list the vchannel's registered segments, re-read their manifests and load the
        delete logs not seen yet."""
        infos = await self.coordinator.list_segments(snap.collection_id)
        listed = [i for i in infos if i.vchannel == snap.vchannel and i.state == "flushed"]
        manifests: dict[int, SegmentManifest] = {}
        for info in listed:
            try:
                m = await read_manifest(
                    self.objects, self.root, info.collection_id, info.partition_id, info.segment_id
                )
            except SegmentNotFound:
                continue
            if m.state == STATE_DROPPED:
                continue
            manifests[m.segment_id] = m
        cache = await self._open_cache() if manifests else None
        for m in manifests.values():
            new = tuple(d for d in m.delta_files if (m.segment_id, d.path) not in view.seen_logs)
            if not new:
                continue
            assert cache is not None
            pks, tss = await read_deltas(cache.view(), replace(m, delta_files=new))
            if len(pks):
                view.logs.append(_DeltaLog(m.partition_id, pks, tss.to_numpy()))
            view.seen_logs.update((m.segment_id, d.path) for d in new)
        indexes = {sid: await self._list_indexes(view, m) for sid, m in manifests.items()}
        view.index_manifests = {
            im.prefix + INDEX_MANIFEST_NAME: im for b in indexes.values() for im in b
        }
        view.manifests, view.indexes = manifests, indexes
        for sid in [s for s in view.loaded if s not in manifests]:
            del view.loaded[sid]

    def forget_collection(self, collection_id: int) -> None:
        for key in [k for k in self._views if k[0] == collection_id]:
            del self._views[key]

    async def close(self) -> None:
        """Forget every loaded segment and remove the temporary cache directory."""
        tmp, self._tmp = self._tmp, None
        self.discard()
        if tmp is not None:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            self._detach()

    def discard(self) -> None:
        """:meth:`close` without waiting (a node abandoned like a crash)."""
        self._views.clear()
        self._cache = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._detach()

    def _detach(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None


def _apply_deletes(
    entry: _Loaded, logs: list[_DeltaLog], buffered: tuple[BufferedDelete, ...] | None
) -> None:
    """Apply the delete logs not applied yet and (unless None) the buffered deletes."""
    seg, pid = entry.seg, entry.partition_id
    for log in logs[entry.logs_applied :]:
        if log.partition_id == pid:
            seg.apply_deletes(log.pks, log.ts)
    entry.logs_applied = len(logs)
    if buffered is None:
        return
    current = set()
    for d in buffered:
        current.add(d.message_id)
        if d.message_id not in entry.buffered and (d.partition_id in (None, pid)):
            seg.apply_deletes(d.pks, d.ts)
    entry.buffered = current  # deletes that left the buffer are in the logs now


# --- reads over loaded segments ------------------------------------------------------------------


def _plan_columns(plan: FilterPlan, pk: str) -> list[str]:
    return sorted(set(plan.fields) | {pk})


async def _mask(seg: SealedSegment, plan: FilterPlan | None, pk: str) -> np.ndarray | None:
    """Bool per row of ``seg`` selected by ``plan`` (None: every row). A ``pk in [..]`` plan
    looks its keys up in the segment's pk index and evaluates over those rows only."""
    if plan is None:
        return None
    columns = _plan_columns(plan, pk)
    keys = plan.pk_values()
    if keys is not None:
        mask = np.zeros(seg.rows, dtype=bool)
        rows = seg.pk_index.offsets(keys if isinstance(keys, np.ndarray) else list(keys))
        if len(rows):
            sub = await seg.take(rows, columns)
            mask[rows] = np.asarray(plan.evaluate(sub), dtype=bool)
        return mask
    return np.asarray(plan.evaluate(await seg.columns(columns)), dtype=bool)


def _conform(table: pa.Table, stored: pa.Schema, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a sealed segment's rows with the types of the growing data."""
    schema = pa.schema([stored.field(c) for c in columns])
    return pa.Table.from_arrays(
        [table.column(c).cast(schema.field(c).type) for c in columns], schema=schema
    )


async def search_sealed(
    segments: Sequence[SealedSegment],
    request: GrowingSearch,
    queries: np.ndarray,
    plan: FilterPlan | None,
    visible_ts: int,
    pk: str,
    stored: pa.Schema,
    strategies: Counter[Strategy] | None = None,
) -> list[PartialResult]:
    """One :class:`PartialResult` per segment with hits: its top ``k`` at ``visible_ts``,
    with the request's output fields (merge them with :func:`cluster.results.reduce_search`).
    A segment with an index of the request's metric on ``anns_field`` searches it with the
    request's ``ef`` (``params``); otherwise exactly. ``strategies`` counts how each segment
    was searched."""
    nq = len(queries)
    ef = search_ef(request.params)
    columns = list(request.output_fields)
    parts = []
    for seg in segments:
        if request.anns_field not in seg.manifest.column_names:
            continue
        mask = await _mask(seg, plan, pk)
        if mask is not None and not mask.any():
            continue
        result = await seg.search(
            queries, request.anns_field, request.k, request.metric,
            ef=ef, mask=mask, visible_ts=visible_ts, exact_on_other_metric=True,
        )  # fmt: skip
        if strategies is not None:
            strategies[result.strategy] += 1
        k = result.offsets.shape[1]
        if k == 0:
            continue
        flat = result.offsets.ravel()
        fields = _conform(await seg.take(flat, columns), stored, columns) if columns else None
        parts.append(
            PartialResult(
                np.full(nq, k, np.int64),
                result.pks.ravel(),
                result.distances.ravel().astype(np.float32, copy=False),
                seg.deletes.row_ts[flat],
                fields,
            )
        )
    return parts


def search_ef(params: Mapping[str, object]) -> int | None:
    """The ``ef`` of a request's search params (None when absent or not a positive integer:
    the segment's default then)."""
    raw = params.get("ef")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        ef = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return ef if ef > 0 else None


async def query_sealed(
    segments: Sequence[SealedSegment],
    request: GrowingQuery,
    plan: FilterPlan | None,
    visible_ts: int,
    pk: str,
    stored: pa.Schema,
) -> list[pa.Table]:
    """Per segment, its matching rows visible at ``visible_ts`` (newest version per key, key
    order, at most ``limit``) with the primary key, ``request.output_fields`` and ``_ts``
    (only the primary key and ``_ts`` for a count): merge them with
    :func:`cluster.results.reduce_query`."""
    if request.count:
        columns = [pk, TS_FIELD]
    else:
        columns = [pk, *(c for c in request.output_fields if c not in (pk, TS_FIELD)), TS_FIELD]
    tables = []
    for seg in segments:
        mask = await _mask(seg, plan, pk)
        visible = seg.visible(visible_ts)
        if mask is None:
            allowed = visible
        else:
            allowed = mask if visible is None else mask & visible
        offsets = np.arange(seg.rows) if allowed is None else np.flatnonzero(allowed)
        if not len(offsets):
            continue
        keys = (await seg.column(pk)).take(pa.array(offsets))
        keep = newest_per_key(keys, seg.deletes.row_ts[offsets])
        if request.limit is not None and not request.count:
            keep = keep[: request.limit]
        tables.append(_conform(await seg.take(offsets[keep], columns), stored, columns))
    return tables


def count_distinct(tables: Sequence[pa.Table], pk: str) -> int:
    """Distinct primary keys over ``tables``."""
    chunks = [c for t in tables if t.num_rows for c in t.column(pk).chunks]
    if not chunks:
        return 0
    return int(pc.count_distinct(pa.chunked_array(chunks)).as_py())
