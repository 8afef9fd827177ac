"""A LocalCluster (coordinator + 2 proxies + 2 streaming nodes as processes on real etcd and
SeaweedFS): the write path end to end, crashes of streaming nodes, and restarts."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cluster_support import channel_owners, rows, schema, stored_rows
from pymilvus import MilvusClient
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

from integration.cluster import LocalCluster
from integration.services import EtcdService, S3Service


@pytest.fixture
def cluster(
    etcd_service: EtcdService, seaweedfs_service: S3Service, tmp_path: Path
) -> Iterator[LocalCluster]:
    with LocalCluster(
        proxies=2,
        streaming_nodes=2,
        channels=4,
        etcd=etcd_service,
        s3=seaweedfs_service,
        work_dir=tmp_path / "cluster",
        session_ttl=2.0,
    ) as c:
        yield c


def _alloc_ts(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        reply = stub.AllocTimestamp(milvus_pb2.AllocTimestampRequest(), timeout=30)
    assert reply.status.code == 0, reply.status.reason
    return reply.timestamp


def _wait_balanced(cluster: LocalCluster, timeout: float = 20.0) -> dict[str, str | None]:
    """Until every streaming node owns a channel (the manager rebalances after start)."""
    deadline = time.monotonic() + timeout
    while True:
        owners = channel_owners(cluster)
        if set(owners.values()) == set(cluster.names("streaming")):
            return owners
        assert time.monotonic() < deadline, f"channels never spread over the nodes: {owners}"
        time.sleep(0.2)


def test_write_path_through_both_proxies(cluster: LocalCluster) -> None:
    rng = np.random.default_rng(1)
    a, b = (MilvusClient(uri=uri) for uri in cluster.proxy_uris)
    a.create_collection("docs", schema=schema(a), num_shards=4)
    assert b.list_collections() == ["docs"]  # DDL is the coordinator's: every proxy sees it
    cid = b.describe_collection("docs")["collection_id"]
    assert a.insert("docs", rows(range(0, 500), rng))["insert_count"] == 500
    assert b.insert("docs", rows(range(500, 1000), rng))["insert_count"] == 500
    assert b.upsert("docs", rows(range(0, 10), rng, "u"))["upsert_count"] == 10
    assert a.delete("docs", ids=[20, 21])["delete_count"] == 2
    b.create_partition("docs", "p1")
    assert sorted(a.list_partitions("docs")) == ["_default", "p1"]
    b.flush("docs")  # flushed through proxy b, across both streaming nodes
    counts, deletes = stored_rows(cluster, cid)
    assert set(counts) == set(range(1000))
    assert all(counts[i] == (2 if i < 10 else 1) for i in range(1000))  # upsert = new version
    assert set(deletes) >= {20, 21}
    a.drop_collection("docs")
    assert b.list_collections() == []
    a.close()
    b.close()


def test_streaming_node_sigkill_moves_channels_and_loses_no_acked_row(
    cluster: LocalCluster,
) -> None:
    rng = np.random.default_rng(2)
    owners = _wait_balanced(cluster)
    victim = "streaming-0"
    survivor = "streaming-1"
    assert victim in owners.values()
    clients = [MilvusClient(uri=uri) for uri in cluster.proxy_uris]
    clients[0].create_collection("crash", schema=schema(clients[0]), num_shards=4)
    cid = clients[0].describe_collection("crash")["collection_id"]

    acked: set[int] = set()
    failed: set[int] = set()
    batch, next_id = 100, 0
    killed_at = recovered_at = None
    acked_after_recovery = 0
    deadline = time.monotonic() + 120
    while acked_after_recovery < 15:
        assert time.monotonic() < deadline, "writes never recovered after the kill"
        ids = range(next_id, next_id + batch)
        next_id += batch
        client = clients[(next_id // batch) % 2]
        try:
            client.insert("crash", rows(ids, rng))
        except Exception:
            failed.update(ids)
            time.sleep(0.05)
        else:
            acked.update(ids)
            if killed_at is not None:
                if recovered_at is None:
                    recovered_at = time.monotonic()
                acked_after_recovery += 1
        if killed_at is None and len(acked) >= 1000:
            cluster.kill(victim)  # mid-stream: the next batches hit its channels
            killed_at = time.monotonic()
    assert killed_at is not None and recovered_at is not None
    print(f"writable again {recovered_at - killed_at:.2f}s after the SIGKILL (ttl 2 s)")

    owners = channel_owners(cluster)
    assert set(owners.values()) == {survivor}, owners  # every channel moved to the survivor
    clients[1].flush("crash")
    counts, _ = stored_rows(cluster, cid)
    assert {pk for pk in acked if counts[pk] != 1} == set()  # every acked row exactly once
    assert all(counts[pk] <= 1 for pk in failed)  # an unacknowledged row at most once
    assert set(counts) <= acked | failed
    for client in clients:
        client.close()


def test_whole_cluster_restart_keeps_every_row(cluster: LocalCluster) -> None:
    rng = np.random.default_rng(3)
    client = MilvusClient(uri=cluster.uri)
    client.create_collection("keep", schema=schema(client), num_shards=2)
    cid = client.describe_collection("keep")["collection_id"]
    client.insert("keep", rows(range(0, 300), rng))
    client.flush("keep")
    client.insert("keep", rows(range(300, 600), rng))  # in the WAL only
    client.close()

    for name in cluster.names("proxy") + cluster.names("streaming") + ["coordinator"]:
        cluster.stop_node(name)
    for name in ["coordinator", *cluster.names("streaming"), *cluster.names("proxy")]:
        cluster.start_node(name)
    cluster.wait_ready()

    client = MilvusClient(uri=cluster.proxy_uris[1])
    assert client.describe_collection("keep")["collection_id"] == cid
    client.insert("keep", rows(range(600, 700), rng))
    client.flush("keep")
    counts, _ = stored_rows(cluster, cid)
    assert counts == {i: 1 for i in range(700)}
    client.close()


def test_timestamps_increase_across_coordinator_restarts(cluster: LocalCluster) -> None:
    proxy = cluster.node("proxy-0").address
    seen = [_alloc_ts(proxy) for _ in range(5)]
    cluster.kill("coordinator")  # a crash: the next one must not reuse its window
    cluster.start_node("coordinator")
    seen += [_alloc_ts(proxy) for _ in range(5)]
    cluster.restart("coordinator")  # a clean restart
    seen += [_alloc_ts(cluster.node("proxy-1").address) for _ in range(5)]
    assert all(a < b for a, b in itertools.pairwise(seen)), seen
    client = MilvusClient(uri=cluster.uri)  # and the cluster still serves DDL and writes
    client.create_collection("after", schema=schema(client))
    assert client.insert("after", rows(range(10), np.random.default_rng(4)))["insert_count"] == 10
    client.close()


def test_a_cluster_with_its_own_services_cleans_up_after_itself() -> None:
    from integration.processes import pid_alive

    with LocalCluster(proxies=1, streaming_nodes=1, channels=1) as own:
        assert own.etcd is not None and own.s3 is not None
        pids = [own.etcd.pid, own.s3.pid] + [n.proc.pid for n in own.nodes.values() if n.proc]
        work_dir = own.work_dir
        assert all(pid is not None and pid_alive(pid) for pid in pids)
        client = MilvusClient(uri=own.uri)
        client.create_collection("own", schema=schema(client))
        assert client.insert("own", rows(range(5), np.random.default_rng(5)))["insert_count"] == 5
        client.close()
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert not work_dir.exists()  # its own temp dir is removed too


def test_search_and_query_scatter_over_both_streaming_nodes(cluster: LocalCluster) -> None:
    rng = np.random.default_rng(6)
    _wait_balanced(cluster)
    writer, reader = (MilvusClient(uri=uri) for uri in cluster.proxy_uris)
    writer.create_collection("reads", schema=schema(writer), num_shards=4)
    index = writer.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="L2")
    writer.create_index("reads", index)
    writer.load_collection("reads")
    data = rows(range(400), rng)
    writer.insert("reads", data)
    vectors = np.array([r["vec"] for r in data], dtype=np.float32)
    queries = rng.random((3, vectors.shape[1]), dtype=np.float32)
    hits = reader.search(
        "reads", queries.tolist(), limit=5, output_fields=["title"], consistency_level="Strong"
    )
    for q, result in zip(queries, hits, strict=True):
        exact = np.argsort(((vectors - q) ** 2).sum(axis=1))[:5]
        assert [h["id"] for h in result] == exact.tolist()  # ids are row numbers here
        assert all(h["entity"]["title"] == f"r{h['id']}" for h in result)
    count = reader.query("reads", filter="", output_fields=["count(*)"], consistency_level="Strong")
    assert count[0]["count(*)"] == 400
    writer.delete("reads", ids=[int(hits[0][0]["id"])])
    again = reader.search("reads", queries[:1].tolist(), limit=5, consistency_level="Strong")
    assert hits[0][0]["id"] not in [h["id"] for h in again[0]]
    got = reader.query(
        "reads", filter="id in [1, 2, 3] and title like 'r%'", consistency_level="Strong"
    )
    assert sorted(r["id"] for r in got) == [i for i in (1, 2, 3) if i != hits[0][0]["id"]]
    writer.close()
    reader.close()


def test_index_build_progress_reaches_the_other_proxy(cluster: LocalCluster) -> None:
    rng = np.random.default_rng(7)
    writer, reader = (MilvusClient(uri=uri) for uri in cluster.proxy_uris)
    writer.create_collection("built", schema=schema(writer), num_shards=2)
    for start in range(0, 3000, 1000):
        writer.insert("built", rows(range(start, start + 1000), rng))
    writer.flush("built")
    index = writer.prepare_index_params()
    index.add_index(
        "vec", index_name="vec_hnsw", index_type="HNSW", metric_type="L2", M=8, efConstruction=64
    )
    writer.create_index("built", index)
    # the coordinator's embedded data-node worker builds it; progress is the coordinator's,
    # asked over gRPC by whichever proxy answers
    deadline = time.monotonic() + 60
    while True:
        desc = reader.describe_index("built", "vec_hnsw")
        if desc["indexed_rows"] == 3000 and desc["pending_index_rows"] == 0:
            break
        assert time.monotonic() < deadline, f"the index was never reported built: {desc}"
        time.sleep(0.5)
    assert desc["total_rows"] == 3000 and desc["state"] == "Finished"
    assert desc["index_type"] == "HNSW"
    writer.close()
    reader.close()
