"""MetaStore URIs, and the etcd backend's offline behaviour: error translation and an
unreachable endpoint (no etcd needed)."""

from __future__ import annotations

import socket

import aetcd.exceptions as aetcd_errors
import grpc
import pytest

from woodpecker.errors import (
    InvalidArgument,
    LeaseExpired,
    StorageError,
    Unavailable,
    WatchCompacted,
)
from woodpecker.meta import EtcdMetaStore, MemoryMetaStore, SqliteMetaStore, open_meta_store
from woodpecker.meta.etcd import _range_end, _translate

pytestmark = pytest.mark.unit


def test_memory_and_sqlite_uris() -> None:
    assert isinstance(open_meta_store("memory://"), MemoryMetaStore)
    rel = open_meta_store("sqlite:///./data/meta.db")
    assert isinstance(rel, SqliteMetaStore) and rel.path == "./data/meta.db"
    absolute = open_meta_store("sqlite:////var/lib/canopy/meta.db")
    assert isinstance(absolute, SqliteMetaStore) and absolute.path == "/var/lib/canopy/meta.db"
    assert absolute.uri == "sqlite:////var/lib/canopy/meta.db"


async def test_etcd_uris() -> None:
    store = open_meta_store("etcd://10.0.0.1:2379,10.0.0.2:32379/canopy/prod/?timeout=2.5")
    assert isinstance(store, EtcdMetaStore)
    assert store._endpoints == [("10.0.0.1", 2379), ("10.0.0.2", 32379)]
    assert store._ns == b"canopy/prod/" and store._timeout == 2.5
    assert store.uri == "etcd://10.0.0.1:2379,10.0.0.2:32379/canopy/prod"
    bare = open_meta_store("etcd://localhost")
    assert isinstance(bare, EtcdMetaStore)
    assert bare._endpoints == [("localhost", 2379)] and bare._ns == b""
    await store.close()
    await bare.close()


def test_range_end() -> None:
    assert _range_end(b"a/") == b"a0"
    assert _range_end(b"a\xff") == b"b"
    assert _range_end(b"\xff\xff") == b"\0"
    assert _range_end(b"") == b"\0"


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("exc", "write", "kind", "unknown"),
    [
        (_rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), True,
         Unavailable, False),
        (_rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed"), True,
         Unavailable, True),
        (_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), True,
         Unavailable, True),
        (_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False,
         Unavailable, False),
        (_rpc_error(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"), True,
         LeaseExpired, None),
        (_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key"), True,
         InvalidArgument, None),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "received message larger than max"),
         True, InvalidArgument, None),
        (_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests"), True,
         Unavailable, False),
        (_rpc_error(grpc.StatusCode.PERMISSION_DENIED, "nope"), False, StorageError, None),
        (aetcd_errors.ConnectionFailedError("down"), False, Unavailable, False),
        (aetcd_errors.WatchTimeoutError(), False, Unavailable, False),
        (aetcd_errors.RevisionCompactedError(42), False, WatchCompacted, None),
        (ConnectionResetError("reset"), True, Unavailable, True),
    ],
)  # fmt: skip
def test_translate(exc: BaseException, write: bool, kind: type, unknown: bool | None) -> None:
    error = _translate(exc, "op", write=write)
    assert type(error) is kind
    if unknown is not None:
        assert isinstance(error, Unavailable) and error.outcome_unknown is unknown
    if isinstance(error, WatchCompacted):
        assert error.compact_revision == 42


def test_translate_leaves_foreign_errors_alone() -> None:
    assert _translate(ValueError("bug"), "op", write=False) is None


async def test_unreachable_etcd_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_meta_store(f"etcd://127.0.0.1:{port}/x?timeout=2")
    with pytest.raises(Unavailable) as info:
        await store.put("k", b"v")
    assert info.value.retryable and not info.value.outcome_unknown
    with pytest.raises(Unavailable):
        await store.get("k")
    with pytest.raises(Unavailable):
        await store.grant_lease(5)
    await store.close()
    with pytest.raises(StorageError):
        await store.get("k")
