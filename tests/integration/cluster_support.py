"""Helpers for tests on a :class:`integration.cluster.LocalCluster`: read what is really in
object storage and in the meta store (the read path is a later milestone), and the pymilvus
schema the tests share."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

import numpy as np
from pymilvus import DataType, MilvusClient

from cluster.coordinator.channels import CHANNELS_PREFIX, ChannelRecord
from cluster.coordinator.sessions import SessionInfo, role_prefix
from cluster.storage.deltas import read_deltas
from cluster.storage.segment_files import list_segments
from cluster.storage.segment_reader import read_segment
from integration.cluster import LocalCluster
from woodpecker.meta import open_meta_store
from woodpecker.objectstore import open_object_store

DIM = 16


def schema(client: MilvusClient):  # type: ignore[no-untyped-def]
    s = client.create_schema(auto_id=False, enable_dynamic_field=True)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("title", DataType.VARCHAR, max_length=64)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    return s


def rows(ids: Iterable[int], rng: np.random.Generator, tag: str = "r") -> list[dict]:
    return [{"id": i, "title": f"{tag}{i}", "vec": rng.random(DIM).tolist()} for i in ids]


def stored_rows(cluster: LocalCluster, collection_id: int) -> tuple[Counter[int], dict[int, int]]:
    """(how many times each pk is stored in the sealed segments, pk -> newest delete ts)."""

    async def read() -> tuple[Counter[int], dict[int, int]]:
        store = open_object_store(cluster.object_store_uri)
        try:
            counts: Counter[int] = Counter()
            deletes: dict[int, int] = {}
            for manifest in await list_segments(store, "", collection_id):
                table = await read_segment(store, manifest, columns=["id"])
                counts.update(table["id"].to_pylist())
                pks, tss = await read_deltas(store, manifest)
                for pk, ts in zip(pks.to_pylist(), tss.to_pylist(), strict=True):
                    deletes[pk] = max(ts, deletes.get(pk, 0))
            return counts, deletes
        finally:
            await store.close()

    return asyncio.run(read())


def channel_owners(cluster: LocalCluster) -> dict[str, str | None]:
    """pchannel -> the LocalCluster node name of its owner (None: unassigned or owner gone)."""

    async def read() -> dict[str, str | None]:
        meta = open_meta_store(cluster.meta_uri)
        try:
            sessions = {
                info.node_id: info.address
                for kv in await meta.range(role_prefix("streaming"))
                if (info := SessionInfo.decode(kv.value))
            }
            by_address = {n.address: n.name for n in cluster.nodes.values()}
            owners: dict[str, str | None] = {}
            for kv in await meta.range(CHANNELS_PREFIX):
                record = ChannelRecord.decode(kv.value)
                address = sessions.get(record.owner) if record.owner is not None else None
                owners[kv.key[len(CHANNELS_PREFIX) :]] = by_address.get(address or "")
            return owners
        finally:
            await meta.close()

    return asyncio.run(read())
