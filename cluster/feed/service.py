"""The ``ChangeFeed`` and ``Admin`` servicers (``cluster/proto/feed.proto``), registered on the
proxy's server next to the Milvus API (``ProxyServer(..., services=feed_services(...))``).

Errors become gRPC statuses in one place (:func:`grpc_code`): collection/database not found ->
``NOT_FOUND``, a bad token or argument -> ``INVALID_ARGUMENT``, a truncated start ->
``OUT_OF_RANGE``, anything retryable -> ``UNAVAILABLE``, the rest -> ``INTERNAL``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cluster.coordinator.errors import CollectionNotFound, DatabaseNotFound
from cluster.feed.admin import LocalNode, cluster_info
from cluster.feed.merge import FeedTruncated
from cluster.feed.watch import FeedLimits, open_watch
from cluster.proto import feed_pb2, feed_pb2_grpc
from woodpecker.errors import CanopyError, InvalidArgument
from woodpecker.logstore import LogStore

__all__ = ["AdminServicer", "ChangeFeedServicer", "feed_services", "grpc_code"]

log = logging.getLogger("canopy.feed")


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, CollectionNotFound | DatabaseNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, FeedTruncated):
        return grpc.StatusCode.OUT_OF_RANGE
    if isinstance(exc, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, CanopyError) and exc.retryable:
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, CanopyError) and getattr(exc, "milvus_code", 0) == 1100:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code = grpc_code(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("change feed call failed", exc_info=exc)
    await context.abort(code, f"{type(exc).__name__}: {exc}")


class ChangeFeedServicer(feed_pb2_grpc.ChangeFeedServicer):
    """``Watch``: see ``cluster/FEED.md``. ``describe(db, name_or_id)`` is the catalog's
    ``describe_collection``; ``timestamp()`` a fresh TSO timestamp."""

    def __init__(
        self,
        logs: LogStore,
        describe: Callable[[str, Any], Awaitable[Any]],
        timestamp: Callable[[], Awaitable[int]],
        limits: FeedLimits | None = None,
    ) -> None:
        self.logs = logs
        self.describe = describe
        self.timestamp = timestamp
        self.limits = limits or FeedLimits()
        self.sessions: set[Any] = set()  # open watches (tests look at their merge counters)

    def register(self, server: grpc.aio.Server) -> None:
        feed_pb2_grpc.add_ChangeFeedServicer_to_server(self, server)

    async def Watch(
        self, request: feed_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[feed_pb2.ChangeBatch]:
        try:
            session = await open_watch(
                request, self.logs, self.describe, self.timestamp, self.limits
            )
        except Exception as exc:
            await _abort(context, exc)
            return
        self.sessions.add(session)
        try:
            async for batch in session.batches():
                yield batch
        except Exception as exc:
            await _abort(context, exc)
        finally:
            self.sessions.discard(session)
            await session.close()


class AdminServicer(feed_pb2_grpc.AdminServicer):
    """``ClusterInfo`` from the meta store and the WAL metadata. ``local_node``: standalone's
    one process (it registers no session)."""

    def __init__(self, logs: LogStore, local_node: LocalNode | None = None) -> None:
        self.logs = logs
        self.local_node = local_node

    def register(self, server: grpc.aio.Server) -> None:
        feed_pb2_grpc.add_AdminServicer_to_server(self, server)

    async def ClusterInfo(
        self, request: feed_pb2.ClusterInfoRequest, context: grpc.aio.ServicerContext
    ) -> feed_pb2.ClusterInfoReply:
        try:
            return await cluster_info(self.logs, local_node=self.local_node)
        except Exception as exc:
            await _abort(context, exc)
            raise  # not reached: abort raises


def feed_services(
    logs: LogStore,
    describe: Callable[[str, Any], Awaitable[Any]],
    timestamp: Callable[[], Awaitable[int]],
    *,
    local_node: LocalNode | None = None,
    limits: FeedLimits | None = None,
) -> list[ChangeFeedServicer | AdminServicer]:
    """Both servicers, ready for ``ProxyServer(..., services=...)``."""
    return [
        ChangeFeedServicer(logs, describe, timestamp, limits),
        AdminServicer(logs, local_node),
    ]
