"""Unit tests for writing, reading, listing and deleting sealed segments over memory:// and
file:// (cluster/storage/segment_files.py, segment_reader.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.storage import (
    STATE_DROPPED,
    ParquetOptions,
    SegmentCorrupt,
    SegmentExists,
    SegmentNotFound,
    SegmentPath,
    SegmentReader,
    SegmentWriter,
    delete_segment,
    list_segments,
    read_manifest,
    read_segment,
    set_segment_state,
    write_segment,
)
from woodpecker.clock import ManualClock
from woodpecker.errors import InvalidArgument, Unavailable
from woodpecker.objectstore import Faulty, FileObjectStore, MemoryObjectStore, Metered
from woodpecker.objectstore.base import ObjectStore

ROOT = "canopy"
TS0 = 450_000_000_000 << 18  # a hybrid timestamp


def vectors(n: int, dim: int, *, seed: int = 0) -> pa.FixedSizeListArray:
    data = np.random.default_rng(seed).random(n * dim, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(data), dim)


def system(n: int, *, start: int = 0) -> dict[str, pa.Array]:
    return {
        "_row_id": pa.array(np.arange(start, start + n) + 10_000, pa.int64()),
        "_ts": pa.array(np.arange(start, start + n, dtype=np.uint64) + TS0),
    }


def every_type(n: int = 500) -> pa.Table:
    """One column of every type Canopy stores, with nulls wherever a column may hold them."""

    def nulls(values: list[object]) -> list[object]:
        return [None if i % 11 == 3 else v for i, v in enumerate(values)]

    rng = np.random.default_rng(1)
    return pa.table(
        {
            "pk": pa.array(np.arange(n) * 3, pa.int64()),
            "i8": pa.array(nulls([i % 127 - 60 for i in range(n)]), pa.int8()),
            "i16": pa.array(nulls([i * 7 - 3000 for i in range(n)]), pa.int16()),
            "i32": pa.array(nulls([i * 1_000_003 for i in range(n)]), pa.int32()),
            "i64": pa.array(nulls([i << 40 for i in range(n)]), pa.int64()),
            "f32": pa.array(nulls(list(rng.random(n, dtype=np.float32))), pa.float32()),
            "f64": pa.array(nulls(list(rng.random(n))), pa.float64()),
            "flag": pa.array(nulls([i % 2 == 0 for i in range(n)]), pa.bool_()),
            "text": pa.array(nulls([f"héllo 世界 🌲 {i}" for i in range(n)]), pa.string()),
            "big_text": pa.array(nulls(["x" * (i % 50) for i in range(n)]), pa.large_string()),
            "doc": pa.array(
                nulls([json.dumps({"k": i, "s": "ü"}).encode() for i in range(n)]), pa.binary()
            ),
            "$meta": pa.array([json.dumps({"dyn": i}) for i in range(n)], pa.string()),
            "ints": pa.array(nulls([list(range(i % 5)) for i in range(n)]), pa.list_(pa.int64())),
            "strs": pa.array(nulls([["a", "β"][: i % 3] for i in range(n)]), pa.list_(pa.string())),
            "vec": vectors(n, 128),
            **system(n),
        }
    )


def big_table(n: int, dim: int = 128) -> pa.Table:
    return pa.table({"id": pa.array(np.arange(n), pa.int64()), "vec": vectors(n, dim), **system(n)})


@pytest.fixture(params=["memory", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Metered]:
    inner: ObjectStore = (
        MemoryObjectStore() if request.param == "memory" else FileObjectStore(tmp_path, fsync=False)
    )
    s = Metered(inner)
    try:
        yield s
    finally:
        await s.close()


async def write(store: ObjectStore, table: pa.Table, segment_id: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    pk = "pk" if "pk" in table.column_names else "id"
    return await write_segment(
        store, ROOT, 10, 20, segment_id, table, channel="dml_0", pk_field=pk, **kw
    )


# --- round trip ----------------------------------------------------------------------------------


async def test_every_type_roundtrips(store: Metered) -> None:
    table = every_type()
    clock = ManualClock(1_700_000_123.0)
    m = await write(store, table, clock=clock, schema_version=4, properties={"k": "v"})
    assert m.row_count == 500 and m.min_pk == 0 and m.max_pk == 1497
    assert (m.min_ts, m.max_ts) == (TS0, TS0 + 499)
    assert m.created_at == 1_700_000_123.0 and m.schema_version == 4
    assert m.column_names == table.column_names
    assert len(m.insert_files) == 1 and m.insert_files[0].path == "insert/0.parquet"
    got = await read_segment(store, m)
    assert got.equals(table)
    assert got.schema.equals(table.schema)
    assert await read_manifest(store, ROOT, 10, 20, 1) == m


async def test_string_pk(store: Metered) -> None:
    table = pa.table({"pk": pa.array([f"k{i:03d}" for i in range(50)]), **system(50)})
    m = await write(store, table)
    assert (m.pk_type, m.min_pk, m.max_pk) == ("string", "k000", "k049")
    assert (await read_segment(store, m)).equals(table)


async def test_projection_reads_a_small_fraction(store: Metered) -> None:
    m = await write(store, big_table(20_000))
    size = m.insert_files[0].size
    store.meter.reset()
    reader = SegmentReader(store, m)
    pk = await reader.read(["id"])
    assert pk.column_names == ["id"] and pk["id"].to_pylist() == list(range(20_000))
    got = store.meter.ops["get"].bytes
    assert got < 0.10 * size, (got, size)
    assert reader.stats.misses == 0 and reader.stats.bytes == got
    # A later column of the same reader reuses the cached footer.
    before = store.meter.ops["get"].requests
    vec = await reader.read(["vec", "_ts"])
    assert vec.column_names == ["vec", "_ts"] and len(vec) == 20_000
    assert store.meter.ops["get"].requests - before >= 1
    assert reader.stats.misses == 0
    assert store.meter.ops["get"].bytes < 1.02 * size


async def test_large_ranges_are_fetched_in_parallel_parts(store: Metered) -> None:
    t = big_table(3000, dim=32)
    m = await write(store, t)
    store.meter.reset()
    reader = SegmentReader(store, m, part_bytes=64 * 1024, concurrency=3)
    got = await reader.read(["vec", "id"])
    assert got["vec"].equals(t["vec"]) and got["id"].equals(t["id"])
    vec_bytes = 3000 * 32 * 4
    assert reader.stats.gets >= vec_bytes // (64 * 1024) and reader.stats.misses == 0
    assert store.meter.ops["get"].bytes < m.insert_files[0].size + 64 * 1024


async def test_columns_are_checked(store: Metered) -> None:
    m = await write(store, big_table(10, dim=4))
    with pytest.raises(InvalidArgument, match="nope"):
        await read_segment(store, m, ["id", "nope"])
    assert (await read_segment(store, m, ["_ts", "id", "_ts"])).column_names == ["_ts", "id"]
    none = await read_segment(store, m, [])
    assert none.num_columns == 0 and none.num_rows == 10


async def test_filter_ts_prunes_files_row_groups_and_rows(store: Metered) -> None:
    opts = ParquetOptions(row_group_rows=500)
    writer = SegmentWriter(
        store, ROOT, 10, 20, 1, channel="c", pk_field="id", options=opts, max_file_bytes=1
    )
    for start in (0, 5000):  # two insert files (max_file_bytes=1 cuts one per write)
        n = 5000
        await writer.write(
            pa.table(
                {
                    "id": pa.array(np.arange(start, start + n), pa.int64()),
                    "vec": vectors(n, 128, seed=start),
                    **system(n, start=start),
                }
            )
        )
    m = await writer.finish()
    assert [f.path for f in m.insert_files] == ["insert/0.parquet", "insert/1.parquet"]
    assert m.insert_files[1].min_ts == TS0 + 5000
    store.meter.reset()
    got = await read_segment(store, m, ["id", "vec"], filter_ts=TS0 + 1499)
    assert got["id"].to_pylist() == list(range(1500))
    # Only file 0 is touched, and only 3 of its 10 row groups.
    assert store.meter.ops["get"].bytes < 0.4 * m.insert_files[0].size
    empty = await read_segment(store, m, ["id"], filter_ts=TS0 - 1)
    assert empty.num_rows == 0 and empty.schema.names == ["id"]
    assert (await read_segment(store, m, filter_ts=TS0 + 10**6)).num_rows == 10_000


async def test_writer_concatenates_batches_into_one_file(store: Metered) -> None:
    writer = SegmentWriter(store, ROOT, 10, 20, 1, channel="c", pk_field="id")
    await writer.write(big_table(100, dim=4).slice(0, 60))
    await writer.write(big_table(100, dim=4).slice(60))
    await writer.write(big_table(0, dim=4))
    m = await writer.finish()
    assert len(m.insert_files) == 1 and m.row_count == 100
    assert await writer.finish() is m  # idempotent
    with pytest.raises(InvalidArgument):
        await writer.write(big_table(1, dim=4))
    assert (await read_segment(store, m)).equals(big_table(100, dim=4))


@pytest.mark.parametrize(
    "table, match",
    [
        (pa.table({"id": [1], "_row_id": pa.array([1], pa.int64())}), "_ts"),
        (pa.table({"id": [1], **system(1), "_ts": pa.array([1], pa.int64())}), "_ts"),
        (pa.table({"idx": [1], **system(1)}), "pk_field"),
        (pa.table({"id": [1.5], **system(1)}), "int64 or string"),
        (pa.table({"id": pa.array([1, None], pa.int64()), **system(2)}), "null"),
    ],
)
async def test_bad_tables_are_refused(table: pa.Table, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        await write(MemoryObjectStore(), table)


async def test_empty_segment_and_schema_change_are_refused() -> None:
    store = MemoryObjectStore()
    with pytest.raises(InvalidArgument, match="no rows"):
        await write(store, big_table(0, dim=4))
    writer = SegmentWriter(store, ROOT, 10, 20, 2, channel="c", pk_field="id")
    await writer.write(big_table(3, dim=4))
    with pytest.raises(InvalidArgument, match="schema"):
        await writer.write(big_table(3, dim=8))


# --- immutability and completeness ---------------------------------------------------------------


async def test_existing_segment_is_never_overwritten(store: Metered) -> None:
    first = await write(store, big_table(10, dim=4))
    with pytest.raises(SegmentExists):
        await write(store, big_table(20, dim=4))
    assert await read_manifest(store, ROOT, 10, 20, 1) == first
    assert (await read_segment(store, first)).num_rows == 10


async def test_foreign_data_file_is_kept_on_abort() -> None:
    store = MemoryObjectStore()
    path = SegmentPath(ROOT, 10, 20, 1)
    await store.put(path.insert_key(0), b"someone else's")
    with pytest.raises(SegmentExists):
        await write(store, big_table(10, dim=4))
    assert await store.get(path.insert_key(0)) == b"someone else's"


async def test_retried_finish_after_lost_reply_succeeds() -> None:
    faulty = Faulty(MemoryObjectStore())
    writer = SegmentWriter(faulty, ROOT, 10, 20, 1, channel="c", pk_field="id")
    await writer.write(big_table(10, dim=4))
    faulty.fail_next("put", "lost_reply")  # the insert file lands, the reply is lost
    with pytest.raises(Unavailable):
        await writer.finish()
    faulty.fail_next("put", "lost_reply")  # the retried insert file PUT finds its own bytes...
    with pytest.raises(Unavailable):
        await writer.finish()  # ...and the manifest lands, reply lost
    m = await writer.finish()  # the manifest holds identical bytes: success
    assert (await read_segment(faulty, m)).num_rows == 10


async def test_list_skips_half_written_and_filters_partition(store: Metered) -> None:
    await write(store, big_table(5, dim=4), segment_id=3)
    await write(store, big_table(5, dim=4), segment_id=12)
    other = await write_segment(
        store, ROOT, 10, 21, 1, big_table(5, dim=4), channel="c", pk_field="id"
    )
    half = SegmentWriter(store, ROOT, 10, 20, 7, channel="c", pk_field="id", max_file_bytes=1)
    await half.write(big_table(5, dim=4))  # insert file written, never finished
    await write_segment(store, ROOT, 11, 20, 1, big_table(5, dim=4), channel="c", pk_field="id")
    found = await list_segments(store, ROOT, 10)
    assert [(m.partition_id, m.segment_id) for m in found] == [(20, 3), (20, 12), (21, 1)]
    assert found[2] == other and found[2].etag
    assert [m.segment_id for m in await list_segments(store, ROOT, 10, partition_id=21)] == [1]
    with pytest.raises(SegmentNotFound):
        await read_manifest(store, ROOT, 10, 20, 7)
    await half.abort()
    assert [i.key async for i in store.list(SegmentPath(ROOT, 10, 20, 7).prefix)] == []


async def test_set_state_and_delete(store: Metered) -> None:
    m = await write(store, big_table(5, dim=4))
    dropped = await set_segment_state(store, ROOT, 10, 20, 1, STATE_DROPPED)
    assert dropped.state == STATE_DROPPED and dropped.etag != m.etag
    assert (await list_segments(store, ROOT, 10))[0].state == STATE_DROPPED
    with pytest.raises(InvalidArgument):
        await set_segment_state(store, ROOT, 10, 20, 1, "weird")
    path = SegmentPath(ROOT, 10, 20, 1)
    await store.put(path.index_prefix(101, 1) + "hnsw.bin", b"index")
    assert await delete_segment(store, ROOT, 10, 20, 1) == 2  # insert file + index file
    assert await list_segments(store, ROOT, 10) == []
    assert [i.key async for i in store.list(path.prefix)] == []
    assert await delete_segment(store, ROOT, 10, 20, 1) == 0


async def test_delete_removes_manifest_first() -> None:
    order: list[str] = []

    class Recording(Metered):
        async def delete(self, key: str) -> None:
            order.append(key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1])
            await super().delete(key)

    store = Recording(MemoryObjectStore())
    await write(store, big_table(5, dim=4))
    await delete_segment(store, ROOT, 10, 20, 1)
    assert order == ["1/manifest.json", "insert/0.parquet"]


# --- damage --------------------------------------------------------------------------------------


async def test_missing_insert_file_is_corrupt(store: Metered) -> None:
    m = await write(store, big_table(5, dim=4))
    await store.delete(m.key("insert/0.parquet"))
    with pytest.raises(SegmentCorrupt, match="missing"):
        await read_segment(store, m)


async def test_truncated_and_garbage_files_are_corrupt(store: Metered) -> None:
    m = await write(store, big_table(2000, dim=16))
    key = m.key("insert/0.parquet")
    data = await store.get(key)
    await store.put(key, data[: len(data) // 2])
    with pytest.raises(SegmentCorrupt, match="shorter"):
        await read_segment(store, m)
    await store.put(key, b"\x00" * len(data))
    with pytest.raises(SegmentCorrupt, match="footer"):
        await read_segment(store, m)


async def test_flipped_byte_in_a_page_is_caught_by_the_page_crc(store: Metered) -> None:
    m = await write(store, big_table(2000, dim=16))
    key = m.key("insert/0.parquet")
    data = bytearray(await store.get(key))
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    vec = meta.row_group(0).column(1)
    data[vec.data_page_offset + vec.total_compressed_size // 2] ^= 0xFF
    await store.put(key, bytes(data))
    assert (await read_segment(store, m, ["id"]))["id"].to_pylist() == list(range(2000))
    with pytest.raises(SegmentCorrupt, match="damaged"):
        await read_segment(store, m, ["vec"])


async def test_corrupt_manifest(store: Metered) -> None:
    await write(store, big_table(5, dim=4))
    path = SegmentPath(ROOT, 10, 20, 1)
    await store.put(path.manifest_key, b'{"format_version": 1, "oops"')
    with pytest.raises(SegmentCorrupt):
        await read_manifest(store, ROOT, 10, 20, 1)
    with pytest.raises(SegmentCorrupt):
        await list_segments(store, ROOT, 10)


async def test_manifest_at_the_wrong_path_is_corrupt() -> None:
    store = MemoryObjectStore()
    m = await write(store, big_table(5, dim=4))
    await store.put(SegmentPath(ROOT, 10, 20, 2).manifest_key, m.to_json())
    with pytest.raises(SegmentCorrupt, match="names segment"):
        await read_manifest(store, ROOT, 10, 20, 2)


async def test_store_outage_is_not_corruption() -> None:
    faulty = Faulty(MemoryObjectStore())
    m = await write(faulty, big_table(5, dim=4))
    faulty.down = True
    with pytest.raises(Unavailable):
        await read_segment(faulty, m)
    with pytest.raises(Unavailable):
        await read_manifest(faulty, ROOT, 10, 20, 1)
