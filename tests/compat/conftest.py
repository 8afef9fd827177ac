"""``flow_target``: the pymilvus flows run against ``canopy standalone`` (a real process with
embedded storage) and against the shared LocalCluster (coordinator + 2 proxies + 2 streaming
nodes as processes on etcd + SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
