"""cluster.schema: building, validating, describing and storing collection schemas.

Requests are built by pymilvus itself (``MilvusClient.create_schema`` + ``add_field`` +
``Prepare.create_collection_request``, or the real ``MilvusClient.create_collection`` quick
setup against a recording stub), so the tests see exactly the bytes a client sends.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.abstract import CollectionSchema as PymilvusDescribed
from pymilvus.client.grpc_handler import GrpcHandler
from pymilvus.client.prepare import Prepare
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from cluster.milvus.status import (
    FieldNameInvalid,
    IllegalSchema,
    MilvusError,
    NotSupportedYet,
    ParameterInvalid,
)
from cluster.schema import (
    DYNAMIC_FIELD_NAME,
    CollectionSchema,
    DataType,
    FieldSchema,
    from_proto,
    from_request_bytes,
)

# --- helpers --------------------------------------------------------------------------------------


def request_for(
    schema: Any, name: str = "coll", **kwargs: Any
) -> milvus_pb2.CreateCollectionRequest:
    return Prepare.create_collection_request(name, schema, **kwargs)


def build(schema: Any, name: str = "coll") -> CollectionSchema:
    req = request_for(schema, name)
    return from_request_bytes(req.schema, req.collection_name)


def proto_of(schema: Any, name: str = "coll") -> schema_pb2.CollectionSchema:
    return schema_pb2.CollectionSchema.FromString(request_for(schema, name).schema)


def base_schema(**kwargs: Any) -> Any:
    s = MilvusClient.create_schema(**kwargs)
    s.add_field("id", PDataType.INT64, is_primary=True)
    s.add_field("vec", PDataType.FLOAT_VECTOR, dim=4)
    return s


def raw_schema(*fields: schema_pb2.FieldSchema, **kwargs: Any) -> schema_pb2.CollectionSchema:
    """A schema proto built by hand, for what pymilvus' own client-side checks refuse to send."""
    kwargs.setdefault("name", "coll")
    return schema_pb2.CollectionSchema(fields=list(fields), **kwargs)


def pk(name: str = "id", dtype: int = DataType.INT64, **kw: Any) -> schema_pb2.FieldSchema:
    return schema_pb2.FieldSchema(name=name, data_type=dtype, is_primary_key=True, **kw)


def vec(name: str = "vec", dim: str | None = "4", dtype: int = DataType.FLOAT_VECTOR, **kw: Any):
    f = schema_pb2.FieldSchema(name=name, data_type=dtype, **kw)
    if dim is not None:
        f.type_params.add(key="dim", value=dim)
    return f


def scalar(name: str, dtype: int, **params: str) -> schema_pb2.FieldSchema:
    f = schema_pb2.FieldSchema(name=name, data_type=dtype)
    for k, v in params.items():
        f.type_params.add(key=k, value=v)
    return f


def refused(proto: schema_pb2.CollectionSchema, exc: type[MilvusError] = ParameterInvalid) -> str:
    with pytest.raises(exc) as info:
        from_proto(proto)
    return info.value.reason


class _Rpc:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, req: Any, **kw: Any) -> Any:
        return self.fn(req)

    def future(self, req: Any, **kw: Any) -> Any:
        reply = self.fn(req)
        return SimpleNamespace(result=lambda: reply)


class RecordingStub:
    """Answers CreateCollection with success, everything else with a 1100 status (to stop)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> _Rpc:
        def handle(req: Any) -> Any:
            self.requests.append((name, req))
            if name == "CreateCollection":
                return common_pb2.Status()
            return ParameterInvalid("recording stub stops here").to_status()

        return _Rpc(handle)


def quick_setup_request(**kwargs: Any) -> milvus_pb2.CreateCollectionRequest:
    """What ``MilvusClient.create_collection(name, dimension=...)`` really sends."""
    handler = object.__new__(GrpcHandler)
    handler._stub = RecordingStub()
    handler._address = "127.0.0.1:19530"
    client = object.__new__(MilvusClient)
    client._config = SimpleNamespace(db_name="")
    client._get_connection = lambda: handler
    with pytest.raises(Exception, match="recording stub stops here"):
        client.create_collection("quick", **kwargs)
    name, req = handler._stub.requests[0]
    assert name == "CreateCollection"
    return req


# --- DataType -------------------------------------------------------------------------------------


def test_datatype_numbers_match_milvus() -> None:
    for value in schema_pb2.DataType.DESCRIPTOR.values:
        assert DataType(value.number).milvus_name == value.name
    assert DataType.INT64 == PDataType.INT64 == 5
    assert DataType.FLOAT_VECTOR == PDataType.FLOAT_VECTOR == 101
    assert DataType.VARCHAR.milvus_name == "VarChar"
    assert DataType.FLOAT_VECTOR.is_vector and not DataType.JSON.is_vector


# --- accepted shapes ------------------------------------------------------------------------------


def test_quick_setup_schema_is_accepted() -> None:
    req = quick_setup_request(dimension=8)
    assert req.consistency_level == common_pb2.Bounded
    schema = from_request_bytes(req.schema, req.collection_name)
    assert schema.name == "quick"
    assert schema.enable_dynamic_field
    ids = [(f.field_id, f.name, f.dtype) for f in schema.fields]
    assert ids == [
        (100, "id", DataType.INT64),
        (101, "vector", DataType.FLOAT_VECTOR),
        (102, DYNAMIC_FIELD_NAME, DataType.JSON),
    ]
    assert schema.primary_field.name == "id" and not schema.primary_field.auto_id
    assert schema.get_field("vector").dim == 8
    dyn = schema.dynamic_field
    assert dyn is not None and dyn.is_dynamic and dyn.description == "dynamic schema"
    assert schema.user_fields == schema.fields[:2]


def test_quick_setup_string_id_and_auto_id() -> None:
    req = quick_setup_request(dimension=4, id_type="string", max_length=36, auto_id=True)
    schema = from_request_bytes(req.schema, req.collection_name)
    assert schema.primary_field.dtype == DataType.VARCHAR
    assert schema.primary_field.max_length == 36
    assert schema.primary_field.auto_id


def test_explicit_schema_varchar_pk_json_array_dynamic() -> None:
    s = MilvusClient.create_schema(enable_dynamic_field=True, description="docs")
    s.add_field("doc_id", PDataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("meta", PDataType.JSON, nullable=True)
    s.add_field(
        "tags", PDataType.ARRAY, element_type=PDataType.VARCHAR, max_capacity=8, max_length=16
    )
    s.add_field("score", PDataType.FLOAT, default_value=1.5)
    s.add_field("year", PDataType.INT64, is_partition_key=True)
    s.add_field("emb", PDataType.FLOAT_VECTOR, dim=128, description="embedding")
    schema = build(s, "docs")
    assert [f.field_id for f in schema.fields] == [100, 101, 102, 103, 104, 105, 106]
    tags = schema.require_field("tags")
    assert (tags.element_type, tags.max_capacity, tags.max_length) == (DataType.VARCHAR, 8, 16)
    assert schema.require_field("meta").nullable
    assert schema.require_field("score").default_value == 1.5
    assert schema.require_field("emb").description == "embedding"
    assert schema.description == "docs"
    assert [f.name for f in schema.vector_fields] == ["emb"]
    assert schema.field_by_id(106).name == DYNAMIC_FIELD_NAME


def test_every_supported_scalar_type() -> None:
    s = base_schema()
    for name, dtype in [
        ("b", PDataType.BOOL),
        ("i8", PDataType.INT8),
        ("i16", PDataType.INT16),
        ("i32", PDataType.INT32),
        ("i64", PDataType.INT64),
        ("f", PDataType.FLOAT),
        ("d", PDataType.DOUBLE),
        ("j", PDataType.JSON),
    ]:
        s.add_field(name, dtype)
    s.add_field("s", PDataType.VARCHAR, max_length=65535)
    s.add_field("a", PDataType.ARRAY, element_type=PDataType.INT64, max_capacity=4096)
    schema = build(s)
    assert len(schema.fields) == 12 and schema.dynamic_field is None


# --- round trips ----------------------------------------------------------------------------------


def _without_ids(proto: schema_pb2.CollectionSchema) -> schema_pb2.CollectionSchema:
    out = schema_pb2.CollectionSchema()
    out.CopyFrom(proto)
    for f in out.fields:
        f.fieldID = 0
    return out


def test_to_proto_round_trips_what_pymilvus_sends() -> None:
    s = MilvusClient.create_schema(enable_dynamic_field=True, description="d")
    s.add_field("pk", PDataType.VARCHAR, is_primary=True, max_length=64, description="key")
    s.add_field("meta", PDataType.JSON, nullable=True)
    s.add_field(
        "tags", PDataType.ARRAY, element_type=PDataType.INT32, max_capacity=4, mmap_enabled=True
    )
    s.add_field("n", PDataType.INT64, default_value=3)
    s.add_field("name", PDataType.VARCHAR, max_length=10, default_value="anon")
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=16)
    sent = proto_of(s)
    schema = from_proto(sent)
    described = schema.to_proto()
    assert [f.fieldID for f in described.fields] == [100, 101, 102, 103, 104, 105]
    assert _without_ids(described) == sent  # type params as key-value strings, in sent order
    assert {kv.key: kv.value for kv in described.fields[2].type_params} == {
        "max_capacity": "4",
        "mmap.enabled": "true",
    }
    # again through our own model
    assert from_proto(described) == schema
    with_dyn = schema.to_proto(include_dynamic=True)
    assert with_dyn.fields[-1].name == DYNAMIC_FIELD_NAME and with_dyn.fields[-1].is_dynamic


def test_pymilvus_reads_the_described_schema() -> None:
    s = MilvusClient.create_schema(enable_dynamic_field=True)
    s.add_field("pk", PDataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field(
        "tags", PDataType.ARRAY, element_type=PDataType.VARCHAR, max_capacity=4, max_length=8
    )
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=16)
    schema = build(s)
    reply = milvus_pb2.DescribeCollectionResponse(
        status=common_pb2.Status(), schema=schema.to_proto(), collectionID=7, update_timestamp=9
    )
    d = PymilvusDescribed(raw=reply).dict()
    assert d["enable_dynamic_field"] is True
    assert d["update_timestamp"] == 9
    fields = {f["name"]: f for f in d["fields"]}
    assert set(fields) == {"pk", "tags", "v"}  # $meta stays hidden, as in Milvus
    assert fields["v"]["params"] == {"dim": 16}
    assert fields["tags"]["params"] == {"max_capacity": 4, "max_length": 8}
    assert fields["pk"]["field_id"] == 100 and fields["pk"]["is_primary"]


def test_programmatic_field_synthesizes_type_params() -> None:
    f = FieldSchema(field_id=101, name="v", dtype=DataType.FLOAT_VECTOR, dim=8)
    assert [(kv.key, kv.value) for kv in f.to_proto().type_params] == [("dim", "8")]
    s = FieldSchema(field_id=102, name="s", dtype=DataType.VARCHAR, max_length=5, default_value="x")
    proto = s.to_proto()
    assert proto.default_value.string_data == "x"
    assert [(kv.key, kv.value) for kv in proto.type_params] == [("max_length", "5")]


def test_json_storage_round_trip() -> None:
    s = MilvusClient.create_schema(enable_dynamic_field=True)
    s.add_field("id", PDataType.INT64, is_primary=True, auto_id=True)
    s.add_field("tags", PDataType.ARRAY, element_type=PDataType.DOUBLE, max_capacity=3)
    s.add_field("on", PDataType.BOOL, default_value=True, nullable=True)
    s.add_field("v", PDataType.FLOAT_VECTOR, dim=3)
    proto = proto_of(s)
    doc = proto.fields.add(name="doc", data_type=DataType.JSON)  # pymilvus cannot send this one
    doc.default_value.bytes_data = b'{"a": 1}'
    schema = from_proto(proto)
    assert schema.require_field("doc").default_value == b'{"a": 1}'
    text = schema.to_json()
    again = CollectionSchema.from_json(text)
    assert again == schema
    assert again.to_proto() == schema.to_proto()
    assert CollectionSchema.from_json(again.to_json().encode()) == schema
    with pytest.raises(ValueError):
        CollectionSchema.from_dict({**schema.to_dict(), "format": 2})


# --- refusals -------------------------------------------------------------------------------------


def test_name_rules() -> None:
    assert "the first character of a collection name must be an underscore or letter" in refused(
        raw_schema(pk(), vec(), name="1abc")
    )
    assert "collection name can only contain numbers, letters and underscores" in refused(
        raw_schema(pk(), vec(), name="a-b")
    )
    assert "must be less than 255 characters" in refused(raw_schema(pk(), vec(), name="a" * 256))
    from_proto(raw_schema(pk(), vec(), name="a" * 255))
    assert refused(raw_schema(pk(), vec(), name="")) == (
        "collection name should not be empty: invalid parameter"
    )
    reason = refused(raw_schema(pk(), vec("9v")), FieldNameInvalid)
    assert reason == (
        "Invalid field name: 9v. The first character of a field name must be an underscore or "
        "letter.: field name invalid[field=9v]"
    )
    assert "Field name can only contain numbers, letters, and underscores." in refused(
        raw_schema(pk(), vec("v v")), FieldNameInvalid
    )
    with pytest.raises(ParameterInvalid, match=r"not matches schema name \[coll\]"):
        from_proto(raw_schema(pk(), vec()), collection_name="other")
    assert from_proto(raw_schema(pk(), vec(), name=""), "given").name == "given"


def test_primary_key_rules() -> None:
    assert refused(raw_schema(vec())) == "primary key is not specified: invalid parameter"
    assert "there are more than one primary key, field name = id, id2" in refused(
        raw_schema(pk(), pk("id2"), vec())
    )
    assert "the data type of primary key should be Int64 or VarChar" in refused(
        raw_schema(pk(dtype=DataType.INT32), vec())
    )
    assert (
        "type param(max_length) should be specified for varChar field(id) of collection coll"
        in (refused(raw_schema(pk(dtype=DataType.VARCHAR), vec())))
    )
    assert "primary field not support null" in refused(raw_schema(pk(nullable=True), vec()))
    default = pk()
    default.default_value.long_data = 3
    assert "primary key can't be with default value" in refused(raw_schema(default, vec()))


def test_vector_rules() -> None:
    assert refused(raw_schema(pk())) == "schema does not contain vector field: invalid parameter"
    assert "dimension is not defined in field type params of field vec" in refused(
        raw_schema(pk(), vec(dim=None))
    )
    assert "invalid dimension: 1. should be in range 2 ~ 32768" in refused(
        raw_schema(pk(), vec(dim="1"))
    )
    assert "invalid dimension: 0. should be in range 2 ~ 32768" in refused(
        raw_schema(pk(), vec(dim="0"))
    )
    assert "float vector dimension should be in range 2 ~ 32768" in refused(
        raw_schema(pk(), vec(dim="32769"))
    )
    assert from_proto(raw_schema(pk(), vec(dim="32768"))).require_field("vec").dim == 32768
    assert "must be an integer" in refused(raw_schema(pk(), vec(dim="eight")))
    assert "maximum vector field's number should be limited to 4" in refused(
        raw_schema(pk(), *(vec(f"v{i}") for i in range(5)))
    )
    assert "vector type not support null" in refused(raw_schema(pk(), vec(nullable=True)))


@pytest.mark.parametrize(
    ("dtype", "dim", "name"),
    [
        (DataType.BINARY_VECTOR, "64", "BinaryVector"),
        (DataType.FLOAT16_VECTOR, "8", "Float16Vector"),
        (DataType.BFLOAT16_VECTOR, "8", "BFloat16Vector"),
        (DataType.INT8_VECTOR, "8", "Int8Vector"),
        (DataType.SPARSE_FLOAT_VECTOR, None, "SparseFloatVector"),
    ],
)
def test_other_vector_types_are_not_supported_yet(dtype: int, dim: str | None, name: str) -> None:
    reason = refused(raw_schema(pk(), vec("v2", dim=dim, dtype=dtype)), NotSupportedYet)
    assert reason == f"data type {name} (field v2) is not supported yet: unsupported operation"
    with pytest.raises(NotSupportedYet) as info:
        from_proto(raw_schema(pk(), vec("v2", dim, dtype)))
    assert info.value.to_status().code == 3000


def test_other_vector_types_are_validated_before_refusal() -> None:
    assert "binary vector dimension should be multiple of 8" in refused(
        raw_schema(pk(), vec("b", dim="12", dtype=DataType.BINARY_VECTOR))
    )
    assert "dim should not be specified for sparse vector field s(100)" in refused(
        raw_schema(vec("s", dim="8", dtype=DataType.SPARSE_FLOAT_VECTOR), pk())
    )


def test_unsupported_features_are_refused_clearly() -> None:
    for proto, what in [
        (raw_schema(pk(), vec(), scalar("t", DataType.TEXT, max_length="9")), "Text"),
        (raw_schema(pk(), vec(), scalar("g", DataType.GEOMETRY)), "Geometry"),
        (raw_schema(pk(), vec(), scalar("ts", DataType.TIMESTAMPTZ)), "Timestamptz"),
    ]:
        assert what in refused(proto, NotSupportedYet)
    fn = raw_schema(pk(), vec())
    fn.functions.add(name="bm25", input_field_names=["t"], output_field_names=["vec"])
    assert "functions in a collection schema" in refused(fn, NotSupportedYet)
    st = raw_schema(pk(), vec())
    st.struct_array_fields.add(name="s")
    assert "struct array fields" in refused(st, NotSupportedYet)


def test_varchar_and_array_rules() -> None:
    too_long = scalar("s", DataType.VARCHAR, max_length="65536")
    assert (
        "the maximum length specified for a VarChar field(s) should be in (0, 65535], "
        "but got 65536 instead"
    ) in refused(raw_schema(pk(), vec(), too_long))
    assert "should be in (0, 65535], but got 0" in refused(
        raw_schema(pk(), vec(), scalar("s", DataType.VARCHAR, max_length="0"))
    )
    arr = scalar("a", DataType.ARRAY, max_capacity="4")
    assert "element data type None is not valid" in refused(raw_schema(pk(), vec(), arr))
    arr.element_type = DataType.JSON
    assert "element type JSON is not supported" in refused(raw_schema(pk(), vec(), arr))
    arr.element_type = DataType.STRING
    assert "please use VarChar type instead" in refused(raw_schema(pk(), vec(), arr))
    no_cap = scalar("a", DataType.ARRAY)
    no_cap.element_type = DataType.INT64
    assert "type param(max_capacity) should be specified for array field a of collection coll" in (
        refused(raw_schema(pk(), vec(), no_cap))
    )
    for cap in ("0", "4097"):
        big = scalar("a", DataType.ARRAY, max_capacity=cap)
        big.element_type = DataType.INT64
        assert "the maximum capacity specified for a Array should be in (0, 4096]" in refused(
            raw_schema(pk(), vec(), big)
        )
    varchar_elems = scalar("a", DataType.ARRAY, max_capacity="4")
    varchar_elems.element_type = DataType.VARCHAR
    assert "type param(max_length) should be specified" in refused(
        raw_schema(pk(), vec(), varchar_elems)
    )
    assert "string data type not supported yet" in refused(
        raw_schema(pk(), vec(), scalar("s", DataType.STRING))
    )
    assert "data type None is not valid" in refused(raw_schema(pk(), vec(), scalar("n", 0)))


def test_duplicate_and_auto_id_and_dynamic_rules() -> None:
    assert refused(raw_schema(pk(), vec(), vec())) == (
        "duplicated field name vec found: invalid parameter"
    )
    auto = vec()
    auto.autoID = True
    assert "only primary field can speficy AutoID with true, field name = vec" in refused(
        raw_schema(pk(), auto)
    )
    dyn = scalar(DYNAMIC_FIELD_NAME, DataType.JSON)
    dyn.is_dynamic = True
    assert "cannot explicitly set a field as a dynamic field" in refused(
        raw_schema(pk(), vec(), dyn)
    )
    # "$meta" as a plain field name breaks the name rules
    assert "The first character of a field name" in refused(
        raw_schema(pk(), vec(), scalar(DYNAMIC_FIELD_NAME, DataType.JSON)), FieldNameInvalid
    )
    many = [scalar(f"f{i}", DataType.INT64) for i in range(63)]
    assert "maximum field's number should be limited to 64" in refused(
        raw_schema(pk(), vec(), *many)
    )


def test_partition_and_clustering_key_rules() -> None:
    def key(name: str, dtype: int, **kw: Any) -> schema_pb2.FieldSchema:
        f = scalar(name, dtype, **({"max_length": "8"} if dtype == DataType.VARCHAR else {}))
        f.is_partition_key = True
        for k, v in kw.items():
            setattr(f, k, v)
        return f

    assert (
        from_proto(raw_schema(pk(), vec(), key("p", DataType.VARCHAR)))
        .require_field("p")
        .is_partition_key
    )
    assert "there are more than one partition key, field name = p, q" in refused(
        raw_schema(pk(), vec(), key("p", DataType.INT64), key("q", DataType.INT64))
    )
    assert "the data type of partition key should be Int64 or VarChar" in refused(
        raw_schema(pk(), vec(), key("p", DataType.FLOAT))
    )
    assert "partition key field not support nullable" in refused(
        raw_schema(pk(), vec(), key("p", DataType.INT64, nullable=True))
    )
    assert "the partition key field must not be primary field" in refused(
        raw_schema(pk(is_partition_key=True), vec())
    )
    c1, c2 = scalar("c1", DataType.INT64), scalar("c2", DataType.INT64)
    c1.is_clustering_key = c2.is_clustering_key = True
    assert "there are more than one clustering key" in refused(
        raw_schema(pk(), vec(), c1, c2), IllegalSchema
    )


def test_default_value_rules() -> None:
    f = scalar("n", DataType.INT32)
    f.default_value.string_data = "x"
    assert refused(raw_schema(pk(), vec(), f)) == (
        "the data type of default value mismatch: invalid parameter"
        "[expected=DataType_VarChar][actual=Int32]"
    )
    small = scalar("n", DataType.INT8)
    small.default_value.int_data = 300
    assert refused(raw_schema(pk(), vec(), small)) == (
        "default value out of range: invalid parameter[300 out of range -128 <= value <= 127]"
    )
    s = scalar("s", DataType.VARCHAR, max_length="3")
    s.default_value.string_data = "toolong"
    assert "the length (7) of string exceeds max length (3)" in refused(raw_schema(pk(), vec(), s))
    bad_json = scalar("j", DataType.JSON)
    bad_json.default_value.bytes_data = b"{nope"
    assert "invalid default value of json field (j)" in refused(raw_schema(pk(), vec(), bad_json))
    v = vec()
    v.default_value.float_data = 1.0
    assert "vector type not support default value" in refused(raw_schema(pk(), v))
    arr = scalar("a", DataType.ARRAY, max_capacity="2")
    arr.element_type = DataType.INT64
    arr.default_value.long_data = 1
    assert "array type not support default value" in refused(raw_schema(pk(), vec(), arr))


def test_python_int_defaults_for_small_ints_and_floats() -> None:
    """pymilvus sends every Python int as long_data; accepted for INT8/16/32 and FLOAT/DOUBLE."""
    s = base_schema()
    s.add_field("i8", PDataType.INT8, default_value=3)
    s.add_field("f", PDataType.FLOAT, default_value=2)
    s.add_field("d", PDataType.DOUBLE, default_value=0.25)
    schema = build(s)
    assert schema.require_field("i8").default_value == 3
    assert schema.require_field("f").default_value == 2.0
    assert schema.require_field("d").default_value == 0.25
    assert schema.require_field("i8").to_proto().default_value.int_data == 3


def test_schema_bytes_that_do_not_parse() -> None:
    with pytest.raises(ParameterInvalid, match="failed to unmarshal collection schema"):
        from_request_bytes(b"\xff\xff\xff", "c")
