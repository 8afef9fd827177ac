"""sdk.errors: one mapping from Milvus statuses and gRPC failures to typed exceptions, and the
retry decisions of sdk._rpc built on it."""

from __future__ import annotations

import grpc
import pytest
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import common_pb2, milvus_pb2

import sdk
from sdk import _rpc
from sdk.errors import error_from_rpc, error_from_status


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (1, sdk.Unavailable),
        (2, sdk.Unavailable),
        (8, sdk.RateLimited),
        (26, sdk.EmptyCollection),
        (100, sdk.CollectionNotFound),
        (101, sdk.CollectionNotLoaded),
        (109, sdk.SchemaMismatch),
        (200, sdk.PartitionNotFound),
        (700, sdk.IndexNotFound),
        (800, sdk.DatabaseNotFound),
        (1100, sdk.InvalidArgument),
        (2201, sdk.InvalidArgument),
        (3000, sdk.NotSupported),
        (10001, sdk.Timeout),
        (65535, sdk.CanopyError),
    ],
)
def test_status_code_maps_to_class(code: int, cls: type) -> None:
    err = error_from_status(common_pb2.Status(code=code, error_code=1, reason="why"))
    assert type(err) is cls
    assert isinstance(err, MilvusException) and isinstance(err, sdk.CanopyError)
    assert err.code == code and err.message == "why" and err.compatible_code == 1


def test_legacy_error_codes_and_flags() -> None:
    err = error_from_status(common_pb2.Status(error_code=common_pb2.CollectionNotExists))
    assert isinstance(err, sdk.CollectionNotFound)
    status = common_pb2.Status(code=5, reason="x", retriable=True)
    status.extra_info["is_input_error"] = "true"
    err = error_from_status(status)
    assert err.retriable and err.is_input_error
    assert sdk.Unavailable("x").retriable and not sdk.InvalidArgument("x").retriable


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "boom"


def test_grpc_failures() -> None:
    assert isinstance(error_from_rpc(_RpcError(grpc.StatusCode.UNAVAILABLE)), sdk.Unavailable)
    assert isinstance(error_from_rpc(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED)), sdk.Timeout)
    assert isinstance(error_from_rpc(_RpcError(grpc.StatusCode.UNIMPLEMENTED)), sdk.NotSupported)
    err = error_from_rpc(_RpcError(grpc.StatusCode.INTERNAL))
    assert type(err) is sdk.CanopyError and err.transport and "INTERNAL" in err.message


def test_retry_decisions() -> None:
    read = _rpc.Call("Search", milvus_pb2.SearchRequest())
    write = _rpc.Call("Insert", milvus_pb2.InsertRequest(), idempotent=False)
    down = error_from_rpc(_RpcError(grpc.StatusCode.UNAVAILABLE))
    busy = error_from_status(common_pb2.Status(code=8, reason="slow down"))
    unavailable_status = error_from_status(common_pb2.Status(code=2, reason="wal"))
    bad = error_from_status(common_pb2.Status(code=1100, reason="bad"))
    assert _rpc.retry_delay(read, down, 0, 10.0) is not None
    assert _rpc.retry_delay(write, down, 0, 10.0) is None  # outcome unknown: never resend
    assert _rpc.retry_delay(write, unavailable_status, 0, 10.0) is None
    assert _rpc.retry_delay(write, busy, 0, 10.0) is not None  # refused before any work
    assert _rpc.retry_delay(read, bad, 0, 10.0) is None
    assert _rpc.retry_delay(read, down, _rpc.MAX_ATTEMPTS - 1, 10.0) is None
    assert _rpc.retry_delay(read, down, 3, 0.0) is None  # bounded by the deadline
    assert 0 < _rpc.retry_delay(read, down, 2, 10.0) <= 0.2


def test_consistency_levels() -> None:
    state = _rpc.State()
    assert _rpc.consistency(state, {}) == {
        "guarantee_timestamp": 1,
        "use_default_consistency": True,
    }
    state.saw_write(500)
    state.saw_write(400)  # never goes back
    assert _rpc.consistency(state, {})["guarantee_timestamp"] == 500
    session = _rpc.consistency(state, {"consistency_level": "Session"})
    assert session == {
        "guarantee_timestamp": 500,
        "consistency_level": 1,
        "use_default_consistency": False,
    }
    assert _rpc.consistency(state, {"consistency_level": "Strong"})["guarantee_timestamp"] == 0
    assert _rpc.consistency(state, {"consistency_level": 2})["guarantee_timestamp"] == 2
    with pytest.raises(sdk.InvalidArgument):
        _rpc.consistency(state, {"consistency_level": "Sometimes"})
