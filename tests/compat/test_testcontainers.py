"""Canopy in Docker through ``integration.testcontainers``, the way a user's own test suite
runs it: the whole pymilvus MilvusClient flow (``milvus_flow.py``, judged by the same
``check_flow_result`` as against local processes) against ``CanopyContainer`` (standalone) and
against ``CanopyCluster`` (etcd + SeaweedFS + coordinator + streaming nodes + proxies, each in
its own container on one network), through the ``canopy_container`` / ``canopy_cluster``
fixtures of Canopy's pytest plugin.

Needs a Docker daemon and the images ``$CANOPY_IMAGE`` / ``$CANOPY_SERVICES_IMAGE``:
``scripts/test`` starts one and builds them (``deploy/build-image.sh``)."""

from __future__ import annotations

from typing import Any

import milvus_flow as flow
import pytest
from pymilvus import MilvusClient
from test_pymilvus_flow import check_flow_result

from integration.testcontainers import (
    NETWORK_ENV,
    CanopyCluster,
    CanopyContainer,
    ContainerStartError,
)

pytestmark = [pytest.mark.compat, pytest.mark.containers]


def run_flow(uri: str) -> dict[str, Any]:
    """The flow; its flush event is only recorded (the segments live inside the containers,
    where the test cannot read them as the process-based flow test does)."""
    flushed: list[dict[str, Any]] = []
    result = flow.run_flow(uri, on_flushed=flushed.append)
    assert [e.get("event") for e in flushed] == ["flushed"]
    return result


def test_pymilvus_flow_against_canopy_container(canopy_container: CanopyContainer) -> None:
    check_flow_result(run_flow(canopy_container.uri), None, "3.")


def test_container_runs_as_non_root_and_reports_healthy(
    canopy_container: CanopyContainer,
) -> None:
    wrapped = canopy_container.get_wrapped_container()
    assert canopy_container.exec(["id", "-u"]).output.decode().strip() == "10001"
    health = canopy_container.exec(["canopy", "health", "--ready"])
    assert health.exit_code == 0, health.output
    assert health.output.decode().strip() == "standalone: ok"
    wrapped.reload()
    config = wrapped.attrs["Config"]
    assert config["Healthcheck"]["Test"] == ["CMD", "canopy", "health", "--ready"]
    assert config["Entrypoint"] == ["canopy"]


def test_pymilvus_flow_against_canopy_cluster(canopy_cluster: CanopyCluster) -> None:
    assert set(canopy_cluster.containers) == {
        "etcd",
        "s3",
        "coordinator",
        "streaming-0",
        "streaming-1",
        "proxy-0",
        "proxy-1",
    }
    # through the second proxy: not only proxy 0
    check_flow_result(run_flow(canopy_cluster.uris[1]), None, "3.")


def test_cluster_roles_share_one_catalog_and_report_ready(canopy_cluster: CanopyCluster) -> None:
    first, second = (MilvusClient(uri=u) for u in canopy_cluster.uris)
    first.create_collection("tc_shared", dimension=4)
    try:
        first.insert("tc_shared", [{"id": i, "vector": [i, 0.0, 0.0, 1.0]} for i in range(10)])
        rows = second.query("tc_shared", filter="id >= 0", consistency_level="Strong")
        assert sorted(r["id"] for r in rows) == list(range(10))
    finally:
        first.drop_collection("tc_shared")
    for name, container in canopy_cluster.containers.items():
        if name in ("etcd", "s3"):
            continue
        port = container.env["CANOPY_HEALTH__PORT"]
        ready = container.exec(["canopy", "health", "--ready", "--port", port])
        assert ready.exit_code == 0, (name, ready.output)
        assert ready.output.decode().startswith(name.split("-")[0]), (name, ready.output)


def test_a_container_that_cannot_start_is_reported_with_its_logs() -> None:
    container = CanopyContainer(start_timeout=30, args=["--channels", "0"])
    with pytest.raises(ContainerStartError) as failure:
        container.start()
    assert "--channels must be at least 1" in str(failure.value)


def test_host_network_mode_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where published ports are unavailable (a daemon without a bridge network), the
    container shares the host's network and listens on 127.0.0.1 on a free port."""
    monkeypatch.setenv(NETWORK_ENV, "host")
    with CanopyContainer() as canopy:
        assert canopy.host_network
        host, port = canopy.address.split(":")
        assert host == "127.0.0.1" and int(port) != 19530
        wrapped = canopy.get_wrapped_container()
        assert wrapped.attrs["HostConfig"]["NetworkMode"] == "host"
        client = MilvusClient(uri=canopy.uri)
        client.create_collection("tc_host", dimension=4)
        client.insert("tc_host", [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
        got = client.get("tc_host", ids=[1])
        assert [row["id"] for row in got] == [1]
