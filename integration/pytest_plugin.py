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

* ``canopy_container`` (module): a :class:`~integration.testcontainers.CanopyContainer`
  (``canopy standalone`` in Docker, image ``$CANOPY_IMAGE`` or ``canopy:latest``).
* ``canopy_cluster`` (module): a :class:`~integration.testcontainers.CanopyCluster` (etcd,
  SeaweedFS, coordinator, 2 streaming nodes, 2 proxies in containers on one network).

    def test_in_docker(canopy_container):
        client = MilvusClient(uri=canopy_container.uri)

Both need a Docker daemon, the images (``bash deploy/build-image.sh --services``) and
``pip install 'canopy[testcontainers]'``.
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


@pytest.fixture(scope="module")
def canopy_container() -> Iterator[Any]:
    from integration.testcontainers import CanopyContainer

    with CanopyContainer() as container:
        yield container


@pytest.fixture(scope="module")
def canopy_cluster() -> Iterator[Any]:
    from integration.testcontainers import CanopyCluster

    with CanopyCluster(proxies=2, streaming_nodes=2) as cluster:
        yield cluster
