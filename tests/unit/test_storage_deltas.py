"""Unit tests for segment delete logs (cluster/storage/deltas.py) over memory:// and file://."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cluster.storage import (
    SegmentCorrupt,
    SegmentManifest,
    SegmentNotFound,
    SegmentPath,
    append_deltas,
    delete_segment,
    read_deltas,
    read_manifest,
    write_segment,
)
from woodpecker.errors import InvalidArgument
from woodpecker.objectstore import (
    FaultConfig,
    Faulty,
    FileObjectStore,
    MemoryObjectStore,
    Metered,
    Retrying,
)
from woodpecker.objectstore.base import ObjectStore

ROOT = "r"
IDS = (1, 2, 3)


def table(n: int = 100, *, string_pk: bool = False) -> pa.Table:
    pk = [f"k{i}" for i in range(n)] if string_pk else np.arange(n)
    return pa.table(
        {
            "pk": pa.array(pk, pa.string() if string_pk else pa.int64()),
            "_row_id": pa.array(np.arange(n), pa.int64()),
            "_ts": pa.array(np.arange(n, dtype=np.uint64) + 100),
        }
    )


async def segment(store: ObjectStore, **kw: bool) -> SegmentManifest:
    return await write_segment(store, ROOT, *IDS, table(**kw), channel="c", pk_field="pk")


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


class Gate:
    """Holds the first ``gated`` GETs of ``key`` until another one arrives (pairs of callers),
    so two appenders read the same manifest version and must conflict."""

    def __init__(self, inner: ObjectStore, key: str, gated: int) -> None:
        self.inner = inner
        self.key = key
        self.gated = gated
        self.barrier = asyncio.Barrier(2)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get(self, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        data = await self.inner.get(key, offset=offset, length=length)
        if key == self.key and self.gated > 0:
            self.gated -= 1
            await asyncio.wait_for(self.barrier.wait(), 5)
        return data


async def test_append_and_read(store: Metered) -> None:
    m = await segment(store)
    d0 = await append_deltas(store, ROOT, *IDS, [1, 2, 3], [150, 151, 152])
    d1 = await append_deltas(store, ROOT, *IDS, pa.array([7], pa.int64()), np.array([160]))
    assert (d0.path, d0.rows, d0.min_ts, d0.max_ts) == ("deltas/0.parquet", 3, 150, 152)
    assert d1.path == "deltas/1.parquet"
    m2 = await read_manifest(store, ROOT, *IDS)
    assert m2.delta_files == (d0, d1) and m2.delete_count == 4
    assert m2.etag != m.etag
    pks, tss = await read_deltas(store, m2)
    assert pks.to_pylist() == [1, 2, 3, 7] and tss.to_pylist() == [150, 151, 152, 160]
    assert pks.type == pa.int64() and tss.type == pa.uint64()
    pks, tss = await read_deltas(store, m2, filter_ts=151)
    assert pks.to_pylist() == [1, 2] and tss.to_pylist() == [150, 151]
    pks, _ = await read_deltas(store, m)  # the older manifest lists none
    assert len(pks) == 0 and pks.type == pa.int64()


async def test_string_pks(store: Metered) -> None:
    await segment(store, string_pk=True)
    await append_deltas(store, ROOT, *IDS, ["k1", "ü"], [200, 201])
    pks, _ = await read_deltas(store, await read_manifest(store, ROOT, *IDS))
    assert pks.to_pylist() == ["k1", "ü"] and pks.type == pa.string()


@pytest.mark.parametrize(
    "pks, tss, match",
    [
        ([1, 2], [5], "2 pks but 1"),
        ([], [], "no deletes"),
        (["a"], [5], "castable"),
        ([1], [-5], "castable"),
        ([None], [5], "null"),
    ],
)
async def test_bad_deletes_are_refused(pks: list, tss: list, match: str) -> None:
    store = MemoryObjectStore()
    await segment(store)
    with pytest.raises(InvalidArgument, match=match):
        await append_deltas(store, ROOT, *IDS, pks, tss)


async def test_append_to_missing_segment() -> None:
    with pytest.raises(SegmentNotFound):
        await append_deltas(MemoryObjectStore(), ROOT, *IDS, [1], [1])


async def test_two_concurrent_appenders_both_land(store: Metered) -> None:
    await segment(store)
    key = SegmentPath(ROOT, *IDS).manifest_key
    # Round 1: both read manifest v1 to pick a file number (both pick 0: one PUT loses and moves
    # to 1). Round 2: both read v1 for the CAS (one CAS loses, re-reads and retries).
    gate = Gate(store, key, gated=4)
    store.meter.reset()
    a, b = await asyncio.gather(
        append_deltas(gate, ROOT, *IDS, [1], [500]),  # type: ignore[arg-type]
        append_deltas(gate, ROOT, *IDS, [2], [501]),  # type: ignore[arg-type]
    )
    assert {a.path, b.path} == {"deltas/0.parquet", "deltas/1.parquet"}
    assert store.meter.ops["put"].errors == 2  # one file-number collision, one lost CAS
    m = await read_manifest(store, ROOT, *IDS)
    assert {d.path for d in m.delta_files} == {a.path, b.path}
    pks, _ = await read_deltas(store, m)
    assert sorted(pks.to_pylist()) == [1, 2]


async def test_many_concurrent_appenders_with_latency() -> None:
    store = Faulty(MemoryObjectStore(), seed=3, config=FaultConfig(latency=(0.0, 0.003)))
    await segment(store)
    await asyncio.gather(*(append_deltas(store, ROOT, *IDS, [i], [1000 + i]) for i in range(8)))
    m = await read_manifest(store, ROOT, *IDS)
    assert len(m.delta_files) == 8
    pks, _ = await read_deltas(store, m)
    assert sorted(pks.to_pylist()) == list(range(8))


async def test_appends_survive_lost_replies_behind_retrying() -> None:
    faults = FaultConfig(unavailable=0.2, lost_reply=0.15, unknown_outcome=0.1)
    store = Retrying(Faulty(MemoryObjectStore(), seed=11, config=faults), attempts=30, base_delay=0)
    await segment(store)
    for i in range(10):
        await append_deltas(store, ROOT, *IDS, [i], [1000 + i])
    m = await read_manifest(store, ROOT, *IDS)
    pks, _ = await read_deltas(store, m)
    assert sorted(set(pks.to_pylist())) == list(range(10))


async def test_orphan_delta_file_is_skipped_and_invisible(store: Metered) -> None:
    await segment(store)
    path = SegmentPath(ROOT, *IDS)
    await store.put(path.delta_key(0), b"left by a crashed appender")
    d = await append_deltas(store, ROOT, *IDS, [5], [300])
    assert d.path == "deltas/1.parquet"
    pks, _ = await read_deltas(store, await read_manifest(store, ROOT, *IDS))
    assert pks.to_pylist() == [5]


async def test_segment_deleted_during_append_removes_the_file() -> None:
    inner = MemoryObjectStore()
    await segment(inner)
    path = SegmentPath(ROOT, *IDS)

    class DeleteAfterDeltaPut(Metered):
        async def put(self, key: str, data: bytes, **kw: str | None):  # type: ignore[no-untyped-def, override]
            info = await super().put(key, data, **kw)
            if "/deltas/" in key:
                await delete_segment(inner, ROOT, *IDS)
            return info

    with pytest.raises(SegmentNotFound):
        await append_deltas(DeleteAfterDeltaPut(inner), ROOT, *IDS, [1], [1])
    assert [i.key async for i in inner.list(path.prefix)] == []


async def test_missing_or_damaged_delta_file_is_corrupt(store: Metered) -> None:
    await segment(store)
    await append_deltas(store, ROOT, *IDS, [1], [150])
    m = await read_manifest(store, ROOT, *IDS)
    key = m.key(m.delta_files[0].path)
    data = await store.get(key)
    await store.put(key, data[:-1] + b"X")
    with pytest.raises(SegmentCorrupt, match="damaged"):
        await read_deltas(store, m)
    await store.put(key, data + b"extra")
    with pytest.raises(SegmentCorrupt, match="bytes"):
        await read_deltas(store, m)
    await store.delete(key)
    with pytest.raises(SegmentCorrupt, match="missing"):
        await read_deltas(store, m)
