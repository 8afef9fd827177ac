"""``canopy coordinator``: the timestamp oracle, the catalog, the segment registry, the channel
manager and the index build scheduler, served over gRPC (:mod:`cluster.rpc.coordinator`); with
``datanode.embedded`` (the default) also one index build worker (``cluster/roles/datanode.py``).

Run one coordinator per cluster. A second one fences the first (its oracle and its channel
manager stop with a fencing error, and the process exits non-zero), so a restarted or replaced
coordinator never issues a timestamp below one already issued.
"""

from __future__ import annotations

import logging

from cluster.config import CanopyConfig
from cluster.coordinator.catalog import Catalog
from cluster.coordinator.channel_manager import ChannelManager
from cluster.coordinator.query_assign import SegmentBalancer
from cluster.coordinator.service import LocalCoordinator
from cluster.coordinator.sessions import SessionRegistry
from cluster.roles.base import Role
from cluster.roles.datanode import build_policy, compaction_policy, start_embedded_worker
from cluster.rpc.coordinator import CoordinatorServicer
from cluster.rpc.server import RpcServer
from woodpecker.clock import Clock, RealClock
from woodpecker.meta import open_meta_store

log = logging.getLogger("canopy.coordinator")


class CoordinatorRole(Role):
    name = "coordinator"

    def __init__(self, config: CanopyConfig, *, clock: Clock | None = None) -> None:
        super().__init__()
        config.check(needs_objects=config.datanode.embedded)
        self.config = config
        self.clock = clock or RealClock()
        self.server: RpcServer | None = None
        self.manager: ChannelManager | None = None

    @property
    def address(self) -> str:
        assert self.server is not None, "not started"
        return self.server.address

    async def _start(self) -> None:
        cfg = self.config
        meta = open_meta_store(cfg.meta, clock=self.clock)
        self.on_stop("meta store", meta.close)
        catalog = Catalog(meta, num_physical_channels=cfg.channels)
        settings = await catalog.start()
        coordinator = LocalCoordinator(
            meta,
            self.clock,
            catalog=catalog,
            build_policy=build_policy(cfg),
            schedule_index_builds=True,
            compaction_policy=compaction_policy(cfg),
        )
        await coordinator.start()
        self.on_stop("timestamp oracle and index build scheduler", coordinator.close)
        self.supervise("the index build scheduler", coordinator.wait())
        self.manager = ChannelManager(
            meta,
            SessionRegistry(meta, self.clock),
            self.clock,
            settings.num_physical_channels,
            cluster_prefix=settings.cluster_prefix,
            rebalance_interval=cfg.coordinator.rebalance_interval,
        )
        await self.manager.start()
        self.on_stop("channel manager", self.manager.close)
        self.supervise("the channel manager", self.manager.wait())
        balancer = SegmentBalancer(meta, self.clock)
        await balancer.start()
        self.on_stop("segment balancer", balancer.close)
        self.supervise("the segment balancer", balancer.wait())
        self.server = RpcServer(
            cfg.coordinator.host, cfg.coordinator.port, [CoordinatorServicer(coordinator, catalog)]
        )
        await self.server.start()
        self.on_stop("gRPC server", self.server.stop)
        if cfg.datanode.embedded:
            await start_embedded_worker(self, cfg, coordinator, meta, self.clock)
        log.info(
            "coordinator serving on %s (meta %s, %d channels)",
            self.server.address,
            cfg.meta,
            settings.num_physical_channels,
        )
