"""The proxy's index RPCs (cluster/proxy/indexes.py) over a LocalCoordinator that tracks builds:
DescribeIndex / GetIndexState / GetIndexBuildProgress report Milvus's numbers and states."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2
from test_datanode_builds import Env, make_env

from cluster.coordinator.index_builds import BuildResult
from cluster.proxy.indexes import IndexHandlers

STATE = common_pb2.IndexState


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env()
    try:
        yield e
    finally:
        await e.coord.close()
        await e.meta.close()


async def describe(h: IndexHandlers, timestamp: int = 0) -> milvus_pb2.IndexDescription:
    req = milvus_pb2.DescribeIndexRequest(collection_name="c", timestamp=timestamp)
    (desc,) = (await h.describe_index(req, "default")).index_descriptions
    return desc


async def test_index_rpcs_report_build_progress(env: Env) -> None:
    h = IndexHandlers(env.coord, env.coord.catalog)
    await env.create_index()
    desc = await describe(h)
    assert (desc.state, desc.total_rows, desc.indexed_rows) == (STATE.Finished, 0, 0)

    seg_a = await env.flush(rows=70)  # after the index: background, Finished stays
    desc = await describe(h)
    assert (desc.state, desc.total_rows, desc.pending_index_rows) == (STATE.Finished, 70, 70)
    later = await env.coord.allocate_timestamp()  # pymilvus' create_index waits with this
    assert (await describe(h, later)).state == STATE.InProgress

    task = await env.coord.claim_index_build(1)
    assert task is not None and task.segment_id == seg_a
    await env.coord.finish_index_build(task, BuildResult("k", 70, "HNSW", 0.1))
    desc = await describe(h, later)
    assert (desc.state, desc.indexed_rows, desc.pending_index_rows) == (STATE.Finished, 70, 0)

    await env.flush(rows=30)
    task = await env.coord.claim_index_build(1)
    assert task is not None
    await env.coord.fail_index_build(task, "SegmentCorrupt: bad page", False)
    desc = await describe(h, await env.coord.allocate_timestamp())
    assert (desc.state, desc.indexed_rows, desc.total_rows) == (STATE.Failed, 70, 100)
    assert desc.index_state_fail_reason == f"{task.segment_id}: SegmentCorrupt: bad page;"
    # GetIndexState and GetIndexBuildProgress use the index's create timestamp (as Milvus)
    state = await h.get_index_state(
        milvus_pb2.GetIndexStateRequest(collection_name="c", field_name="vector"), "default"
    )
    assert state.state == STATE.Finished  # both segments came after the index
    built = await h.get_index_build_progress(
        milvus_pb2.GetIndexBuildProgressRequest(collection_name="c"), "default"
    )
    assert (built.indexed_rows, built.total_rows) == (70, 100)
