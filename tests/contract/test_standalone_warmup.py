"""``canopy standalone`` (in-process) puts a loaded collection's sealed segments in memory ahead
of the first read (cluster/streaming/warmup.py), warms segments flushed later, and forgets them
on release; reads are right throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from polling import until
from pymilvus import MilvusClient

from cluster.standalone import Standalone, StandaloneConfig
from integration.services import free_port

pytestmark = pytest.mark.contract

DIM = 4


async def test_load_warms_sealed_segments_and_release_forgets_them(tmp_path: Path) -> None:
    sa = Standalone(StandaloneConfig(data_dir=str(tmp_path), port=free_port()))
    await sa.start()
    try:
        assert sa.node is not None and sa.coordinator is not None and sa.warmup is not None
        sa.warmup.interval = 0.1
        client = await asyncio.to_thread(MilvusClient, uri=sa.uri)

        def write(start: int) -> None:
            rows = [{"id": start + i, "vector": [float(i)] * DIM} for i in range(10)]
            client.insert("c", rows)
            client.flush("c")

        def count() -> int:
            res = client.query("c", output_fields=["count(*)"], consistency_level="Strong")
            return int(res[0]["count(*)"])

        await asyncio.to_thread(
            client.create_collection, "c", dimension=DIM, primary_field_name="id", id_type="int"
        )  # quick setup: indexed and loaded
        await asyncio.to_thread(write, 0)
        await asyncio.to_thread(write, 10)
        info = await sa.coordinator.catalog.describe_collection("default", "c")
        cid = info.collection_id

        async def flushed() -> set[int]:
            segs = await sa.coordinator.list_segments(cid)  # type: ignore[union-attr]
            return {s.segment_id for s in segs if s.state == "flushed"}

        def warm() -> set[int]:
            return set().union(*(sa.node.sealed.loaded_ids(cid, v) for v in info.vchannels))  # type: ignore[union-attr]

        async def all_warm() -> bool:
            want = await flushed()
            return bool(want) and warm() >= want

        await until(all_warm, within=10)  # without any read of the collection
        assert await asyncio.to_thread(count) == 20
        await asyncio.to_thread(write, 20)  # flushed after the load: warmed too
        await until(all_warm, within=10)
        assert await asyncio.to_thread(count) == 30
        await asyncio.to_thread(client.release_collection, "c")
        await until(lambda: not warm(), within=10)
        # load_collection polls GetLoadingProgress: it returns with the data in memory
        await asyncio.to_thread(client.load_collection, "c")
        assert warm() >= await flushed()
        assert await asyncio.to_thread(count) == 30
        await asyncio.to_thread(client.close)
    finally:
        await sa.stop()
