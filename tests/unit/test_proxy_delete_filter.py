"""Delete by filter (Milvus' "complex delete") through ``MilvusClient`` against a ``ProxyServer``
over the in-memory streaming service: the proxy queries the keys the filter selects (at the
request's consistency level, in the named partition) and deletes them like ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from cluster.proxy.server import ProxyServer
from cluster.proxy.testing import ProxyHarness

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

DIM = 4


class Served:
    def __init__(self, harness: ProxyHarness, client: MilvusClient) -> None:
        self.harness = harness
        self.client = client

    async def run(self, fn: Callable[[MilvusClient], Any]) -> Any:
        return await asyncio.to_thread(fn, self.client)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    harness = await ProxyHarness.start()
    server = ProxyServer(harness.servicer, "127.0.0.1", 0)
    await server.start()
    try:
        client = await asyncio.to_thread(MilvusClient, uri=f"http://{server.address}")
        try:
            yield Served(harness, client)
        finally:
            client.close()
    finally:
        await server.stop(0)
        await harness.close()


def rows(ids: range, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {"id": i, "vector": rng.random(DIM, dtype=np.float32).tolist(), "n": i, "t": f"t{i}"}
        for i in ids
    ]


def ids_of(answer: list[dict[str, Any]]) -> list[int]:
    return sorted(r["id"] for r in answer)


async def test_delete_by_filter_deletes_the_matching_keys(served: Served) -> None:
    rng = np.random.default_rng(3)

    def flow(c: MilvusClient) -> dict[str, Any]:
        c.create_collection("c", dimension=DIM, consistency_level="Strong", num_shards=2)
        c.create_partition("c", "p")
        c.insert("c", rows(range(20), rng))
        c.insert("c", rows(range(100, 105), rng), partition_name="p")
        out = {
            "range": c.delete("c", filter="n >= 15 and n < 100")["delete_count"],
            "like": c.delete("c", filter='t like "t1_"')["delete_count"],
            # only p's rows, although n < 2 matches rows in _default
            "partition": c.delete("c", filter="n >= 103 or n < 2", partition_name="p"),
            "template": c.delete("c", filter="n in {ns}", filter_params={"ns": [3, 4]}),
            "nothing": c.delete("c", filter="n > 1000")["delete_count"],
        }
        out["left"] = ids_of(c.query("c", filter="id >= 0", output_fields=["n"]))
        out["get"] = c.get("c", ids=[16, 12, 103])
        return out

    out = await served.run(flow)
    assert (out["range"], out["like"], out["nothing"]) == (5, 5, 0)
    assert out["partition"]["delete_count"] == 2
    assert out["template"]["delete_count"] == 2
    assert out["left"] == [0, 1, 2, 5, 6, 7, 8, 9, 100, 101, 102]
    assert out["get"] == []
    streaming = served.harness.streaming
    cid = (await served.harness.catalog.describe_collection("default", "c")).collection_id
    partition = (await served.harness.catalog.describe_collection("default", "c")).partition("p")
    assert partition is not None
    in_p = [c for c in streaming.of("delete", cid) if c.partition_id == partition.partition_id]
    assert sorted(k for c in in_p for k in c.data.to_pylist()) == [103, 104]


async def test_delete_by_filter_with_varchar_keys(served: Served) -> None:
    def flow(c: MilvusClient) -> tuple[int, list[str]]:
        schema = c.create_schema(enable_dynamic_field=True)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=8)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        index = c.prepare_index_params()
        index.add_index("vector", metric_type="L2")
        c.create_collection("v", schema=schema, index_params=index, consistency_level="Strong")
        c.insert("v", [{"pk": f"k{i}", "vector": [float(i)] * DIM, "n": i} for i in range(6)])
        count = c.delete("v", filter="n % 2 == 0")["delete_count"]
        return count, sorted(r["pk"] for r in c.query("v", filter="n >= 0"))

    assert await served.run(flow) == (3, ["k1", "k3", "k5"])


async def test_delete_by_filter_needs_the_collection_loaded(served: Served) -> None:
    def flow(c: MilvusClient) -> None:
        schema = c.create_schema()
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        c.create_collection("u", schema=schema)  # no index: not loaded
        c.delete("u", filter="id > 3")

    with pytest.raises(MilvusException) as err:
        await served.run(flow)
    assert err.value.code == 101, err.value
