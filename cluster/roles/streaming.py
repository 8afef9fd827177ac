"""``canopy streaming-node``: serves the physical channels the coordinator assigns to it.

Start order: WAL store, coordinator client, the streaming node, its gRPC service (so the address
is known), then the leased session that announces that address, and last the assignment
watcher. From then on the channel manager assigns channels; the node fences each channel's WAL,
replays it and acks. While the meta store is unreachable for longer than a session ttl the
session is unconfirmed and the node refuses reads and writes (retryable) until the store answers
again. Losing the session (a lease that expired, e.g. after a long pause) stops the
process: its channels have moved and it must not serve them.

Stop order is the reverse: the node closes its channels (sealed data completes), then the
session is revoked so the channel manager moves the channels at once instead of waiting for the
lease to expire.
"""

from __future__ import annotations

import logging

from cluster.config import CanopyConfig
from cluster.coordinator.channel_manager import AssignmentWatcher
from cluster.coordinator.sessions import STREAMING, NodeSession
from cluster.query.routing import QueryRouter
from cluster.roles.base import Role
from cluster.rpc.coordinator import CoordinatorClient
from cluster.rpc.server import RpcServer
from cluster.rpc.streaming import StreamingServicer
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from woodpecker import LogStore
from woodpecker.clock import Clock, RealClock
from woodpecker.meta import open_meta_store
from woodpecker.objectstore import Retrying, open_object_store

log = logging.getLogger("canopy.streaming")


class StreamingRole(Role):
    name = "streaming-node"

    def __init__(self, config: CanopyConfig, *, clock: Clock | None = None) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.clock = clock or RealClock()
        self.node: StreamingNode | None = None
        self.session: NodeSession | None = None
        self.server: RpcServer | None = None

    async def _not_ready(self) -> list[str]:
        reason = self.session.unconfirmed_reason() if self.session is not None else None
        return [reason] if reason else []

    async def _start(self) -> None:
        cfg = self.config
        meta = open_meta_store(cfg.meta, clock=self.clock)
        self.on_stop("meta store", meta.close)
        objects = open_object_store(cfg.object_store)
        self.on_stop("object store", objects.close)
        log_store = await LogStore.open(objects, meta, cfg.wal, clock=self.clock)
        self.on_stop("WAL store", log_store.close)
        log_store.start_auditor()
        coordinator = CoordinatorClient(cfg.coordinator.target())
        self.on_stop("coordinator client", coordinator.close)
        router = QueryRouter(meta, self.clock)
        await router.start()
        self.on_stop("query router", router.close)
        self.node = StreamingNode(
            log_store,
            Retrying(objects, clock=self.clock),
            coordinator,
            meta=meta,
            clock=self.clock,
            config=StreamingConfig(
                time_tick_interval=cfg.streaming.time_tick_interval,
                sealed_cache_dir=cfg.streaming.sealed_cache_dir or None,
                sealed_cache_bytes=int(cfg.streaming.sealed_cache_gb * (1 << 30)),
            ),
            query_router=router,
        )
        self.server = RpcServer(
            cfg.streaming.host, cfg.streaming.port, [StreamingServicer(self.node)]
        )
        await self.server.start()
        self.on_stop("gRPC server", self.server.stop)
        self.session = NodeSession(
            meta,
            STREAMING,
            address=cfg.streaming.advertise or self.server.address,
            clock=self.clock,
            ttl=cfg.streaming.session_ttl,
        )
        await self.session.start()
        self.on_stop("session", self.session.close)
        # The node follows this session and its channel assignments from start() on.
        self.node.session = self.session
        self.node.watcher = AssignmentWatcher(meta, self.session.node_id, self.clock)
        await self.node.start()
        self.on_stop("streaming node", self.node.close)
        self.supervise("the streaming node", self.node.wait())
        log.info(
            "streaming node %d serving on %s (objects %s, meta %s)",
            self.session.node_id,
            self.session.info.address,
            cfg.object_store,
            cfg.meta,
        )
