"""Proxy plumbing: the never-raise wrapper and error translation, the database header, the
``pk in [..]`` parser, routers, the UNIMPLEMENTED fallback and the grpc.aio server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pyarrow as pa
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

from cluster.coordinator import errors as coord
from cluster.milvus.status import CollectionNotFound, ParameterInvalid
from cluster.proxy.pk_expr import parse_pk_list
from cluster.proxy.routing import ChannelUnassigned, MappingRouter, StaticRouter, group_by_service
from cluster.proxy.rpc import request_db, rpc, status_of
from cluster.proxy.server import ProxyServer, ServerState
from cluster.proxy.testing import FakeContext, MemoryStreamingService, ProxyHarness
from cluster.schema import DataType, FieldSchema
from woodpecker.errors import Unavailable

DT = schema_pb2.DataType


@pytest.fixture
async def h() -> AsyncIterator[ProxyHarness]:
    harness = await ProxyHarness.start()
    try:
        yield harness
    finally:
        await harness.close()


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "error_code", "reason"),
    [
        (
            coord.CollectionNotFound("default", "xyz"),
            100,
            common_pb2.CollectionNotExists,
            "collection not found[database=default][collection=xyz]",
        ),
        (
            coord.DatabaseNotFound("x"),
            800,
            common_pb2.UnexpectedError,
            "database not found[database=x]",
        ),
        (
            coord.PartitionNotFound("p"),
            200,
            common_pb2.MetaFailed,
            "partition not found[partition=p]",
        ),
        (coord.InvalidParameter("bad"), 1100, common_pb2.IllegalArgument, "bad: invalid parameter"),
        (coord.DatabaseExists("d"), 65535, common_pb2.UnexpectedError, "database already exist: d"),
        (coord.CatalogConflict("busy"), 2, common_pb2.UnexpectedError, "busy"),
        (coord.TsoFenced("fenced"), 2, common_pb2.UnexpectedError, "fenced"),
        (CollectionNotFound("c"), 100, common_pb2.CollectionNotExists, None),
        (Unavailable("s3 down"), 2, common_pb2.UnexpectedError, None),
        (KeyError("k"), 65535, common_pb2.UnexpectedError, "KeyError: 'k': unexpected error"),
    ],
)
def test_status_of(exc: Exception, code: int, error_code: int, reason: str | None) -> None:
    status = status_of(exc)
    assert (status.code, status.error_code) == (code, error_code)
    if reason is not None:
        assert status.reason == reason
    assert status.retriable == (code == 2)


async def test_rpc_wrapper_never_raises() -> None:
    class S:
        @rpc(milvus_pb2.BoolResponse)
        async def Bool(self, request: object, context: object) -> milvus_pb2.BoolResponse:
            raise ParameterInvalid("nope")

        @rpc(common_pb2.Status)
        async def Plain(self, request: object, context: object) -> common_pb2.Status:
            raise ZeroDivisionError("bug")

        @rpc(common_pb2.Status)
        async def Cancelled(self, request: object, context: object) -> common_pb2.Status:
            raise asyncio.CancelledError

    reply = await S().Bool(None, FakeContext())
    assert isinstance(reply, milvus_pb2.BoolResponse)
    assert (reply.status.code, reply.status.reason) == (1100, "nope: invalid parameter")
    status = await S().Plain(None, FakeContext())
    assert isinstance(status, common_pb2.Status) and status.code == 65535
    with pytest.raises(asyncio.CancelledError):  # cancellation is not an error to report
        await S().Cancelled(None, FakeContext())


def test_request_db_precedence() -> None:
    assert request_db(milvus_pb2.InsertRequest(), FakeContext()) == "default"
    assert request_db(milvus_pb2.InsertRequest(), FakeContext("db1")) == "db1"
    assert request_db(milvus_pb2.InsertRequest(db_name="db2"), FakeContext("db1")) == "db2"
    assert request_db(milvus_pb2.GetFlushStateRequest(), None) == "default"
    ctx = FakeContext(authorization="cm9vdDpNaWx2dXM=", identifier="42")
    assert request_db(milvus_pb2.InsertRequest(), ctx) == "default"


# --- pk in [..] ----------------------------------------------------------------------------------

INT_PK = FieldSchema(field_id=100, name="id", dtype=DataType.INT64, is_primary=True)
STR_PK = FieldSchema(field_id=100, name="pk", dtype=DataType.VARCHAR, is_primary=True)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("id in [1,2,3]", [1, 2, 3]),
        ("  id  IN [ -5 , +7, 0 ]  ", [-5, 7, 0]),
        ("id in [1,]", [1]),
        ("id in []", []),
        (f"id in [{2**63 - 1}]", [2**63 - 1]),
    ],
)
def test_parse_int_pks(expr: str, expected: list[int]) -> None:
    got = parse_pk_list(expr, INT_PK)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("pk in ['a','b']", ["a", "b"]),
        ("pk in [\"x y\", 'z']", ["x y", "z"]),
        ("pk in ['it\\'s', 'back\\\\slash', 'a,b', '[x]']", ["it's", "back\\slash", "a,b", "[x]"]),
    ],
)
def test_parse_str_pks(expr: str, expected: list[str]) -> None:
    got = parse_pk_list(expr, STR_PK)
    assert isinstance(got, pa.Array) and got.to_pylist() == expected


@pytest.mark.parametrize(
    "expr",
    [
        "id > 1",
        "other in [1]",
        "id in [1, 2] or id == 3",
        "id in [1 2]",
        "id in [a]",
        "id not in [1]",
        "id in [1+1]",
        "id in {ids}",
    ],
)
def test_parse_other_filters_is_none(expr: str) -> None:
    assert parse_pk_list(expr, INT_PK) is None


def test_parse_type_errors() -> None:
    with pytest.raises(ParameterInvalid, match="cannot be casted to Int64"):
        parse_pk_list("id in ['a']", INT_PK)
    with pytest.raises(ParameterInvalid, match="cannot be casted to VarChar"):
        parse_pk_list("pk in [1]", STR_PK)
    with pytest.raises(ParameterInvalid, match="out of range"):
        parse_pk_list(f"id in [{2**63}]", INT_PK)


# --- routing -------------------------------------------------------------------------------------


async def test_routers(h: ProxyHarness) -> None:
    a, b = MemoryStreamingService(h.coordinator), MemoryStreamingService(h.coordinator)
    assert await StaticRouter(a).service_for("v1") is a
    router = MappingRouter({"v1": a, "v2": b, "v3": a})
    assert await router.service_for("v2") is b
    with pytest.raises(ChannelUnassigned) as err:
        await router.service_for("v9")
    assert err.value.retryable and status_of(err.value).code == 2
    groups = await group_by_service(router, ["v1", "v2", "v3"])
    assert [(s, v) for s, v in groups] == [(a, ["v1", "v3"]), (b, ["v2"])]
    assert await MappingRouter(default=b).service_for("any") is b


# --- server --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_server_lifecycle_and_wire(h: ProxyHarness) -> None:
    server = ProxyServer(h.servicer, port=0)
    assert server.state is ServerState.NEW
    await server.start()
    try:
        assert server.state is ServerState.RUNNING and server.port > 0
        assert server.address == f"127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError):
            await server.start()
        async with grpc.aio.insecure_channel(
            server.address, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = milvus_pb2_grpc.MilvusServiceStub(channel)
            reply = await stub.Connect(milvus_pb2.ConnectRequest())
            assert reply.status.code == 0 and reply.identifier > 0
            # an unsupported RPC is UNIMPLEMENTED, not UNKNOWN (pymilvus retries UNKNOWN)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.HybridSearch(milvus_pb2.HybridSearchRequest())
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "HybridSearch is not implemented by Canopy" in (err.value.details() or "")
            # the database comes from the dbname header over the wire too
            reply = await stub.DescribeCollection(
                milvus_pb2.DescribeCollectionRequest(collection_name="c"),
                metadata=(("dbname", "nodb"),),
            )
            assert reply.status.code == 800
            # messages above gRPC's 4 MiB default are accepted (8 MiB insert)
            s = schema_pb2.CollectionSchema(name="big")
            s.fields.add(name="id", data_type=DT.Int64, is_primary_key=True)
            s.fields.add(name="v", data_type=DT.FloatVector).type_params.add(key="dim", value="512")
            status = await stub.CreateCollection(
                milvus_pb2.CreateCollectionRequest(
                    collection_name="big", schema=s.SerializeToString()
                )
            )
            assert status.code == 0
            n = 4096
            ids = schema_pb2.FieldData(type=DT.Int64, field_name="id")
            ids.scalars.long_data.data.extend(range(n))
            vec = schema_pb2.FieldData(type=DT.FloatVector, field_name="v")
            vec.vectors.dim = 512
            vec.vectors.float_vector.data.extend(np.zeros(n * 512, np.float32).tolist())
            reply = await stub.Insert(
                milvus_pb2.InsertRequest(collection_name="big", fields_data=[ids, vec], num_rows=n)
            )
            assert reply.status.code == 0 and reply.insert_cnt == n
    finally:
        await server.stop()
    assert server.state is ServerState.STOPPED
    await server.stop()  # idempotent


async def test_server_refuses_a_busy_port(h: ProxyHarness) -> None:
    first = ProxyServer(h.servicer, port=_free_port())
    await first.start()
    try:
        second = ProxyServer(h.servicer, port=first.port)
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.stop()


async def test_streaming_is_untouched_by_unimplemented_calls(h: ProxyHarness) -> None:
    ctx = FakeContext()
    with pytest.raises(RuntimeError, match="aborted"):
        await h.servicer.HybridSearch(milvus_pb2.HybridSearchRequest(), ctx)
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNIMPLEMENTED
    assert not h.streaming.calls
