"""``proxy`` / ``client``: pymilvus against a proxy served in-process (a real ``grpc.aio``
server in a background thread over memory stores, ``test_pymilvus_ddl.BackgroundProxy``).

``flow_target``: the pymilvus flows run against ``canopy standalone`` (a real process with
embedded storage) and against the shared LocalCluster (coordinator + 2 proxies + 2 streaming
+ 2 query + 1 data nodes as processes on etcd + SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standalone_process import StandaloneProcess

from integration.cluster import LocalCluster


@dataclass(frozen=True)
class ClusterTarget:
    """A LocalCluster seen through one of its proxies."""

    uri: str
    address: str
    objects_uri: str


@pytest.fixture(params=["standalone", "cluster"])
def flow_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "standalone":
        with StandaloneProcess(tmp_path / "data") as proc:
            yield proc
        return
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    proxy = cluster.node(cluster.names("proxy")[-1])  # the second proxy: not only proxy 0
    yield ClusterTarget(f"http://{proxy.address}", proxy.address, cluster.object_store_uri)


@pytest.fixture(scope="module")
def proxy() -> Iterator[Any]:
    from test_pymilvus_ddl import BackgroundProxy

    bg = BackgroundProxy()
    try:
        yield bg
    finally:
        bg.close()


@pytest.fixture
def client(proxy: Any) -> Iterator[Any]:
    from pymilvus import MilvusClient

    c = MilvusClient(uri=proxy.uri)
    try:
        yield c
    finally:
        for name in c.list_collections():
            c.drop_collection(name)
        c.close()
