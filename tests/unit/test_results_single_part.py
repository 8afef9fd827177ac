"""cluster.results.reduce_search's single-part shortcut: when one part has hits and merging
would not change it, that part is returned as is; otherwise the full merge runs. Checked
against the full merge (``select_hits`` + gather) on random parts with duplicates, ties,
disorder and more hits than the limit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cluster.results import PartialResult, reduce_search, select_hits

pytestmark = pytest.mark.unit


def full_merge(parts: list[PartialResult], nq: int, metric: str, limit: int) -> PartialResult:
    """The merge without the shortcut: positions from ``select_hits``, gathered."""
    sel = select_hits(parts, nq, metric, limit)
    p = parts[sel.part[0]] if len(sel.part) else parts[0]
    fields = None if p.fields is None else p.fields.take(pa.array(sel.row))
    return PartialResult(sel.topks, p.pks[sel.row], p.scores[sel.row], p.ts[sel.row], fields)


def random_part(rng: np.random.Generator, nq: int, *, ordered: bool) -> PartialResult:
    topks = rng.integers(0, 6, nq).astype(np.int64)
    n = int(topks.sum())
    pks = rng.integers(0, 8, n).astype(np.int64)  # few keys: duplicates happen
    scores = rng.integers(0, 4, n).astype(np.float32)  # few values: ties happen
    if ordered:  # best first (L2: ascending), ties by key, per query
        start = 0
        for k in topks.tolist():
            sl = slice(start, start + k)
            order = np.lexsort((pks[sl], scores[sl]))
            pks[sl], scores[sl] = pks[sl][order], scores[sl][order]
            start += k
    fields = pa.table({"row": pa.array(np.arange(n))})
    return PartialResult(topks, pks, scores, rng.integers(1, 4, n).astype(np.uint64), fields)


def same(a: PartialResult, b: PartialResult) -> bool:
    return (
        a.topks.tolist() == b.topks.tolist()
        and a.pks.tolist() == b.pks.tolist()
        and a.scores.tolist() == b.scores.tolist()
        and a.ts.tolist() == b.ts.tolist()
        and a.fields is not None
        and b.fields is not None
        and a.fields.equals(b.fields)
    )


@pytest.mark.parametrize("ordered", [True, False])
def test_single_part_matches_full_merge(ordered: bool) -> None:
    rng = np.random.default_rng(7)
    shortcuts = 0
    for _ in range(300):
        nq = int(rng.integers(1, 4))
        p = random_part(rng, nq, ordered=ordered)
        if not p.num_hits:
            continue
        limit = int(rng.integers(1, 7))
        got = reduce_search([PartialResult.empty(nq), p], nq, "L2", limit)
        assert same(got, full_merge([p], nq, "L2", limit))
        shortcuts += got is p
    assert shortcuts > 0  # the shortcut was taken where it applies


def test_unique_ordered_part_is_returned_as_is() -> None:
    p = PartialResult(
        np.array([3, 2], np.int64),
        np.array([5, 1, 9, 4, 2], np.int64),
        np.array([0.9, 0.5, 0.5, 0.8, 0.1], np.float32),
        np.ones(5, np.uint64),
    )
    assert reduce_search([p], 2, "IP", 3) is p
    assert reduce_search([p], 2, "L2", 3) is not p  # wrong direction for L2: merged
    merged = reduce_search([p], 2, "L2", 3)
    assert merged.pks.tolist() == [1, 9, 5, 2, 4]
    assert reduce_search([p], 2, "IP", 2).topks.tolist() == [2, 2]  # over the limit: cut


def test_duplicate_key_in_one_query_is_merged() -> None:
    p = PartialResult(
        np.array([3], np.int64),
        np.array([4, 7, 4], np.int64),
        np.array([0.1, 0.2, 0.3], np.float32),
        np.array([1, 1, 2], np.uint64),
    )
    got = reduce_search([p], 1, "L2", 10)
    assert got.pks.tolist() == [7, 4] and got.ts.tolist() == [1, 2]


def test_string_keys_take_the_full_merge() -> None:
    p = PartialResult(
        np.array([2], np.int64),
        np.array(["a", "b"], object),
        np.array([0.1, 0.2], np.float32),
        np.ones(2, np.uint64),
    )
    got = reduce_search([p], 1, "L2", 10)
    assert got is not p and got.pks.tolist() == ["a", "b"]
