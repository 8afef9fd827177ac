"""Row bookkeeping (cluster/query/rows.py) and the search plan (cluster/query/plan.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.query import plan
from cluster.query.plan import Strategy
from cluster.query.rows import Deletes, PkIndex


def test_pk_index_int_with_duplicates() -> None:
    idx = PkIndex(pa.chunked_array([pa.array([5, 3, 5, 9], pa.int64()), pa.array([3], pa.int64())]))
    which, offsets = idx.lookup([3, 7, 5])
    pairs = sorted(zip(which.tolist(), offsets.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 4), (2, 0), (2, 2)]
    assert sorted(idx.offsets(np.array([9]))) == [3]
    assert len(idx.offsets([])) == 0


def test_pk_index_strings() -> None:
    idx = PkIndex(pa.array(["b", "a", "b", "c"]))
    assert not idx.int_pk
    assert sorted(idx.offsets(["b", "zz"]).tolist()) == [0, 2]
    assert idx.offsets(pa.array(["c"])).tolist() == [3]
    assert idx.offsets("a").tolist() == [1]


def test_deletes_follow_mvcc() -> None:
    d = Deletes(np.array([10, 20, 30, 40], np.uint64))
    assert d.visible(None) is None
    assert d.apply(np.array([0, 1, 2]), np.array([20, 20, 20])) == 1  # only row 0 (_ts 10 < 20)
    assert d.visible(None).tolist() == [False, True, True, True]
    assert d.visible(15).tolist() == [True, False, False, False]  # before the delete, rows <= 15
    assert d.visible(25).tolist() == [False, True, False, False]
    assert d.apply(np.array([0]), np.array([50])) == 0  # idempotent: already hidden
    assert d.visible(19).tolist() == [True, False, False, False]  # earliest delete wins
    assert d.apply(np.array([3, 3]), np.array([45, 45])) == 1
    assert d.deleted == 2 and d.max_delete_ts == 50
    assert d.visible(10**6).tolist() == [False, True, True, False]
    assert d.visible(44).tolist() == [False, True, True, True]


def test_plan_choice() -> None:
    n = 100_000
    assert plan.choose(n, n, 1, 64, has_graph=False) is Strategy.EXACT
    assert plan.choose(n, n, 1, 64, has_graph=True) is Strategy.HNSW
    assert plan.choose(n, 1_000, 1, 64, has_graph=True) is Strategy.EXACT  # 1 %
    assert plan.choose(n, 50_000, 1, 64, has_graph=True) is Strategy.POST_FILTER  # 50 %
    assert plan.choose(n, 99_000, 100, 64, has_graph=True) is Strategy.POST_FILTER  # deletes
    assert plan.post_filter_fetch(n, 10_000, 64) == 640
    assert plan.post_filter_fetch(n, 100, 64) == 64_000
    assert plan.post_filter_fetch(n, 10, 64) == n
    assert plan.post_filter_fetch(n, n, 64) == 64
