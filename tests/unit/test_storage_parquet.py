"""Unit tests for the Parquet encoding and the range-backed file (cluster/storage/parquet_io.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.storage.parquet_io import (
    Miss,
    ParquetOptions,
    RangeFile,
    coalesce,
    column_chunk_ranges,
    encode_insert,
    leaf_columns,
    schema_fingerprint,
    to_logical,
    to_stored,
)


def vectors(n: int, dim: int, *, seed: int = 0) -> pa.FixedSizeListArray:
    data = np.random.default_rng(seed).random(n * dim, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(data), dim)


def small_table(n: int = 1000, dim: int = 8) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "vec": vectors(n, dim),
            "tag": pa.array([f"t{i % 7}" for i in range(n)]),
            "_row_id": pa.array(np.arange(n), pa.int64()),
            "_ts": pa.array(np.arange(n, dtype=np.uint64)),
        }
    )


# --- RangeFile -----------------------------------------------------------------------------------


def test_rangefile_missing_and_reads() -> None:
    f = RangeFile(100)
    f.add(10, bytes(range(10, 20)))
    f.add(30, bytes(range(30, 40)))
    assert f.missing(0, 100) == [(0, 10), (20, 10), (40, 60)]
    assert f.missing(12, 5) == []
    assert f.missing(15, 20) == [(20, 10)]
    assert f.missing(95, 50) == [(95, 5)]  # clipped to the size
    f.seek(12)
    assert f.read(5) == bytes(range(12, 17))
    assert f.tell() == 17
    with pytest.raises(Miss) as info:
        f.read(10)
    assert (info.value.offset, info.value.length) == (20, 7)


def test_rangefile_fetches_gaps_and_joins_chunks() -> None:
    data = bytes(range(256)) * 4
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return data[offset : offset + length]

    f = RangeFile(len(data), fetch)
    f.add(100, data[100:200])
    assert f.read_at(50, 300) == data[50:350]
    assert calls == [(50, 50), (200, 150)] and f.misses == 2
    assert f.read_at(60, 10) == data[60:70]
    assert f.misses == 2  # now cached
    f.seek(-4, 2)
    buf = bytearray(10)
    assert f.readinto(buf) == 4 and bytes(buf[:4]) == data[-4:]
    assert f.read() == b""


def test_rangefile_keeps_fetch_error() -> None:
    def fetch(offset: int, length: int) -> bytes:
        raise RuntimeError("store down")

    f = RangeFile(10, fetch)
    with pytest.raises(RuntimeError):
        f.read_at(0, 5)
    assert isinstance(f.error, RuntimeError)


def test_rangefile_short_fetch_is_an_error() -> None:
    f = RangeFile(10, lambda o, n: b"x")
    with pytest.raises(OSError, match="short read"):
        f.read_at(0, 5)


def test_pyarrow_reads_through_rangefile() -> None:
    data = encode_insert(small_table(), ParquetOptions(row_group_rows=300), "id")
    f = RangeFile(len(data), lambda o, n: data[o : o + n])
    table = pq.ParquetFile(pa.PythonFile(f, mode="r")).read(columns=["id"])
    assert table["id"].to_pylist() == list(range(1000))


# --- read plans ----------------------------------------------------------------------------------


def test_coalesce_merges_close_ranges() -> None:
    assert coalesce([(100, 5), (0, 10), (15, 10)], max_gap=5) == [(0, 25), (100, 5)]
    assert coalesce([(0, 10), (15, 10)], max_gap=4) == [(0, 10), (15, 10)]
    assert coalesce([(5, 0), (0, 3), (1, 1)], max_gap=0) == [(0, 3)]


def test_column_chunk_ranges_cover_exactly_what_pyarrow_reads() -> None:
    table = small_table(5000)
    data = encode_insert(table, ParquetOptions(row_group_rows=1000), "id")
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    stored = meta.schema.to_arrow_schema()
    leaves = leaf_columns(stored, meta.num_columns)
    assert leaves == {"id": [0], "vec": [1], "tag": [2], "_row_id": [3], "_ts": [4]}
    for column in ("id", "vec", "tag"):
        f = RangeFile(len(data))
        tail = max(0, len(data) - 65536)
        f.add(tail, data[tail:])
        for off, length in coalesce(column_chunk_ranges(meta, [1, 3], leaves[column]), max_gap=0):
            for g_off, g_len in f.missing(off, length):
                f.add(g_off, data[g_off : g_off + g_len])
        pf = pq.ParquetFile(pa.PythonFile(f, mode="r"), metadata=meta, pre_buffer=False)
        got = to_logical(pf.read_row_groups([1, 3], columns=[column]))  # no Miss raised
        assert got[column].to_pylist() == (
            table[column][1000:2000].to_pylist() + table[column][3000:4000].to_pylist()
        )


def test_leaf_columns_of_nested_types() -> None:
    schema = pa.schema(
        [
            ("a", pa.list_(pa.int64())),
            ("s", pa.struct([("x", pa.int32()), ("y", pa.list_(pa.string()))])),
            ("b", pa.int8()),
        ]
    )
    assert leaf_columns(schema, 4) == {"a": [0], "s": [1, 2], "b": [3]}
    assert leaf_columns(schema, 5) is None


# --- encoding ------------------------------------------------------------------------------------


def test_vectors_are_stored_as_fixed_size_binary_and_restored() -> None:
    table = small_table(100, dim=16)
    stored = to_stored(table)
    assert stored.schema.field("vec").type == pa.binary(64)
    assert stored.schema.field("vec").metadata == {b"canopy.vector": b"float"}
    back = to_logical(stored)
    assert back.equals(table)
    assert back.schema.field("vec").metadata is None


def test_vector_slices_and_nulls_roundtrip() -> None:
    vec = vectors(10, 4)
    masked = pa.FixedSizeListArray.from_arrays(
        vec.values, 4, mask=pa.array([i % 3 == 0 for i in range(10)])
    )
    for arr in (vec.slice(3, 5), masked, masked.slice(2, 6)):
        table = pa.table({"v": arr})
        back = to_logical(to_stored(table))
        assert back["v"].to_pylist() == arr.to_pylist()


def test_parquet_settings() -> None:
    data = encode_insert(small_table(3000), ParquetOptions(row_group_rows=1000), "id")
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    assert meta.num_row_groups == 3
    rg = meta.row_group(0)
    cols = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
    assert not cols["vec"].has_dictionary_page
    assert cols["vec"].compression == "UNCOMPRESSED"
    assert cols["tag"].compression == "ZSTD" and cols["tag"].has_dictionary_page
    assert "DELTA_BINARY_PACKED" in cols["_ts"].encodings
    for name in ("id", "_ts", "_row_id"):
        assert cols[name].is_stats_set and cols[name].statistics.has_min_max
    assert cols["_ts"].statistics.min == 0 and cols["_ts"].statistics.max == 999
    assert not cols["vec"].is_stats_set


def test_schema_fingerprint_ignores_metadata_only() -> None:
    a = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float32(), 4))])
    b = a.with_metadata({"x": "y"})
    c = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float32(), 8))])
    assert schema_fingerprint(a) == schema_fingerprint(b) != schema_fingerprint(c)
    assert schema_fingerprint(a).startswith("sha256:")
