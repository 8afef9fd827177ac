"""The test collection many contract tests create straight in a coordinator's catalog: INT64
``id`` primary key, FLOAT_VECTOR ``vec`` of ``dim``, VARCHAR(64) ``title``, named ``coll`` in
the default database. ``tests/`` is on ``sys.path``: ``from collection_setup import ...``."""

from __future__ import annotations

from pymilvus import DataType, MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.records import CollectionInfo
from cluster.coordinator.service import LocalCoordinator


async def create_test_collection(
    coordinator: LocalCoordinator, *, dim: int, shards: int, name: str = "coll"
) -> CollectionInfo:
    s = MilvusClient.create_schema(auto_id=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("title", DataType.VARCHAR, max_length=64)
    request = Prepare.create_collection_request(name, s)
    return await coordinator.catalog.create_collection(
        "default",
        name,
        request.schema,
        create_ts=await coordinator.allocate_timestamp(),
        shards_num=shards,
    )
