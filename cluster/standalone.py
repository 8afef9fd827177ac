"""``canopy standalone``: every role in one process, calling each other in-process.

Coordinator (timestamp oracle, catalog, index build scheduler), one streaming node owning every
physical channel, one index build worker (the data node: builds the indexes of flushed segments
into ``objects/collections/.../index/``), and the Milvus-API proxy on ``host:port``. Embedded
defaults need no external service: ``file://DATA/objects`` for objects and WAL blocks,
``sqlite:///DATA/meta.db`` for metadata.
``--object-store s3://...`` and ``--meta etcd://...`` run the same process on real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.service import LocalCoordinator
from cluster.coordinator.sessions import NODE_IDS_KEY
from cluster.datanode.worker import IndexBuildWorker
from cluster.feed import feed_services
from cluster.feed.admin import standalone_node
from cluster.proxy.meta_cache import CachedCatalog
from cluster.proxy.routing import StaticRouter
from cluster.proxy.server import ProxyServer
from cluster.proxy.servicer import ProxyServicer
from cluster.roles.health import HealthServer
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from cluster.streaming.warmup import SealedWarmup
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
    index_builds: bool = True  # run the index build worker (the data node)
    health_host: str = "127.0.0.1"  # the HTTP health endpoint (cluster/roles/health.py)
    health_port: int = 0  # 0 = none

    def object_store_uri(self) -> str:
        return self.object_store or f"file://{Path(self.data_dir).absolute()}/objects"

    def cache_dir(self) -> str:
        """Where sealed segments read back for search are cached (always under data_dir)."""
        return f"{Path(self.data_dir).absolute()}/cache"

    def meta_uri(self) -> str:
        return self.meta or f"sqlite:///{Path(self.data_dir).absolute()}/meta.db"


class Standalone:
    """All roles of a Canopy cluster in one process. ``start()`` returns once the proxy
    listens; ``stop()`` shuts down in reverse order (proxy, index build worker, streaming node,
    coordinator, storage) so acknowledged writes are durable and segments are completed.

    Being the only build worker, it gives builds left ``building`` by an earlier process back
    at start instead of waiting for their leases."""

    def __init__(self, config: StandaloneConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or RealClock()
        self.objects: ObjectStore | None = None
        self.meta: MetaStore | None = None
        self.log_store: LogStore | None = None
        self.coordinator: LocalCoordinator | None = None
        self.node: StreamingNode | None = None
        self.worker: IndexBuildWorker | None = None
        self.meta_cache: CachedCatalog | None = None
        self.warmup: SealedWarmup | None = None
        self.server: ProxyServer | None = None
        self._serving = False
        self._failure: asyncio.Future[None] | None = None

    @property
    def uri(self) -> str:
        """What to pass to ``MilvusClient(uri=...)``."""
        assert self.server is not None, "not started"
        return f"http://{self.server.address}"

    async def start(self) -> None:
        cfg = self.config
        os.makedirs(cfg.data_dir, exist_ok=True)  # embedded stores and the read cache
        try:
            self.objects = open_object_store(cfg.object_store_uri())
            self.meta = open_meta_store(cfg.meta_uri(), clock=self.clock)
            self.log_store = await LogStore.open(self.objects, self.meta, cfg.wal, clock=self.clock)
            self.log_store.start_auditor()
            catalog = Catalog(self.meta, num_physical_channels=cfg.channels)
            self.coordinator = LocalCoordinator(
                self.meta, self.clock, catalog=catalog, schedule_index_builds=cfg.index_builds
            )
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
                # sealed segments read back for search are cached beside the data
                config=StreamingConfig(sealed_cache_dir=cfg.cache_dir()),
            )
            await self.node.start()
            # LoadCollection puts sealed segments in memory ahead of the first read
            self.warmup = SealedWarmup(self.node.sealed, self.coordinator, self.meta, self.clock)
            await self.warmup.start()
            self.coordinator.local_load_progress = self.warmup.progress
            if cfg.index_builds:
                await self._start_worker()
            self.meta_cache = CachedCatalog(catalog, self.meta, self.clock)
            await self.meta_cache.open()
            servicer = ProxyServicer(
                self.coordinator, self.meta_cache, StaticRouter(self.node), self.clock
            )
            services = feed_services(
                self.log_store,
                self.meta_cache.describe_collection,
                self.coordinator.allocate_timestamp,
                local_node=standalone_node(
                    lambda: self.uri.removeprefix("http://"), self.clock.now()
                ),
            )
            self.server = ProxyServer(servicer, cfg.host, cfg.port, services=services)
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

    async def _start_worker(self) -> None:
        assert self.meta is not None and self.objects is not None and self.coordinator
        node_id = await IdAllocator(self.meta, NODE_IDS_KEY, batch=1).allocate()
        released = await self.coordinator.index_builds.release_all(except_node=node_id)
        if released:
            log.info("gave back %d index builds of an earlier run", released)
        self.worker = IndexBuildWorker(
            self.coordinator,
            Retrying(self.objects, clock=self.clock),
            node_id,
            clock=self.clock,
        )
        await self.worker.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=5.0)
        if self.worker is not None:
            await self.worker.close()
        if self.meta_cache is not None:
            await self.meta_cache.close()
        if self.warmup is not None:
            await self.warmup.close()
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
        """Run until SIGINT/SIGTERM (or the streaming node, the build scheduler or the build
        worker fails), then stop cleanly. With ``health_port`` it serves the health endpoint
        for as long."""
        cfg = self.config
        health = None
        if cfg.health_port > 0:
            health = HealthServer(
                "standalone", cfg.health_host, cfg.health_port, live=self._live, ready=self._ready
            )
            await health.start()
        try:
            await self._serve_forever()
        finally:
            if health is not None:
                await health.stop()

    async def _live(self) -> list[str]:
        failure = self._failure
        if failure is None or not failure.done() or failure.cancelled():
            return []
        return [f"a part of standalone failed: {failure.exception()!r}"]

    async def _ready(self) -> list[str]:
        if not self._serving:
            return ["standalone is starting" if self._failure is None else "standalone stopped"]
        return await self._live()

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        assert self.node is not None and self.coordinator is not None
        parts = [self.node.wait(), self.coordinator.wait()]
        if self.worker is not None:
            parts.append(self.worker.wait())
        failed = self._failure = asyncio.ensure_future(_first_failure(parts))
        stopped = asyncio.ensure_future(stop.wait())
        self._serving = True
        try:
            await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._serving = False
            stopped.cancel()
            log.info("canopy standalone stopping")
            await self.stop()
        if failed.done() and not failed.cancelled() and failed.exception():
            raise failed.exception()  # type: ignore[misc]
        failed.cancel()


async def _first_failure(waits: list[Coroutine[Any, Any, None]]) -> None:
    """Until the first of ``waits`` ends (raising its error); cancels the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
