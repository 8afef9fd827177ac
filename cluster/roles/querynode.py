"""``canopy query-node``: serves reads over the sealed segments the coordinator assigns to it.

Start order: object store, meta store, coordinator client, the gRPC service (so the address is
known), the leased session ``sessions/query/{node_id}`` that announces that address, and last the
:class:`~cluster.query.node.QueryNode`, which follows ``query/assign/`` and writes its loaded
markers under the session's lease (so they vanish with the node; see
``cluster/coordinator/query_assign.py``). Losing the session stops the process.

Stop order is the reverse: the node stops loading, the session is revoked (its markers go at
once, streaming nodes stop asking it and the coordinator moves its segments), then the server.
"""

from __future__ import annotations

import logging

from cluster.config import CanopyConfig
from cluster.coordinator.query_assign import QUERY
from cluster.coordinator.sessions import NodeSession
from cluster.query.node import QueryNode
from cluster.roles.base import Role
from cluster.rpc.coordinator import CoordinatorClient
from cluster.rpc.query import QueryNodeServicer
from cluster.rpc.server import RpcServer
from cluster.streaming.config import StreamingConfig
from woodpecker.clock import Clock, RealClock
from woodpecker.errors import Unavailable
from woodpecker.meta import open_meta_store
from woodpecker.objectstore import Retrying, open_object_store

__all__ = ["QueryNodeRole"]

log = logging.getLogger("canopy.querynode")


class QueryNodeRole(Role):
    name = "query-node"

    def __init__(self, config: CanopyConfig, *, clock: Clock | None = None) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.clock = clock or RealClock()
        self.node: QueryNode | None = None
        self.session: NodeSession | None = None
        self.server: RpcServer | None = None

    async def _not_ready(self) -> list[str]:
        reason = self.session.unconfirmed_reason() if self.session is not None else None
        return [reason] if reason else []

    async def _start(self) -> None:
        cfg = self.config
        qn = cfg.querynode
        objects = open_object_store(cfg.object_store)
        self.on_stop("object store", objects.close)
        meta = open_meta_store(cfg.meta, clock=self.clock)
        self.on_stop("meta store", meta.close)
        coordinator = CoordinatorClient(cfg.coordinator.target())
        self.on_stop("coordinator client", coordinator.close)
        holder: list[QueryNode] = []
        self.server = RpcServer(qn.host, qn.port, [_LateServicer(holder)], name="query node")
        await self.server.start()
        self.on_stop("gRPC server", self.server.stop)
        self.session = NodeSession(
            meta,
            QUERY,
            address=qn.advertise or self.server.address,
            clock=self.clock,
            ttl=qn.session_ttl,
        )
        await self.session.start()
        self.on_stop("session", self.session.close)
        self.supervise("the session", self.session.wait_lost())
        self.node = QueryNode(
            Retrying(objects, clock=self.clock),
            coordinator,
            meta,
            node_id=self.session.node_id,
            clock=self.clock,
            root=StreamingConfig().storage_root,
            cache_dir=qn.cache_dir or None,
            cache_bytes=int(qn.cache_gb * (1 << 30)),
            lease=self.session.lease_id,
            refresh_interval=qn.refresh_interval,
        )
        holder.append(self.node)
        await self.node.start()
        self.on_stop("query node", self.node.close)
        log.info(
            "query node %d serving on %s (cache %s, objects %s, meta %s)",
            self.session.node_id,
            self.session.info.address,
            qn.cache_dir or "a temporary directory",
            cfg.object_store,
            cfg.meta,
        )


class _LateServicer(QueryNodeServicer):
    """The service, registered before the node exists (the node needs the session, the
    session the address): calls before the node is set answer ``Unavailable``."""

    def __init__(self, holder: list[QueryNode]) -> None:
        self._holder = holder

    @property  # type: ignore[override]
    def node(self) -> QueryNode:
        if not self._holder:
            raise Unavailable("the query node is starting")
        return self._holder[0]
