"""cluster.rpc.errors: exceptions across the wire keep their class, message, attributes and
Milvus status; transport failures become ``Unavailable``; ``call`` retries only what it may."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

import cluster.coordinator.errors as coordinator_errors
import cluster.milvus.status as milvus_status
import cluster.storage.errors as storage_errors
import cluster.streaming.errors as streaming_errors
import woodpecker.errors as woodpecker_errors
from cluster.coordinator.records import (
    CollectionInfo,
    CollectionState,
    DatabaseInfo,
    PartitionInfo,
)
from cluster.milvus.status import status_for
from cluster.proto import canopy_pb2 as pb
from cluster.proxy.routing import ChannelUnassigned
from cluster.proxy.rpc import status_of
from cluster.rpc.errors import (
    RemoteError,
    call,
    decode_error,
    encode_error,
    transport_error,
)
from woodpecker.errors import CanopyError, Unavailable, WatchCompacted

MODULES = [milvus_status, coordinator_errors, streaming_errors, storage_errors, woodpecker_errors]

# Values for required constructor parameters, by name (anything else gets a string).
SAMPLES: dict[str, Any] = {"compact_revision": 7, "bound": (5, 1, 3)}

INFO = CollectionInfo(
    collection_id=42,
    db="default",
    db_id=1,
    name="coll",
    schema=b"\x00\x01schema",
    shards_num=2,
    consistency_level=2,
    properties={"a": "1"},
    create_ts=10,
    update_ts=11,
    state=CollectionState.CREATED,
    vchannels=("canopy-dml_0_42v0", "canopy-dml_1_42v1"),
    pchannels=("canopy-dml_0", "canopy-dml_1"),
    partitions=(PartitionInfo(7, "_default", 10),),
)


def error_classes() -> Iterator[type[BaseException]]:
    seen: set[type] = set()
    for module in MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, CanopyError)
                and value.__module__ == module.__name__
                and value not in seen
            ):
                seen.add(value)
                yield value
    yield ChannelUnassigned


def instantiate(cls: type[BaseException]) -> BaseException:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = SAMPLES.get(p.name, f"{p.name}-value")
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


EXTRA: list[BaseException] = [
    coordinator_errors.CollectionExists("default", "coll", existing=INFO),
    coordinator_errors.CollectionExists("db", "c", message="duplicate rename"),
    coordinator_errors.CollectionNotFound(None, 123),
    coordinator_errors.InvalidParameter("shards number 99 must be in [1, 2]"),
    milvus_status.CollectionNotFound("c", None),
    milvus_status.ParameterInvalid("dim", expected=4, actual=8),
    milvus_status.ParameterInvalid("nq", bound=(0, 1, 16384)),
    milvus_status.ServiceUnavailable("down", "ctx"),
    milvus_status.IndexNotFound(index_name="idx", collection="c"),
    Unavailable("slow down", outcome_unknown=True),
    WatchCompacted("gone", compact_revision=99),
    streaming_errors.ChannelFenced("fenced", channel="canopy-dml_1"),
    woodpecker_errors.InvalidArgument(),
    coordinator_errors.TsoClosed(),
]


def all_errors() -> list[BaseException]:
    return [instantiate(cls) for cls in error_classes()] + EXTRA


def roundtrip(exc: BaseException) -> Exception:
    wire = encode_error(exc).SerializeToString()
    return decode_error(pb.Error.FromString(wire))


def test_every_error_class_is_covered() -> None:
    names = {type(e).__name__ for e in all_errors()}
    assert len(names) > 60
    assert {"CollectionExists", "Unavailable", "ChannelFenced", "SegmentCorrupt"} <= names


@pytest.mark.parametrize("exc", all_errors(), ids=lambda e: f"{type(e).__module__}:{e!r}"[:90])
def test_canopy_errors_keep_class_message_attributes_and_status(exc: BaseException) -> None:
    decoded = roundtrip(exc)
    assert type(decoded) is type(exc)
    assert str(decoded) == str(exc)
    assert decoded.args == exc.args
    assert vars(decoded) == vars(exc)
    assert getattr(decoded, "retryable", False) == getattr(exc, "retryable", False)
    assert status_for(decoded) == status_for(exc)
    assert status_of(decoded) == status_of(exc)  # the proxy's front of status_for


def test_collection_exists_carries_the_existing_record() -> None:
    decoded = roundtrip(coordinator_errors.CollectionExists("default", "coll", existing=INFO))
    assert isinstance(decoded, coordinator_errors.CollectionExists)
    assert isinstance(decoded.existing, CollectionInfo) and decoded.existing == INFO
    assert decoded.existing.state is CollectionState.CREATED


def test_attributes_of_records_tuples_bytes_and_enums_travel() -> None:
    exc = coordinator_errors.NotAllowed("x")
    exc.info = DatabaseInfo(3, "db", {"k": "v"}, 5)  # type: ignore[attr-defined]
    exc.parts = (PartitionInfo(1, "p", 2), b"raw", {"k": [1, 2]})  # type: ignore[attr-defined]
    exc.state = CollectionState.DROPPING  # type: ignore[attr-defined]
    exc.opaque = object()  # type: ignore[attr-defined]  # cannot travel: left out
    decoded = roundtrip(exc)
    assert decoded.info == exc.info  # type: ignore[attr-defined]
    assert decoded.parts == exc.parts  # type: ignore[attr-defined]
    assert decoded.state is CollectionState.DROPPING  # type: ignore[attr-defined]
    assert not hasattr(decoded, "opaque")


class LocalOnly(CanopyError):
    """Defined outside cluster/woodpecker: cannot be rebuilt remotely."""

    retryable = True


@pytest.mark.parametrize(
    "exc",
    [ValueError("boom"), KeyError("k"), RuntimeError(), LocalOnly("later"), TimeoutError("t")],
    ids=repr,
)
def test_other_errors_become_remote_errors_with_the_same_status(exc: BaseException) -> None:
    decoded = roundtrip(exc)
    assert isinstance(decoded, RemoteError)
    assert decoded.type_name == f"{type(exc).__module__}:{type(exc).__qualname__}"
    assert decoded.remote_message == str(exc)
    assert decoded.retryable == getattr(exc, "retryable", False)
    assert status_of(decoded) == status_for(exc)


def test_remote_error_without_server_status_names_the_type() -> None:
    decoded = decode_error(pb.Error(type="builtins:ValueError", message="bad"))
    assert isinstance(decoded, RemoteError) and str(decoded) == "ValueError: bad"
    assert not decoded.retryable and decoded.milvus_code == 65535


def test_only_our_packages_are_imported() -> None:
    for path in ("os:system", "subprocess:Popen", "clusterx.evil:E", "cluster.nope:E", "w:"):
        assert isinstance(decode_error(pb.Error(type=path, message="m")), RemoteError)
    # importable, but not a CanopyError
    assert isinstance(decode_error(pb.Error(type="cluster.rpc.server:RpcServer")), RemoteError)


def test_undecodable_attributes_are_dropped() -> None:
    err = encode_error(coordinator_errors.PartitionNotFound("p", "c"))
    err.attrs_json = '{"partition": {"t": "record", "c": "cluster.nope:X", "v": ""}, "x": 1}'
    decoded = decode_error(err)
    assert isinstance(decoded, coordinator_errors.PartitionNotFound)
    assert not hasattr(decoded, "partition") and decoded.x == 1  # type: ignore[attr-defined]
    for bad in ("not json", "[1, 2]", '{"partition": {"t": "dict", "v": [[[1], 2]]}}'):
        err.attrs_json = bad
        assert isinstance(decode_error(err), coordinator_errors.PartitionNotFound)


# --- transport failures ------------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_transport_failures_map_to_unavailable() -> None:
    refused = transport_error(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; ..."), "X/Y"
    )
    assert isinstance(refused, Unavailable) and refused.retryable
    assert not refused.outcome_unknown  # never sent
    assert "X/Y" in str(refused) and "UNAVAILABLE" in str(refused)
    for code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    ):
        err = transport_error(rpc_error(code, "Socket closed"))
        assert isinstance(err, Unavailable) and err.retryable and err.outcome_unknown
    other = transport_error(rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
    assert isinstance(other, RemoteError) and not other.retryable
    assert other.type_name == "grpc:UNIMPLEMENTED"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class Flaky:
    """A stub method failing ``failures`` times with ``code``, then answering ``reply``."""

    def __init__(self, failures: int, reply: Any, code: grpc.StatusCode) -> None:
        self.failures, self.reply, self.code, self.calls = failures, reply, code, 0

    async def __call__(self, request: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        self.calls += 1
        if self.calls <= self.failures:
            raise rpc_error(self.code, "failed to connect to all addresses")
        return self.reply


async def test_call_retries_transport_failures_with_backoff_within_the_window() -> None:
    clock = FakeClock()
    method = Flaky(5, pb.TimestampReply(timestamp=9), grpc.StatusCode.UNAVAILABLE)
    reply = await call(method, None, what="t", attempt_timeout=1, retry_for=10, clock=clock)
    assert reply.timestamp == 9 and method.calls == 6
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.8]


async def test_call_gives_up_after_the_window_and_never_retries_without_one() -> None:
    clock = FakeClock()
    method = Flaky(100, None, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable):
        await call(method, None, what="t", attempt_timeout=1, retry_for=3, clock=clock)
    assert clock.t == pytest.approx(3)  # the last attempt at the end of the window
    assert clock.sleeps[-2:] == [1.0, pytest.approx(0.45)]
    once = Flaky(1, None, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(Unavailable):
        await call(once, None, what="t", attempt_timeout=1, clock=clock)
    assert once.calls == 1
    unfixable = Flaky(1, None, grpc.StatusCode.UNIMPLEMENTED)
    with pytest.raises(RemoteError):
        await call(unfixable, None, what="t", attempt_timeout=1, retry_for=10, clock=clock)
    assert unfixable.calls == 1


async def test_call_raises_the_remote_error_without_retrying() -> None:
    clock = FakeClock()
    error = encode_error(coordinator_errors.CatalogConflict("contention"))  # retryable
    method = Flaky(0, pb.EmptyReply(error=error), grpc.StatusCode.OK)
    with pytest.raises(coordinator_errors.CatalogConflict, match="contention"):
        await call(method, None, what="t", attempt_timeout=1, retry_for=10, clock=clock)
    assert method.calls == 1
