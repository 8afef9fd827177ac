"""cluster.milvus.columns: decoding Insert/Upsert requests, encoding results.

Requests are built by pymilvus (``Prepare.row_insert_param`` / ``row_upsert_param`` /
``batch_insert_param`` from the ``describe_collection`` dict pymilvus derives from our
DescribeCollection reply). Invalid requests that pymilvus would refuse client-side are made by
building the request from a looser "client view" of the schema (a stale cache), or by editing the
built request, which is what a misbehaving client could send.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.abstract import CollectionSchema as PymilvusDescribed
from pymilvus.client.grpc_handler import GrpcHandler
from pymilvus.client.prepare import Prepare
from pymilvus.client.search_result import SearchResult
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.milvus.columns import (
    RowBatch,
    arrow_schema,
    decode_ids,
    decode_insert,
    encode_field_data,
    encode_ids,
)
from cluster.milvus.shard import hash_pk_to_shard
from cluster.milvus.status import ParameterInvalid
from cluster.schema import DYNAMIC_FIELD_NAME, CollectionSchema, from_request_bytes

# --- helpers --------------------------------------------------------------------------------------


def make(s: Any, name: str = "c") -> CollectionSchema:
    req = Prepare.create_collection_request(name, s)
    return from_request_bytes(req.schema, req.collection_name)


def describe(schema: CollectionSchema) -> dict[str, Any]:
    """The dict pymilvus caches from our DescribeCollection reply."""
    reply = milvus_pb2.DescribeCollectionResponse(
        status=common_pb2.Status(), schema=schema.to_proto(), collectionID=1, update_timestamp=7
    )
    return PymilvusDescribed(raw=reply).dict()


def insert_req(schema: CollectionSchema, rows: list[dict[str, Any]]) -> milvus_pb2.InsertRequest:
    d = describe(schema)
    return Prepare.row_insert_param(
        schema.name,
        rows,
        "",
        d["fields"],
        enable_dynamic=d["enable_dynamic_field"],
        schema_timestamp=7,
    )


def upsert_req(schema: CollectionSchema, rows: list[dict[str, Any]]) -> milvus_pb2.UpsertRequest:
    d = describe(schema)
    return Prepare.row_upsert_param(
        schema.name, rows, "", d["fields"], enable_dynamic=d["enable_dynamic_field"]
    )


def decode(req: Any, schema: CollectionSchema, **kw: Any) -> RowBatch:
    # Through the wire, as the server receives it.
    req = type(req).FromString(req.SerializeToString())
    return decode_insert(req.fields_data, req.num_rows, schema, **kw)


def refused(req: Any, schema: CollectionSchema, **kw: Any) -> str:
    with pytest.raises(ParameterInvalid) as info:
        decode(req, schema, **kw)
    assert info.value.to_status().code == 1100
    return info.value.reason


def field_data(req: Any, name: str) -> schema_pb2.FieldData:
    return next(fd for fd in req.fields_data if fd.field_name == name)


def quick(dim: int = 4, **kw: Any) -> CollectionSchema:
    s = MilvusClient.create_schema(enable_dynamic_field=True, **kw)
    s.add_field("id", PDataType.INT64, is_primary=True, auto_id=kw.get("auto_id", False))
    s.add_field("vector", PDataType.FLOAT_VECTOR, dim=dim)
    return make(s, "quick")


def rich() -> CollectionSchema:
    s = MilvusClient.create_schema(enable_dynamic_field=True)
    s.add_field("pk", PDataType.VARCHAR, is_primary=True, max_length=8)
    s.add_field("meta", PDataType.JSON, nullable=True)
    s.add_field(
        "tags", PDataType.ARRAY, element_type=PDataType.VARCHAR, max_capacity=3, max_length=5
    )
    s.add_field(
        "nums", PDataType.ARRAY, element_type=PDataType.INT16, max_capacity=4, nullable=True
    )
    s.add_field("score", PDataType.FLOAT, default_value=1.5)
    s.add_field("n", PDataType.INT32, nullable=True)
    s.add_field("flag", PDataType.BOOL)
    s.add_field("small", PDataType.INT8)
    s.add_field("ratio", PDataType.DOUBLE)
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=3)
    return make(s, "rich")


def rich_row(i: int, **over: Any) -> dict[str, Any]:
    row = {
        "pk": f"k{i}",
        "meta": {"i": i},
        "tags": ["a", "b"][: i % 3],
        "nums": [i, -i],
        "score": 0.5 * i,
        "n": i,
        "flag": bool(i % 2),
        "small": i - 3,
        "ratio": i / 4,
        "v": [float(i), 0.0, -1.0],
    }
    row.update(over)
    return row


# --- decode: accepted requests --------------------------------------------------------------------


def test_quick_setup_insert() -> None:
    schema = quick()
    rows = [{"id": i, "vector": [i, i + 1, i + 2, i + 3], "color": f"c{i}"} for i in range(3)]
    rows[2].pop("color")
    batch = decode(insert_req(schema, rows), schema)
    assert batch.num_rows == 3 and batch.has_pks
    assert batch.table.column_names == ["id", "vector", DYNAMIC_FIELD_NAME]
    assert batch.table.schema.equals(arrow_schema(schema), check_metadata=True)
    np.testing.assert_array_equal(batch.pks(), [0, 1, 2])
    vecs = batch.vectors("vector")
    assert vecs.dtype == np.float32 and vecs.shape == (3, 4)
    np.testing.assert_array_equal(vecs[1], [1, 2, 3, 4])
    assert batch.column(DYNAMIC_FIELD_NAME).to_pylist() == [
        b'{"color":"c0"}',
        b'{"color":"c1"}',
        b"{}",
    ]


def test_rich_schema_nulls_defaults_arrays() -> None:
    schema = rich()
    rows = [rich_row(0), rich_row(1, meta=None, nums=None, n=None), rich_row(2)]
    del rows[1]["score"]  # -> default
    rows[2]["extra"] = [1, 2]
    batch = decode(insert_req(schema, rows), schema)
    t = batch.table.to_pydict()
    assert t["pk"] == ["k0", "k1", "k2"]
    assert t["meta"] == [b'{"i":0}', None, b'{"i":2}']
    assert t["tags"] == [[], ["a"], ["a", "b"]]
    assert t["nums"] == [[0, 0], None, [2, -2]]
    assert t["score"] == [0.0, 1.5, 1.0]
    assert t["n"] == [0, None, 2]
    assert t["flag"] == [False, True, False]
    assert t["small"] == [-3, -2, -1]
    assert t["ratio"] == [0.0, 0.25, 0.5]
    assert t[DYNAMIC_FIELD_NAME] == [b"{}", b"{}", b'{"extra":[1,2]}']
    types = {f.name: f.type for f in batch.table.schema}
    assert types["small"] == pa.int8() and types["nums"] == pa.list_(pa.int16())
    assert types["v"] == pa.list_(pa.float32(), 3) and types["meta"] == pa.binary()
    assert batch.table.schema.field("n").nullable and not batch.table.schema.field("flag").nullable
    assert isinstance(batch.pks(), pa.Array) and batch.pks().to_pylist() == ["k0", "k1", "k2"]


def test_missing_nullable_and_default_columns_are_filled() -> None:
    schema = rich()
    req = insert_req(schema, [rich_row(0), rich_row(1)])
    for name in ("meta", "score", "nums", "n"):
        req.fields_data.remove(field_data(req, name))
    batch = decode(req, schema)
    assert batch.column("meta").to_pylist() == [None, None]
    assert batch.column("score").to_pylist() == [1.5, 1.5]
    assert batch.column("nums").null_count == 2 and batch.column("n").null_count == 2


def test_duplicate_pks_in_one_batch_are_allowed() -> None:
    schema = quick()
    rows = [{"id": 5, "vector": [1, 2, 3, 4]}, {"id": 5, "vector": [4, 3, 2, 1]}]
    np.testing.assert_array_equal(decode(insert_req(schema, rows), schema).pks(), [5, 5])


def test_column_based_batch_insert() -> None:
    s = MilvusClient.create_schema()
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("name", PDataType.VARCHAR, max_length=10)
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=2)
    schema = make(s)
    fields = describe(schema)["fields"]
    entities = [
        {"name": "id", "type": PDataType.INT64, "values": [1, 2]},
        {"name": "name", "type": PDataType.VARCHAR, "values": ["x", "y"]},
        {"name": "v", "type": PDataType.FLOAT_VECTOR, "values": [[1, 2], [3, 4]]},
    ]
    req = Prepare.batch_insert_param("c", entities, "", fields)
    batch = decode(req, schema)
    assert batch.table.to_pydict() == {"id": [1, 2], "name": ["x", "y"], "v": [[1, 2], [3, 4]]}


def test_auto_id_insert_then_with_auto_ids() -> None:
    schema = quick(auto_id=True)
    batch = decode(insert_req(schema, [{"vector": [1, 2, 3, 4]}, {"vector": [5, 6, 7, 8]}]), schema)
    assert not batch.has_pks and batch.table.column_names == ["vector", DYNAMIC_FIELD_NAME]
    full = batch.with_auto_ids(np.array([1001, 1002]))
    assert full.table.column_names == ["id", "vector", DYNAMIC_FIELD_NAME]
    np.testing.assert_array_equal(full.pks(), [1001, 1002])
    with pytest.raises(ValueError):
        full.with_auto_ids(np.array([1, 2]))
    s = MilvusClient.create_schema(auto_id=True)
    s.add_field("pk", PDataType.VARCHAR, is_primary=True, max_length=20, auto_id=True)
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=2)
    vschema = make(s)
    vbatch = decode(insert_req(vschema, [{"v": [1, 2]}]), vschema).with_auto_ids(np.array([42]))
    assert vbatch.pks().to_pylist() == ["42"]


def test_upsert_keeps_given_pk_even_with_auto_id() -> None:
    schema = quick(auto_id=True)
    batch = decode(upsert_req(schema, [{"id": 9, "vector": [1, 2, 3, 4]}]), schema, upsert=True)
    np.testing.assert_array_equal(batch.pks(), [9])


def test_split_by_shard_uses_pk_hash() -> None:
    schema = quick()
    rows = [{"id": i, "vector": [i, 0, 0, 0]} for i in range(200)]
    batch = decode(insert_req(schema, rows), schema)
    parts = batch.split_by_shard(4)
    assert sum(p.num_rows for p in parts) == 200
    shards = hash_pk_to_shard(np.arange(200), 4)
    for s, part in enumerate(parts):
        np.testing.assert_array_equal(part.pks(), np.flatnonzero(shards == s))
        np.testing.assert_array_equal(part.vectors("vector")[:, 0], part.pks())


# --- decode: refusals -----------------------------------------------------------------------------


def test_wrong_dimension() -> None:
    schema = quick(dim=4)
    req = insert_req(quick(dim=8), [{"id": 1, "vector": list(range(8))}])  # stale client
    assert refused(req, schema) == (
        "the dim (8) of field data(vector) is not equal to schema dim (4): "
        "invalid parameter[expected=4][actual=8]"
    )


def test_vector_rows_must_match_num_rows_and_divide_dim() -> None:
    schema = quick(dim=4)
    req = insert_req(schema, [{"id": 1, "vector": [1, 2, 3, 4]}, {"id": 2, "vector": [1, 2, 3, 4]}])
    del field_data(req, "vector").vectors.float_vector.data[-4:]
    assert "the num_rows (1) of field (vector) is not equal to passed num_rows (2)" in refused(
        req, schema
    )
    del field_data(req, "vector").vectors.float_vector.data[-1:]
    assert "the length(3) of float data should divide the dim(4)" in refused(req, schema)


def test_row_count_mismatch_on_scalars() -> None:
    schema = quick()
    req = insert_req(schema, [{"id": 1, "vector": [1, 2, 3, 4]}, {"id": 2, "vector": [1, 2, 3, 4]}])
    field_data(req, "id").scalars.long_data.data.append(3)
    assert refused(req, schema) == (
        "the num_rows (3) of field (id) is not equal to passed num_rows (2): "
        "invalid parameter[expected=2][actual=3]"
    )
    req.num_rows = 0
    assert "num_rows should be greater than 0" in refused(req, schema)


def test_missing_field_and_missing_pk() -> None:
    schema = rich()
    req = insert_req(schema, [rich_row(0)])
    req.fields_data.remove(field_data(req, "flag"))
    assert refused(req, schema) == (
        "fieldSchema(flag) has no corresponding fieldData pass in: invalid parameter"
    )
    req = insert_req(schema, [rich_row(0)])
    req.fields_data.remove(field_data(req, "pk"))
    assert "fieldSchema(pk) has no corresponding fieldData pass in" in refused(req, schema)
    up = upsert_req(quick(auto_id=True), [{"id": 1, "vector": [1, 2, 3, 4]}])
    up.fields_data.remove(field_data(up, "id"))
    assert "must assign pk when upsert, primary field: id" in refused(
        up, quick(auto_id=True), upsert=True
    )


def test_pk_supplied_when_auto_id() -> None:
    schema = quick(auto_id=True)
    req = insert_req(schema, [{"id": 1, "vector": [1, 2, 3, 4]}])  # pymilvus passes it through
    assert refused(req, schema) == (
        "can not assign primary field data when auto id enabled id: invalid parameter"
    )


def test_unknown_and_duplicate_fields() -> None:
    s = MilvusClient.create_schema()
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=2)
    schema = make(s)
    client_view = MilvusClient.create_schema()
    client_view.add_field("id", PDataType.INT64, is_primary=True)
    client_view.add_field("v", PDataType.FLOAT_VECTOR, dim=2)
    client_view.add_field("age", PDataType.INT64)
    req = insert_req(make(client_view), [{"id": 1, "v": [1, 2], "age": 3}])
    assert "fieldName age not exist in collection schema" in refused(req, schema)
    req = insert_req(schema, [{"id": 1, "v": [1, 2]}])
    req.fields_data.append(field_data(req, "id"))
    assert "duplicated field id found" in refused(req, schema)


def test_dynamic_column_for_a_static_collection() -> None:
    s = MilvusClient.create_schema()
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vector", PDataType.FLOAT_VECTOR, dim=2)
    schema = make(s)
    req = insert_req(quick(dim=2), [{"id": 1, "vector": [1, 2], "x": 1}])
    assert "without dynamic schema enabled, the field name cannot be set to $meta" in refused(
        req, schema
    )


def test_wrong_type() -> None:
    schema = rich()
    client_view = MilvusClient.create_schema(enable_dynamic_field=True)
    for f in describe(schema)["fields"]:
        kwargs = dict(f.get("params", {}))
        if f["name"] == "flag":
            client_view.add_field("flag", PDataType.VARCHAR, max_length=10)
            continue
        for key in ("is_primary", "nullable", "element_type", "default_value"):
            if f.get(key) is not None:
                kwargs[key] = f[key]
        client_view.add_field(f["name"], f["type"], **kwargs)
    req = insert_req(make(client_view, "rich"), [rich_row(0, flag="yes")])
    assert refused(req, schema) == (
        "field 'flag' is illegal, data type mismatch: invalid parameter"
        "[expected=Bool][actual=VarChar]"
    )
    field_data(req, "flag").type = 0  # no declared type: the payload decides
    assert refused(req, schema) == (
        "field 'flag' is illegal, array type mismatch: invalid parameter"
        "[expected=need bool array][actual=got nil]"
    )


def test_varchar_longer_than_max_length() -> None:
    schema = rich()  # pk max_length 8, tags elements max_length 5
    req = insert_req(schema, [rich_row(0)])
    field_data(req, "pk").scalars.string_data.data[0] = "much-too-long"
    assert refused(req, schema) == (
        "length of varchar field pk exceeds max length, row number: 0, length: 13, "
        "max length: 8: invalid parameter"
    )
    req = insert_req(schema, [rich_row(0), rich_row(1)])
    field_data(req, "pk").scalars.string_data.data[1] = "ééééé"  # 5 chars, 10 bytes
    assert "row number: 1, length: 10, max length: 8" in refused(req, schema)
    req = insert_req(schema, [rich_row(0), rich_row(2)])
    field_data(req, "tags").scalars.array_data.data[1].string_data.data[1] = "toolong"
    assert (
        'length of Array array field "tags" exceeds max length, row number: 1, array index: 1, '
        "length: 7, max length: 5"
    ) in refused(req, schema)


def test_array_over_capacity_and_element_type() -> None:
    schema = rich()
    req = insert_req(schema, [rich_row(0), rich_row(1)])
    field_data(req, "nums").scalars.array_data.data[1].int_data.data.extend([1, 2, 3])
    assert refused(req, schema) == (
        "the length (5) of 1th array exceeds max capacity (4): invalid parameter"
        "[expected=valid length array][actual=array length exceeds max capacity]"
    )
    req = insert_req(schema, [rich_row(0)])
    cell = field_data(req, "nums").scalars.array_data.data[0]
    cell.long_data.data.extend([1])
    assert "insert data does not match" in refused(req, schema)
    req = insert_req(schema, [rich_row(0, nums=[40000])])
    assert "the 0th element (40000) out of range: [-32768, 32767]" in refused(req, schema)


def test_numeric_checks() -> None:
    schema = rich()
    req = insert_req(schema, [rich_row(0, small=200)])
    assert "the 0th element (200) out of range: [-128, 127]" in refused(req, schema)
    req = insert_req(schema, [rich_row(0, ratio=float("nan"))])
    assert refused(req, schema) == "value 'NaN' is not a number or infinity: invalid parameter"
    req = insert_req(schema, [rich_row(0, v=[1.0, float("inf"), 0.0])])
    assert "value '+Inf' is not a number or infinity" in refused(req, schema)


def test_valid_data_rules() -> None:
    schema = rich()
    req = insert_req(schema, [rich_row(0), rich_row(1)])
    field_data(req, "flag").valid_data.extend([True, False])
    assert "the length of valid_data of field(flag) is wrong" in refused(req, schema)
    req = insert_req(schema, [rich_row(0), rich_row(1, n=None)])
    field_data(req, "n").valid_data.append(True)
    assert "the length of valid_data of field(n) is wrong: invalid parameter[expected=2]" in (
        refused(req, schema)
    )
    req = insert_req(schema, [rich_row(0), rich_row(1, n=None), rich_row(2)])
    field_data(req, "n").scalars.int_data.data.append(5)  # 3 values for 2 valid rows of 3
    assert refused(req, schema) == (
        "the length of field is wrong: invalid parameter[expected=2][actual=3]"
    )


def test_dynamic_values_must_be_json_objects() -> None:
    schema = quick()
    req = insert_req(schema, [{"id": 1, "vector": [1, 2, 3, 4]}, {"id": 2, "vector": [1, 2, 3, 4]}])
    meta = field_data(req, DYNAMIC_FIELD_NAME).scalars.json_data.data
    meta[1] = b"[1, 2]"
    assert "insert invalid dynamic data, milvus only support json map, row 1" in refused(
        req, schema
    )
    meta[1] = b"{oops"
    assert "milvus only support json map, row 1:" in refused(req, schema)
    meta[1] = b'{"$meta": 1}'
    assert "cannot set json key to: $meta" in refused(req, schema)
    meta[1] = b'{"vector": 1}'
    assert "dynamic field name cannot include the static field name: vector" in refused(req, schema)
    req.fields_data.remove(field_data(req, DYNAMIC_FIELD_NAME))
    assert decode(req, schema).column(DYNAMIC_FIELD_NAME).to_pylist() == [b"{}", b"{}"]


# --- decode speed (printed, not asserted) ---------------------------------------------------------


def test_decode_speed_5000_rows_128d(capsys: pytest.CaptureFixture[str]) -> None:
    schema = quick(dim=128)
    rng = np.random.default_rng(0)
    vecs = rng.random((5000, 128), dtype=np.float32)
    rows = [{"id": i, "vector": vecs[i], "color": "red" if i % 2 else "blue"} for i in range(5000)]
    t0 = time.perf_counter()
    req = insert_req(schema, rows)
    client_ms = (time.perf_counter() - t0) * 1e3
    req = milvus_pb2.InsertRequest.FromString(req.SerializeToString())
    no_meta = milvus_pb2.InsertRequest()
    no_meta.CopyFrom(req)
    no_meta.fields_data.remove(field_data(no_meta, DYNAMIC_FIELD_NAME))

    def best(r: milvus_pb2.InsertRequest) -> float:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            batch = decode_insert(r.fields_data, r.num_rows, schema)
            times.append(time.perf_counter() - t)
        np.testing.assert_array_equal(batch.vectors("vector"), vecs)
        return min(times) * 1e3

    with_meta, without = best(req), best(no_meta)
    with capsys.disabled():
        print(
            f"\n[decode 5000x128] pymilvus builds the request in {client_ms:.1f} ms; "
            f"decode {with_meta:.2f} ms with $meta ({5000 / with_meta:.0f}k rows/s), "
            f"{without:.2f} ms without $meta ({5000 / without:.0f}k rows/s)"
        )


# --- encode ---------------------------------------------------------------------------------------


def _query_through_pymilvus(reply: milvus_pb2.QueryResults, output_fields: list[str]) -> list:
    h = object.__new__(GrpcHandler)
    h._stub = type("Stub", (), {"Query": lambda self, req, **kw: reply})()
    h._address = "127.0.0.1:19530"
    return list(h.query("c", "pk != ''", output_fields=output_fields))


def test_encode_query_results_read_by_pymilvus() -> None:
    schema = rich()
    rows = [rich_row(0), rich_row(1, meta=None, nums=None, n=None), rich_row(2)]
    rows[0]["color"] = "red"
    rows[2]["color"] = "blue"
    rows[2]["size"] = 3
    table = decode(insert_req(schema, rows), schema).table
    names = ["pk", "meta", "tags", "nums", "score", "n", "flag", "small", "ratio", "v"]
    fds = encode_field_data(table, [schema.require_field(n) for n in names], ["color"])
    reply = milvus_pb2.QueryResults(
        status=common_pb2.Status(), fields_data=fds, output_fields=[*names, "color"]
    )
    got = _query_through_pymilvus(reply, [*names, "color"])
    assert got[1]["meta"] is None and got[1]["nums"] is None and got[1]["n"] is None
    assert got[1]["score"] == 0.5 and "color" not in got[1]
    assert got[0]["color"] == "red" and got[2]["color"] == "blue" and "size" not in got[2]
    for row, want in zip(got, rows, strict=True):
        for name in ("pk", "tags", "flag", "small", "ratio"):
            assert row[name] == want[name], name
        assert row["v"] == pytest.approx(want["v"])
    assert got[0]["meta"] == {"i": 0} and got[2]["nums"] == [2, -2]
    meta_fd = fds[-1]
    assert meta_fd.is_dynamic and meta_fd.field_name == DYNAMIC_FIELD_NAME


def test_encode_whole_dynamic_field_and_empty_results() -> None:
    schema = quick()
    rows = [{"id": 1, "vector": [1, 2, 3, 4], "a": 1, "b": "x"}]
    table = decode(insert_req(schema, rows), schema).table
    fds = encode_field_data(table, [schema.require_field("id"), schema.dynamic_field])
    reply = milvus_pb2.QueryResults(fields_data=fds, output_fields=["id", DYNAMIC_FIELD_NAME])
    assert _query_through_pymilvus(reply, ["id", DYNAMIC_FIELD_NAME]) == [
        {"id": 1, "a": 1, "b": "x"}
    ]
    empty = encode_field_data(
        table.slice(0, 0), [schema.require_field("id"), schema.require_field("vector")]
    )
    reply = milvus_pb2.QueryResults(fields_data=empty, output_fields=["id", "vector"])
    assert _query_through_pymilvus(reply, ["id", "vector"]) == []


def test_encode_search_results_read_by_pymilvus() -> None:
    schema = quick()
    rows = [{"id": i, "vector": [i, 0, 0, 1], "tag": f"t{i}"} for i in range(4)]
    table = decode(insert_req(schema, rows), schema).table
    hits = table.take(pa.array([3, 1, 0, 2]))  # nq=2, top-2, in result order
    data = schema_pb2.SearchResultData(
        num_queries=2,
        top_k=2,
        topks=[2, 2],
        scores=[0.9, 0.5, 0.8, 0.1],
        ids=encode_ids(hits.column("id")),
        fields_data=encode_field_data(hits, [schema.require_field("vector")], ["tag"]),
        output_fields=["vector", "tag"],
        primary_field_name="id",
    )
    res = SearchResult(schema_pb2.SearchResultData.FromString(data.SerializeToString()))
    assert [[h["id"] for h in q] for q in res] == [[3, 1], [0, 2]]
    assert res[0][0]["entity"]["tag"] == "t3" and res[1][1]["entity"]["vector"] == [2, 0, 0, 1]
    assert res[0][1]["distance"] == pytest.approx(0.5)


def test_ids_round_trip() -> None:
    ints = encode_ids(np.array([3, -1, 2**62]))
    assert list(ints.int_id.data) == [3, -1, 2**62]
    np.testing.assert_array_equal(decode_ids(ints), [3, -1, 2**62])
    strs = encode_ids(pa.array(["a", "b"]))
    assert list(strs.str_id.data) == ["a", "b"]
    assert decode_ids(strs).to_pylist() == ["a", "b"]
    assert list(encode_ids(["x"]).str_id.data) == ["x"]
    assert list(encode_ids(pa.chunked_array([[1], [2]])).int_id.data) == [1, 2]
