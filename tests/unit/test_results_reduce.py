"""cluster.results: merging partial search results (top-k by metric direction, newest version
per primary key, offset) and partial query tables, checked against brute-force merges."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cluster.results import (
    PartialResult,
    newest_per_key,
    reduce_query,
    reduce_search,
    select_hits,
)

pytestmark = pytest.mark.unit


def part(hits: list[list[tuple[object, float, int]]], fields: bool = False) -> PartialResult:
    """A partial result from per-query ``(pk, score, ts)`` lists (in the order given)."""
    flat = [h for q in hits for h in q]
    pks = [h[0] for h in flat]
    int_pks = all(isinstance(p, int) for p in pks)
    table = None
    if fields:
        table = pa.table({"tag": pa.array([f"{p}@{t}" for p, _, t in flat], pa.string())})
    return PartialResult(
        np.array([len(q) for q in hits], np.int64),
        np.array(pks, np.int64 if int_pks else object),
        np.array([h[1] for h in flat], np.float32),
        np.array([h[2] for h in flat], np.uint64),
        table,
    )


def per_query(result: PartialResult) -> list[list[tuple[object, float]]]:
    out, start = [], 0
    for k in result.topks.tolist():
        out.append(
            [
                (p, round(float(s), 4))
                for p, s in zip(
                    result.pks[start : start + k].tolist(),
                    result.scores[start : start + k].tolist(),
                    strict=True,
                )
            ]
        )
        start += k
    return out


def brute(
    parts: list[PartialResult], nq: int, higher: bool, limit: int, offset: int
) -> list[list[tuple[object, float]]]:
    """The expected merge, one Python dict per query."""
    out = []
    for q in range(nq):
        best: dict[object, tuple[int, float]] = {}
        for p in parts:
            start = int(p.topks[:q].sum())
            for i in range(start, start + int(p.topks[q])):
                pk, score, ts = p.pks[i], float(p.scores[i]), int(p.ts[i])
                cur = best.get(pk)
                better = cur is None or ts > cur[0]
                if cur is not None and ts == cur[0]:
                    better = score > cur[1] if higher else score < cur[1]
                if better:
                    best[pk] = (ts, score)
        ranked = sorted(best.items(), key=lambda kv: ((-kv[1][1] if higher else kv[1][1]), kv[0]))
        out.append([(pk, round(s, 4)) for pk, (_, s) in ranked[offset : offset + limit]])
    return out


def test_merge_orders_by_metric_direction() -> None:
    a = part([[(1, 0.1, 5), (2, 0.4, 5)], [(7, 0.2, 5)]])
    b = part([[(3, 0.2, 5), (4, 0.3, 5)], [(8, 0.1, 5), (9, 0.9, 5)]])
    l2 = reduce_search([a, b], 2, "L2", 3)
    assert per_query(l2) == [[(1, 0.1), (3, 0.2), (4, 0.3)], [(8, 0.1), (7, 0.2), (9, 0.9)]]
    ip = reduce_search([a, b], 2, "IP", 2)
    assert per_query(ip) == [[(2, 0.4), (4, 0.3)], [(9, 0.9), (7, 0.2)]]
    cos = reduce_search([a, b], 2, "cosine", 1)
    assert per_query(cos) == [[(2, 0.4)], [(9, 0.9)]]


def test_duplicates_keep_the_newest_version() -> None:
    # key 1 is in both parts: the newer copy (ts 9, worse score) wins and keeps its rank
    old = part([[(1, 0.1, 3), (2, 0.5, 3)]], fields=True)
    new = part([[(1, 0.8, 9), (3, 0.6, 9)]], fields=True)
    merged = reduce_search([old, new], 1, "L2", 10)
    assert per_query(merged) == [[(2, 0.5), (3, 0.6), (1, 0.8)]]
    assert merged.ts.tolist() == [3, 9, 9]
    assert merged.fields is not None
    assert merged.fields.column("tag").to_pylist() == ["2@3", "3@9", "1@9"]
    # the same row served twice (same ts): one copy, the better score
    twice = reduce_search([part([[(5, 0.3, 4)]]), part([[(5, 0.2, 4)]])], 1, "L2", 10)
    assert per_query(twice) == [[(5, 0.2)]]


def test_offset_applies_after_dedup_and_per_query() -> None:
    a = part([[(1, 0.1, 1), (2, 0.2, 1), (3, 0.3, 1)], [(4, 0.9, 1)]])
    b = part([[(2, 0.05, 2), (5, 0.4, 1)], [(6, 0.8, 1), (7, 0.7, 1)]])
    got = reduce_search([a, b], 2, "L2", 2, offset=1)
    # query 0: 2 (newest, 0.05), 1, 3, 5 -> ranks 1..2 = 1, 3; query 1: 7, 6, 4 -> 6, 4
    assert per_query(got) == [[(1, 0.1), (3, 0.3)], [(6, 0.8), (4, 0.9)]]
    assert got.topks.tolist() == [2, 2]
    beyond = reduce_search([a, b], 2, "L2", 5, offset=3)
    assert per_query(beyond) == [[(5, 0.4)], []]


def test_string_keys_and_empty_parts() -> None:
    a = part([[("b", 0.9, 1), ("a", 0.5, 1)]])
    empty = PartialResult.empty(1, int_pks=False)
    got = reduce_search([empty, a, empty], 1, "IP", 5)
    assert per_query(got) == [[("b", 0.9), ("a", 0.5)]]
    none = reduce_search([empty], 1, "IP", 5)
    assert none.topks.tolist() == [0] and none.num_hits == 0


def test_fields_follow_the_hits_across_parts() -> None:
    a = part([[(1, 0.3, 1)], [(2, 0.1, 1)]], fields=True)
    b = part([[(3, 0.2, 1)], []], fields=True)
    got = reduce_search([a, b], 2, "L2", 2)
    assert got.fields is not None
    assert got.fields.column("tag").to_pylist() == ["3@1", "1@1", "2@1"]
    sel = select_hits([a, b], 2, "L2", 2)
    assert sel.part.tolist() == [1, 0, 0] and sel.row.tolist() == [0, 0, 1]
    # a part without hits may come without fields
    got = reduce_search([a, PartialResult.empty(2)], 2, "L2", 1)
    assert got.fields is not None and got.fields.num_rows == 2


@pytest.mark.parametrize("metric", ["L2", "IP"])
@pytest.mark.parametrize("str_keys", [False, True])
def test_random_merges_equal_brute_force(metric: str, str_keys: bool) -> None:
    rng = np.random.default_rng(3)
    higher = metric == "IP"
    for _ in range(50):
        nq = int(rng.integers(1, 4))
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            hits = []
            for _ in range(nq):
                k = int(rng.integers(0, 6))
                keys = rng.choice(12, size=k, replace=False)
                hits.append(
                    [
                        (
                            f"k{key:02d}" if str_keys else int(key),
                            float(rng.integers(0, 50)) / 10,
                            int(rng.integers(1, 4)),
                        )
                        for key in keys
                    ]
                )
            parts.append(part(hits))
        limit, offset = int(rng.integers(1, 6)), int(rng.integers(0, 3))
        got = reduce_search(parts, nq, metric, limit, offset)
        assert per_query(got) == brute(parts, nq, higher, limit, offset)


def test_partial_result_table_round_trip() -> None:
    a = part([[("x", 0.5, 7)], [("y", 0.25, 8), ("z", 0.125, 9)]], fields=True)
    back = PartialResult.from_table(a.to_table(), a.topks)
    assert per_query(back) == per_query(a) and back.ts.tolist() == [7, 8, 9]
    assert back.fields is not None and back.fields.equals(a.fields)
    with pytest.raises(ValueError):
        PartialResult(np.array([2]), np.array([1]), np.array([0.1]), np.array([1], np.uint64))


def test_newest_per_key_orders_by_group_then_key() -> None:
    keys = np.array([5, 3, 5, 3, 1], np.int64)
    ts = np.array([1, 2, 3, 1, 1], np.uint64)
    assert newest_per_key(keys, ts).tolist() == [4, 1, 2]
    groups = np.array([1, 0, 0, 0, 1])
    assert newest_per_key(keys, ts, groups).tolist() == [1, 2, 4, 0]
    assert newest_per_key(pa.array(["b", "a", "b"]), np.array([1, 1, 2], np.uint64)).tolist() == [
        1,
        2,
    ]


def test_reduce_query_newest_version_key_order_and_window() -> None:
    a = pa.table(
        {"id": [3, 1, 2], "v": ["a3", "a1", "a2"], "_ts": pa.array([5, 5, 5], pa.uint64())}
    )
    b = pa.table({"id": [2, 4], "v": ["b2", "b4"], "_ts": pa.array([9, 1], pa.uint64())})
    got = reduce_query([a, b], "id")
    assert got.column("id").to_pylist() == [1, 2, 3, 4]
    assert got.column("v").to_pylist() == ["a1", "b2", "a3", "b4"]
    page = reduce_query([a, b], "id", offset=1, limit=2)
    assert page.column("v").to_pylist() == ["b2", "a3"]
    empty = reduce_query([a.slice(0, 0)], "id")
    assert empty.num_rows == 0 and empty.column_names == ["id", "v", "_ts"]
