"""The proxy's metadata cache: the catalog records a read needs, mirrored from the meta store.

Every Search and Query needs the collection record, its indexes and its load record. Asking the
catalog each time costs three coordinator round trips in a cluster (about 8 ms of a 14 ms
search on this machine) and three JSON decodes in standalone. :class:`CachedCatalog` answers
those three reads from a :class:`~cluster.coordinator.watching.PrefixMirror` of ``catalog/``
(what Milvus's proxy meta cache does, fed by a watch instead of invalidation calls) and passes
every other call to the catalog it wraps.

Contract:

* **Answers are never made up**: a cached answer is the decoded current value of the key in
  the mirror (decoded once per key version). A read the mirror cannot answer positively (the
  collection, or its load record, is not there) asks the catalog, so a negative answer (not
  found, not loaded) is always authoritative.
* **Read your own DDL**: after a call that changes the catalog (every method not in
  ``_READS``) returns, the wrapper waits (at most ``sync_timeout``) until the mirror holds the
  meta store's current version of the keys the call can have changed (the collection record by
  name, its indexes and its load record), so the next read through this proxy sees the change.
* **Other proxies' DDL** reaches the mirror through the watch (milliseconds). Until then this
  proxy may still see a collection that was just dropped or released elsewhere as present or
  loaded; the streaming nodes refuse reads of a dropped collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from cluster.coordinator.catalog_indexes import _decode_indexes
from cluster.coordinator.records import (
    DEFAULT_DB,
    CollectionInfo,
    IndexInfo,
    LoadInfo,
    LoadState,
    collection_id_key,
    collection_key,
    decode_id_index,
    indexes_key,
    load_key,
)
from cluster.coordinator.watching import PrefixMirror
from woodpecker.clock import Clock
from woodpecker.errors import CanopyError
from woodpecker.meta.base import KeyValue, MetaStore

__all__ = ["CachedCatalog"]

log = logging.getLogger(__name__)

CATALOG_PREFIX = "catalog/"

_READS = frozenset(
    {
        "start",
        "settings",
        "describe_collection",
        "has_collection",
        "list_collections",
        "list_indexes",
        "describe_index",
        "load_state",
        "list_partitions",
        "has_partition",
        "describe_partition",
        "list_databases",
        "describe_database",
        "list_dropped_collections",
        "list_dropped_partitions",
        "allocate_ids",
    }
)


class CachedCatalog:
    """A catalog (``Catalog`` or ``RemoteCatalog``) with its hot reads served from a mirror of
    the meta store (see the module docstring). ``await open()`` before use (``start`` is the
    wrapped catalog's); ``close()``."""

    def __init__(
        self, catalog: Any, meta: MetaStore, clock: Clock, *, sync_timeout: float = 2.0
    ) -> None:
        self._catalog = catalog
        self._meta = meta
        self._mirror = PrefixMirror(meta, CATALOG_PREFIX, clock)
        self._decoded: dict[str, tuple[int, Any]] = {}  # key -> (mod_revision, value)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sync_timeout = sync_timeout

    async def open(self) -> None:
        await self._mirror.start()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="meta-cache")

    async def _follow(self) -> None:
        async for _ in self._mirror:
            self._changed.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CanopyError):
                await self._task
        with contextlib.suppress(CanopyError):
            await self._mirror.close()

    # --- the mirror ------------------------------------------------------------------------------

    def _get(self, key: str, decode: Any) -> Any | None:
        kv = self._mirror.kvs.get(key)
        if kv is None:
            return None
        hit = self._decoded.get(key)
        if hit is not None and hit[0] == kv.mod_revision:
            return hit[1]
        value = decode(kv)
        self._decoded[key] = (kv.mod_revision, value)
        if len(self._decoded) > 4 * len(self._mirror.kvs) + 64:  # drop decodes of gone keys
            for k in [k for k in self._decoded if k not in self._mirror.kvs]:
                del self._decoded[k]
        return value

    def _collection(self, db: str | None, name_or_id: str | int) -> CollectionInfo | None:
        if isinstance(name_or_id, int):
            found = self._get(collection_id_key(name_or_id), lambda kv: decode_id_index(kv.value))
            if found is None:
                return None
            db, name_or_id = found
        return self._get(
            collection_key(db or DEFAULT_DB, name_or_id), lambda kv: CollectionInfo.decode(kv.value)
        )

    async def _sync(self, keys: Sequence[str]) -> None:
        """Wait until the mirror holds the store's current version of ``keys``."""
        want: dict[str, KeyValue | None] = {k: await self._meta.get(k) for k in keys}

        def caught_up() -> bool:
            for key, kv in want.items():
                have = self._mirror.kvs.get(key)
                if kv is None and have is not None:
                    return False
                if kv is not None and (have is None or have.mod_revision < kv.mod_revision):
                    return False
            return True

        try:
            async with asyncio.timeout(self.sync_timeout):
                while not caught_up():
                    self._changed.clear()
                    if caught_up():
                        break
                    await self._changed.wait()
        except TimeoutError:
            log.warning("the catalog mirror is behind on %s; reads fall back meanwhile", keys)

    # --- reads -----------------------------------------------------------------------------------

    async def describe_collection(self, db: str | None, name_or_id: str | int) -> CollectionInfo:
        info = self._collection(db, name_or_id)
        if info is not None:
            return info
        return await self._catalog.describe_collection(db, name_or_id)

    async def list_indexes(self, db: str, collection: str | int) -> list[IndexInfo]:
        info = self._collection(db, collection)
        if info is None:
            return await self._catalog.list_indexes(db, collection)
        cid = info.collection_id
        key = indexes_key(cid)
        found = self._get(key, lambda kv: _decode_indexes(cid, kv))
        return list(found.indexes) if found is not None else []

    async def load_state(
        self, db: str, collection: str, partitions: Sequence[str] | None = None
    ) -> LoadInfo:
        info = self._collection(db, collection)
        if info is not None:
            load = self._get(load_key(info.collection_id), lambda kv: LoadInfo.decode(kv.value))
            if load is not None and load.state is LoadState.LOADED:
                if not partitions:
                    return load
                by_name = {p.name: p.partition_id for p in info.partitions}
                if all(n in by_name and load.loads(by_name[n]) for n in partitions):
                    return load
        return await self._catalog.load_state(db, collection, partitions)  # authoritative

    # --- everything else -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._catalog, name)
        if name in _READS or not callable(attr) or not asyncio.iscoroutinefunction(attr):
            return attr

        async def mutation(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attr(*args, **kwargs)
            finally:
                await self._sync(self._touched(args, kwargs))

        return mutation

    def _touched(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
        """The keys a mutation called with ``(db, collection, ...)`` can have changed."""
        if len(args) < 2 or not isinstance(args[1], str):
            return []
        db = args[0] or DEFAULT_DB
        keys = [collection_key(db, args[1])]
        for extra in (*args[2:3], kwargs.get("new_name")):
            if isinstance(extra, str) and extra and extra != args[1]:
                keys.append(collection_key(kwargs.get("new_db") or db, extra))
        info = self._collection(db, args[1])
        if info is not None:
            keys += [indexes_key(info.collection_id), load_key(info.collection_id)]
        return keys
