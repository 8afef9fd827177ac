"""Index builds of sealed segments (cluster/index): specs, build, idempotency, load, recall."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa
import pytest

from cluster.coordinator.records import IndexInfo
from cluster.index import (
    AUTOINDEX_FLAT_ROWS,
    FLAT,
    HNSW,
    IndexManifest,
    IndexSpec,
    build_index,
    delete_index,
    index_manifest_key,
    load_index,
    read_index_manifest,
)
from cluster.index.hnsw import vector_matrix
from cluster.query.testing import clustered_vectors, recall, segment_table
from cluster.storage import SegmentCorrupt, SegmentManifest, write_segment
from cluster.streaming.search import exact_search, row_norms
from woodpecker.errors import InvalidArgument
from woodpecker.objectstore import FileObjectStore, MemoryObjectStore, Metered

ROOT = "segs"
N, DIM = 3000, 32


def spec(index_type: str = "HNSW", metric: str = "L2", **params: str) -> IndexSpec:
    return IndexSpec.from_params(
        7, 101, "vec", {"index_type": index_type, "metric_type": metric, **params}
    )


@pytest.fixture(params=["memory", "file"])
async def store(request, tmp_path) -> AsyncIterator[Metered]:  # type: ignore[no-untyped-def]
    inner = MemoryObjectStore() if request.param == "memory" else FileObjectStore(tmp_path / "o")
    s = Metered(inner)
    yield s
    await s.close()


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors(N, 50, dim=DIM, clusters=30, seed=3)


@pytest.fixture
async def segment(store: Metered, data: tuple[np.ndarray, np.ndarray]) -> SegmentManifest:
    x, _ = data
    return await write_segment(store, ROOT, 1, 2, 3, segment_table(x), channel="ch", pk_field="id")


# --- spec -------------------------------------------------------------------------------------


def test_spec_from_index_info() -> None:
    info = IndexInfo(
        index_id=9,
        collection_id=1,
        index_name="i",
        field_id=101,
        field_name="vec",
        index_type="HNSW",
        metric_type="IP",
        params={"M": "8", "efConstruction": "64"},
        user_params={},
        create_ts=0,
    )
    s = IndexSpec.from_index_info(info)
    assert (s.index_id, s.field_id, s.index_type, str(s.metric), s.m, s.ef_construction) == (
        9, 101, "HNSW", "IP", 8, 64,
    )  # fmt: skip
    assert s.build_params() == {
        "index_type": "HNSW", "metric_type": "IP", "M": 8, "efConstruction": 64,
    }  # fmt: skip


def test_spec_defaults_and_autoindex() -> None:
    s = IndexSpec.from_params(1, 2, "v", {})
    assert s.index_type == "AUTOINDEX" and str(s.metric) == "COSINE"
    assert s.resolve(AUTOINDEX_FLAT_ROWS - 1).index_type == FLAT
    big = s.resolve(AUTOINDEX_FLAT_ROWS)
    assert (big.index_type, big.m, big.ef_construction) == (HNSW, 16, 200)
    assert spec("FLAT").resolve(10**6).index_type == FLAT
    assert spec("HNSW").resolve(10).index_type == HNSW


@pytest.mark.parametrize(
    "raw",
    [
        {"index_type": "IVF_FLAT"},
        {"index_type": "HNSW", "metric_type": "HAMMING"},
        {"index_type": "HNSW", "M": "x"},
        {"index_type": "HNSW", "M": "1"},
    ],
)
def test_spec_rejects_bad_params(raw: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        IndexSpec.from_params(1, 2, "v", raw)


# --- build ------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
async def test_build_load_search_matches_exact(
    store: Metered, segment: SegmentManifest, data: tuple[np.ndarray, np.ndarray], metric: str
) -> None:
    x, q = data
    stages: list[str] = []
    im = await build_index(
        store, ROOT, segment, spec(metric=metric), progress=lambda s, f: stages.append(s)
    )
    assert (im.index_type, im.metric_type, im.rows, im.dim) == ("HNSW", metric, N, DIM)
    assert stages[0] == "read" and stages[-1] == "done" and {"build", "upload"} <= set(stages)
    assert im.build_params == {"index_type": "HNSW", "metric_type": metric, "M": 16,
                               "efConstruction": 200}  # fmt: skip
    (f,) = im.files
    assert f.path.startswith("hnsw-") and f.size == (await store.head(im.key(f.path))).size
    graph = await load_index(store, im)
    assert graph is not None and graph.rows == N
    labels, scores = graph.search(q, 10, 128)
    norm2, inv = row_norms(x)
    truth, truth_scores = exact_search([(0, x)], q, 10, metric, n=N, norm2=norm2, inv_norm=inv)
    assert recall(labels, truth) >= 0.95
    # Milvus scores: where the graph found the true top-1, the score is the exact one.
    same = labels[:, 0] == truth[:, 0]
    assert same.mean() > 0.9
    np.testing.assert_allclose(scores[same, 0], truth_scores[same, 0], rtol=1e-4, atol=1e-4)
    order = np.diff(scores, axis=1)
    assert (order >= -1e-5).all() if metric == "L2" else (order <= 1e-5).all()


async def test_build_reads_only_the_vector_column(store: Metered, segment: SegmentManifest) -> None:
    store.meter.reset()
    await build_index(store, ROOT, segment, spec())
    got = store.meter.snapshot()["get"].bytes
    vector_bytes = N * DIM * 4
    assert vector_bytes <= got <= vector_bytes + 70_000  # the column + the 64 KiB footer tail


async def test_manifest_layout_and_json(store: Metered, segment: SegmentManifest) -> None:
    im = await build_index(store, ROOT, segment, spec())
    key = index_manifest_key(segment, 101, 7)
    assert key == f"{segment.prefix}index/101/7/index.json" == im.prefix + "index.json"
    doc = json.loads(await store.get(key))
    assert doc["format_version"] == 1 and doc["segment_id"] == 3 and doc["index_id"] == 7
    assert doc["source"]["row_count"] == N and doc["requested_type"] == "HNSW"
    assert {"build_seconds", "created_at", "files", "engine", "field_name"} <= set(doc)
    again = await read_index_manifest(store, segment, 101, 7)
    assert again == im
    assert await read_index_manifest(store, segment, 101, 8) is None
    with pytest.raises(SegmentCorrupt):
        IndexManifest.from_json(json.dumps({**doc, "format_version": 99}).encode())
    with pytest.raises(SegmentCorrupt):
        IndexManifest.from_json(b"{not json")


async def test_rebuild_is_skipped_when_identical(store: Metered, segment: SegmentManifest) -> None:
    first = await build_index(store, ROOT, segment, spec())
    store.meter.reset()
    again = await build_index(store, ROOT, segment, spec())
    assert again == first
    assert store.meter.snapshot()["put"].requests == 0


async def test_forced_or_changed_rebuild_replaces_files(
    store: Metered, segment: SegmentManifest
) -> None:
    first = await build_index(store, ROOT, segment, spec(M="8"))
    second = await build_index(store, ROOT, segment, spec(M="12"))
    assert second.build_params["M"] == 12 and second.files != first.files
    keys = [i.key async for i in store.list(first.prefix)]
    assert sorted(keys) == sorted([second.key(second.files[0].path), second.prefix + "index.json"])
    third = await build_index(store, ROOT, segment, spec(M="12"), force=True)
    assert third.build_params == second.build_params
    assert len([i async for i in store.list(first.prefix)]) == 2


async def test_rebuild_when_a_file_is_missing(store: Metered, segment: SegmentManifest) -> None:
    first = await build_index(store, ROOT, segment, spec())
    await store.delete(first.key(first.files[0].path))
    second = await build_index(store, ROOT, segment, spec())
    assert (await store.head(second.key(second.files[0].path))).size == second.files[0].size


async def test_flat_and_small_autoindex_write_no_files(
    store: Metered, segment: SegmentManifest
) -> None:
    flat = await build_index(store, ROOT, segment, spec("FLAT", "IP"))
    assert flat.index_type == FLAT and flat.files == () and flat.is_flat
    assert await load_index(store, flat) is None
    auto = await build_index(store, ROOT, segment, spec("AUTOINDEX", "COSINE"))
    assert (auto.index_type, auto.requested_type) == (FLAT, "AUTOINDEX")  # N < 10,000


async def test_concurrent_builds_agree(store: Metered, segment: SegmentManifest) -> None:
    import asyncio

    a, b = await asyncio.gather(
        build_index(store, ROOT, segment, spec()), build_index(store, ROOT, segment, spec())
    )
    stored = await read_index_manifest(store, segment, 101, 7)
    assert stored is not None and stored.files in (a.files, b.files)
    keys = [i.key async for i in store.list(stored.prefix)]
    assert len(keys) == 2  # the loser's file was removed


async def test_delete_index(store: Metered, segment: SegmentManifest) -> None:
    await build_index(store, ROOT, segment, spec())
    assert await delete_index(store, segment, 101, 7) == 1
    assert await read_index_manifest(store, segment, 101, 7) is None


async def test_bad_fields_and_roots(store: Metered, segment: SegmentManifest) -> None:
    with pytest.raises(InvalidArgument):
        await build_index(store, ROOT, segment, IndexSpec.from_params(7, 9, "nope", {}))
    with pytest.raises(InvalidArgument):
        await build_index(store, ROOT, segment, IndexSpec.from_params(7, 9, "tag", {}))
    with pytest.raises(InvalidArgument):
        await build_index(store, "other-root", segment, spec())


def test_vector_matrix_checks_types() -> None:
    ok = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
    chunked = pa.chunked_array([ok, ok])
    m = vector_matrix(chunked, 3)
    assert m.shape == (4, 3) and m.flags["C_CONTIGUOUS"] and m.dtype == np.float32
    with pytest.raises(InvalidArgument):
        vector_matrix(pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6.0)), 3))
    with pytest.raises(InvalidArgument):
        vector_matrix(ok, 4)
    with pytest.raises(InvalidArgument):
        vector_matrix(pa.array([1, 2]))


async def test_a_cancelled_build_stops_its_thread_at_the_next_chunk(store: Metered) -> None:
    """The hnswlib thread cannot be interrupted; a cancelled build makes it stop at its next
    chunk instead of running to the end (a stopping node is not held up by it)."""
    x, _ = clustered_vectors(40_000, 1, dim=16, clusters=30, seed=5)
    big = await write_segment(store, ROOT, 1, 2, 4, segment_table(x), channel="ch", pk_field="id")
    fractions: list[float] = []
    first_chunk = asyncio.Event()
    loop = asyncio.get_running_loop()

    def progress(stage: str, fraction: float) -> None:
        if stage == "build":
            fractions.append(fraction)
            loop.call_soon_threadsafe(first_chunk.set)
        elif stage == "upload":
            fractions.append(-1.0)

    task = asyncio.create_task(build_index(store, ROOT, big, spec(), progress=progress))
    await first_chunk.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(fractions)
    await asyncio.sleep(1.0)  # a thread still building would report more chunks meanwhile
    assert len(fractions) <= seen + 1, fractions
    assert fractions[-1] < 0.5 and -1.0 not in fractions
    assert not [o async for o in store.list("") if "hnsw-" in o.key]
