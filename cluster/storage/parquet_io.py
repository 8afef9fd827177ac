"""Parquet encoding of segment files, and a random-access file over byte-range GETs.

Synchronous and CPU-bound; :mod:`cluster.storage.segment_files` runs it in worker threads.

* :func:`encode_insert` / :func:`encode_deltas` turn a table into Parquet bytes with the
  settings of ``LAYOUT.md``: zstd for scalars, no dictionary for vectors, DELTA_BINARY_PACKED for
  integer system and pk columns, statistics on ``_row_id``, ``_ts``, the pk and other primitive
  scalars, a CRC on every page. Vectors (``fixed_size_list<float32>[dim]``) are stored as
  ``fixed_size_binary(dim * 4)`` (Milvus' binlog encoding; decoding is a zero-copy view, several
  times faster than Parquet lists) and marked with field metadata so :func:`to_logical`
  restores the list type.
* :class:`RangeFile` is the file pyarrow reads: a sparse cache of byte ranges of one object,
  filled ahead of time from a read plan (:func:`column_chunk_ranges`, :func:`coalesce`); a read
  outside the cache calls ``fetch`` (or raises :class:`Miss` when there is none).
"""

from __future__ import annotations

import bisect
import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_ID = "_row_id"
TS = "_ts"
SYSTEM_COLUMNS = (ROW_ID, TS)
DELTA_PK = "pk"

VECTOR_KEY = b"canopy.vector"  # field metadata: value type of a vector stored as binary
FOOTER_TAIL = 64 * 1024  # bytes read from the end of a file to find the footer (as Arrow does)
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True, slots=True)
class ParquetOptions:
    """How insert and delta files are encoded.

    ``row_group_rows`` bounds a row group (the unit of lazy and partial reads); ``compression``
    applies to scalar columns, ``vector_compression`` to vectors (random-looking floats gain
    little from compression, so the default stores them raw).
    """

    row_group_rows: int = 65536
    compression: str = "zstd"
    compression_level: int | None = None
    vector_compression: str = "none"
    data_page_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")


# --- logical <-> stored types --------------------------------------------------------------------


def is_vector(t: pa.DataType) -> bool:
    """Vectors are fixed-size lists of a fixed-width numeric type (float32 for FLOAT_VECTOR)."""
    return (
        pa.types.is_fixed_size_list(t)
        and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))
        and t.list_size > 0
    )


def _vector_to_binary(arr: pa.FixedSizeListArray) -> pa.Array:
    t = arr.type
    width = t.list_size * t.value_type.bit_width // 8
    values = arr.values.slice(arr.offset * t.list_size, len(arr) * t.list_size)
    if values.null_count:
        values = pc.fill_null(values, pa.scalar(0, t.value_type))
    item = t.value_type.bit_width // 8
    data = values.buffers()[1].slice(values.offset * item, len(values) * item)  # zero-copy
    out = pa.Array.from_buffers(pa.binary(width), len(arr), [None, data])
    if arr.null_count:
        out = pc.if_else(arr.is_valid(), out, pa.scalar(None, pa.binary(width)))
    return out


def _binary_to_vector(arr: pa.Array, value_type: pa.DataType) -> pa.Array:
    width = arr.type.byte_width
    dim = width * 8 // value_type.bit_width
    validity, data = arr.buffers()
    values = pa.Array.from_buffers(value_type, (arr.offset + len(arr)) * dim, [None, data])
    return pa.Array.from_buffers(
        pa.list_(value_type, dim), len(arr), [validity], offset=arr.offset, children=[values]
    )


def to_stored(table: pa.Table) -> pa.Table:
    """The table as written: vector columns become fixed_size_binary, tagged in field metadata."""
    fields, columns = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        if is_vector(f.type):
            meta = dict(f.metadata or {})
            meta[VECTOR_KEY] = str(f.type.value_type).encode()
            width = f.type.list_size * f.type.value_type.bit_width // 8
            f = pa.field(f.name, pa.binary(width), f.nullable, meta)
            col = pa.chunked_array([_vector_to_binary(c) for c in col.chunks], f.type)
        fields.append(f)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def _logical_field(f: pa.Field) -> pa.Field:
    meta = dict(f.metadata or {})
    value_name = meta.pop(VECTOR_KEY, None)
    if value_name is None:
        return f
    value_type = pa.type_for_alias(value_name.decode())
    dim = f.type.byte_width * 8 // value_type.bit_width
    return pa.field(f.name, pa.list_(value_type, dim), f.nullable, meta or None)


def logical_schema(stored: pa.Schema) -> pa.Schema:
    return pa.schema([_logical_field(f) for f in stored], stored.metadata)


def to_logical(table: pa.Table) -> pa.Table:
    """Inverse of :func:`to_stored` (zero-copy for the vector columns)."""
    fields, columns = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        lf = _logical_field(f)
        if lf is not f:
            col = pa.chunked_array(
                [_binary_to_vector(c, lf.type.value_type) for c in col.chunks], lf.type
            )
        fields.append(lf)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short hash of the column names, logical types and nullability (not metadata)."""
    text = "\n".join(f"{f.name}\t{f.type}\t{int(f.nullable)}" for f in schema)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


# --- encoding ------------------------------------------------------------------------------------


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _write(table: pa.Table, options: ParquetOptions, pk: str | None) -> bytes:
    names = table.schema.names
    plain_ints = [
        n for n in (*SYSTEM_COLUMNS, pk) if n in names and _is_int(table.schema.field(n).type)
    ]
    vectors = [f.name for f in table.schema if VECTOR_KEY in (f.metadata or {})]
    stats = [
        f.name
        for f in table.schema
        if f.name not in vectors
        and (
            pa.types.is_integer(f.type)
            or pa.types.is_floating(f.type)
            or pa.types.is_boolean(f.type)
            or f.name == pk
        )
    ]
    compression = {
        n: options.vector_compression if n in vectors else options.compression for n in names
    }
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=options.row_group_rows,
        compression=compression,
        compression_level=options.compression_level,
        use_dictionary=[n for n in names if n not in vectors and n not in plain_ints],
        column_encoding=dict.fromkeys(plain_ints, "DELTA_BINARY_PACKED") or None,
        write_statistics=stats,
        write_page_checksum=True,
        data_page_size=options.data_page_bytes,
        store_schema=True,
    )
    return sink.getvalue().to_pybytes()


def encode_insert(table: pa.Table, options: ParquetOptions, pk_field: str) -> bytes:
    """Parquet bytes of an insert file (logical table in, vectors stored as binary)."""
    return _write(to_stored(table), options, pk_field)


def encode_deltas(pks: pa.Array, tss: pa.Array, options: ParquetOptions) -> bytes:
    """Parquet bytes of a delta file: columns ``pk`` and ``_ts``."""
    table = pa.table({DELTA_PK: pks, TS: tss})
    return _write(table, options, DELTA_PK)


def decode_whole(data: bytes) -> pa.Table:
    """Decode a whole Parquet object (delta files), verifying page checksums."""
    pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
    return pf.read()


# --- random access -------------------------------------------------------------------------------


class Miss(OSError):
    """A read touched bytes that are not cached and the file has no ``fetch``."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(f"range [{offset}, {offset + length}) is not cached")
        self.offset = offset
        self.length = length


class RangeFile(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes backed by cached ranges of one object.

    ``add`` caches bytes; reads are served from the cache. A read touching uncached bytes calls
    ``fetch(offset, length) -> bytes`` for each gap (counted in ``misses``) or, without
    ``fetch``, raises :class:`Miss`. Pass it to pyarrow as ``pa.PythonFile(f, mode="r")``.
    The first exception ``fetch`` raises is kept in ``error`` so callers can re-raise it as is.
    """

    def __init__(self, size: int, fetch: Callable[[int, int], bytes] | None = None) -> None:
        super().__init__()
        self.size = size
        self.misses = 0
        self.error: BaseException | None = None
        self._fetch = fetch
        self._pos = 0
        self._starts: list[int] = []
        self._chunks: list[bytes | bytearray] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def add(self, offset: int, data: bytes | bytearray) -> None:
        """Cache ``data`` at ``offset``; it must not overlap cached bytes (see ``missing``)."""
        if not data:
            return
        i = bisect.bisect_left(self._starts, offset)
        self._starts.insert(i, offset)
        self._chunks.insert(i, data)

    def missing(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Uncached ``(offset, length)`` gaps of ``[offset, offset+length)`` (clipped to size)."""
        end = min(offset + length, self.size)
        gaps: list[tuple[int, int]] = []
        pos = offset
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while pos < end:
            if i < len(self._starts) and self._starts[i] + len(self._chunks[i]) <= pos:
                i += 1
                continue
            if i >= len(self._starts) or self._starts[i] > pos:
                nxt = self._starts[i] if i < len(self._starts) else end
                gaps.append((pos, min(nxt, end) - pos))
                pos = min(nxt, end)
            else:
                pos = self._starts[i] + len(self._chunks[i])
                i += 1
        return gaps

    def read_at(self, offset: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``offset`` (fewer at the end); a zero-copy view when one cached chunk
        holds them all."""
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        for gap_off, gap_len in self.missing(offset, end - offset):
            if self._fetch is None:
                raise Miss(gap_off, gap_len)
            self.misses += 1
            try:
                data = self._fetch(gap_off, gap_len)
            except BaseException as exc:
                self.error = self.error or exc
                raise
            if len(data) != gap_len:
                err = OSError(f"short read at {gap_off}: {len(data)} of {gap_len} bytes")
                self.error = self.error or err
                raise err
            self.add(gap_off, data)
        i = bisect.bisect_right(self._starts, offset) - 1
        start, chunk = self._starts[i], self._chunks[i]
        if start + len(chunk) >= end:
            return (
                chunk
                if start == offset and len(chunk) == end - offset
                else (memoryview(chunk)[offset - start : end - start])
            )
        parts: list[memoryview] = []
        pos = offset
        while pos < end:
            start, chunk = self._starts[i], self._chunks[i]
            take = memoryview(chunk)[pos - start : min(end, start + len(chunk)) - start]
            parts.append(take)
            pos += len(take)
            i += 1
        return b"".join(parts)

    def read(self, size: int = -1) -> bytes | memoryview:
        n = self.size - self._pos if size is None or size < 0 else size
        data = self.read_at(self._pos, n)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return bytes(self.read(-1))

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- read plans ----------------------------------------------------------------------------------


def _leaf_count(t: pa.DataType) -> int:
    if pa.types.is_struct(t):
        return sum(_leaf_count(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaf_count(t.key_type) + _leaf_count(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaf_count(t.value_type)
    if pa.types.is_dictionary(t):
        return 1
    return 1


def leaf_columns(stored: pa.Schema, num_leaves: int) -> dict[str, list[int]] | None:
    """Top-level column name -> its Parquet leaf column indexes (None if the count differs)."""
    out: dict[str, list[int]] = {}
    i = 0
    for f in stored:
        n = _leaf_count(f.type)
        out[f.name] = list(range(i, i + n))
        i += n
    return out if i == num_leaves else None


def column_chunk_ranges(
    meta: pq.FileMetaData, row_groups: Iterable[int], leaves: Iterable[int]
) -> list[tuple[int, int]]:
    """``(offset, length)`` of every column chunk of ``leaves`` in ``row_groups``, where Arrow
    reads them (the dictionary page if any, else the first data page)."""
    leaves = list(leaves)
    ranges = []
    for rg in row_groups:
        group = meta.row_group(rg)
        for leaf in leaves:
            col = group.column(leaf)
            start = col.data_page_offset
            dict_off = col.dictionary_page_offset
            if col.has_dictionary_page and dict_off and 0 < dict_off < start:
                start = dict_off
            ranges.append((start, col.total_compressed_size))
    return ranges


def coalesce(ranges: Sequence[tuple[int, int]], *, max_gap: int) -> list[tuple[int, int]]:
    """Sort ``(offset, length)`` ranges and merge those less than ``max_gap`` bytes apart."""
    merged: list[list[int]] = []
    for off, length in sorted(r for r in ranges if r[1] > 0):
        if merged and off <= merged[-1][0] + merged[-1][1] + max_gap:
            last = merged[-1]
            last[1] = max(last[1], off + length - last[0])
        else:
            merged.append([off, length])
    return [(off, length) for off, length in merged]


def ts_bounds(meta: pq.FileMetaData, rg: int, leaf: int) -> tuple[int, int] | None:
    """``(min, max)`` statistics of column ``leaf`` in row group ``rg``, if written."""
    col = meta.row_group(rg).column(leaf)
    stats = col.statistics
    if not col.is_stats_set or stats is None or not stats.has_min_max:
        return None
    return int(stats.min), int(stats.max)
