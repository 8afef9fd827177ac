"""cluster.milvus.status: codes, reasons, and what the real pymilvus client does with them.

The client-side checks drive pymilvus' own ``GrpcHandler`` against a stub that answers with our
statuses, so "has_collection is False on code 100" etc. are tested against the client code.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pymilvus.client.grpc_handler import GrpcHandler
from pymilvus.client.utils import check_status
from pymilvus.exceptions import MilvusException, SchemaMismatchRetryableException
from pymilvus.grpc_gen import common_pb2, milvus_pb2

from cluster.milvus import status as st
from woodpecker.errors import CanopyError, InvalidArgument, Unavailable


class _Stub:
    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies

    def __getattr__(self, name: str) -> Any:
        reply = self.replies[name]
        return lambda req, **kw: reply


def handler(**replies: Any) -> GrpcHandler:
    h = object.__new__(GrpcHandler)
    h._stub = _Stub(replies)
    h._address = "127.0.0.1:19530"
    return h


def test_ok_status_is_success_for_pymilvus() -> None:
    s = st.ok_status()
    assert s.code == 0 and s.error_code == common_pb2.Success
    check_status(s)  # does not raise


def test_collection_not_found_wording_and_codes() -> None:
    err = st.CollectionNotFound("xyz")
    assert err.reason == str(err) == "collection not found[database=default][collection=xyz]"
    s = err.to_status()
    assert (s.code, s.error_code) == (100, common_pb2.CollectionNotExists)
    assert s.extra_info["is_input_error"] == "true" and not s.retriable
    assert st.CollectionNotFound("c", database=None).reason == "collection not found[collection=c]"
    assert st.CollectionNotFound("c", "db1").reason == (
        "collection not found[database=db1][collection=c]"
    )


def test_milvus_wording_of_the_other_errors() -> None:
    assert st.DatabaseNotFound("x").reason == "database not found[database=x]"
    assert st.PartitionNotFound("p").reason == "partition not found[partition=p]"
    assert st.IndexNotFound(collection="c").reason == "index not found[collection=c]"
    assert st.IndexNotFound(index_name="i").reason == "index not found[indexName=i]"
    assert st.ParameterInvalid("bad thing").reason == "bad thing: invalid parameter"
    assert st.ParameterInvalid("dim", expected=4, actual=8).reason == (
        "dim: invalid parameter[expected=4][actual=8]"
    )
    assert st.ParameterInvalid("r", bound=(5, 0, 3)).reason == (
        "r: invalid parameter[5 out of range 0 <= value <= 3]"
    )
    assert st.SchemaMismatch("c").reason == "collection schema mismatch[collection=c]"
    assert st.ServiceUnavailable("node down").reason == "service unavailable: node down"
    assert st.NotSupportedYet("binary vectors").reason == (
        "binary vectors is not supported yet: unsupported operation"
    )
    assert st.ParameterMissing("limit").reason == "missing parameter[missing_param=limit]"
    assert st.FieldNotFound("f").reason == "field not found[field=f]"


@pytest.mark.parametrize(
    ("err", "code", "error_code", "retriable"),
    [
        (st.ServiceNotReady(), 1, common_pb2.NotReadyServe, True),
        (st.ServiceUnavailable("x"), 2, common_pb2.UnexpectedError, True),
        (st.RateLimited(), 8, common_pb2.RateLimit, True),
        (st.QuotaExceeded("disk"), 9, common_pb2.ForceDeny, False),
        (st.EmptyCollection(), 26, common_pb2.EmptyCollection, False),
        (st.CollectionNotFound("c"), 100, common_pb2.CollectionNotExists, False),
        (st.SchemaMismatch("c"), 109, common_pb2.SchemaMismatch, False),
        (st.PartitionNotFound("p"), 200, common_pb2.MetaFailed, False),
        (st.IndexNotFound(collection="c"), 700, common_pb2.IndexNotExist, False),
        (st.DatabaseNotFound("d"), 800, common_pb2.UnexpectedError, False),
        (st.ParameterInvalid("x"), 1100, common_pb2.IllegalArgument, False),
        (st.NotSupportedYet("x"), 3000, common_pb2.UnexpectedError, False),
        (st.UnexpectedError("x"), 65535, common_pb2.UnexpectedError, False),
    ],
)
def test_status_codes(err: st.MilvusError, code: int, error_code: int, retriable: bool) -> None:
    s = st.status_for(err)
    assert (s.code, s.error_code, s.retriable) == (code, error_code, retriable)
    assert s.reason == err.reason
    assert isinstance(err, CanopyError) and err.retryable == retriable


def test_every_code_is_in_the_docstring_table() -> None:
    doc = st.__doc__ or ""
    rows = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^(\d+)\s+.*?\s{2,}(\w+)\s{2,}", doc, re.M)
    }
    for cls in st.MilvusError._by_code.values():
        assert rows.get(cls.code) == cls.__name__, cls
    assert len(rows) == len(st.MilvusError._by_code)


def test_translation_of_other_errors() -> None:
    assert st.status_for(InvalidArgument("bad uri")).code == 1100
    s = st.status_for(Unavailable("s3 503"))
    assert (s.code, s.retriable) == (2, True) and "Unavailable: s3 503" in s.reason
    assert st.status_for(TimeoutError()).code == 10001
    s = st.status_for(KeyError("boom"))
    assert s.code == 65535 and s.reason == "KeyError: 'boom': unexpected error"
    assert st.status_for(RuntimeError()).reason == "RuntimeError: unexpected error"


def test_error_from_status_round_trip() -> None:
    assert st.error_from_status(st.ok_status()) is None
    for err in [st.CollectionNotFound("c"), st.ParameterInvalid("x", expected=1, actual=2)]:
        back = st.error_from_status(err.to_status())
        assert type(back) is type(err) and back.reason == err.reason
        assert back.to_status() == err.to_status()
    odd = st.error_from_status(common_pb2.Status(code=4242, reason="odd"))
    assert isinstance(odd, st.UnexpectedError) and odd.reason == "odd"


# --- what pymilvus does with our statuses ---------------------------------------------------------


def test_has_collection_is_false_on_collection_not_found() -> None:
    reply = milvus_pb2.DescribeCollectionResponse(status=st.CollectionNotFound("c").to_status())
    assert handler(DescribeCollection=reply).has_collection("c") is False


def test_describe_missing_collection_raises_with_code_100() -> None:
    reply = milvus_pb2.DescribeCollectionResponse(status=st.CollectionNotFound("c").to_status())
    with pytest.raises(MilvusException) as info:
        handler(DescribeCollection=reply).describe_collection("c")
    assert info.value.code == 100
    assert info.value.message == "collection not found[database=default][collection=c]"
    assert info.value.is_input_error


def test_query_empty_collection_status_is_an_empty_result() -> None:
    reply = milvus_pb2.QueryResults(status=st.EmptyCollection().to_status())
    assert handler(Query=reply).query("c", "id > 0", output_fields=["id"]) == []


def test_parameter_invalid_is_an_input_error_in_pymilvus() -> None:
    with pytest.raises(MilvusException) as info:
        check_status(st.ParameterInvalid("nope").to_status())
    assert info.value.code == 1100 and info.value.compatible_code == common_pb2.IllegalArgument
    assert info.value.is_input_error and not info.value.retriable


def test_schema_mismatch_makes_pymilvus_refresh_and_retry() -> None:
    with pytest.raises(SchemaMismatchRetryableException):
        check_status(st.SchemaMismatch("c").to_status())


def test_describe_index_not_found_means_no_index() -> None:
    reply = milvus_pb2.DescribeIndexResponse(status=st.IndexNotFound(collection="c").to_status())
    assert handler(DescribeIndex=reply).describe_index("c", "") is None
