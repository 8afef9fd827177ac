"""bench/search.py's pure helpers: exact ground truth, recall@k, latency stats, readiness."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench" / "search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_exact_topk_matches_brute_force(bench: ModuleType) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    got = bench.exact_topk(base, queries, k=5, chunk=7)
    d = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(axis=2)
    assert got.tolist() == np.argsort(d, axis=1, kind="stable")[:, :5].tolist()
    assert bench.exact_topk(base, base[:4], k=1)[:, 0].tolist() == [0, 1, 2, 3]


def test_recall_at_k(bench: ModuleType) -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert bench.recall_at_k([[4, 3, 2, 1], [5, 6, 7, 8]], truth) == 1.0
    assert bench.recall_at_k([[1, 9, 9, 9], [8, 7, 0, 0]], truth) == pytest.approx(3 / 8)
    assert bench.recall_at_k([[1, 2, 3, 4, 5], []], truth) == pytest.approx(0.5)  # only k count
    with pytest.raises(ValueError):
        bench.recall_at_k([[1]], truth)


def test_latency_stats(bench: ModuleType) -> None:
    qps, p50, p99 = bench.latency_stats([0.001, 0.002, 0.003, 0.004], 400)
    assert qps == pytest.approx(40_000)
    assert p50 == pytest.approx(2.5)
    assert 3.9 < p99 <= 4.0


def test_index_ready(bench: ModuleType) -> None:
    assert bench.index_ready({"indexed_rows": 10, "pending_index_rows": 0}, 10)
    assert not bench.index_ready({"indexed_rows": 9, "pending_index_rows": 0}, 10)
    assert not bench.index_ready({"indexed_rows": 10, "pending_index_rows": 2}, 10)
    assert bench.index_ready({"state": "Finished"}, 10)
    assert not bench.index_ready({"state": "InProgress"}, 10)
