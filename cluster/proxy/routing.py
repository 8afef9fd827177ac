"""Which streaming node serves a vchannel: the proxy's only view of the write path's topology.

A :class:`StreamingRouter` answers, for a virtual channel (shard), the
:class:`~cluster.interfaces.StreamingService` of the streaming node that owns the vchannel's
physical channel right now. The proxy asks it on every write; implementations cache as they
see fit (the channel assignment changes only when a node joins, leaves or is rebalanced).
Errors: an unassigned channel (no live owner) should raise a retryable
``woodpecker.errors.CanopyError`` (the client then sees code 2, service unavailable).

:class:`StaticRouter` (one service for every vchannel: standalone mode and tests) and
:class:`MappingRouter` (an explicit ``vchannel -> service`` map) are the simple cases;
:func:`group_by_service` is the helper every fan-out (flush, drop) uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from cluster.interfaces import StreamingService
from woodpecker.errors import CanopyError

__all__ = [
    "ChannelUnassigned",
    "MappingRouter",
    "StaticRouter",
    "StreamingRouter",
    "group_by_service",
]


class ChannelUnassigned(CanopyError):
    """No streaming node serves the vchannel (yet): retry after the assignment settles."""

    retryable = True

    def __init__(self, vchannel: str) -> None:
        super().__init__(f"no streaming node serves vchannel {vchannel}")
        self.vchannel = vchannel


class StreamingRouter(Protocol):
    """vchannel -> the StreamingService that owns it."""

    async def service_for(self, vchannel: str) -> StreamingService:
        """The owner of ``vchannel``; raises a retryable error when it has none."""
        ...


class StaticRouter:
    """Every vchannel is served by one service (standalone: the in-process streaming node)."""

    def __init__(self, service: StreamingService) -> None:
        self.service = service

    async def service_for(self, vchannel: str) -> StreamingService:
        return self.service


class MappingRouter:
    """An explicit ``vchannel -> service`` map, with an optional ``default`` for the rest."""

    def __init__(
        self,
        routes: Mapping[str, StreamingService] | None = None,
        default: StreamingService | None = None,
    ) -> None:
        self.routes: dict[str, StreamingService] = dict(routes or {})
        self.default = default

    async def service_for(self, vchannel: str) -> StreamingService:
        service = self.routes.get(vchannel, self.default)
        if service is None:
            raise ChannelUnassigned(vchannel)
        return service


async def group_by_service(
    router: StreamingRouter, vchannels: Iterable[str]
) -> list[tuple[StreamingService, list[str]]]:
    """The vchannels grouped by owning service (first-seen order; each service once)."""
    groups: dict[int, tuple[StreamingService, list[str]]] = {}
    for vchannel in vchannels:
        service = await router.service_for(vchannel)
        groups.setdefault(id(service), (service, []))[1].append(vchannel)
    return list(groups.values())
