"""cluster.expr at scale: 1,000,000 rows of numeric columns are filtered by whole-column
kernels (no per-row Python). Prints the timings; asserts only the results (computed with numpy
independently), never the time."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from cluster.expr import compile_filter
from cluster.schema import CollectionSchema, DataType, FieldSchema

N = 1_000_000
SCHEMA = CollectionSchema(
    "big",
    (
        FieldSchema(100, "id", DataType.INT64, is_primary=True),
        FieldSchema(101, "a", DataType.INT32),
        FieldSchema(102, "x", DataType.DOUBLE),
        FieldSchema(103, "f", DataType.FLOAT, nullable=True),
        FieldSchema(104, "s", DataType.VARCHAR, max_length=16),
        FieldSchema(105, "$meta", DataType.JSON, is_dynamic=True),
    ),
    enable_dynamic_field=True,
)


@pytest.fixture(scope="module")
def big() -> tuple[pa.Table, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    cols = {
        "id": np.arange(N, dtype=np.int64),
        "a": rng.integers(-50, 100, N).astype(np.int32),
        "x": rng.random(N),
        "f": rng.random(N).astype(np.float32),
        "fnull": rng.random(N) < 0.1,
        "s": np.asarray([f"k{i % 1000}" for i in range(N)], dtype=object),
    }
    table = pa.table(
        {
            "id": cols["id"],
            "a": cols["a"],
            "x": cols["x"],
            "f": pa.array(cols["f"], mask=cols["fnull"]),
            "s": pa.array(cols["s"], pa.string()),
        }
    )
    return table, cols


def _c_mod(a: np.ndarray, b: int) -> np.ndarray:
    return np.fmod(a, b)


CASES: list[tuple[str, Callable[[dict[str, np.ndarray]], np.ndarray]]] = [
    ("a > 50", lambda c: c["a"] > 50),
    (
        "a % 7 == 3 and x < 0.5 or f >= 0.9",
        lambda c: ((_c_mod(c["a"], 7) == 3) & (c["x"] < 0.5)) | (~c["fnull"] & (c["f"] >= 0.9)),
    ),
    ("1 < a <= 20 and not (x > 0.3)", lambda c: (c["a"] > 1) & (c["a"] <= 20) & ~(c["x"] > 0.3)),
    (
        "a * 2 + 1 > 51 and x * 10 < 3",
        lambda c: (c["a"].astype(np.int64) * 2 + 1 > 51) & (c["x"] * 10 < 3),
    ),
    ("a in [1, 5, 9, 20, 33]", lambda c: np.isin(c["a"], [1, 5, 9, 20, 33])),
    ("id not in [1, 2, 3]", lambda c: ~np.isin(c["id"], [1, 2, 3])),
    ("f is null or f < 0.01", lambda c: c["fnull"] | (c["f"] < np.float32(0.01))),
    ("not (f > 0.5)", lambda c: ~c["fnull"] & ~(c["f"] > np.float32(0.5))),
    ("a / 3 == -2", lambda c: np.trunc(c["a"] / 3) == -2),
    ('s like "k1%"', lambda c: np.char.startswith(c["s"].astype(str), "k1")),
    ('s in ["k1", "k2"] or s == "k999"', lambda c: np.isin(c["s"], ["k1", "k2", "k999"])),
]


@pytest.mark.parametrize(("expr", "oracle"), CASES, ids=[c[0] for c in CASES])
def test_million_rows(
    expr: str,
    oracle: Callable[[dict[str, np.ndarray]], np.ndarray],
    big: tuple[pa.Table, dict[str, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    table, cols = big
    plan = compile_filter(expr, SCHEMA)
    plan.evaluate(table.slice(0, 1000))  # warm up numpy / Arrow kernels
    start = time.perf_counter()
    mask = plan.evaluate(table)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n  {N:,} rows  {elapsed * 1000:7.1f} ms  {expr}")
    assert np.array_equal(mask, oracle(cols))


def test_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """The per-row JSON decode is the cost of a JSON filter (see the package docstring)."""
    n = 200_000
    raw = [f'{{"k": {i % 10}, "t": "v{i % 3}"}}'.encode() for i in range(n)]
    table = pa.table({"id": np.arange(n), "$meta": pa.array(raw, pa.binary())})
    for expr, want in [
        ("k > 5", sum(1 for i in range(n) if i % 10 > 5)),
        ('k > 5 and t == "v1"', sum(1 for i in range(n) if i % 10 > 5 and i % 3 == 1)),
    ]:
        plan = compile_filter(expr, SCHEMA)
        start = time.perf_counter()
        mask = plan.evaluate(table)
        elapsed = time.perf_counter() - start
        with capsys.disabled():
            print(f"\n  {n:,} JSON rows  {elapsed * 1000:7.1f} ms  {expr}")
        assert int(mask.sum()) == want
