"""Query nodes in a LocalCluster (coordinator, 2 proxies, 2 streaming, 2 query, 1 data node as
processes on real etcd and SeaweedFS): sealed segments of a loaded collection are spread over
the query nodes, deletes reach them (buffered and flushed), and killing one moves its segments
to the other within seconds while every search keeps answering the same."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster_support import DIM, rows, schema
from pymilvus import MilvusClient

from cluster.coordinator.query_assign import (
    ASSIGN_PREFIX,
    LOADED_PREFIX,
    QUERY,
    SegmentAssignment,
    parse_loaded_key,
)
from cluster.coordinator.sessions import SessionInfo, role_prefix
from integration.cluster import LocalCluster
from integration.services import EtcdService, S3Service
from woodpecker.meta import open_meta_store

COLLECTION = "qn"
BATCHES = 4
BATCH = 500


@pytest.fixture
def cluster(
    etcd_service: EtcdService, seaweedfs_service: S3Service, tmp_path: Path
) -> Iterator[LocalCluster]:
    with LocalCluster(
        proxies=2,
        streaming_nodes=2,
        query_nodes=2,
        data_nodes=1,
        channels=2,
        etcd=etcd_service,
        s3=seaweedfs_service,
        work_dir=tmp_path / "cluster",
        session_ttl=2.0,
        # the test counts segments per node: no compaction merging them meanwhile (the shared
        # cluster of the compat flows compacts)
        config={"datanode": {"compaction": False}},
    ) as c:
        yield c


def serving(cluster: LocalCluster) -> tuple[dict[int, SegmentAssignment], dict[int, set[int]]]:
    """(segment id -> assignment, query node name index -> loaded segment ids) from etcd."""

    async def read() -> tuple[dict[int, SegmentAssignment], dict[int, set[int]], dict[int, str]]:
        meta = open_meta_store(cluster.meta_uri)
        try:
            assigned = {
                (a := SegmentAssignment.decode(kv.value)).segment_id: a
                for kv in await meta.range(ASSIGN_PREFIX)
            }
            loaded: dict[int, set[int]] = {}
            for kv in await meta.range(LOADED_PREFIX):
                parsed = parse_loaded_key(kv.key)
                if parsed is not None:
                    loaded.setdefault(parsed[0], set()).add(parsed[2])
            ports = {
                (s := SessionInfo.decode(kv.value)).node_id: s.address
                for kv in await meta.range(role_prefix(QUERY))
            }
            return assigned, loaded, ports
        finally:
            await meta.close()

    assigned, loaded, addresses = asyncio.run(read())
    by_name = {cluster.node(n).address: i for i, n in enumerate(cluster.names("query"))}
    named = {by_name[addresses[node]]: sids for node, sids in loaded.items() if node in addresses}
    return assigned, named


def wait_until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def top_ids(client: MilvusClient, queries: np.ndarray) -> list[list[int]]:
    hits = client.search(
        COLLECTION,
        queries.tolist(),
        limit=10,
        search_params={"metric_type": "L2", "params": {"ef": 256}},
        consistency_level="Strong",
    )
    return [[h["id"] for h in per_query] for per_query in hits]


def count(client: MilvusClient) -> int:
    res = client.query(
        COLLECTION, filter="", output_fields=["count(*)"], consistency_level="Strong"
    )
    return int(res[0]["count(*)"])


def test_segments_spread_deletes_reach_them_and_a_killed_node_is_replaced(
    cluster: LocalCluster,
) -> None:
    client = MilvusClient(uri=cluster.uri)
    client.create_collection(COLLECTION, schema=schema(client), consistency_level="Strong")
    rng = np.random.default_rng(11)
    vectors: dict[int, list[float]] = {}
    for b in range(BATCHES):
        batch = rows(range(b * BATCH, (b + 1) * BATCH), rng)
        vectors.update({r["id"]: r["vec"] for r in batch})
        client.insert(COLLECTION, batch)
        client.flush(COLLECTION)
    params = client.prepare_index_params()
    params.add_index(
        "vec", index_type="HNSW", metric_type="L2", params={"M": 16, "efConstruction": 100}
    )
    client.create_index(COLLECTION, params)
    client.load_collection(COLLECTION)  # returns once the query nodes hold every segment
    assigned, loaded = serving(cluster)
    assert len(assigned) >= BATCHES and set().union(*loaded.values()) >= set(assigned)

    # every sealed segment is assigned and loaded, on both query nodes
    def spread() -> tuple | None:
        assigned, loaded = serving(cluster)
        held = set().union(*loaded.values()) if loaded else set()
        ok = assigned and held >= set(assigned) and len([v for v in loaded.values() if v]) == 2
        return (assigned, loaded) if ok else None

    assigned, loaded = wait_until(spread, 30, "segments loaded on both query nodes")
    assert len(assigned) >= BATCHES

    # reads through the query nodes: a stored vector finds its own row first
    probe = [0, BATCH + 1, 2 * BATCH + 2, 3 * BATCH + 3]
    queries = np.array([vectors[i] for i in probe], dtype=np.float32)
    assert [ids[0] for ids in top_ids(client, queries)] == probe
    assert count(client) == BATCHES * BATCH

    # a delete (still buffered on the streaming node) hides the rows on the query nodes ...
    client.delete(COLLECTION, ids=probe[:2])
    after = top_ids(client, queries)
    assert all(i not in ids for ids in after for i in probe[:2])
    assert count(client) == BATCHES * BATCH - 2
    assert client.get(COLLECTION, ids=probe[:2]) == []
    # ... and so it does once flushed into delete logs
    client.flush(COLLECTION)
    assert top_ids(client, queries) == after
    assert count(client) == BATCHES * BATCH - 2

    # kill query-0: its segments move to query-1; no search fails or changes meanwhile
    cluster.kill("query-0")
    failures: list[str] = []
    started = time.monotonic()
    moved_after = None
    while time.monotonic() - started < 12:
        try:
            got = top_ids(client, queries)
            if got != after:
                failures.append(
                    f"results changed at {time.monotonic() - started:.1f}s: {got} != {after} "
                    f"(serving: {serving(cluster)})"
                )
        except Exception as exc:
            failures.append(f"{time.monotonic() - started:.1f}s: {exc}")
        if moved_after is None:
            assigned, loaded = serving(cluster)
            if set(loaded.get(1, ())) >= set(assigned) and 0 not in loaded:
                moved_after = time.monotonic() - started
        time.sleep(0.1)
    assert failures == []
    assert moved_after is not None, f"segments never all moved to query-1: {serving(cluster)}"
    print(f"\nquery-0 killed: its segments loaded on query-1 after {moved_after:.1f} s")
    assert count(client) == BATCHES * BATCH - 2

    # it comes back: segments are balanced onto it again, reads unchanged throughout
    cluster.start_node("query-0")
    wait_until(spread, 30, "segments balanced over both query nodes again")
    assert top_ids(client, queries) == after
    client.drop_collection(COLLECTION)
    # released and dropped: nothing stays assigned
    wait_until(lambda: not serving(cluster)[0], 15, "assignments removed after the drop")
    assert DIM == queries.shape[1]
