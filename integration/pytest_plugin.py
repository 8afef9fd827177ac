"""pytest fixtures for running tests against a Canopy cluster (loaded automatically through
the ``pytest11`` entry point once Canopy is installed).

* ``local_cluster`` (session): a :class:`~integration.cluster.LocalCluster` -- coordinator,
  2 proxies, 2 streaming nodes, 2 query nodes, 1 data node -- on etcd and SeaweedFS that it
  starts itself. Tests share it:
  use your own collection names. For crash tests make your own ``LocalCluster`` per test.
* ``local_cluster_services`` (session): ``(etcd, s3)`` services the cluster should use instead
  of starting its own; ``(None, None)`` by default. Override it in a ``conftest.py`` to reuse
  services your suite already runs.

    def test_insert(local_cluster):
        client = MilvusClient(uri=local_cluster.uri)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from integration.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster_services() -> tuple[Any, Any]:
    return None, None


@pytest.fixture(scope="session")
def local_cluster(
    local_cluster_services: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    etcd, s3 = local_cluster_services
    with LocalCluster(
        proxies=2,
        streaming_nodes=2,
        query_nodes=2,
        data_nodes=1,
        etcd=etcd,
        s3=s3,
        work_dir=tmp_path_factory.mktemp("canopy-cluster"),
    ) as cluster:
        yield cluster
