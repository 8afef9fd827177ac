"""sdk.columns: rows / numpy / Arrow / pandas -> FieldData columns, and results back."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

import sdk
from sdk import _rpc, columns
from sdk.schema import DataType, SchemaInfo

DIM = 4


def _info(dynamic: bool = True) -> SchemaInfo:
    schema = sdk.CollectionSchema(enable_dynamic_field=dynamic)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("name", DataType.VARCHAR, max_length=16)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
    schema.add_field("note", DataType.VARCHAR, max_length=16, nullable=True)
    pb = schema.to_proto("c")
    for i, f in enumerate(pb.fields):
        f.fieldID = 100 + i
    return SchemaInfo.from_describe(milvus_pb2.DescribeCollectionResponse(schema=pb))


def _decoded(fields: list[schema_pb2.FieldData]) -> list[dict]:
    """Round trip through the result decoder (the server answers in this shape too)."""
    return columns.query_rows(fields, [f.field_name for f in fields])


ROWS = [
    {"id": 1, "vec": [0.5, 1, 2, 3], "name": "a", "tags": [1, 2], "note": None, "x": 1},
    {"id": 2, "vec": [4.0, 5, 6, 7], "name": "b", "tags": [], "note": "n", "y": {"k": [1]}},
]


def test_rows_encode_like_pymilvus() -> None:
    fields, n = columns.encode_insert(ROWS, _info())
    assert n == 2
    by_name = {f.field_name: f for f in fields}
    assert list(by_name) == ["id", "vec", "name", "tags", "note", "$meta"]
    assert list(by_name["id"].scalars.long_data.data) == [1, 2]
    vec = by_name["vec"].vectors
    assert vec.dim == DIM and list(vec.float_vector.data) == [0.5, 1, 2, 3, 4, 5, 6, 7]
    assert [list(c.long_data.data) for c in by_name["tags"].scalars.array_data.data] == [[1, 2], []]
    note = by_name["note"]  # nullable: compressed values + flags
    assert list(note.valid_data) == [False, True] and list(note.scalars.string_data.data) == ["n"]
    meta = by_name["$meta"]
    assert meta.is_dynamic and [orjson.loads(b) for b in meta.scalars.json_data.data] == [
        {"x": 1},
        {"y": {"k": [1]}},
    ]


def _cols() -> dict:
    return {
        "id": np.array([1, 2]),
        "vec": np.array([r["vec"] for r in ROWS], dtype=np.float64),
        "name": ["a", "b"],
        "tags": [[1, 2], []],
        "note": [None, "n"],
        "x": [1, None],
    }


@pytest.mark.parametrize("form", ["numpy", "arrow", "batch", "pandas"])
def test_columnar_forms_encode_the_same_values(form: str) -> None:
    cols = _cols()
    if form != "numpy":
        table = pa.table(
            {**cols, "vec": pa.FixedSizeListArray.from_arrays(pa.array(cols["vec"].ravel()), DIM)}
        )
        data = {"arrow": table, "batch": table.to_batches()[0], "pandas": None}[form]
        if form == "pandas":
            frame = pd.DataFrame({k: v for k, v in cols.items() if k != "vec"})
            frame["vec"] = list(cols["vec"])
            data = frame
    else:
        data = cols
    fields, n = columns.encode_insert(data, _info())
    rows = _decoded(fields)
    assert n == 2
    assert rows[0] == {
        "id": 1,
        "vec": [0.5, 1, 2, 3],
        "name": "a",
        "tags": [1, 2],
        "note": None,
        "x": 1,
    }
    assert rows[1]["note"] == "n" and rows[1]["vec"] == [4, 5, 6, 7]
    assert rows[1].get("x") is None


def test_vector_bytes_are_packed_float32() -> None:
    vecs = np.random.default_rng(0).random((1000, DIM), dtype=np.float32)
    cols = {"id": np.arange(1000), "vec": vecs, "name": ["n"] * 1000, "tags": [[]] * 1000}
    fields, _ = columns.encode_insert(cols, _info(dynamic=False))
    got = np.asarray(fields[1].vectors.float_vector.data, dtype=np.float32).reshape(-1, DIM)
    assert np.array_equal(got, vecs)
    # the bytes parse back identically after a wire round trip
    req = milvus_pb2.InsertRequest(num_rows=1000)
    req.fields_data.extend(fields)
    again = milvus_pb2.InsertRequest.FromString(req.SerializeToString())
    assert np.array_equal(
        np.asarray(again.fields_data[1].vectors.float_vector.data, np.float32), vecs.ravel()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vec": np.zeros((2, 3))}, "dim 3 does not match"),
        ({"vec": [[1.0] * 4, [1.0] * 3]}, "vectors"),
        ({"id": np.array([1.5, 2.5])}, "dtype float64"),
        ({"name": [1, 2]}, "expects strings"),
        ({"vec": np.array([["a"] * 4] * 2)}, "float vectors"),
    ],
)
def test_bad_columns_raise_invalid_argument(change: dict, message: str) -> None:
    cols = {**_cols(), **change}
    with pytest.raises(sdk.InvalidArgument, match=message):
        columns.encode_insert(cols, _info())


def test_missing_and_unknown_fields() -> None:
    with pytest.raises(sdk.InvalidArgument, match="missing field 'name'"):
        columns.encode_insert([{k: v for k, v in ROWS[0].items() if k != "name"}], _info())
    with pytest.raises(sdk.InvalidArgument, match="dynamic field disabled"):
        columns.encode_insert(ROWS, _info(dynamic=False))
    fields, _ = columns.encode_insert([{k: v for k, v in ROWS[0].items() if k != "note"}], _info())
    assert list(next(f for f in fields if f.field_name == "note").valid_data) == [False]


def _search_result() -> schema_pb2.SearchResultData:
    res = schema_pb2.SearchResultData(num_queries=2, top_k=3, topks=[3, 1], primary_field_name="pk")
    res.ids.int_id.data.extend([5, 6, 7, 9])
    res.scores.extend([0.1, 0.2, 0.3, 0.5])
    fd = res.fields_data.add(field_name="name", type=DataType.VARCHAR)
    fd.scalars.string_data.data.extend(["e", "f", "g", "i"])
    meta = res.fields_data.add(field_name="$meta", type=DataType.JSON, is_dynamic=True)
    meta.scalars.json_data.data.extend([b'{"c": 1, "d": 2}'] * 4)
    res.output_fields.extend(["name", "c"])
    return res


def test_search_result_shapes() -> None:
    res = _search_result()
    hits = columns.search_hits(res)
    assert [len(h) for h in hits] == [3, 1]
    first = hits[0][0]
    assert first == {"pk": 5, "distance": pytest.approx(0.1), "entity": {"name": "e", "c": 1}}
    assert first.id == 5 and first["name"] == "e"  # falls back to the entity, as pymilvus
    ids, dists = columns.search_numpy(res, 3)
    assert ids.tolist() == [[5, 6, 7], [9, -1, -1]]
    assert np.isnan(dists[1, 1:]).all() and dists[0, 2] == np.float32(0.3)
    table = columns.search_arrow(res)
    assert table.column_names == ["query", "rank", "id", "distance", "name", "c"]
    assert table.column("rank").to_pylist() == [0, 1, 2, 0]
    assert table.column("query").to_pylist() == [0, 0, 0, 1]


def test_query_vectors_and_placeholder() -> None:
    vecs = columns.query_vectors([[1, 2], [3, 4]])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 2)
    assert columns.query_vectors(np.array([1.0, 2.0])).shape == (1, 2)
    pg = common_pb2.PlaceholderGroup.FromString(columns.placeholder_group(vecs))
    ph = pg.placeholders[0]
    assert ph.tag == "$0" and ph.type == common_pb2.PlaceholderType.FloatVector
    assert np.frombuffer(ph.values[1], np.float32).tolist() == [3.0, 4.0]
    with pytest.raises(sdk.InvalidArgument):
        columns.query_vectors([[1, 2], [3]])


def test_search_params_and_pk_expr() -> None:
    params = _rpc._search_params(
        5, {"metric_type": "L2", "params": {"ef": 64}}, "vec", {"offset": 2}
    )
    assert params["topk"] == "5" and params["offset"] == "2" and params["anns_field"] == "vec"
    assert orjson.loads(params["params"]) == {"ef": 64, "metric_type": "L2"}
    info = _info()
    assert _rpc.pk_expr(info, [1, 2]) == "id in [1, 2]"
    with pytest.raises(sdk.InvalidArgument):
        _rpc.pk_expr(info, ["a"])
