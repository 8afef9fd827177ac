"""Index build + query-node load + search over every ObjectStore backend: memory://, file://
and a real SeaweedFS S3 server (``seaweedfs_service``). The S3 run pushes the index file
through a multipart upload and the cache through parallel ranged GETs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from cluster.index import IndexSpec, build_index, read_index_manifest
from cluster.query import LocalCache, SealedSegment, Strategy
from cluster.query.testing import TS0, clustered_vectors, recall, segment_table
from cluster.storage import append_deltas, read_manifest, write_segment
from cluster.streaming.search import exact_search, row_norms
from woodpecker.objectstore import FileObjectStore, MemoryObjectStore, Metered
from woodpecker.objectstore.base import ObjectStore

pytestmark = pytest.mark.contract

BACKENDS = ["memory", "file", "s3-seaweedfs"]
ROOT = "segments"
N, DIM = 12_000, 128  # an HNSW file of ~8 MiB: above the S3 backend's multipart threshold below


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
            multipart_threshold=5 * 1024 * 1024,
        )
    s = Metered(inner)
    try:
        yield s
    finally:
        await s.close()


async def test_build_load_search(store: Metered, tmp_path: Path) -> None:
    x, q = clustered_vectors(N, 30, dim=DIM, clusters=100, seed=5)
    segment = await write_segment(
        store, ROOT, 4, 5, 6, segment_table(x), channel="c", pk_field="id"
    )
    spec = IndexSpec.from_params(11, 101, "vec", {"metric_type": "COSINE"})  # AUTOINDEX
    built = await build_index(store, ROOT, segment, spec)
    assert built.index_type == "HNSW" and built.files[0].size > 5 * 1024 * 1024
    assert await build_index(store, ROOT, segment, spec) == built  # idempotent: no rebuild
    stored = await read_index_manifest(store, segment, 101, 11)
    assert stored == built

    await append_deltas(store, ROOT, 4, 5, 6, np.arange(0, N, 2), [TS0 + 1] * (N // 2))
    segment = await read_manifest(store, ROOT, 4, 5, 6)
    cache = await LocalCache.open(
        store, tmp_path / "cache", max_bytes=1 << 30, part_bytes=2 * 1024 * 1024
    )
    seg = await SealedSegment.load(segment, cache, [stored])
    assert seg.deletes.deleted == N // 2

    res = await seg.search(q, "vec", 10, "COSINE", ef=128, strategy=Strategy.POST_FILTER)
    assert (res.pks % 2 == 1).all()  # even keys were deleted
    _, inv = row_norms(x)
    alive = np.arange(N) % 2 == 1
    truth, scores = exact_search([(0, x)], q, 10, "COSINE", n=N, inv_norm=inv, mask=alive)
    assert recall(res.offsets, truth) >= 0.9
    np.testing.assert_allclose(res.distances[:, 0], scores[:, 0], atol=2e-3)

    rows = await seg.take(res.offsets[:1], ["id", "title"])
    assert rows["id"].to_pylist() == res.pks[0].tolist()
    # A restarted node finds the index and the columns it read in its cache.
    before = store.meter.snapshot()["get"].bytes
    again = await LocalCache.open(store, tmp_path / "cache", max_bytes=1 << 30)
    seg2 = await SealedSegment.load(segment, again, [stored])
    res2 = await seg2.search(q, "vec", 10, "COSINE", ef=128, strategy=Strategy.POST_FILTER)
    np.testing.assert_array_equal(res2.pks, res.pks)
    assert store.meter.snapshot()["get"].bytes == before
