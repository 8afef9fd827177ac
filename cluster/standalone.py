"""``canopy standalone``: every role in one process, calling each other in-process.

Coordinator (timestamp oracle + catalog), one streaming node owning every physical channel, and
the Milvus-API proxy on ``host:port``. Embedded defaults need no external service:
``file://DATA/objects`` for objects and WAL blocks, ``sqlite:///DATA/meta.db`` for metadata.
``--object-store s3://...`` and ``--meta etcd://...`` run the same process on real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.service import LocalCoordinator
from cluster.proxy.routing import StaticRouter
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer
from cluster.streaming.node import StreamingNode
from woodpecker import LogStore, WalConfig
from woodpecker.clock import Clock, RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.objectstore import ObjectStore, Retrying, open_object_store

log = logging.getLogger("canopy.standalone")

DEFAULT_DATA_DIR = "./canopy-data"
DEFAULT_PORT = 19530
DEFAULT_CHANNELS = 2


@dataclass
class StandaloneConfig:
    """Where Canopy keeps its data and where it listens. Empty URIs mean the embedded
    defaults under ``data_dir``."""

    data_dir: str = DEFAULT_DATA_DIR
    object_store: str = ""
    meta: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    channels: int = DEFAULT_CHANNELS  # physical channels (WAL logs); fixed at first start
    wal: WalConfig = field(default_factory=WalConfig)

    def object_store_uri(self) -> str:
        return self.object_store or f"file://{Path(self.data_dir).absolute()}/objects"

    def meta_uri(self) -> str:
        return self.meta or f"sqlite:///{Path(self.data_dir).absolute()}/meta.db"


class Standalone:
    """All roles of a Canopy cluster in one process. ``start()`` returns once the proxy
    listens; ``stop()`` shuts down in reverse order (proxy, streaming node, coordinator,
    storage) so acknowledged writes are durable and segments are completed."""

    def __init__(self, config: StandaloneConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or RealClock()
        self.objects: ObjectStore | None = None
        self.meta: MetaStore | None = None
        self.log_store: LogStore | None = None
        self.coordinator: LocalCoordinator | None = None
        self.node: StreamingNode | None = None
        self.server: ProxyServer | None = None

    @property
    def uri(self) -> str:
        """What to pass to ``MilvusClient(uri=...)``."""
        assert self.server is not None, "not started"
        return f"http://{self.server.address}"

    async def start(self) -> None:
        cfg = self.config
        if not cfg.object_store or not cfg.meta:
            os.makedirs(cfg.data_dir, exist_ok=True)
        try:
            self.objects = open_object_store(cfg.object_store_uri())
            self.meta = open_meta_store(cfg.meta_uri(), clock=self.clock)
            self.log_store = await LogStore.open(self.objects, self.meta, cfg.wal, clock=self.clock)
            self.log_store.start_auditor()
            catalog = Catalog(self.meta, num_physical_channels=cfg.channels)
            self.coordinator = LocalCoordinator(self.meta, self.clock, catalog=catalog)
            settings = await catalog.start()
            await self.coordinator.start()
            channels = [settings.pchannel(i) for i in range(settings.num_physical_channels)]
            self.node = StreamingNode(
                self.log_store,
                Retrying(self.objects, clock=self.clock),
                self.coordinator,
                channels=channels,
                meta=self.meta,
                clock=self.clock,
            )
            await self.node.start()
            servicer = ProxyServicer(self.coordinator, catalog, StaticRouter(self.node), self.clock)
            self.server = ProxyServer(servicer, cfg.host, cfg.port)
            await self.server.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "canopy standalone listening on %s (objects %s, meta %s, %d channels)",
            self.server.address,
            cfg.object_store_uri(),
            cfg.meta_uri(),
            len(channels),
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=5.0)
        if self.node is not None:
            await self.node.close()
        if self.coordinator is not None:
            await self.coordinator.close()
        if self.log_store is not None:
            await self.log_store.close()
        for closable in (self.meta, self.objects):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.close()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (or the streaming node fails), then stop cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        assert self.node is not None
        node_failed = asyncio.ensure_future(self.node.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({node_failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            log.info("canopy standalone stopping")
            await self.stop()
        if node_failed.done() and not node_failed.cancelled() and node_failed.exception():
            raise node_failed.exception()  # type: ignore[misc]
        node_failed.cancel()
