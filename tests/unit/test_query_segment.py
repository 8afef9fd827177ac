"""Loaded sealed segments (cluster/query/segment.py): search with and without an index, filters
at several selectivities, MVCC deletes, lazy column loading, query and take."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cluster.index import IndexManifest, IndexSpec, build_index
from cluster.query import LocalCache, SealedSegment, Strategy, plan
from cluster.query.testing import TS0, clustered_vectors, recall, segment_table
from cluster.storage import SegmentManifest, append_deltas, read_manifest, write_segment
from cluster.streaming.search import Metric, exact_search, row_norms
from woodpecker.errors import InvalidArgument
from woodpecker.objectstore import MemoryObjectStore, Metered

ROOT = "r"
N, DIM, NQ = 20_000, 32, 40
METRICS = ("L2", "IP", "COSINE")


@dataclass
class World:
    store: MemoryObjectStore
    x: np.ndarray
    q: np.ndarray
    segment: SegmentManifest
    indexes: dict[str, IndexManifest]  # metric -> HNSW build (index ids 1, 2, 3)


@pytest.fixture(scope="module")
def world() -> World:
    """One 20k-row segment with an HNSW build per metric (built once for the module)."""

    async def setup() -> World:
        store = MemoryObjectStore()
        x, q = clustered_vectors(N, NQ, dim=DIM, clusters=50, seed=11)
        ts = TS0 + np.arange(N, dtype=np.uint64)  # row i stamped TS0 + i
        segment = await write_segment(
            store, ROOT, 1, 2, 3, segment_table(x, ts=ts), channel="c", pk_field="id"
        )
        indexes = {}
        for i, metric in enumerate(METRICS, start=1):
            spec = IndexSpec.from_params(
                i, 101, "vec", {"index_type": "HNSW", "metric_type": metric}
            )
            indexes[metric] = await build_index(store, ROOT, segment, spec)
        return World(store, x, q, segment, indexes)

    return asyncio.run(setup())


async def open_cache(tmp_path: Path, store: object, **kw: int) -> LocalCache:
    kw.setdefault("max_bytes", 1 << 30)
    return await LocalCache.open(store, tmp_path / "cache", **kw)  # type: ignore[arg-type]


def truth(w: World, metric: str, k: int, mask: np.ndarray | None = None) -> tuple:
    norm2, inv = row_norms(w.x)
    return exact_search([(0, w.x)], w.q, k, metric, n=N, norm2=norm2, inv_norm=inv, mask=mask)


@pytest.mark.parametrize("metric", METRICS)
async def test_search_with_index_recall_and_scores(
    world: World, tmp_path: Path, metric: str
) -> None:
    cache = await open_cache(tmp_path, world.store)
    seg = await SealedSegment.load(world.segment, cache, [world.indexes[metric]])
    res = await seg.search(world.q, "vec", 10, metric, ef=128)
    assert res.strategy is Strategy.HNSW
    assert res.pks.shape == res.distances.shape == res.offsets.shape == (NQ, 10)
    offsets, scores = truth(world, metric, 10)
    assert recall(res.offsets, offsets) >= 0.95
    pks, _, found = res
    np.testing.assert_array_equal(pks, found)  # pk == row number here
    same = res.offsets[:, 0] == offsets[:, 0]
    np.testing.assert_allclose(res.distances[same, 0], scores[same, 0], rtol=1e-4, atol=1e-4)
    step = np.diff(res.distances, axis=1)
    assert (step >= -1e-5).all() if Metric(metric) is Metric.L2 else (step <= 1e-5).all()


@pytest.mark.parametrize("metric", METRICS)
async def test_search_without_index_is_exact(world: World, tmp_path: Path, metric: str) -> None:
    seg = await SealedSegment.load(world.segment, await open_cache(tmp_path, world.store))
    res = await seg.search(world.q, "vec", 7, metric)
    offsets, scores = truth(world, metric, 7)
    assert res.strategy is Strategy.EXACT
    np.testing.assert_array_equal(res.offsets, offsets)
    np.testing.assert_allclose(res.distances, scores, rtol=1e-5)


@pytest.mark.parametrize("selectivity", [0.001, 0.01, 0.1, 0.5, 0.95])
@pytest.mark.parametrize(
    "strategy", [None, Strategy.EXACT, Strategy.POST_FILTER, Strategy.ALLOW_LIST]
)
async def test_filtered_search(
    world: World, tmp_path: Path, selectivity: float, strategy: Strategy | None
) -> None:
    cache = await open_cache(tmp_path, world.store)
    seg = await SealedSegment.load(world.segment, cache, [world.indexes["L2"]])
    mask = np.random.default_rng(int(selectivity * 1000)).random(N) < selectivity
    res = await seg.search(world.q, "vec", 10, "L2", mask=mask, strategy=strategy, ef=64)
    k = min(10, int(mask.sum()))
    assert res.offsets.shape == (NQ, k)
    assert mask[res.offsets].all()  # never a row outside the filter
    assert all(len(set(row)) == k for row in res.offsets.tolist())
    offsets, _ = truth(world, "L2", 10, mask)
    assert recall(res.offsets, offsets) >= (0.999 if res.strategy is Strategy.EXACT else 0.9)
    if strategy is None:
        assert res.strategy is plan.choose(N, int(mask.sum()), NQ, 64, has_graph=True)


async def test_deletes_hide_rows(world: World, tmp_path: Path) -> None:
    store = MemoryObjectStore()
    for key in [i.key async for i in world.store.list(world.segment.prefix)]:
        await store.put(key, await world.store.get(key))
    # Delete log: pks 0..99 at TS0 + 50 hides rows 0..49 only (rows 50.. are newer).
    await append_deltas(store, ROOT, 1, 2, 3, np.arange(100), [TS0 + 50] * 100)
    manifest = await read_manifest(store, ROOT, 1, 2, 3)
    cache = await open_cache(tmp_path, store)
    seg = await SealedSegment.load(manifest, cache, [world.indexes["L2"]])
    assert seg.deletes.deleted == 50
    # The nearest row of each query, deleted later in memory, disappears from the results.
    first = await seg.search(world.q, "vec", 5, "L2")
    victims = np.unique(first.pks[:, 0])
    delete_ts = TS0 + N + 10
    assert seg.apply_deletes(victims, delete_ts) == len(victims)
    after = await seg.search(world.q, "vec", 5, "L2")
    assert not np.isin(after.pks, victims).any() and not np.isin(after.pks, np.arange(50)).any()
    assert after.strategy is Strategy.POST_FILTER
    # Reading at a timestamp before that delete still sees them (MVCC).
    before = await seg.search(world.q, "vec", 5, "L2", visible_ts=delete_ts - 1)
    assert np.isin(before.pks[:, 0], victims).all()
    # ... and at a timestamp before row i was inserted, row i is not there.
    early = await seg.query(columns=["id"], visible_ts=TS0 + 99)
    assert early["id"].to_pylist() == list(range(50, 100))
    visible = await seg.query(columns=["id"])
    assert visible.num_rows == N - 50 - len(victims)


async def test_new_delta_files_are_applied_once(world: World, tmp_path: Path) -> None:
    store = MemoryObjectStore()
    for key in [i.key async for i in world.store.list(world.segment.prefix)]:
        await store.put(key, await world.store.get(key))
    cache = await open_cache(tmp_path, store)
    seg = await SealedSegment.load(world.segment, cache)
    await append_deltas(store, ROOT, 1, 2, 3, [1, 2, 3], [TS0 + N] * 3)
    newer = await read_manifest(store, ROOT, 1, 2, 3)
    assert await seg.apply_delta_files(newer) == 3
    assert await seg.apply_delta_files(newer) == 0
    await append_deltas(store, ROOT, 1, 2, 3, [4], [TS0 + N])
    assert await seg.apply_delta_files(await read_manifest(store, ROOT, 1, 2, 3)) == 1
    assert seg.deletes.deleted == 4


async def test_lazy_loading_reads_only_needed_columns(world: World, tmp_path: Path) -> None:
    store = Metered(world.store)
    cache = await open_cache(tmp_path, store, block_bytes=32 * 1024)
    seg = await SealedSegment.load(world.segment, cache)
    size = world.segment.insert_files[0].size
    loaded = store.meter.snapshot()["get"].bytes
    assert loaded < size * 0.1 and set(seg.loaded_columns) == {"id", "_ts"}
    await seg.search(world.q, "vec", 5, "L2")  # exact: needs the vectors
    total = store.meter.snapshot()["get"].bytes
    # The vector column plus the footer tail and block alignment, not the ~500 KB of titles.
    assert size - N * DIM * 4 > 400_000
    assert N * DIM * 4 <= total < N * DIM * 4 + 150_000
    assert "title" not in seg.loaded_columns
    before = store.meter.snapshot()["get"].bytes
    again = await SealedSegment.load(world.segment, cache)  # a second load: all from the cache
    await again.search(world.q, "vec", 5, "L2")
    assert store.meter.snapshot()["get"].bytes == before
    assert cache.metrics.hits > 0


async def test_index_search_does_not_load_vectors(world: World, tmp_path: Path) -> None:
    store = Metered(world.store)
    cache = await open_cache(tmp_path, store)
    seg = await SealedSegment.load(world.segment, cache, [world.indexes["IP"]])
    await seg.search(world.q, "vec", 5, "IP")
    assert "vec" not in seg.loaded_columns
    index_file = world.indexes["IP"].files[0]
    assert cache.contains(world.indexes["IP"].key(index_file.path))


async def test_take_and_query(world: World, tmp_path: Path) -> None:
    seg = await SealedSegment.load(world.segment, await open_cache(tmp_path, world.store))
    t = await seg.take(np.array([[5, 2], [7, 5]]), ["id", "tag", "vec"])
    assert t["id"].to_pylist() == [5, 2, 7, 5]
    assert t["tag"].to_pylist() == [5, 2, 7, 5]
    np.testing.assert_array_equal(
        np.stack(t["vec"].to_numpy(zero_copy_only=False)), world.x[[5, 2, 7, 5]]
    )
    mask = np.zeros(N, bool)
    mask[[3, 30, 300]] = True
    q = await seg.query(mask, ["id", "title"])
    assert q["id"].to_pylist() == [3, 30, 300] and q.column_names == ["id", "title"]
    everything = await seg.query(columns=["tag"])
    assert everything.num_rows == N
    with pytest.raises(InvalidArgument):
        await seg.query(np.ones(3, bool))
    with pytest.raises(InvalidArgument):
        await seg.take([1], ["nope"])


async def test_vectors_are_one_contiguous_matrix(world: World, tmp_path: Path) -> None:
    seg = await SealedSegment.load(world.segment, await open_cache(tmp_path, world.store))
    m = await seg.vectors("vec")
    assert m.shape == (N, DIM) and m.dtype == np.float32 and m.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(m, world.x)
    col = await seg.column("vec")
    assert col.num_chunks == 1
    seg.release()
    assert set(seg.loaded_columns) == {"id", "_ts"}


async def test_request_errors(world: World, tmp_path: Path) -> None:
    cache = await open_cache(tmp_path, world.store)
    seg = await SealedSegment.load(world.segment, cache, [world.indexes["COSINE"]])
    with pytest.raises(InvalidArgument, match="metric type not match"):
        await seg.search(world.q, "vec", 5, "L2")
    with pytest.raises(InvalidArgument):
        await seg.search(world.q[:, :5], "vec", 5, "COSINE")
    with pytest.raises(InvalidArgument):
        await seg.search(world.q, "tag", 5, "COSINE")
    with pytest.raises(InvalidArgument):
        await seg.search(world.q, "vec", 0, "COSINE")
    empty = await seg.search(world.q, "vec", 5, "COSINE", mask=np.zeros(N, bool))
    assert empty.offsets.shape == (NQ, 0)
    few = await seg.search(world.q, "vec", 5, "COSINE", mask=np.arange(N) < 3)
    assert few.offsets.shape == (NQ, 3) and few.strategy is Strategy.EXACT


async def test_string_pks_and_versions(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    x, q = clustered_vectors(500, 4, dim=8, clusters=5)
    # Rows 0..249 are keys k0..k249; rows 250..499 are newer versions of the same keys
    # (an upsert: its delete at TS0 + 1 hides the old rows, not the new ones at TS0 + 1).
    pk = np.concatenate([np.arange(250), np.arange(250)])
    ts = np.concatenate([np.full(250, TS0), np.full(250, TS0 + 1)]).astype(np.uint64)
    table = segment_table(x, pk=pk, string_pk=True, ts=ts)
    m = await write_segment(store, ROOT, 1, 2, 9, table, channel="c", pk_field="id")
    await append_deltas(
        store, ROOT, 1, 2, 9, pa.array([f"k{i}" for i in range(250)]), [TS0 + 1] * 250
    )
    m = await read_manifest(store, ROOT, 1, 2, 9)
    seg = await SealedSegment.load(m, await open_cache(tmp_path, store))
    assert seg.deletes.deleted == 250
    res = await seg.search(q, "vec", 10, "L2")
    assert res.pks.dtype == object and (res.offsets >= 250).all()
    assert res.pks[0, 0] == f"k{res.offsets[0, 0] - 250}"
    assert seg.apply_deletes(["k3", "nope"], TS0 + 5) == 1
    rows = await seg.query(columns=["id", "_ts"])
    assert rows.num_rows == 249 and "k3" not in rows["id"].to_pylist()
    old = await seg.query(columns=["id"], visible_ts=TS0)
    assert old.num_rows == 250


async def test_a_stale_index_manifest_follows_the_rebuild(world: World, tmp_path: Path) -> None:
    old_spec = IndexSpec.from_params(50, 101, "vec", {"index_type": "HNSW", "M": "8"})
    old = await build_index(world.store, ROOT, world.segment, old_spec)
    new_spec = IndexSpec.from_params(50, 101, "vec", {"index_type": "HNSW", "M": "12"})
    await build_index(world.store, ROOT, world.segment, new_spec)  # deletes old's file
    seg = await SealedSegment.load(world.segment, await open_cache(tmp_path, world.store), [old])
    assert seg.indexes["vec"].build_params["M"] == 12
    res = await seg.search(world.q, "vec", 10, "COSINE")
    assert res.strategy is Strategy.HNSW
