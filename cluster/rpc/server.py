"""The gRPC transport of Canopy's internal services: :class:`RpcServer` hosting servicers, the
:func:`handler` wrapper every servicer method uses, and :class:`RpcChannel`, the clients' one
channel with the same options.

Lifecycle of :class:`RpcServer`: ``NEW --start()--> RUNNING --stop()--> STOPPED`` (``async
with`` does both). ``start`` binds ``host:port`` (port 0 picks a free one; :attr:`RpcServer.port`
is the bound port afterwards) and raises ``OSError`` when it cannot; ``stop(grace)`` stops
accepting calls, lets calls in flight finish for up to ``grace`` seconds, then cancels them
(their clients see ``Unavailable``); it is idempotent. Each servicer registers itself
(:class:`Servicer`). Messages up to ``max_message_bytes`` (256 MiB) are accepted and sent.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, Self, TypeVar

import grpc

from cluster.rpc.errors import call, encode_error
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import CanopyError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RpcChannel",
    "RpcServer",
    "ServerState",
    "Servicer",
    "channel_options",
    "handler",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 << 20

R = TypeVar("R")
S = TypeVar("S")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def _size_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC options of a client channel: the server's message size limits, and a short
    reconnect back-off so that a restarted server is found within about a second."""
    return [
        *_size_options(max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def handler(reply: type[R]) -> Callable[[Handler[R]], Handler[R]]:
    """Wrap a servicer method so that it never fails the call: whatever it raises (except
    cancellation) becomes ``reply(error=encode_error(exc))``. Canopy errors are logged at debug
    level (the caller decides what they mean), anything else with its traceback."""

    def wrap(fn: Handler[R]) -> Handler[R]:
        @functools.wraps(fn)
        async def run(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                return await fn(self, request, context)
            except Exception as exc:
                if isinstance(exc, CanopyError):
                    log.debug("%s: %s: %s", fn.__name__, type(exc).__name__, exc)
                else:
                    log.exception("%s failed unexpectedly", fn.__name__)
                return reply(error=encode_error(exc))  # type: ignore[call-arg]

        return run

    return wrap


class Servicer(Protocol):
    """Something that adds its gRPC service(s) to a server."""

    def register(self, server: grpc.aio.Server) -> None: ...


class ServerState(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RpcServer:
    """Serves ``servicers`` on ``host:port`` (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        servicers: Sequence[Servicer],
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        name: str = "rpc server",
    ) -> None:
        self.host = host
        self.port = port
        self.name = name  # in log lines
        self.servicers = list(servicers)
        self.max_message_bytes = max_message_bytes
        self.state = ServerState.NEW
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets): the ``target`` of a client."""
        return f"{_host(self.host)}:{self.port}"

    async def start(self) -> None:
        if self.state is not ServerState.NEW:
            raise RuntimeError(f"{type(self).__name__}.start() in state {self.state}")
        server = grpc.aio.server(
            options=[*_size_options(self.max_message_bytes), ("grpc.so_reuseport", 0)]
        )
        for servicer in self.servicers:
            servicer.register(server)
        try:
            bound = server.add_insecure_port(f"{_host(self.host)}:{self.port}")
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen on {self.address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen on {self.address}")
        self.port = bound
        await server.start()
        self._server = server
        self.state = ServerState.RUNNING
        log.info("%s listening on %s", self.name, self.address)

    async def stop(self, grace: float | None = 5.0) -> None:
        if self.state is ServerState.STOPPED:
            return
        self.state = ServerState.STOPPED
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
            log.info("%s on %s stopped", self.name, self.address)

    async def wait_for_termination(self) -> None:
        """Block until the server stops (wrap in ``asyncio.timeout`` to bound the wait)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class RpcChannel:
    """One ``grpc.aio`` channel to ``target`` with :func:`channel_options`, opened on first use
    (on the running event loop). ``stub(Factory)`` returns one cached stub per factory."""

    def __init__(self, target: str, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.target = target
        self.max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[Any, Any] = {}
        self._closed = False

    def stub(self, factory: Callable[[grpc.aio.Channel], S]) -> S:
        if self._closed:
            raise RuntimeError(f"the channel to {self.target} is closed")
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, options=channel_options(self.max_message_bytes)
            )
        found = self._stubs.get(factory)
        if found is None:
            found = self._stubs[factory] = factory(self._channel)
        return found  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled). Idempotent."""
        self._closed = True
        channel, self._channel = self._channel, None
        self._stubs.clear()
        if channel is not None:
            await channel.close()


class ServiceClient:
    """What the clients of our services share: one :class:`RpcChannel` to ``target``;
    ``_call`` bounds each attempt by ``timeout`` and, with ``retry``, retries transport failures
    for up to ``retry_for`` seconds (:func:`cluster.rpc.errors.call`). ``service`` names the
    service in errors. ``await close()`` (or ``async with``) when done."""

    service = "service"

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 5.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry_for = retry_for
        self.clock: Clock = clock or RealClock()
        self._channel = RpcChannel(target, max_message_bytes=max_message_bytes)

    async def _call(self, method: Any, name: str, request: object, *, retry: bool) -> Any:
        return await call(
            method,
            request,
            what=f"{self.service}/{name} at {self.target}",
            attempt_timeout=self.timeout,
            retry_for=self.retry_for if retry else 0.0,
            clock=self.clock,
        )

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
