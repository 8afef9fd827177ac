"""Which streaming node serves a vchannel: the proxy's only view of the write path's topology.

A :class:`StreamingRouter` answers, for a virtual channel (shard), the
:class:`~cluster.interfaces.StreamingService` of the streaming node that owns the vchannel's
physical channel right now. The proxy asks it on every write; implementations cache as they
see fit (the channel assignment changes only when a node joins, leaves or is rebalanced).
Errors: an unassigned channel (no live owner) should raise a retryable
``woodpecker.errors.CanopyError`` (the client then sees code 2, service unavailable).

:func:`call_owner` is how every caller uses a router: it retries a call that the streaming node
refused *before* doing anything (:data:`REROUTE_ERRORS`: the channel moved, has no owner yet, or
the node is closing) or that never left the proxy (``cluster.rpc.errors.Unreachable``: the owner
could not be connected to, e.g. it crashed and its lease has not expired yet) at the channel's
owner for up to ``router.retry_for`` seconds. Any other failure -- a call that may have been
applied (``Unavailable`` with ``outcome_unknown``), a storage outage reported by the node -- is
never retried here: it goes back to the client.

:class:`StaticRouter` (one service for every vchannel: standalone mode and tests) and
:class:`MappingRouter` (an explicit ``vchannel -> service`` map) are the simple cases;
:func:`group_by_service` is the helper every fan-out (flush, drop) uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from cluster.interfaces import StreamingService
from cluster.rpc.errors import Unreachable
from cluster.streaming.errors import ChannelNotOwned, NodeClosed
from woodpecker.errors import CanopyError

T = TypeVar("T")

__all__ = [
    "ChannelUnassigned",
    "MappingRouter",
    "StaticRouter",
    "StreamingRouter",
    "call_owner",
    "gather_all",
    "group_by_service",
    "scatter",
]


class ChannelUnassigned(CanopyError):
    """No streaming node serves the vchannel (yet): retry after the assignment settles."""

    retryable = True

    def __init__(self, vchannel: str) -> None:
        super().__init__(f"no streaming node serves vchannel {vchannel}")
        self.vchannel = vchannel


REROUTE_ERRORS = (ChannelNotOwned, ChannelUnassigned, NodeClosed)
STATIC_REFRESH_DELAY = 0.05


class StreamingRouter(Protocol):
    """vchannel -> the StreamingService that owns it."""

    retry_for: float  # seconds call_owner keeps retrying a refused call

    async def service_for(self, vchannel: str) -> StreamingService:
        """The owner of ``vchannel``; raises a retryable error when it has none."""
        ...

    async def refresh(self, vchannel: str, stale: StreamingService | None) -> None:
        """Called after ``stale`` refused ``vchannel`` (or none owned it): return once the
        routing may have changed (bounded wait)."""
        ...


async def call_owner(
    router: StreamingRouter,
    vchannel: str,
    call: Callable[[StreamingService], Awaitable[T]],
) -> T:
    """``call(owner of vchannel)``, retried at the new owner while the node refuses it with one
    of :data:`REROUTE_ERRORS` (nothing was applied), for up to ``router.retry_for`` seconds;
    then the last refusal is raised (retryable: the client sees code 2)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + router.retry_for
    while True:
        service: StreamingService | None = None
        try:
            service = await router.service_for(vchannel)
            return await call(service)
        except REROUTE_ERRORS:
            if loop.time() >= deadline:
                raise
        except Unreachable:  # never sent (e.g. the owner died): safe to send again
            if loop.time() >= deadline:
                raise
        await router.refresh(vchannel, service)


class StaticRouter:
    """Every vchannel is served by one service (standalone: the in-process streaming node)."""

    def __init__(self, service: StreamingService, *, retry_for: float = 15.0) -> None:
        self.service = service
        self.retry_for = retry_for

    async def service_for(self, vchannel: str) -> StreamingService:
        return self.service

    async def refresh(self, vchannel: str, stale: StreamingService | None) -> None:
        await asyncio.sleep(STATIC_REFRESH_DELAY)  # e.g. the node is restarting a channel


class MappingRouter:
    """An explicit ``vchannel -> service`` map, with an optional ``default`` for the rest."""

    def __init__(
        self,
        routes: Mapping[str, StreamingService] | None = None,
        default: StreamingService | None = None,
        *,
        retry_for: float = 0.0,
    ) -> None:
        self.routes: dict[str, StreamingService] = dict(routes or {})
        self.default = default
        self.retry_for = retry_for

    async def service_for(self, vchannel: str) -> StreamingService:
        service = self.routes.get(vchannel, self.default)
        if service is None:
            raise ChannelUnassigned(vchannel)
        return service

    async def refresh(self, vchannel: str, stale: StreamingService | None) -> None:
        await asyncio.sleep(STATIC_REFRESH_DELAY)


async def group_by_service(
    router: StreamingRouter, vchannels: Iterable[str]
) -> list[tuple[StreamingService, list[str]]]:
    """The vchannels grouped by owning service (first-seen order; each service once)."""
    groups: dict[int, tuple[StreamingService, list[str]]] = {}
    for vchannel in vchannels:
        service = await router.service_for(vchannel)
        groups.setdefault(id(service), (service, []))[1].append(vchannel)
    return list(groups.values())


async def scatter(
    router: StreamingRouter,
    vchannels: Sequence[str],
    call: Callable[[StreamingService, tuple[str, ...]], Awaitable[T]],
) -> list[T]:
    """``call(node, its vchannels)`` for every node owning some of ``vchannels``, all at
    once; a group the node refuses because a channel moved is redone one vchannel at a time
    at the current owners. The results, in no particular order."""

    async def one(vchannel: str) -> T:
        return await call_owner(router, vchannel, lambda s: call(s, (vchannel,)))

    async def group(service: StreamingService, vcs: list[str]) -> list[T]:
        try:
            return [await call(service, tuple(vcs))]
        except REROUTE_ERRORS:
            return await gather_all([one(v) for v in vcs])

    groups: dict[int, tuple[StreamingService, list[str]]] = {}
    loose: list[str] = []
    for vchannel in vchannels:
        try:
            service = await router.service_for(vchannel)
        except REROUTE_ERRORS:
            loose.append(vchannel)
            continue
        groups.setdefault(id(service), (service, []))[1].append(vchannel)
    parts = await gather_all(
        [group(s, vcs) for s, vcs in groups.values()] + [_listed(one(v)) for v in loose]
    )
    return [r for part in parts for r in part]


async def _listed(aw: Awaitable[T]) -> list[T]:
    return [await aw]


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await all; if any failed, raise the first error -- only after every one has ended."""
    if len(aws) == 1:
        return [await aws[0]]
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]
