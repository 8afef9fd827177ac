"""``canopy proxy``: the Milvus gRPC API, stateless.

DDL and timestamps go to the coordinator (:class:`~cluster.rpc.coordinator.CoordinatorClient`);
writes go to the streaming node that owns the shard's physical channel, found through the
session and channel records in the meta store (:class:`~cluster.proxy.discovery.SessionRouter`).
Run as many proxies as you like behind a load balancer.
"""

from __future__ import annotations

import logging

from cluster.config import CanopyConfig
from cluster.feed import feed_services
from cluster.proxy.discovery import SessionRouter
from cluster.proxy.meta_cache import CachedCatalog
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer
from cluster.roles.base import Role
from cluster.rpc.coordinator import CoordinatorClient
from woodpecker.clock import Clock, RealClock
from woodpecker.logstore import LogStore
from woodpecker.meta import open_meta_store

log = logging.getLogger("canopy.proxy")


class ProxyRole(Role):
    name = "proxy"

    def __init__(self, config: CanopyConfig, *, clock: Clock | None = None) -> None:
        super().__init__()
        config.check(needs_objects=False)
        self.config = config
        self.clock = clock or RealClock()
        self.server: ProxyServer | None = None
        self.router: SessionRouter | None = None

    @property
    def address(self) -> str:
        assert self.server is not None, "not started"
        return self.server.address

    async def _start(self) -> None:
        cfg = self.config
        meta = open_meta_store(cfg.meta, clock=self.clock)
        self.on_stop("meta store", meta.close)
        coordinator = CoordinatorClient(cfg.coordinator.target())
        self.on_stop("coordinator client", coordinator.close)
        self.router = SessionRouter(meta, self.clock, retry_for=cfg.proxy.route_retry_for)
        await self.router.start()
        self.on_stop("router", self.router.close)
        self.supervise("the channel router", self.router.wait())
        catalog = CachedCatalog(coordinator.catalog, meta, self.clock)
        await catalog.open()
        self.on_stop("metadata cache", catalog.close)
        servicer = ProxyServicer(coordinator, catalog, self.router, self.clock)
        services = []
        if cfg.object_store:  # the change feed reads the WAL from object storage
            logs = await LogStore.open(cfg.object_store, meta, cfg.wal, clock=self.clock)
            self.on_stop("WAL reader store", logs.close)
            services = feed_services(
                logs, catalog.describe_collection, coordinator.allocate_timestamp
            )
        else:
            log.warning("object_store is not set: no change feed or admin view on this proxy")
        self.server = ProxyServer(servicer, cfg.proxy.host, cfg.proxy.port, services=services)
        await self.server.start()
        self.on_stop("Milvus API server", self.server.stop)
        log.info(
            "proxy serving the Milvus API on %s (coordinator %s)",
            self.server.address,
            cfg.coordinator.target(),
        )

    async def _not_ready(self) -> list[str]:
        assert self.router is not None
        return [f"channel {ch} has no live streaming node" for ch in self.router.unserved()]
