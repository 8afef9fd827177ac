"""``ProxyServer``: a ``grpc.aio`` server hosting a :class:`~cluster.proxy.servicer.ProxyServicer`.

Lifecycle: ``NEW --start()--> RUNNING --stop()--> STOPPED`` (``async with`` does both).
``start`` binds ``host:port`` (port 0 picks a free one; :attr:`ProxyServer.port` is the bound
port afterwards), starts serving and logs the address; it raises ``OSError`` when the address
cannot be bound. ``stop(grace)`` stops accepting calls, lets calls in flight finish for up to
``grace`` seconds, then cancels them; it is idempotent. Messages up to 256 MiB are accepted and
sent (gRPC's 4 MiB default refuses ordinary inserts: 2,000 x 768 floats is 6.2 MB).
"""

from __future__ import annotations

import enum
import logging

import grpc
from pymilvus.grpc_gen import milvus_pb2_grpc

__all__ = ["MAX_MESSAGE_BYTES", "ProxyServer", "ServerState"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ServerState(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class ProxyServer:
    """Serves ``servicer`` (a ``MilvusServiceServicer``) on ``host:port``."""

    def __init__(
        self,
        servicer: milvus_pb2_grpc.MilvusServiceServicer,
        host: str = "127.0.0.1",
        port: int = 19530,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.servicer = servicer
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.state = ServerState.NEW
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets), for ``MilvusClient(uri=f"http://{address}")``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        if self.state is not ServerState.NEW:
            raise RuntimeError(f"ProxyServer.start() in state {self.state}")
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        milvus_pb2_grpc.add_MilvusServiceServicer_to_server(self.servicer, server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            bound = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen on {host}:{self.port}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{self.port}")
        self.port = bound
        await server.start()
        self._server = server
        self.state = ServerState.RUNNING
        log.info("proxy listening on %s (Milvus gRPC API)", self.address)

    async def stop(self, grace: float | None = 5.0) -> None:
        if self.state is ServerState.STOPPED:
            return
        self.state = ServerState.STOPPED
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
            log.info("proxy on %s stopped", self.address)

    async def wait_for_termination(self) -> None:
        """Block until the server stops (wrap in ``asyncio.timeout`` to bound the wait)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
