"""The project's own dev services: etcd, SeaweedFS, moto, the fixtures and `canopy dev services`."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import aetcd
import pytest
from botocore.exceptions import ClientError

from integration.processes import proc_cmdline
from integration.services import (
    GRPC_PORT_OFFSET,
    SEAWEEDFS_ACCESS_KEY_ID,
    EtcdService,
    S3Service,
    _boto3_client,
    etcd_running,
    free_port,
    moto_running,
    pid_alive,
    seaweedfs_running,
)

REPO = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _etcd_put_get(svc: EtcdService, key: bytes, value: bytes) -> bytes | None:
    client = aetcd.Client(svc.host, svc.port)
    try:
        await client.put(key, value)
        got = await client.get(key)
        return None if got is None else got.value
    finally:
        await client.close()


def _gateway_get(svc: EtcdService, key: bytes) -> bytes:
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    with urllib.request.urlopen(f"{svc.client_url}/v3/kv/range", body, timeout=5) as resp:
        kvs = json.load(resp)["kvs"]
    return base64.b64decode(kvs[0]["value"])


def _s3_roundtrip(svc: S3Service, key: str) -> None:
    s3 = svc.boto3_client()
    s3.put_object(Bucket=svc.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    assert s3.get_object(Bucket=svc.bucket, Key=key)["Body"].read() == b"first"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=svc.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=svc.bucket, Key=key)["Body"].read() == b"first"


def test_free_port_pair() -> None:
    port = free_port(pair_with_grpc_twin=True)
    assert not _listening(port)
    assert not _listening(port + GRPC_PORT_OFFSET)
    assert free_port() != free_port()


async def test_etcd_start_put_get_stop(tmp_path: Path) -> None:
    with etcd_running(tmp_path) as svc:
        assert svc.endpoint == f"127.0.0.1:{svc.port}"
        assert svc.uri("p/q") == f"etcd://127.0.0.1:{svc.port}/p/q"
        assert await _etcd_put_get(svc, b"canopy/k", b"v1") == b"v1"
        assert _gateway_get(svc, b"canopy/k") == b"v1"  # the JSON gateway answers too
        pid = svc.pid
        assert pid is not None and pid_alive(pid)
    assert not pid_alive(pid)
    assert not _listening(svc.port)


async def test_etcd_fixture(etcd_service: EtcdService, unique_prefix: str) -> None:
    key = f"{unique_prefix}/k".encode()
    assert await _etcd_put_get(etcd_service, key, b"x") == b"x"


def test_seaweedfs_start_put_get_stop(tmp_path: Path, unique_prefix: str) -> None:
    with seaweedfs_running(tmp_path, bucket="lifecycle") as svc:
        assert svc.kind == "seaweedfs"
        assert svc.uri("a/b") == f"s3://lifecycle/a/b?endpoint={svc.endpoint_url}&region=us-east-1"
        assert svc.env()["AWS_ACCESS_KEY_ID"] == SEAWEEDFS_ACCESS_KEY_ID
        cmdline = proc_cmdline(svc.pid or 0)
        assert "-master.telemetry=false" in cmdline
        assert "-ip.bind=127.0.0.1" in cmdline
        _s3_roundtrip(svc, f"{unique_prefix}/obj")
        # authentication is on: a request signed with another key is refused
        stranger = _boto3_client(svc.endpoint_url, svc.region, "nobody", "wrong")
        with pytest.raises(ClientError):
            stranger.list_buckets()
        pid = svc.pid
        port = int(svc.endpoint_url.rsplit(":", 1)[1])
    assert pid is not None and not pid_alive(pid)
    assert not _listening(port)


def test_seaweedfs_fixture(seaweedfs_service: S3Service, unique_prefix: str) -> None:
    _s3_roundtrip(seaweedfs_service, f"{unique_prefix}/obj")


def test_moto_start_put_get_stop(unique_prefix: str) -> None:
    with moto_running(bucket="lifecycle") as svc:
        assert svc.kind == "moto"
        _s3_roundtrip(svc, f"{unique_prefix}/obj")
        pid, log = svc.pid, svc.log_path
    assert pid is not None and not pid_alive(pid)
    assert log is not None and not log.exists()  # its temp log dir is removed at stop


def test_moto_fixture(moto_service: S3Service, unique_prefix: str) -> None:
    _s3_roundtrip(moto_service, f"{unique_prefix}/obj")


def test_unique_prefix_and_marker(request: pytest.FixtureRequest, unique_prefix: str) -> None:
    assert unique_prefix.startswith("test_unique_prefix_and_marker-")
    assert request.node.get_closest_marker("integration") is not None


def _canopy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_cli_version_and_errors() -> None:
    assert _canopy("version").stdout.startswith("canopy ")
    bad = _canopy("no-such-command")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_cli_dev_services_roundtrip(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    up = _canopy("dev", "services", "up", "--state-dir", str(state_dir))
    if "invalid choice: 'dev'" in up.stderr:
        pytest.fail(
            "the `canopy dev` entry point is not installed: python3 -m pip install -e '.[dev]'"
        )
    state = json.loads((state_dir / "services.json").read_text()) if up.returncode == 0 else {}
    pids = [r["pid"] for r in state.get("services", {}).values()]
    try:
        assert up.returncode == 0, up.stderr
        assert "export AWS_ACCESS_KEY_ID=canopy" in up.stdout
        assert "--object-store 's3://canopy/" in up.stdout
        assert "--meta etcd://127.0.0.1:" in up.stdout
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)

        status = _canopy("dev", "services", "status", "--state-dir", str(state_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") == 2

        again = _canopy("dev", "services", "up", "--state-dir", str(state_dir))
        assert again.returncode == 2
        assert "already running" in again.stderr and "Traceback" not in again.stderr
    finally:
        down = _canopy("dev", "services", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped: etcd, s3" in down.stdout
    assert not any(pid_alive(p) for p in pids)
    assert not (state_dir / "services.json").exists()

    gone = _canopy("dev", "services", "down", "--state-dir", str(state_dir))
    assert gone.returncode == 2
    assert len(gone.stderr.strip().splitlines()) == 1
    assert gone.stderr.startswith("canopy: error: no dev services recorded")
