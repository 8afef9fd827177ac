"""Reading the insert files of a sealed segment with column projection and row-group pruning.

Contract: :class:`SegmentReader` fetches the Parquet footer (the last 64 KiB, more only if the
footer is larger) and then only the column chunks of the requested columns in the row groups it
needs, as byte-range GETs: chunks closer than 64 KiB are coalesced, ranges over 8 MiB are split
into parallel parts. It hands pyarrow a :class:`~cluster.storage.parquet_io.RangeFile` over those
bytes and decodes in a worker thread; a read outside the plan is fetched on demand and counted in
``stats.misses``. Missing or damaged files raise :class:`SegmentCorrupt`; store errors pass
through unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.storage.errors import SegmentCorrupt
from cluster.storage.layout import InsertFile, SegmentManifest
from cluster.storage.parquet_io import (
    FOOTER_TAIL,
    PARQUET_MAGIC,
    TS,
    Miss,
    RangeFile,
    coalesce,
    column_chunk_ranges,
    leaf_columns,
    logical_schema,
    to_logical,
    ts_bounds,
)
from cluster.storage.segment_files import FETCH_CONCURRENCY, bounded
from woodpecker.errors import InvalidArgument, ObjectNotFound
from woodpecker.objectstore.base import ObjectStore

MiB = 1024 * 1024
FETCH_PART_BYTES = 8 * MiB  # a range GET is at most this long (larger ones split, in parallel)
FETCH_MAX_GAP = 64 * 1024  # column chunks closer than this are fetched with one GET


@dataclass
class ReadStats:
    """What a :class:`SegmentReader` fetched: GET requests, bytes, and reads pyarrow made
    outside the planned ranges (each one an extra GET; zero for files this module wrote)."""

    gets: int = 0
    bytes: int = 0
    misses: int = 0


@dataclass(frozen=True, slots=True)
class _Footer:
    meta: pq.FileMetaData
    stored: pa.Schema
    leaves: dict[str, list[int]] | None
    tail_offset: int
    tail: bytes


class SegmentReader:
    """Reads the insert files of one manifest, fetching only the columns asked for.

    Parsed footers are cached, so reading columns one at a time (lazy field loading) costs one
    footer GET per file in total. Not for concurrent use from several threads; concurrent
    ``read`` calls on one event loop are fine.
    """

    def __init__(
        self,
        store: ObjectStore,
        manifest: SegmentManifest,
        *,
        concurrency: int = FETCH_CONCURRENCY,
        part_bytes: int = FETCH_PART_BYTES,
        max_gap: int = FETCH_MAX_GAP,
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.concurrency = concurrency
        self.part_bytes = part_bytes
        self.max_gap = max_gap
        self.stats = ReadStats()
        self._footers: dict[str, _Footer] = {}

    async def _get(self, f: InsertFile, offset: int, length: int) -> bytes:
        key = self.manifest.key(f.path)
        try:
            data = await self.store.get(key, offset=offset, length=length)
        except ObjectNotFound:
            raise SegmentCorrupt(
                f"insert file {key} listed in the manifest is missing (segment deleted?)"
            ) from None
        self.stats.gets += 1
        self.stats.bytes += len(data)
        if len(data) != length:
            raise SegmentCorrupt(f"insert file {key} is shorter than the {f.size} bytes listed")
        return data

    async def _fetch(self, f: InsertFile, ranges: list[tuple[int, int]]) -> list[bytes | bytearray]:
        """Each range's bytes. Ranges over ``part_bytes`` are fetched as parallel parts straight
        into one buffer, so pyarrow later reads every range without another copy."""
        out: list[bytes | bytearray] = []
        calls: list[Callable[[], Awaitable[None]]] = []

        async def whole(i: int, off: int, length: int) -> None:
            out[i] = await self._get(f, off, length)

        async def part(buf: bytearray, base: int, off: int, length: int) -> None:
            buf[off - base : off - base + length] = await self._get(f, off, length)

        for off, length in ranges:
            if length <= self.part_bytes:
                out.append(b"")
                calls.append(functools.partial(whole, len(out) - 1, off, length))
                continue
            buf = bytearray(length)
            out.append(buf)
            for start in range(off, off + length, self.part_bytes):
                step = min(self.part_bytes, off + length - start)
                calls.append(functools.partial(part, buf, off, start, step))
        await bounded(calls, self.concurrency)
        return out

    async def _footer(self, f: InsertFile) -> _Footer:
        if (cached := self._footers.get(f.path)) is not None:
            return cached
        key = self.manifest.key(f.path)
        tail_offset = max(0, f.size - FOOTER_TAIL)
        tail = await self._get(f, tail_offset, f.size - tail_offset)
        if len(tail) < 12 or tail[-4:] != PARQUET_MAGIC:
            raise SegmentCorrupt(f"insert file {key} does not end with a Parquet footer")
        footer_start = f.size - 8 - int.from_bytes(tail[-8:-4], "little")
        if footer_start < 4:
            raise SegmentCorrupt(f"insert file {key} has an impossible footer length")
        if footer_start < tail_offset:
            tail = await self._get(f, footer_start, tail_offset - footer_start) + tail
            tail_offset = footer_start
        rf = RangeFile(f.size)
        rf.add(tail_offset, tail)
        try:
            meta = pq.ParquetFile(pa.PythonFile(rf, mode="r"), pre_buffer=False).metadata
            stored = meta.schema.to_arrow_schema()
        except Exception as exc:  # pyarrow raises several kinds for a damaged footer
            raise SegmentCorrupt(f"insert file {key}: unreadable Parquet footer: {exc}") from None
        if meta.num_rows != f.rows:
            raise SegmentCorrupt(f"insert file {key} has {meta.num_rows} rows, not {f.rows}")
        if stored.names != self.manifest.column_names:
            raise SegmentCorrupt(
                f"insert file {key} has columns {stored.names}, the manifest lists "
                f"{self.manifest.column_names}"
            )
        footer = _Footer(meta, stored, leaf_columns(stored, meta.num_columns), tail_offset, tail)
        self._footers[f.path] = footer
        return footer

    async def schema(self) -> pa.Schema:
        """The logical Arrow schema of the insert files (vectors as fixed-size lists)."""
        footer = await self._footer(self.manifest.insert_files[0])
        return logical_schema(footer.stored)

    def _columns(self, columns: Sequence[str] | None) -> list[str]:
        names = self.manifest.column_names
        if columns is None:
            return names
        if isinstance(columns, str):
            raise InvalidArgument("columns must be a list of names, not a string")
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise InvalidArgument(
                f"segment {self.manifest.segment_id} has no column(s) {unknown}; it has {names}"
            )
        return list(dict.fromkeys(columns))

    async def read(
        self, columns: Sequence[str] | None = None, *, filter_ts: int | None = None
    ) -> pa.Table:
        """Rows of every insert file, ``columns`` only (all by default, in manifest order),
        with ``_ts <= filter_ts`` if given. Deletes are not applied (see :func:`read_deltas`)."""
        cols = self._columns(columns)
        files = [
            f for f in self.manifest.insert_files if filter_ts is None or f.min_ts <= filter_ts
        ]
        parts = await bounded(
            [functools.partial(self._read_file, f, cols, filter_ts) for f in files], 4
        )
        if not parts:
            return (await self.schema()).empty_table().select(cols)
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    async def _read_file(self, f: InsertFile, cols: list[str], filter_ts: int | None) -> pa.Table:
        footer = await self._footer(f)
        meta = footer.meta
        need_filter = filter_ts is not None and f.max_ts > filter_ts
        # An empty projection still reads _ts (small) so the row count is right.
        read_cols = [*cols, TS] if (need_filter or not cols) and TS not in cols else cols
        row_groups = list(range(meta.num_row_groups))
        if need_filter and footer.leaves is not None:
            ts_leaf = footer.leaves[TS][0]
            row_groups = [
                rg
                for rg in row_groups
                if (b := ts_bounds(meta, rg, ts_leaf)) is None or b[0] <= filter_ts
            ]
        if not row_groups:
            return logical_schema(footer.stored).empty_table().select(cols)

        loop = asyncio.get_running_loop()

        def fetch(offset: int, length: int) -> bytes:  # runs in the decoding thread
            return asyncio.run_coroutine_threadsafe(self._get(f, offset, length), loop).result()

        rf = RangeFile(f.size, fetch)
        if footer.leaves is not None:
            leaves = [leaf for c in read_cols for leaf in footer.leaves[c]]
            plan = coalesce(column_chunk_ranges(meta, row_groups, leaves), max_gap=self.max_gap)
            remote = []
            tail_end = footer.tail_offset + len(footer.tail)
            for off, length in plan:
                if off >= footer.tail_offset and off + length <= tail_end:  # already fetched
                    rel = off - footer.tail_offset
                    rf.add(off, footer.tail[rel : rel + length])
                else:
                    remote.append((off, length))
            for (off, _), data in zip(remote, await self._fetch(f, remote), strict=True):
                rf.add(off, data)
        try:
            key = self.manifest.key(f.path)
            table = await asyncio.to_thread(_decode, key, rf, meta, row_groups, read_cols)
        finally:
            self.stats.misses += rf.misses
        if need_filter:
            table = table.filter(pc.less_equal(table[TS], pa.scalar(filter_ts, pa.uint64())))
        return table.select(cols)


def _decode(
    key: str, rf: RangeFile, meta: pq.FileMetaData, row_groups: list[int], cols: list[str]
) -> pa.Table:
    try:
        pf = pq.ParquetFile(
            pa.PythonFile(rf, mode="r"),
            metadata=meta,
            pre_buffer=False,
            page_checksum_verification=True,
        )
        return to_logical(pf.read_row_groups(row_groups, columns=cols, use_threads=True))
    except Exception as exc:
        if rf.error is not None and not isinstance(rf.error, OSError | Miss):
            raise rf.error from None  # a store error during a fetch: pass it through
        raise SegmentCorrupt(f"insert file {key} is damaged: {exc}") from None


async def read_segment(
    store: ObjectStore,
    manifest: SegmentManifest,
    columns: Sequence[str] | None = None,
    filter_ts: int | None = None,
) -> pa.Table:
    """One-shot :meth:`SegmentReader.read`."""
    return await SegmentReader(store, manifest).read(columns, filter_ts=filter_ts)
