"""The proxy's metadata cache (cluster/proxy/meta_cache.py) over the memory store and real etcd:
reads through it equal the catalog's, DDL through it is visible to the next read at once,
another writer's DDL arrives by the watch, and what the mirror does not hold (yet) is asked of
the catalog, so "not found" / "not loaded" are always authoritative."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from polling import until
from pymilvus.grpc_gen import schema_pb2

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.errors import CollectionNotFound
from cluster.coordinator.records import LoadState
from cluster.proxy.meta_cache import CachedCatalog
from woodpecker.clock import RealClock
from woodpecker.meta import MetaStore, open_meta_store
from woodpecker.meta.base import Watch, WatchEvent

pytestmark = pytest.mark.contract

FLAT = {"index_type": "FLAT", "metric_type": "L2"}


def schema(name: str) -> bytes:
    s = schema_pb2.CollectionSchema(name=name)
    s.fields.add(name="id", data_type=schema_pb2.DataType.Int64, is_primary_key=True, fieldID=100)
    vec = s.fields.add(name="vector", data_type=schema_pb2.DataType.FloatVector, fieldID=101)
    vec.type_params.add(key="dim", value="4")
    return s.SerializeToString()


@pytest.fixture(params=["memory", "etcd"])
async def meta(
    request: pytest.FixtureRequest, meta_uri: Callable[[str], str]
) -> AsyncIterator[MetaStore]:
    store = open_meta_store(meta_uri(request.param))
    yield store
    await store.close()


WATCH_LAG = 0.05  # seconds each watch event of the cache's mirror is held back


class _LaggingWatch:
    """A watch whose every event arrives ``WATCH_LAG`` late (a slow network or a busy etcd):
    without the wait after its own DDL the cache would answer from the old state."""

    def __init__(self, inner: Watch) -> None:
        self._inner = inner

    def __aiter__(self) -> _LaggingWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self._inner.__anext__()
        await asyncio.sleep(WATCH_LAG)
        return event

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> _LaggingWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _LaggingMeta:
    """``meta`` with lagging watches (every other call passes through)."""

    def __init__(self, inner: MetaStore) -> None:
        self._inner = inner

    def watch(self, prefix: str, *, start_revision: int | None = None) -> _LaggingWatch:
        return _LaggingWatch(self._inner.watch(prefix, start_revision=start_revision))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
async def catalogs(meta: MetaStore) -> AsyncIterator[tuple[Catalog, CachedCatalog]]:
    """(the catalog another proxy writes through, this proxy's cached view of it, whose
    mirror lags behind the store by ``WATCH_LAG`` per change)"""
    catalog = Catalog(meta, num_physical_channels=1)
    await catalog.start()
    cached = CachedCatalog(catalog, _LaggingMeta(meta), RealClock())  # type: ignore[arg-type]
    await cached.open()
    yield catalog, cached
    await cached.close()


async def test_ddl_through_the_cache_is_seen_by_the_next_read(
    catalogs: tuple[Catalog, CachedCatalog],
) -> None:
    _, cached = catalogs
    created = await cached.create_collection("default", "c", schema("c"), create_ts=1)
    assert await cached.describe_collection("default", "c") == created
    assert await cached.describe_collection(None, created.collection_id) == created
    assert (await cached.load_state("default", "c")).state is LoadState.NOT_LOAD
    await cached.create_index("default", "c", "vector", "", FLAT, create_ts=2)
    assert [i.index_type for i in await cached.list_indexes("default", "c")] == ["FLAT"]
    await cached.create_partition("default", "c", "p1", create_ts=3)
    await cached.set_load_state("default", "c", True, ["p1"])
    assert (await cached.load_state("default", "c", ["p1"])).state is LoadState.LOADED
    assert (await cached.load_state("default", "c", ["_default"])).state is LoadState.NOT_LOAD
    for _ in range(10):  # each read right after the DDL that changed it
        await cached.set_load_state("default", "c", False)
        assert (await cached.load_state("default", "c")).state is LoadState.NOT_LOAD
        await cached.set_load_state("default", "c", True)
        assert (await cached.load_state("default", "c")).state is LoadState.LOADED
    await asyncio.sleep(WATCH_LAG * 40)  # the mirror has caught up: it holds "loaded"
    await cached.set_load_state("default", "c", False)
    assert (await cached.load_state("default", "c")).state is LoadState.NOT_LOAD
    await asyncio.sleep(WATCH_LAG * 40)  # it holds the collection
    await cached.drop_collection("default", "c", drop_ts=4)
    with pytest.raises(CollectionNotFound):
        await cached.describe_collection("default", "c")


async def test_another_writers_ddl_arrives_and_reads_equal_the_catalogs(
    catalogs: tuple[Catalog, CachedCatalog],
) -> None:
    catalog, cached = catalogs
    # not in the mirror yet or already: the answer is the catalog's either way
    created = await catalog.create_collection("default", "d", schema("d"), create_ts=1)
    assert await cached.describe_collection("default", "d") == created
    await catalog.create_index("default", "d", "vector", "", FLAT, create_ts=2)
    await catalog.set_load_state("default", "d", True)
    assert (await cached.load_state("default", "d")).state is LoadState.LOADED

    async def indexed() -> bool:
        return len(await cached.list_indexes("default", "d")) == 1

    await until(indexed, within=5)

    async def served_from_the_mirror() -> bool:  # once caught up: decoded once, then reused
        first = await cached.describe_collection("default", "d")
        return await cached.describe_collection("default", "d") is first

    await until(served_from_the_mirror, within=5)
    await catalog.alter_collection("default", "d", {"mmap.enabled": "true"})

    async def altered() -> bool:
        info = await cached.describe_collection("default", "d")
        return info.properties.get("mmap.enabled") == "true"

    await until(altered, within=5)
    assert await cached.describe_collection("default", "d") == await catalog.describe_collection(
        "default", "d"
    )


async def test_without_a_mirror_every_read_asks_the_catalog(meta: MetaStore) -> None:
    catalog = Catalog(meta, num_physical_channels=1)
    await catalog.start()
    cached = CachedCatalog(catalog, meta, RealClock())  # never opened: an empty mirror
    created = await catalog.create_collection("default", "e", schema("e"), create_ts=1)
    assert await cached.describe_collection("default", "e") == created
    assert await cached.list_indexes("default", "e") == []
    assert (await cached.load_state("default", "e")).state is LoadState.NOT_LOAD
    with pytest.raises(CollectionNotFound):
        await cached.describe_collection("default", "nope")
