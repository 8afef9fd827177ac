"""The sealed-segment storage format over every ObjectStore backend: memory://, file:// and a
real SeaweedFS S3 server (``seaweedfs_service``).

Each test gets a fresh store under a unique prefix, wrapped in ``Metered`` so byte counts are
what the backend actually served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa
import pytest

from cluster.storage import (
    SegmentCorrupt,
    SegmentExists,
    SegmentNotFound,
    SegmentPath,
    SegmentReader,
    SegmentWriter,
    append_deltas,
    delete_segment,
    list_segments,
    read_deltas,
    read_manifest,
    read_segment,
    write_segment,
)
from woodpecker.objectstore import FileObjectStore, MemoryObjectStore, Metered
from woodpecker.objectstore.base import ObjectStore

pytestmark = pytest.mark.contract

BACKENDS = ["memory", "file", "s3-seaweedfs"]
ROOT = "segments"
IDS = (5, 6, 7)
TS0 = 1 << 60


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path, unique_prefix) -> AsyncIterator[Metered]:  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "memory":
        inner: ObjectStore = MemoryObjectStore()
    elif kind == "file":
        inner = FileObjectStore(tmp_path / "objects")
    else:
        from woodpecker.objectstore.s3 import S3ObjectStore

        service = request.getfixturevalue("seaweedfs_service")
        inner = S3ObjectStore(
            service.bucket,
            unique_prefix,
            endpoint_url=service.endpoint_url,
            region=service.region,
            access_key_id=service.access_key_id,
            secret_access_key=service.secret_access_key,
        )
    s = Metered(inner)
    try:
        yield s
    finally:
        await s.close()


def table(n: int, dim: int = 128, *, start: int = 0) -> pa.Table:
    rng = np.random.default_rng(start)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, dtype=np.float32)), dim)
    ids = np.arange(start, start + n)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "vec": vec,
            "title": pa.array([f"título {i} 🌲" if i % 9 else None for i in ids]),
            "meta": pa.array([f'{{"n": {i}}}' for i in ids], pa.string()),
            "tags": pa.array([[int(i) % 3] * (int(i) % 4) for i in ids], pa.list_(pa.int32())),
            "score": pa.array(rng.random(n), pa.float64()),
            "_row_id": pa.array(ids + 1_000_000, pa.int64()),
            "_ts": pa.array(ids.astype(np.uint64) + TS0),
        }
    )


async def write(store: ObjectStore, t: pa.Table, segment_id: int = IDS[2]):  # type: ignore[no-untyped-def]
    return await write_segment(
        store, ROOT, IDS[0], IDS[1], segment_id, t, channel="dml_3", pk_field="id"
    )


async def test_roundtrip_and_manifest(store: Metered) -> None:
    t = table(3000)
    m = await write(store, t)
    assert m.row_count == 3000 and (m.min_pk, m.max_pk) == (0, 2999)
    assert (m.min_ts, m.max_ts) == (TS0, TS0 + 2999)
    assert m.insert_files[0].size == (await store.head(m.key("insert/0.parquet"))).size
    read_back = await read_manifest(store, ROOT, *IDS)
    assert read_back == m and read_back.etag == m.etag
    assert (await read_segment(store, m)).equals(t)


async def test_projection_reads_under_ten_percent(store: Metered) -> None:
    m = await write(store, table(20_000))
    store.meter.reset()
    reader = SegmentReader(store, m)
    got = await reader.read(["id"])
    assert got["id"].to_pylist() == list(range(20_000))
    assert store.meter.ops["get"].bytes < 0.10 * m.insert_files[0].size
    assert reader.stats.misses == 0
    part = await reader.read(["title", "vec"], filter_ts=TS0 + 99)
    assert part.num_rows == 100 and part.column_names == ["title", "vec"]
    assert part["vec"].to_pylist() == table(20_000)["vec"][:100].to_pylist()


async def test_concurrent_delta_appends_all_land(store: Metered) -> None:
    await write(store, table(100, dim=8))
    await asyncio.gather(
        *(append_deltas(store, ROOT, *IDS, [i], [TS0 + 500 + i]) for i in range(4))
    )
    await append_deltas(store, ROOT, *IDS, [10, 11], [TS0 + 600, TS0 + 601])
    m = await read_manifest(store, ROOT, *IDS)
    assert len(m.delta_files) == 5 and m.delete_count == 6
    assert sorted(d.path for d in m.delta_files) == [f"deltas/{i}.parquet" for i in range(5)]
    pks, tss = await read_deltas(store, m)
    assert sorted(pks.to_pylist()) == [0, 1, 2, 3, 10, 11]
    assert sorted(tss.to_pylist())[-1] == TS0 + 601
    pks, _ = await read_deltas(store, m, filter_ts=TS0 + 501)
    assert sorted(pks.to_pylist()) == [0, 1]


async def test_never_overwrites_and_lists_only_complete_segments(store: Metered) -> None:
    first = await write(store, table(50, dim=8), segment_id=1)
    with pytest.raises(SegmentExists):
        await write(store, table(60, dim=8), segment_id=1)
    assert (await read_manifest(store, ROOT, IDS[0], IDS[1], 1)) == first
    half = SegmentWriter(
        store, ROOT, IDS[0], IDS[1], 2, channel="c", pk_field="id", max_file_bytes=1
    )
    await half.write(table(50, dim=8))  # data file, no manifest: not a segment
    await write(store, table(50, dim=8), segment_id=3)
    listed = await list_segments(store, ROOT, IDS[0])
    assert [m.segment_id for m in listed] == [1, 3]
    assert listed[0].etag == first.etag
    with pytest.raises(SegmentNotFound):
        await read_manifest(store, ROOT, IDS[0], IDS[1], 2)


async def test_delete_segment(store: Metered) -> None:
    m = await write(store, table(50, dim=8))
    await append_deltas(store, ROOT, *IDS, [1], [TS0 + 1])
    assert await delete_segment(store, ROOT, *IDS) == 2
    assert await list_segments(store, ROOT, IDS[0]) == []
    assert [i.key async for i in store.list(SegmentPath(ROOT, *IDS).prefix)] == []
    with pytest.raises(SegmentCorrupt, match="missing"):
        await read_segment(store, m)  # a stale manifest's files are gone


async def test_damaged_insert_file_is_a_typed_error(store: Metered) -> None:
    m = await write(store, table(500, dim=8))
    key = m.key("insert/0.parquet")
    data = await store.get(key)
    await store.delete(key)
    await store.put(key, data[: len(data) - 100])
    with pytest.raises(SegmentCorrupt):
        await read_segment(store, m)
