"""The change feed on a LocalCluster (coordinator, 2 proxies, 2 streaming nodes as processes on
real etcd and SeaweedFS): a writer and a watcher run concurrently; the streaming node that owns
one of the collection's pchannels is SIGKILLed mid-stream, and so is the proxy the watcher
streams from; the watcher resumes from its last token at the other proxy. What it received
equals the acknowledged writes, in order, none lost, none duplicated (writes whose outcome the
writer did not learn may appear, once: ``cluster/FEED.md`` F3). Then ``Admin.ClusterInfo``
shows the survivor owning every channel, the WAL figures and the flushed segments."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from integration.cluster import LocalCluster
from integration.services import EtcdService, S3Service
from sdk.feed import Change, FeedError, cluster_info, watch

pytestmark = pytest.mark.integration

COLLECTION = "feed"
DIM = 8
OPS = 160  # writer operations (inserts of 10 rows, every 5th a delete of 2 earlier rows)
KILL_STREAMING_AT = 50
KILL_PROXY_AT = 90

Event = tuple[str, int]  # (op, pk)


@pytest.fixture
def cluster(
    etcd_service: EtcdService, seaweedfs_service: S3Service, tmp_path: Path
) -> Iterator[LocalCluster]:
    with LocalCluster(
        proxies=2,
        streaming_nodes=2,
        channels=2,
        etcd=etcd_service,
        s3=seaweedfs_service,
        work_dir=tmp_path / "cluster",
        session_ttl=2.0,
        config={"datanode": {"compaction": False}},
    ) as c:
        yield c


class Writer:
    """Sequential writes through proxy 0; ``acked`` / ``unknown``: the events of each write,
    by operation number."""

    def __init__(self, client: MilvusClient) -> None:
        self.client = client
        self.rng = np.random.default_rng(7)
        self.acked: list[tuple[int, list[Event]]] = []
        self.unknown: list[tuple[int, list[Event]]] = []
        self.next_pk = 0
        self.done = 0

    def op(self, k: int) -> None:
        if k % 5 == 4:
            pks = [self.next_pk - 7, self.next_pk - 3]
            events = [("delete", p) for p in pks]
            call = lambda: self.client.delete(COLLECTION, ids=pks)  # noqa: E731
        else:
            pks = list(range(self.next_pk, self.next_pk + 10))
            self.next_pk += 10
            data = [{"id": p, "vec": self.rng.random(DIM).tolist()} for p in pks]
            events = [("insert", p) for p in pks]
            call = lambda: self.client.insert(COLLECTION, data)  # noqa: E731
        try:
            call()
            self.acked.append((k, events))
        except Exception:  # the outcome is unknown to this client
            self.unknown.append((k, events))
        self.done = k + 1


class Watcher(threading.Thread):
    """Watches from ``since``; when its stream breaks it resumes from its last token at the
    next proxy address."""

    def __init__(self, addresses: list[str], since: int) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        self.since: int | str = since
        self.received: list[Change] = []
        self.resumes: list[str] = []
        self.stopping = threading.Event()
        self.current = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        k = 0
        try:
            while not self.stopping.is_set():
                with grpc.insecure_channel(self.addresses[k % len(self.addresses)]) as channel:
                    self.current = watch(
                        channel, COLLECTION, since=self.since, heartbeat_interval=0.2
                    )
                    try:
                        for change in self.current:
                            self.received.append(change)
                            self.since = change.token
                    except FeedError as exc:
                        if self.stopping.is_set():
                            return
                        self.since = exc.token or self.since
                        self.resumes.append(f"{exc.code}: {exc}")
                        k += 1
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def stop(self) -> None:
        self.stopping.set()
        if self.current is not None:
            self.current.close()
        self.join(timeout=30)


def node_owning(cluster: LocalCluster, pchannel: str) -> str:
    with grpc.insecure_channel(cluster.node("proxy-0").address) as channel:
        info = cluster_info(channel, timeout=10)
    owner = next(c["node_id"] for c in info["channels"] if c["pchannel"] == pchannel)
    address = next(n["address"] for n in info["nodes"] if n["node_id"] == owner)
    return next(n for n in cluster.names("streaming") if cluster.node(n).address == address)


def wait_until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_a_watcher_resumed_after_failovers_got_every_acknowledged_write_once_in_order(
    cluster: LocalCluster,
) -> None:
    client = MilvusClient(uri=cluster.uri)
    s = client.create_schema(auto_id=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(COLLECTION, schema=s, shards_num=2)
    with grpc.insecure_channel(cluster.node("proxy-0").address) as channel:
        info = cluster_info(channel, timeout=10)
    (coll,) = [c for c in info["collections"] if c["name"] == COLLECTION]
    pchannels = sorted(coll["pchannels"])
    assert len(pchannels) == 2
    victim = node_owning(cluster, pchannels[0])

    # the watcher starts at proxy 1 from the beginning (the young cluster's WAL holds it all)
    addresses = [cluster.node("proxy-1").address, cluster.node("proxy-0").address]
    watcher = Watcher(addresses, since=0)
    watcher.start()
    writer = Writer(client)
    try:
        for k in range(OPS):
            writer.op(k)
            if k == KILL_STREAMING_AT:
                wait_until(lambda: len(watcher.received) > 10, 60, "the watcher to receive")
                cluster.kill(victim)
            if k == KILL_PROXY_AT:
                # the stream at proxy 1 crossed the failover: it has this write already
                last = set(dict(writer.acked + writer.unknown)[k])
                wait_until(
                    lambda last=last: (
                        last <= {e for c in list(watcher.received) for e in events_of(c)}
                    ),
                    60,
                    "the watcher to follow the failed-over channel",
                )
                assert not watcher.resumes
                cluster.kill("proxy-1")  # the watcher's stream breaks
        acked = [e for _, events in writer.acked for e in events]
        wait_until(
            lambda: {e for c in watcher.received for e in events_of(c)} >= set(acked),
            120,
            "every acknowledged write to reach the watcher",
        )
    finally:
        watcher.stop()
    assert watcher.failure is None, watcher.failure
    assert watcher.resumes, "the watcher's stream never broke"

    received = [e for c in watcher.received for e in events_of(c)]
    assert len(received) == len(set(received)), "a change was delivered twice"
    unknown = {e for _, events in writer.unknown for e in events}
    assert set(acked) <= set(received), "an acknowledged write was lost"
    assert set(received) <= set(acked) | unknown, "a change nobody wrote"
    # in order: the writer's operation numbers never go back along the stream
    op_of = {e: k for k, events in writer.acked + writer.unknown for e in events}
    order = [op_of[e] for e in received]
    assert order == sorted(order)
    stamps = [c.ts for c in watcher.received]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    print(
        f"feed failover: {len(writer.acked)} acked writes, {len(writer.unknown)} unknown, "
        f"{len(watcher.received)} changes, resumes: {watcher.resumes}"
    )

    # the admin view after the failover
    client.flush(COLLECTION)
    with grpc.insecure_channel(cluster.node("proxy-0").address) as channel:
        info = cluster_info(channel, timeout=10)
    assert info["mode"] == "distributed"
    survivors = [n for n in info["nodes"] if n["roles"] == ["streaming"]]
    (survivor,) = survivors
    assert all(c["node_id"] == survivor["node_id"] for c in info["channels"])
    assert all(c["state"] == "assigned" and c["wal"]["exists"] for c in info["channels"])
    assert all(
        c["wal"]["writer_epoch"] >= 2 for c in info["channels"] if c["pchannel"] == pchannels[0]
    )
    (coll,) = [c for c in info["collections"] if c["name"] == COLLECTION]
    assert sorted(coll["pchannels"]) == pchannels
    flushed = [s for s in coll["segments"] if s["state"] == "flushed"]
    assert sum(s["rows"] for s in flushed) >= len([e for e in acked if e[0] == "insert"])


def events_of(change: Change) -> list[Event]:
    if change.op == "delete":
        return [("delete", int(p)) for p in change.pks]
    return [(change.op, int(r["id"])) for r in change.rows]
