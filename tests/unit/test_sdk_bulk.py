"""Splitting large columnar inserts (``sdk/_bulk.py``): slices keep every row once and in
order, without copying; answers merge in slice order; a failed slice is reported with how many
rows the others acknowledged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sdk import _bulk

pytestmark = pytest.mark.unit


def columns(rows: int, dim: int = 128) -> dict[str, np.ndarray]:
    return {
        "id": np.arange(rows, dtype=np.int64),
        "vector": np.random.default_rng(0).random((rows, dim), dtype=np.float32),
    }


def test_numpy_columns_are_cut_into_views_covering_every_row_once() -> None:
    data = columns(40_000)  # 20.6 MB
    chunks = _bulk.split(data, chunk_bytes=8 << 20)
    assert chunks is not None and len(chunks) == 3
    ids = np.concatenate([c["id"] for c in chunks])
    np.testing.assert_array_equal(ids, data["id"])
    assert all(np.shares_memory(c["vector"], data["vector"]) for c in chunks)
    assert max(c["vector"].nbytes + c["id"].nbytes for c in chunks) <= 8 << 20


def test_arrow_and_pandas_are_cut_too_and_small_or_row_data_is_not() -> None:
    data = columns(40_000)
    table = pa.table({"id": data["id"], "n": np.arange(40_000, dtype=np.float64) * 2.0})
    for shaped in (table, table.to_batches()[0], table.to_pandas()):
        chunks = _bulk.split(shaped, chunk_bytes=100_000)
        assert chunks is not None and len(chunks) == 7
        got = np.concatenate(
            [np.asarray(c["id"] if isinstance(c, pd.DataFrame) else c.column("id")) for c in chunks]
        )
        np.testing.assert_array_equal(got, data["id"])
    assert _bulk.split(columns(100)) is None  # one request
    assert _bulk.split([{"id": i} for i in range(100_000)], chunk_bytes=10) is None  # rows
    assert _bulk.split({"id": np.arange(3), "v": np.arange(4)}, chunk_bytes=1) is None


def test_answers_merge_in_order_and_a_failure_names_what_was_acknowledged() -> None:
    answers = [
        {"insert_count": 2, "ids": [1, 2], "cost": 0},
        {"insert_count": 1, "ids": [3], "cost": 0},
    ]
    assert _bulk.gather(answers) == {"insert_count": 3, "ids": [1, 2, 3], "cost": 0}
    with pytest.raises(ValueError) as failure:
        _bulk.gather([answers[0], ValueError("slice 2 refused"), answers[1]])
    assert "1 of 3 insert requests failed; 3 rows of the others" in "\n".join(
        failure.value.__notes__
    )
