"""Delete logs of sealed segments: append a ``deltas/{n}.parquet`` and list it in the manifest.

Contracts: a delta file is written with ``if_none_match="*"`` and never rewritten; it becomes
visible only once the manifest lists it (a compare-and-swap on the manifest's etag, retried on
conflict), so concurrent appenders all land. A file that never made it into the manifest (its
appender crashed) is invisible; the next appender skips its number. Deletes are idempotent, so a
retried append that records the same deletes twice is harmless.

Compaction (``cluster/datanode/compaction.py``) relies on the CAS: an append to a manifest
whose ``state`` is ``dropped`` raises :class:`SegmentDropped`, and one to a manifest carrying a
compaction fence (property :data:`FENCE_PROPERTY`) raises :class:`SegmentFenced`; the file is
removed in both cases. So every delete an append reports as written was listed before the
fence's CAS, and the compaction that fenced the segment saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.storage.errors import SegmentCorrupt, SegmentDropped, SegmentFenced, SegmentNotFound
from cluster.storage.layout import (
    STATE_DROPPED,
    DeltaFile,
    SegmentManifest,
    SegmentPath,
    delta_path,
)
from cluster.storage.parquet_io import DELTA_PK, TS, ParquetOptions, decode_whole, encode_deltas
from cluster.storage.segment_files import (
    CAS_ATTEMPTS,
    FETCH_CONCURRENCY,
    bounded,
    min_max,
    pk_arrow_type,
    read_manifest_at,
    update_manifest,
)
from woodpecker.errors import InvalidArgument, ObjectNotFound, PreconditionFailed
from woodpecker.objectstore.base import ObjectStore

FENCE_PROPERTY = "compaction.fence"  # manifest property: "{plan_id}/{attempt}" of a compaction


def _delta_arrays(pks: Any, tss: Any, pk_type: str) -> tuple[pa.Array, pa.Array]:
    def as_array(values: Any, typ: pa.DataType, what: str) -> pa.Array:
        try:
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            arr = values if isinstance(values, pa.Array) else pa.array(values)
            return arr.cast(typ)
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise InvalidArgument(f"delete {what} must be castable to {typ}: {exc}") from None

    pk_arr = as_array(pks, pk_arrow_type(pk_type), "pks")
    ts_arr = as_array(tss, pa.uint64(), "timestamps")
    if len(pk_arr) != len(ts_arr):
        raise InvalidArgument(f"{len(pk_arr)} pks but {len(ts_arr)} timestamps")
    if len(pk_arr) == 0:
        raise InvalidArgument("no deletes to append")
    if pk_arr.null_count or ts_arr.null_count:
        raise InvalidArgument("delete pks and timestamps must not be null")
    return pk_arr, ts_arr


async def append_deltas(
    store: ObjectStore,
    root: str,
    collection_id: int,
    partition_id: int,
    segment_id: int,
    pks: Any,
    tss: Any,
    *,
    options: ParquetOptions | None = None,
) -> DeltaFile:
    """Record deletes ``(pk, ts)``: write a new ``deltas/{n}.parquet``, then add it to the
    manifest by CAS. Safe to run concurrently (each appender takes a distinct ``n``; a taken
    ``n`` moves it to the next). If the segment disappears meanwhile, the file is removed and
    :class:`SegmentNotFound` raised (:class:`SegmentDropped` for a dropped manifest,
    :class:`SegmentFenced` while a compaction fences it). Deletes are idempotent, so a
    retried call that records a file twice is harmless."""
    path = SegmentPath(root, collection_id, partition_id, segment_id)
    manifest = await read_manifest_at(store, path)
    pk_arr, ts_arr = _delta_arrays(pks, tss, manifest.pk_type)
    data = await asyncio.to_thread(encode_deltas, pk_arr, ts_arr, options or ParquetOptions())
    n = manifest.next_delta_number()
    for _ in range(CAS_ATTEMPTS):
        try:
            await store.put(path.delta_key(n), data, if_none_match="*")
            break
        except PreconditionFailed:
            n += 1  # taken by a concurrent appender (or an orphan of a crashed one)
    else:
        raise PreconditionFailed(f"{path.prefix}deltas/: no free file number found")
    min_ts, max_ts = min_max(ts_arr)
    delta = DeltaFile(delta_path(n), len(data), len(pk_arr), min_ts, max_ts)
    try:
        await update_manifest(
            store, root, collection_id, partition_id, segment_id, lambda m: _accept(m, delta)
        )
    except (SegmentNotFound, SegmentFenced):
        with contextlib.suppress(Exception):
            await store.delete(path.delta_key(n))
        raise
    return delta


def _accept(m: SegmentManifest, delta: DeltaFile) -> SegmentManifest:
    """``m`` listing ``delta``, unless the segment takes no more deletes."""
    if any(d.path == delta.path for d in m.delta_files):
        return m  # listed by an earlier try of this call
    if m.state == STATE_DROPPED:
        raise SegmentDropped(f"segment {m.segment_id} is dropped: it takes no deletes")
    if FENCE_PROPERTY in m.properties:
        raise SegmentFenced(
            f"segment {m.segment_id} is being compacted ({m.properties[FENCE_PROPERTY]})"
        )
    return m.with_delta(delta)


async def read_deltas(
    store: ObjectStore, manifest: SegmentManifest, *, filter_ts: int | None = None
) -> tuple[pa.Array, pa.Array]:
    """All deletes the manifest lists, as ``(pks, tss)`` arrays (int64 or string, uint64),
    in manifest order; with ``filter_ts`` only those with ``ts <= filter_ts``."""
    pk_type = pk_arrow_type(manifest.pk_type)
    files = [d for d in manifest.delta_files if filter_ts is None or d.min_ts <= filter_ts]

    async def load(d: DeltaFile) -> pa.Table:
        key = manifest.key(d.path)
        try:
            data = await store.get(key)
        except ObjectNotFound:
            raise SegmentCorrupt(f"delta file {key} listed in the manifest is missing") from None
        if len(data) != d.size:
            raise SegmentCorrupt(f"delta file {key} has {len(data)} bytes, manifest says {d.size}")
        try:
            table = await asyncio.to_thread(decode_whole, data)
            table = table.select([DELTA_PK, TS]).cast(
                pa.schema([(DELTA_PK, pk_type), (TS, pa.uint64())])
            )
        except (pa.ArrowException, KeyError, ValueError) as exc:
            raise SegmentCorrupt(f"delta file {key} is damaged: {exc}") from None
        if table.num_rows != d.rows:
            raise SegmentCorrupt(f"delta file {key} has {table.num_rows} rows, not {d.rows}")
        return table

    tables = await bounded([lambda d=d: load(d) for d in files], FETCH_CONCURRENCY)
    if not tables:
        return pa.array([], pk_type), pa.array([], pa.uint64())
    table = pa.concat_tables(tables)
    if filter_ts is not None:
        table = table.filter(pc.less_equal(table[TS], pa.scalar(filter_ts, pa.uint64())))
    return table[DELTA_PK].combine_chunks(), table[TS].combine_chunks()
