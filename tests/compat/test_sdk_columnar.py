"""Columnar inserts and numpy/Arrow search outputs of ``sdk.Client`` against a real
``canopy standalone``: the same data as rows, a dict of numpy arrays, an Arrow Table, a
RecordBatch and a pandas DataFrame gives identical query results; numpy and Arrow search
outputs equal the dict-shaped results; malformed input is refused before anything is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from standalone_process import StandaloneProcess

import sdk

DIM = 16
N = 500
FORMS = ["rows", "numpy", "arrow", "batch", "pandas"]


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with StandaloneProcess(tmp_path_factory.mktemp("sdk-columnar") / "data") as proc:
        yield proc.uri


@pytest.fixture(scope="module")
def client(server_uri: str) -> Iterator[sdk.Client]:
    with sdk.Client(server_uri) as c:
        yield c


def _columns() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    ids = np.arange(N, dtype=np.int64)
    return {
        "id": ids,
        "vec": rng.random((N, DIM), dtype=np.float32),
        "score": rng.random(N),  # DOUBLE
        "rank": (ids % 7).astype(np.int32),
        "title": [f"t{i}" for i in range(N)],
        "color": np.array(["red", "green"])[ids % 2],  # dynamic
    }


def _as(form: str, cols: dict[str, Any]) -> Any:
    if form == "rows":
        return [
            {k: (v[i].tolist() if isinstance(v[i], np.ndarray) else v[i]) for k, v in cols.items()}
            for i in range(N)
        ]
    if form == "numpy":
        return cols
    table = pa.table(
        {
            **{k: v for k, v in cols.items() if k != "vec"},
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(cols["vec"].ravel()), DIM),
        }
    )
    if form == "arrow":
        return table
    if form == "batch":
        return table.to_batches()[0]
    frame = pd.DataFrame({k: v for k, v in cols.items() if k != "vec"})
    frame["vec"] = list(cols["vec"])
    return frame


def _create(client: sdk.Client, name: str) -> None:
    schema = client.create_schema(enable_dynamic_field=True)
    schema.add_field("id", sdk.DataType.INT64, is_primary=True)
    schema.add_field("vec", sdk.DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("score", sdk.DataType.DOUBLE)
    schema.add_field("rank", sdk.DataType.INT32)
    schema.add_field("title", sdk.DataType.VARCHAR, max_length=32)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def test_every_input_form_gives_the_same_rows(client: sdk.Client) -> None:
    cols = _columns()
    results = {}
    for form in FORMS:
        name = f"c_{form}"
        _create(client, name)
        out = client.insert(name, _as(form, cols))
        assert out["insert_count"] == N and out["ids"] == list(range(N)), form
        results[form] = client.query(name, "id >= 0", output_fields=["*"], limit=N)
    expected = sorted(results["rows"], key=lambda r: r["id"])
    assert len(expected) == N
    assert expected[3]["color"] == "green" and expected[3]["title"] == "t3"
    np.testing.assert_allclose(expected[3]["vec"], cols["vec"][3], rtol=0, atol=0)
    for form in FORMS[1:]:
        assert sorted(results[form], key=lambda r: r["id"]) == expected, form


def test_numpy_and_arrow_search_equal_dict_results(client: sdk.Client) -> None:
    name = "c_rows"  # created by the previous test in this module
    if not client.has_collection(name):
        _create(client, name)
        client.insert(name, _columns())
    q = np.random.default_rng(1).random((4, DIM), dtype=np.float32)
    hits = client.search(name, q, limit=6, output_fields=["title", "color"])
    ids, dists = client.search(name, q, limit=6, output_type="numpy")
    assert ids.shape == (4, 6) and dists.shape == (4, 6) and dists.dtype == np.float32
    assert ids.tolist() == [[h["id"] for h in per_q] for per_q in hits]
    np.testing.assert_allclose(dists, [[h["distance"] for h in per_q] for per_q in hits], atol=1e-6)

    table = client.search(name, q, limit=6, output_fields=["title", "color"], output_type="arrow")
    assert table.column_names[:4] == ["query", "rank", "id", "distance"]
    flat = [
        (qi, r, h["id"], h["entity"]["title"], h["entity"]["color"])
        for qi, per_q in enumerate(hits)
        for r, h in enumerate(per_q)
    ]
    got = list(
        zip(
            *(table.column(c).to_pylist() for c in ("query", "rank", "id", "title", "color")),
            strict=True,
        )
    )
    assert got == flat

    # fewer hits than the limit: padded with -1 / NaN
    few_ids, few_d = client.search(name, q[:2], filter="id < 3", limit=5, output_type="numpy")
    assert (few_ids[:, 3:] == -1).all() and np.isnan(few_d[:, 3:]).all()
    assert sorted(few_ids[0, :3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: c.update(vec=c["vec"][:, :8]), "dim"),
        (lambda c: c.pop("title"), "missing field 'title'"),
        (lambda c: c.update(id=c["id"].astype(np.float64)), "dtype float64"),
        (lambda c: c.update(rank=np.array(["x"] * N)), "expects INT32"),
        (lambda c: c.update(title=list(range(N))), "expects strings"),
    ],
)
def test_bad_input_is_refused_before_sending(
    client: sdk.Client, mutate: Any, fragment: str
) -> None:
    name = "c_bad"
    if not client.has_collection(name):
        _create(client, name)
    cols = _columns()
    mutate(cols)
    with pytest.raises(sdk.InvalidArgument, match=fragment):
        client.insert(name, cols)
    assert client.query(name, "", output_fields=["count(*)"]) == [{"count(*)": 0}]


def test_a_large_numpy_insert_is_sent_in_slices_and_answers_as_one(server_uri: str) -> None:
    """40,000 x 128-d (about 20 MB): several requests, two in flight; ids in the given order,
    every row stored once."""
    rows, dim = 40_000, 128
    data = {
        "id": np.arange(rows, dtype=np.int64),
        "vector": np.random.default_rng(3).random((rows, dim), dtype=np.float32),
    }
    with sdk.Client(uri=server_uri) as client:
        client.create_collection("bulk_sync", dimension=dim)
        answer = client.insert("bulk_sync", data)
        assert answer["insert_count"] == rows and answer["ids"] == list(range(rows))
        got = client.query(
            "bulk_sync", filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        assert got[0]["count(*)"] == rows
        (row,) = client.get("bulk_sync", ids=[rows - 1], output_fields=["vector"])
        np.testing.assert_allclose(row["vector"], data["vector"][-1], rtol=1e-6)
        client.drop_collection("bulk_sync")

    async def run_async() -> None:
        async with sdk.AsyncClient(uri=server_uri) as client:
            await client.create_collection("bulk_async", dimension=dim)
            answer = await client.insert("bulk_async", data)
            assert answer["insert_count"] == rows and answer["ids"] == list(range(rows))
            got = await client.query(
                "bulk_async", filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
            assert got[0]["count(*)"] == rows
            await client.drop_collection("bulk_async")

    asyncio.run(run_async())
