"""The official pymilvus ``MilvusClient`` against the Canopy proxy: DDL and the write path.

A real ``grpc.aio`` server runs on a free loopback port in a background thread (its own event
loop), over a Catalog + TimestampOracle on memory:// and an in-memory streaming node
(``cluster.proxy.testing``) that records what reaches it. The synchronous client drives it as a
user would.

Quick setup (``create_collection(name, dimension=d)``) is covered in test_pymilvus_indexes.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType, MilvusClient, MilvusException

from cluster.milvus.shard import hash_pk_to_shard
from cluster.proxy.server import ProxyServer
from cluster.proxy.testing import ProxyHarness

T = TypeVar("T")


class BackgroundProxy:
    """A ProxyServer + ProxyHarness on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.harness: ProxyHarness = self.run(ProxyHarness.start())
        self.server = ProxyServer(self.harness.servicer, port=0)
        self.run(self.server.start())
        self.uri = f"http://{self.server.address}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def inspect(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (the recorded calls live there)."""

        async def call() -> T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        self.run(self.server.stop(1))
        self.run(self.harness.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def rich_schema(client: MilvusClient) -> Any:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("doc", DataType.JSON)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
    schema.add_field("score", DataType.FLOAT)
    return schema


def rich_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "pk": f"k{i}",
            "vec": [float(i)] * 8,
            "doc": {"i": i, "nested": {"x": [1, 2]}},
            "tags": [i, i + 1],
            "score": i / 2,
            "color": f"c{i}",  # dynamic
        }
        for i in range(start, start + n)
    ]


def collection_id(client: MilvusClient, name: str) -> int:
    return int(client.describe_collection(name)["collection_id"])


def test_connect_and_version(client: MilvusClient) -> None:
    assert client.get_server_version().startswith("v2.")
    detail = client.get_server_version(detail=True)
    assert str(detail["version"]).startswith("canopy-")


def test_explicit_schema_describe_list_has(client: MilvusClient) -> None:
    client.create_collection("rich", schema=rich_schema(client), consistency_level="Strong")
    desc = client.describe_collection("rich")
    assert [(f["name"], f["field_id"]) for f in desc["fields"]] == [
        ("pk", 100),
        ("vec", 101),
        ("doc", 102),
        ("tags", 103),
        ("score", 104),
    ]
    fields = {f["name"]: f for f in desc["fields"]}
    assert fields["pk"]["is_primary"] and fields["pk"]["params"]["max_length"] == 32
    assert fields["vec"]["params"]["dim"] == 8
    assert fields["tags"]["element_type"] == DataType.INT64
    assert fields["tags"]["params"]["max_capacity"] == 4
    assert desc["consistency_level_name"] == "Strong" and desc["enable_dynamic_field"]
    assert desc["num_shards"] == 1 and desc["update_timestamp"] > 0
    assert client.list_collections() == ["rich"]
    assert client.has_collection("rich") and not client.has_collection("unknown")
    # same schema again: idempotent like Milvus
    client.create_collection("rich", schema=rich_schema(client), consistency_level="Strong")
    assert collection_id(client, "rich") == desc["collection_id"]
    with pytest.raises(MilvusException) as err:
        client.describe_collection("unknown")
    assert err.value.code == 100
    assert err.value.message == "collection not found[database=default][collection=unknown]"


def test_partitions(client: MilvusClient) -> None:
    client.create_collection("parts", schema=rich_schema(client))
    client.create_partition("parts", "p1")
    assert client.list_partitions("parts") == ["_default", "p1"]
    assert client.has_partition("parts", "p1") and not client.has_partition("parts", "p2")
    client.insert("parts", rich_rows(3), partition_name="p1")
    client.drop_partition("parts", "p1")
    assert client.list_partitions("parts") == ["_default"]
    with pytest.raises(MilvusException) as err:
        client.insert("parts", rich_rows(1), partition_name="p1")
    assert err.value.code == 200


def test_insert_reaches_the_streaming_node(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_collection("ins", schema=rich_schema(client), num_shards=2)
    result = client.insert("ins", rich_rows(20))
    assert result["insert_count"] == 20
    assert list(result["ids"]) == [f"k{i}" for i in range(20)]
    cid = collection_id(client, "ins")
    vchannels = list(
        proxy.run(proxy.harness.catalog.describe_collection("default", "ins")).vchannels
    )
    calls = proxy.inspect(lambda: proxy.harness.streaming.of("insert", cid))
    assert {c.vchannel for c in calls} == set(vchannels)
    shards = hash_pk_to_shard(pa.array([f"k{i}" for i in range(20)]), 2)
    seen = []
    for call in calls:
        table = call.data
        assert table.column_names == ["pk", "vec", "doc", "tags", "score", "$meta"]
        for row in table.to_pylist():
            i = int(row["pk"][1:])
            assert shards[i] == vchannels.index(call.vchannel)
            assert json.loads(row["doc"]) == {"i": i, "nested": {"x": [1, 2]}}
            assert row["tags"] == [i, i + 1] and row["score"] == pytest.approx(i / 2)
            assert json.loads(row["$meta"]) == {"color": f"c{i}"}
            assert np.allclose(row["vec"], [float(i)] * 8)
            seen.append(i)
    assert sorted(seen) == list(range(20))


def test_insert_validation_errors(client: MilvusClient) -> None:
    client.create_collection("val", schema=rich_schema(client))
    with pytest.raises(MilvusException) as err:
        client.insert("val", [{**rich_rows(1)[0], "pk": "x" * 40}])
    assert err.value.code == 1100 and "exceeds max length" in err.value.message
    with pytest.raises(MilvusException) as err:
        client.insert("val", [{**rich_rows(1)[0], "tags": [1, 2, 3, 4, 5]}])
    assert err.value.code == 1100 and "max capacity" in err.value.message
    with pytest.raises(MilvusException) as err:
        client.insert("unknown", rich_rows(1))
    assert err.value.code == 100


def test_upsert_and_delete(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_collection("ud", schema=rich_schema(client), num_shards=2)
    client.insert("ud", rich_rows(5))
    result = client.upsert("ud", rich_rows(3, start=3))  # k3, k4 exist; k5 is new
    assert result["upsert_count"] == 3
    deleted = client.delete("ud", ids=["k0", "k1"])
    assert deleted["delete_count"] == 2
    cid = collection_id(client, "ud")
    live = proxy.inspect(lambda: proxy.harness.streaming.live_rows(cid, "pk"))
    assert sorted(live.column("pk").to_pylist()) == ["k2", "k3", "k4", "k5"]
    with pytest.raises(MilvusException) as err:  # a filter is a query of the keys: not loaded
        client.delete("ud", filter="score > 1")
    assert err.value.code == 101 and "collection not loaded" in str(err.value)


def test_flush(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_collection("fl", schema=rich_schema(client), num_shards=2)
    client.insert("fl", rich_rows(10))
    proxy.inspect(lambda: setattr(proxy.harness.streaming, "polls_until_flushed", 2))
    try:
        client.flush("fl")  # polls GetFlushState until flushed
    finally:
        proxy.inspect(lambda: setattr(proxy.harness.streaming, "polls_until_flushed", 1))
    cid = collection_id(client, "fl")
    flushes = proxy.inspect(lambda: proxy.harness.streaming.of("flush", cid))
    assert len(flushes) == 1


def test_drop_collection(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_collection("gone", schema=rich_schema(client))
    cid = collection_id(client, "gone")
    client.drop_collection("gone")
    assert not client.has_collection("gone")
    client.drop_collection("gone")  # missing: no error, as in Milvus
    assert cid in proxy.inspect(lambda: set(proxy.harness.streaming.dropped))


def test_schema_mismatch_after_recreate(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_collection("re", schema=rich_schema(client))
    client.insert("re", rich_rows(2))  # caches the schema (and its update_timestamp)
    # another process drops and recreates it (pymilvus clients in one process share their
    # schema cache, so the catalog is changed directly here)
    catalog, tso = proxy.harness.catalog, proxy.harness.tso

    async def recreate() -> int:
        old = await catalog.drop_collection("default", "re", drop_ts=await tso.allocate())
        new = await catalog.create_collection(
            "default", "re", old.schema, create_ts=await tso.allocate()
        )
        return new.update_ts

    new_ts = proxy.run(recreate())
    dml = proxy.harness.servicer.dml
    seen: list[int] = []
    original = dml.insert

    async def recording_insert(req: Any, db: str) -> Any:
        seen.append(req.schema_timestamp)
        return await original(req, db)

    dml.insert = recording_insert  # type: ignore[method-assign]
    try:
        # the first client's cached schema is stale: SchemaMismatch, refresh, retry once
        assert client.insert("re", rich_rows(2, start=2))["insert_count"] == 2
    finally:
        dml.insert = original  # type: ignore[method-assign]
    assert len(seen) == 2 and seen[0] != new_ts and seen[1] == new_ts
    new_cid = collection_id(client, "re")
    calls = proxy.inspect(lambda: proxy.harness.streaming.of("insert", new_cid))
    assert sum(c.data.num_rows for c in calls) == 2


def test_databases(proxy: BackgroundProxy, client: MilvusClient) -> None:
    client.create_database("db1")
    assert client.list_databases() == ["default", "db1"]
    client.use_database("db1")
    client.create_collection("in_db1", schema=rich_schema(client))
    assert client.list_collections() == ["in_db1"]
    client.insert("in_db1", rich_rows(2))
    assert client.describe_collection("in_db1")["collection_name"] == "in_db1"
    client.use_database("default")
    assert "in_db1" not in client.list_collections()
    assert not client.has_collection("in_db1")
    with pytest.raises(MilvusException):
        client.drop_database("db1")  # not empty
    client.use_database("db1")
    client.drop_collection("in_db1")
    client.use_database("default")
    client.drop_database("db1")
    assert client.list_databases() == ["default"]


def test_rename_and_alter(client: MilvusClient) -> None:
    client.create_collection("old", schema=rich_schema(client))
    client.rename_collection("old", "new")
    assert client.list_collections() == ["new"]
    client.alter_collection_properties("new", properties={"collection.ttl.seconds": 60})
    assert client.describe_collection("new")["properties"] == {"collection.ttl.seconds": "60"}


def test_unsupported_calls_fail_fast(client: MilvusClient) -> None:
    client.create_collection("ro", schema=rich_schema(client))
    with pytest.raises(Exception) as err:
        client.create_alias("ro", "ro_alias", timeout=5)
    assert "UNIMPLEMENTED" in str(err.value) or "not implemented" in str(err.value)
    # a read of a collection that is not loaded is refused at once, as by Milvus
    with pytest.raises(MilvusException) as refused:
        client.search("ro", data=[[0.0] * 8], limit=1, timeout=5)
    assert refused.value.code == 101
