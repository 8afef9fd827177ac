"""Load and release for a streaming node that serves sealed segments itself (``canopy
standalone``: no query nodes).

Contract of :class:`SealedWarmup`: it follows the load records (``catalog/loads/``) and, on every
change and every ``interval`` seconds, makes the node's
:class:`~cluster.streaming.sealed.SealedReader` hold what is loaded:

* every flushed segment of a loaded collection (of its loaded partitions) on a vchannel the node
  owns is loaded ahead of the first read, with the delete logs known then and the newest index
  of each vector field (Milvus's LoadCollection puts the data in memory; reads then never pay
  for it), including segments flushed or compacted later;
* a released (or dropped) collection's segments are forgotten (memory back; the SSD cache keeps
  the files).

Reads stay correct whatever it has done: a segment it has not loaded yet is loaded by the read
that needs it, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cluster.coordinator.records import LOADS_PREFIX, LoadInfo
from cluster.coordinator.watching import PrefixMirror
from cluster.interfaces import CoordinatorService
from cluster.schema import DataType, from_request_bytes
from cluster.streaming.sealed import SealedReader, SealedSnapshot
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import MetaStore

__all__ = ["SealedWarmup"]

log = logging.getLogger(__name__)


class SealedWarmup:
    """See the module docstring. ``owns(vchannel)`` says whether the node serves a vchannel.
    ``start()`` / ``close()``; :meth:`sync` runs one round (tests)."""

    def __init__(
        self,
        reader: SealedReader,
        coordinator: CoordinatorService,
        meta: MetaStore,
        clock: Clock,
        *,
        owns: object = None,
        interval: float = 2.0,
    ) -> None:
        self.reader = reader
        self.coordinator = coordinator
        self.clock = clock
        self.interval = interval
        self._owns = owns if callable(owns) else (lambda vchannel: True)
        self._loads = PrefixMirror(meta, LOADS_PREFIX, clock)
        self._warm: set[int] = set()  # collections whose segments this warms
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._loads.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(), name="warmup-loads"),
            loop.create_task(self._run(), name="warmup"),
        ]

    async def _follow(self) -> None:
        async for _ in self._loads:
            self._changed.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again; reads load what they need
                log.info("warming loaded segments failed, retrying: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._changed.wait()
            self._changed.clear()

    async def sync(self) -> None:
        loads: dict[int, LoadInfo] = {}
        for kv in list(self._loads.kvs.values()):
            with contextlib.suppress(ValueError, KeyError):
                info = LoadInfo.decode(kv.value)
                loads[info.collection_id] = info
        for cid in self._warm - set(loads):
            self.reader.forget_collection(cid)
            log.info("collection %d released: its sealed segments are forgotten", cid)
        self._warm = set(loads)
        for cid, load in loads.items():
            await self._warm_collection(cid, load)

    async def _warm_collection(self, cid: int, load: LoadInfo) -> None:
        try:
            info = await self.coordinator.describe_collection_by_id(cid)
        except CanopyError:
            return  # dropped meanwhile
        schema = from_request_bytes(info.schema)
        fields = [f.name for f in schema.fields if f.dtype == DataType.FLOAT_VECTOR]
        for seg in await self.coordinator.list_segments(cid):
            if seg.state != "flushed" or not load.loads(seg.partition_id):
                continue
            if not self._owns(seg.vchannel):
                continue
            if seg.segment_id in self.reader.loaded_ids(cid, seg.vchannel):
                continue
            snap = SealedSnapshot(cid, seg.vchannel, "", -1, ())
            await self.reader.preload(snap, seg.segment_id, fields)

    async def progress(self, collection_id: int, partition_ids: list[int] | None) -> int:
        """Percent of the collection's flushed segments (of ``partition_ids``; None: all) on
        owned vchannels that are in memory (100 when there are none): what GetLoadingProgress
        answers in standalone, so ``load_collection`` returns once the data is loaded."""
        wanted = [
            s
            for s in await self.coordinator.list_segments(collection_id)
            if s.state == "flushed"
            and self._owns(s.vchannel)
            and (partition_ids is None or s.partition_id in partition_ids)
        ]
        if not wanted:
            return 100
        self._changed.set()  # a load just recorded: warm now rather than at the next tick
        held = sum(
            1 for s in wanted if s.segment_id in self.reader.loaded_ids(collection_id, s.vchannel)
        )
        return held * 100 // len(wanted)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(CanopyError):
            await self._loads.close()
