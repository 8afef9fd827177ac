"""Exact search over growing segments (and cluster.streaming.search directly) vs brute force."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema
from cluster.streaming.growing import GrowingSegment
from cluster.streaming.messages import with_system_columns
from cluster.streaming.search import Metric, exact_search, row_norms


def make_schema(dim: int, pk_type: DataType = DataType.INT64) -> CollectionSchema:
    return CollectionSchema(
        "c",
        (
            FieldSchema(100, "id", pk_type, is_primary=True, max_length=64),
            FieldSchema(101, "vec", DataType.FLOAT_VECTOR, dim=dim),
            FieldSchema(102, "other", DataType.FLOAT_VECTOR, dim=2),
        ),
    )


def batch(schema: CollectionSchema, pks: np.ndarray, vectors: np.ndarray, ts: int) -> pa.Table:
    m, dim = vectors.shape
    pk_type = pa.int64() if schema.primary_field.dtype == DataType.INT64 else pa.string()
    table = pa.Table.from_arrays(
        [
            pa.array(pks, pk_type),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
            pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * m, np.float32)), 2),
        ],
        schema=arrow_schema(schema),
    )
    return with_system_columns(table, np.arange(m), ts)


def reference(
    base: np.ndarray, queries: np.ndarray, metric: str, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64 over the allowed rows: (offsets, scores), best first."""
    x = base.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "L2":
        scores = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    elif metric == "IP":
        scores = -(q @ x.T)
    else:
        xn = np.linalg.norm(x, axis=1)
        qn = np.linalg.norm(q, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = -np.nan_to_num((q @ x.T) / qn[:, None] / xn[None, :])
    scores[:, ~allowed] = np.inf
    order = np.argsort(scores, axis=1, kind="stable")[:, : min(k, int(allowed.sum()))]
    best = np.take_along_axis(scores, order, axis=1)
    return order, (best if metric == "L2" else -best)


def check(
    got: tuple[np.ndarray, np.ndarray],
    want: tuple[np.ndarray, np.ndarray],
    allowed: np.ndarray,
    scores_of: np.ndarray,
) -> None:
    offsets, dist = got
    ref_offsets, ref_dist = want
    assert offsets.shape == ref_offsets.shape == dist.shape
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-3)
    assert allowed[offsets].all()  # never a hidden row
    # each returned offset really has the reported score (ties may pick other rows)
    np.testing.assert_allclose(
        np.take_along_axis(scores_of, offsets, axis=1), dist, rtol=1e-4, atol=1e-3
    )
    for row in offsets:
        assert len(set(row.tolist())) == len(row)


def scores_matrix(base: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    order, best = reference(base, queries, metric, np.ones(len(base), bool), len(base))
    out = np.empty_like(best)
    np.put_along_axis(out, order, best, axis=1)
    return out


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((3000, 16), dtype=np.float32)
    base[5] = 0.0  # a zero vector (COSINE scores it 0)
    return {"base": base, "queries": rng.standard_normal((7, 16), dtype=np.float32)}


def build_segment(base: np.ndarray, sizes: list[int]) -> GrowingSegment:
    schema = make_schema(base.shape[1])
    seg = GrowingSegment(schema, segment_id=1, merge_below_rows=64)
    start = 0
    for i, size in enumerate(sizes):
        pks = np.arange(start, start + size, dtype=np.int64)
        seg.append(batch(schema, pks, base[start : start + size], ts=10 + i))
        start += size
    assert start == len(base)
    return seg


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
def test_search_matches_brute_force(metric: str, data: dict[str, np.ndarray]) -> None:
    base, queries = data["base"], data["queries"]
    seg = build_segment(base, [1000, 1, 1, 2, 500, 7, 1489])
    # delete some rows, and upsert others to new rows is covered below; here: deletes only
    deleted = np.arange(0, 3000, 7)
    seg.apply_delete(deleted, 100)
    allowed = np.ones(3000, bool)
    allowed[deleted] = False
    scores = scores_matrix(base, queries, metric)
    for k in (1, 10, 100):
        got = seg.search_offsets(queries, "vec", k, metric, visible_ts=100)
        check(got, reference(base, queries, metric, allowed, k), allowed, scores)
    # before the deletes everything is visible
    everything = np.ones(3000, bool)
    got = seg.search_offsets(queries, "vec", 10, metric.lower(), visible_ts=99)
    check(got, reference(base, queries, metric, everything, 10), everything, scores)
    # a single 1-D query
    offsets, dist = seg.search_offsets(queries[0], "vec", 5, metric, visible_ts=100)
    assert offsets.shape == dist.shape == (1, 5)


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
@pytest.mark.parametrize("selectivity", [0.9, 0.3, 0.05, 0.001])
def test_filter_masks_dense_and_sparse(
    metric: str, selectivity: float, data: dict[str, np.ndarray]
) -> None:
    base, queries = data["base"], data["queries"]
    seg = build_segment(base, [3000])
    seg.apply_delete(np.arange(1, 3000, 11), 50)
    rng = np.random.default_rng(int(selectivity * 1000))
    filt = rng.random(3000) < selectivity
    allowed = filt.copy()
    allowed[np.arange(1, 3000, 11)] = False
    scores = scores_matrix(base, queries, metric)
    got = seg.search_offsets(queries, "vec", 10, metric, visible_ts=60, filter_mask=filt)
    check(got, reference(base, queries, metric, allowed, 10), allowed, scores)


def test_k_larger_than_visible_rows_returns_fewer(data: dict[str, np.ndarray]) -> None:
    base = data["base"][:20]
    seg = build_segment(base, [20])
    seg.apply_delete(np.arange(0, 20, 2), 11)  # 10 left
    ids, dist = seg.search(data["queries"], "vec", 50, "L2", visible_ts=11)
    assert ids.shape == dist.shape == (7, 10)
    assert set(ids[0].tolist()) == set(range(1, 20, 2))
    assert (np.diff(dist, axis=1) >= 0).all()
    ids, dist = seg.search(data["queries"], "vec", 5, "IP", visible_ts=9)  # nothing visible yet
    assert ids.shape == dist.shape == (7, 0)
    none = seg.search(data["queries"], "vec", 5, "L2", 20, filter_mask=np.zeros(20, bool))
    assert none[0].shape == (7, 0)


def test_upserted_and_deleted_rows_are_never_returned() -> None:
    dim = 8
    schema = make_schema(dim)
    seg = GrowingSegment(schema, segment_id=1)
    target = np.ones(dim, np.float32)
    # pk 1 sits exactly on the query, then moves far away (upsert); pk 2 sits on it, deleted
    seg.append(batch(schema, np.array([1, 2, 3]), np.stack([target, target, target * 3]), 10))
    seg.append(batch(schema, np.array([1]), (target * 100)[None, :], 20))
    seg.apply_delete([2], 30)
    ids, dist = seg.search(target, "vec", 3, "L2", visible_ts=30)
    assert ids.tolist() == [[3, 1]]
    np.testing.assert_allclose(dist, [[4 * dim, 99**2 * dim]], rtol=1e-5)
    ids, _ = seg.search(target, "vec", 3, "L2", visible_ts=10)
    assert sorted(ids[0].tolist()[:2]) == [1, 2] and ids[0, 2] == 3
    ids, _ = seg.search(target, "vec", 3, "L2", visible_ts=25)
    assert ids[0].tolist() == [2, 3, 1]


def test_search_returns_varchar_keys() -> None:
    schema = make_schema(4, DataType.VARCHAR)
    seg = GrowingSegment(schema, segment_id=1)
    vectors = np.eye(4, dtype=np.float32)
    seg.append(batch(schema, np.array(["a", "b", "c", "d"]), vectors, 10))
    ids, dist = seg.search(vectors[2] * 2, "vec", 2, "IP", visible_ts=10)
    assert ids.dtype == object and ids[0, 0] == "c"
    assert dist[0, 0] == pytest.approx(2.0)


def test_search_argument_errors(data: dict[str, np.ndarray]) -> None:
    seg = build_segment(data["base"][:10], [10])
    with pytest.raises(ValueError, match="float vector"):
        seg.search(data["queries"], "id", 1, "L2", 10)
    with pytest.raises(ValueError, match="queries must be"):
        seg.search(np.zeros((2, 3)), "vec", 1, "L2", 10)
    with pytest.raises(ValueError, match="metric"):
        seg.search(data["queries"], "vec", 1, "HAMMING", 10)
    with pytest.raises(ValueError, match="k must be"):
        seg.search(data["queries"], "vec", 0, "L2", 10)
    with pytest.raises(ValueError, match="mask"):
        seg.search(data["queries"], "vec", 1, "L2", 10, filter_mask=np.ones(11, bool))


def test_a_second_vector_field_is_searchable(data: dict[str, np.ndarray]) -> None:
    seg = build_segment(data["base"][:10], [10])
    ids, dist = seg.search(np.ones(2), "other", 3, "COSINE", visible_ts=10)
    assert ids.shape == (1, 3)
    np.testing.assert_allclose(dist, 1.0, rtol=1e-6)


@pytest.mark.parametrize("metric", list(Metric))
def test_query_groups_under_a_small_budget(metric: Metric, data: dict[str, np.ndarray]) -> None:
    base, queries = data["base"], data["queries"]
    norm2, inv = row_norms(base)
    blocks = [(0, base[:1234]), (1234, base[1234:])]
    full = exact_search(blocks, queries, 10, metric, n=3000, norm2=norm2, inv_norm=inv)
    tiny = exact_search(
        blocks, queries, 10, metric, n=3000, norm2=norm2, inv_norm=inv, budget=3000 * 2
    )
    np.testing.assert_allclose(full[1], tiny[1], rtol=1e-6)
    partial = exact_search(blocks, queries, 10, metric, n=2000, norm2=norm2, inv_norm=inv)
    assert partial[0].max() < 2000


# --- timings (printed, not asserted) --------------------------------------------------------------


def test_print_append_and_search_timings() -> None:
    dim = 128
    schema = make_schema(dim)
    rng = np.random.default_rng(1)
    batches = []
    for i in range(100):
        pks = np.arange(i * 5000, (i + 1) * 5000, dtype=np.int64)
        vectors = rng.standard_normal((5000, dim), dtype=np.float32)
        batches.append(batch(schema, pks, vectors, ts=10 + i))
    seg = GrowingSegment(schema, segment_id=1)
    start = time.perf_counter()
    for table in batches:
        seg.append(table)
    append_s = time.perf_counter() - start
    lines = [
        f"\nappend 100 x 5,000 x 128-d: {append_s * 1e3:.1f} ms total, "
        f"{append_s / 100 * 1e3:.2f} ms per batch ({seg.num_rows} rows, "
        f"{seg.stats.bytes / 2**20:.0f} MiB)"
    ]
    small = GrowingSegment(schema, segment_id=2)
    for table in batches[:20]:
        small.append(table)
    small.apply_delete(np.arange(0, 100_000, 10), 200)  # 10% deleted
    for nq in (1, 10):
        queries = rng.standard_normal((nq, dim), dtype=np.float32)
        for metric in ("L2", "IP", "COSINE"):
            small.search(queries, "vec", 10, metric, visible_ts=1000)
            times = []
            for _ in range(7):
                start = time.perf_counter()
                small.search(queries, "vec", 10, metric, visible_ts=1000)
                times.append(time.perf_counter() - start)
            lines.append(
                f"search 100k rows nq={nq} top-10 {metric}: median "
                f"{np.median(times) * 1e3:.2f} ms, best {min(times) * 1e3:.2f} ms"
            )
    start = time.perf_counter()
    seg.search(queries, "vec", 10, "L2", visible_ts=1000)
    lines.append(f"search 500k rows nq=10 top-10 L2: {(time.perf_counter() - start) * 1e3:.2f} ms")
    filt = np.zeros(100_000, bool)
    filt[1::100] = True  # 1% of rows (none of them deleted)
    start = time.perf_counter()
    for _ in range(10):
        small.search(queries, "vec", 10, "L2", visible_ts=1000, filter_mask=filt)
    lines.append(
        f"search 100k rows nq=10 top-10 L2, 1% filter: "
        f"{(time.perf_counter() - start) / 10 * 1e3:.2f} ms"
    )
    start = time.perf_counter()
    for _ in range(10):
        small.visible_mask(1000)
    lines.append(f"visible_mask 100k rows: {(time.perf_counter() - start) / 10 * 1e3:.3f} ms")
    print("\n".join(lines))
