"""``ProxyServer``: a ``grpc.aio`` server hosting a :class:`~cluster.proxy.servicer.ProxyServicer`.

Lifecycle: ``NEW --start()--> RUNNING --stop()--> STOPPED`` (``async with`` does both).
``start`` binds ``host:port`` (port 0 picks a free one; :attr:`ProxyServer.port` is the bound
port afterwards), starts serving and logs the address; it raises ``OSError`` when the address
cannot be bound. ``stop(grace)`` stops accepting calls, lets calls in flight finish for up to
``grace`` seconds, then cancels them; it is idempotent. Messages up to 256 MiB are accepted and
sent (gRPC's 4 MiB default refuses ordinary inserts: 2,000 x 768 floats is 6.2 MB).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from pymilvus.grpc_gen import milvus_pb2_grpc

from cluster.rpc.server import MAX_MESSAGE_BYTES, RpcServer, ServerState, Servicer

__all__ = ["MAX_MESSAGE_BYTES", "ProxyServer", "ServerState"]


class _MilvusService:
    """Registers a ``MilvusServiceServicer`` on a server (the ``Servicer`` protocol)."""

    def __init__(self, servicer: milvus_pb2_grpc.MilvusServiceServicer) -> None:
        self.servicer = servicer

    def register(self, server: grpc.aio.Server) -> None:
        milvus_pb2_grpc.add_MilvusServiceServicer_to_server(self.servicer, server)


class ProxyServer(RpcServer):
    """Serves ``servicer`` (a ``MilvusServiceServicer``) on ``host:port``: an
    :class:`~cluster.rpc.server.RpcServer` with the Milvus API and ``services`` (Canopy's own
    public services on the same port: the change feed and admin view, ``cluster/feed``)."""

    def __init__(
        self,
        servicer: milvus_pb2_grpc.MilvusServiceServicer,
        host: str = "127.0.0.1",
        port: int = 19530,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        services: Sequence[Servicer] = (),
    ) -> None:
        super().__init__(
            host,
            port,
            [_MilvusService(servicer), *services],
            max_message_bytes=max_message_bytes,
            name="proxy (Milvus gRPC API)",
        )
        self.servicer = servicer
