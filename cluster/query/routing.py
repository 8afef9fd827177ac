"""Where a streaming node (the shard delegator) sends the sealed part of a read.

:class:`QueryRouter` mirrors three prefixes of the meta store: the coordinator's segment
assignments (``query/assign/``), the query nodes' loaded markers (``query/loaded/``, leased by
each node's session) and the query nodes' sessions (``sessions/query/``, their addresses).
:meth:`QueryRouter.split` sends a segment to the first node of its assignment (``node_id``,
then ``previous`` during a move) that is live and has announced the segment loaded; every
other segment (not assigned yet, its node gone or still loading) is read by the delegator itself,
so a read never waits for, or fails because of, a query node that is not ready. Routing is
advisory: when a call to a query node fails, the delegator reads those segments itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from cluster.coordinator.query_assign import (
    ASSIGN_PREFIX,
    LOADED_PREFIX,
    QUERY,
    SegmentAssignment,
    assign_key,
    parse_loaded_key,
)
from cluster.coordinator.sessions import SessionInfo, role_prefix
from cluster.coordinator.watching import PrefixMirror
from cluster.rpc.query import QueryNodeClient
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import MetaStore

__all__ = ["QueryRouter"]

log = logging.getLogger(__name__)


class QueryRouter:
    """See the module docstring. ``await start()`` reads the three prefixes and follows them;
    ``close()`` stops and closes the clients."""

    def __init__(
        self,
        meta: MetaStore,
        clock: Clock,
        *,
        connect: Callable[[str], QueryNodeClient] = QueryNodeClient,
    ) -> None:
        self._connect = connect
        self._assign = PrefixMirror(meta, ASSIGN_PREFIX, clock)
        self._loaded = PrefixMirror(meta, LOADED_PREFIX, clock)
        self._sessions = PrefixMirror(meta, role_prefix(QUERY), clock)
        self._loaded_set: set[tuple[int, int, int]] = set()
        self._clients: dict[str, QueryNodeClient] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._assign.start()
        for key in await self._loaded.start():
            self._mark(key, True)
        await self._sessions.start()
        loop = asyncio.get_running_loop()
        for name, mirror in (("assign", self._assign), ("sessions", self._sessions)):
            self._tasks.append(loop.create_task(self._drain(mirror), name=f"query-router-{name}"))
        self._tasks.append(loop.create_task(self._follow_loaded(), name="query-router-loaded"))

    @staticmethod
    async def _drain(mirror: PrefixMirror) -> None:
        async for _ in mirror:  # the mirror keeps its kvs current
            pass

    async def _follow_loaded(self) -> None:
        async for change in self._loaded:
            self._mark(change.key, change.new is not None)

    def _mark(self, key: str, present: bool) -> None:
        parsed = parse_loaded_key(key)
        if parsed is not None:
            if present:
                self._loaded_set.add(parsed)
            else:
                self._loaded_set.discard(parsed)

    def _address(self, node_id: int) -> str | None:
        kv = self._sessions.kvs.get(f"{role_prefix(QUERY)}{node_id}")
        if kv is None:
            return None
        with contextlib.suppress(ValueError, KeyError):
            return SessionInfo.decode(kv.value).address or None
        return None

    def node_for(self, collection_id: int, segment_id: int) -> str | None:
        """The address of a live query node that has the segment loaded (None: none)."""
        kv = self._assign.kvs.get(assign_key(collection_id, segment_id))
        if kv is None:
            return None
        try:
            asg = SegmentAssignment.decode(kv.value)
        except (ValueError, KeyError):
            return None
        for node in asg.nodes():
            if (node, collection_id, segment_id) in self._loaded_set:
                address = self._address(node)
                if address is not None:
                    return address
        return None

    def split(
        self, collection_id: int, segment_ids: Sequence[int]
    ) -> tuple[dict[str, list[int]], list[int]]:
        """``(remote, local)``: segments by the address of the query node to ask, and the
        segments the delegator reads itself."""
        remote: dict[str, list[int]] = {}
        local: list[int] = []
        for sid in segment_ids:
            address = self.node_for(collection_id, sid)
            if address is None:
                local.append(sid)
            else:
                remote.setdefault(address, []).append(sid)
        return remote, local

    def client(self, address: str) -> QueryNodeClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = self._connect(address)
        return client

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for mirror in (self._assign, self._loaded, self._sessions):
            with contextlib.suppress(CanopyError):
                await mirror.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
