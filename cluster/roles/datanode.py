"""``canopy data-node``: builds the indexes of sealed segments.

The coordinator schedules the builds (records under ``index_builds/``, see
``cluster/coordinator/index_builds.py``); a data node claims them and runs them
(:class:`~cluster.datanode.worker.IndexBuildWorker`). It needs no RPC: it registers a leased
session ``sessions/data/{node_id}`` (its node id), follows ``index_builds/`` through a
:class:`~cluster.coordinator.index_scheduler.BuildQueue` and makes every transition by CAS on
the MetaStore, reading segments from and writing index files to the object store.

By default (``datanode.embedded: true``) the coordinator process runs one worker itself
(:func:`start_embedded_worker`), so a cluster builds indexes without any data-node process; run
data nodes (and set ``embedded: false``) to take that work off the coordinator.

Every worker also compacts sealed segments (``datanode.compaction``; records under
``compactions/``, see ``cluster/datanode/compaction.py``). Plans need TSO timestamps and ids:
an embedded worker takes them from its coordinator, a data node from the coordinator's gRPC
service (``coordinator.address``); the plan records and the commit txn go to the MetaStore.

Stop order: the worker first (running builds are given back at once), then the queue, the
session (revoked, so the node disappears at once), the stores.
"""

from __future__ import annotations

import logging

from cluster.config import CanopyConfig
from cluster.coordinator.compactions import CompactionPolicy, Compactions
from cluster.coordinator.ids import IdAllocator
from cluster.coordinator.index_builds import BuildPolicy, IndexBuilds
from cluster.coordinator.index_scheduler import BuildQueue
from cluster.coordinator.sessions import NODE_IDS_KEY, NodeSession
from cluster.datanode.compaction import CompactionSource
from cluster.datanode.worker import BuildSource, IndexBuildWorker
from cluster.roles.base import Role
from cluster.rpc.coordinator import CoordinatorClient
from woodpecker.clock import Clock, RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.objectstore import ObjectStore, Retrying, open_object_store

__all__ = [
    "DATA",
    "DataNodeRole",
    "RemoteCompactionSource",
    "build_policy",
    "compaction_policy",
    "start_embedded_worker",
]

log = logging.getLogger("canopy.datanode")

DATA = "data"  # the session role of data nodes


def build_policy(config: CanopyConfig) -> BuildPolicy:
    return BuildPolicy(lease=config.datanode.build_lease)


def compaction_policy(config: CanopyConfig) -> CompactionPolicy:
    dn = config.datanode
    return CompactionPolicy(
        small_rows=dn.compaction_small_rows,
        max_inputs=dn.compaction_max_inputs,
        max_rows=dn.compaction_max_rows,
        delete_ratio=dn.compaction_delete_ratio,
        retention=dn.compaction_retention,
        drop_delay=dn.compaction_drop_delay,
        interval=dn.compaction_interval,
        leases=BuildPolicy(lease=dn.compaction_lease),
    )


class RemoteCompactionSource:
    """A :class:`CompactionSource` for ``canopy data-node``: plan records on the MetaStore,
    timestamps and ids from the coordinator's gRPC service."""

    def __init__(self, compactions: Compactions, coordinator: CoordinatorClient) -> None:
        self.compactions = compactions
        self.coordinator = coordinator

    async def allocate_timestamp(self, count: int = 1) -> int:
        return await self.coordinator.allocate_timestamp(count)

    async def allocate_ids(self, count: int = 1) -> int:
        return await self.coordinator.allocate_ids(count)


def make_worker(
    config: CanopyConfig,
    source: BuildSource,
    objects: ObjectStore,
    node_id: int,
    clock: Clock,
    compactions: CompactionSource | None = None,
) -> IndexBuildWorker:
    dn = config.datanode
    return IndexBuildWorker(
        source,
        Retrying(objects, clock=clock),
        node_id,
        clock=clock,
        concurrency=dn.concurrency,
        poll_interval=dn.poll_interval,
        num_threads=dn.build_threads or -1,
        compaction=dn.compaction,
        compactions=compactions,
    )


async def start_embedded_worker(
    role: Role,
    config: CanopyConfig,
    source: BuildSource,
    meta: MetaStore,
    clock: Clock,
) -> IndexBuildWorker:
    """Open the object store and start one worker claiming from ``source`` (the coordinator)
    under a fresh node id, registered with ``role`` for stop and supervision."""
    objects = open_object_store(config.object_store)
    role.on_stop("object store", objects.close)
    node_id = await IdAllocator(meta, NODE_IDS_KEY, batch=1).allocate()
    if isinstance(source, CompactionSource):
        # the coordinator's records take the configured policy (commit and claim use it too)
        source.compactions.policy = compaction_policy(config)
    worker = make_worker(config, source, objects, node_id, clock)
    await worker.start()
    role.on_stop("index build worker", worker.close)
    role.supervise("the index build worker", worker.wait())
    log.info("embedded index build worker %d (objects %s)", node_id, config.object_store)
    return worker


class DataNodeRole(Role):
    name = "data-node"

    def __init__(self, config: CanopyConfig, *, clock: Clock | None = None) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.clock = clock or RealClock()
        self.session: NodeSession | None = None
        self.worker: IndexBuildWorker | None = None

    async def _not_ready(self) -> list[str]:
        reason = self.session.unconfirmed_reason() if self.session is not None else None
        return [reason] if reason else []

    async def _start(self) -> None:
        cfg = self.config
        meta = open_meta_store(cfg.meta, clock=self.clock)
        self.on_stop("meta store", meta.close)
        objects = open_object_store(cfg.object_store)
        self.on_stop("object store", objects.close)
        self.session = NodeSession(
            meta, DATA, address="", clock=self.clock, ttl=cfg.datanode.session_ttl
        )
        await self.session.start()
        self.on_stop("session", self.session.close)
        self.supervise("the session", self.session.wait_lost())
        queue = BuildQueue(IndexBuilds(meta, self.clock, build_policy(cfg)))
        await queue.start()
        self.on_stop("build queue", queue.close)
        self.supervise("the build queue", queue.wait())
        compactions = None
        if cfg.datanode.compaction:
            client = CoordinatorClient(cfg.coordinator.target(), clock=self.clock)
            self.on_stop("coordinator client", client.close)
            compactions = RemoteCompactionSource(
                Compactions(meta, self.clock, compaction_policy(cfg)), client
            )
        self.worker = make_worker(
            cfg, queue, objects, self.session.node_id, self.clock, compactions
        )
        await self.worker.start()
        self.on_stop("index build worker", self.worker.close)
        self.supervise("the index build worker", self.worker.wait())
        log.info(
            "data node %d building indexes (%d at a time; objects %s, meta %s)",
            self.session.node_id,
            cfg.datanode.concurrency,
            cfg.object_store,
            cfg.meta,
        )
