"""``canopy storage-check`` against real S3 servers (SeaweedFS, moto) and a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster.storage_check import MODE_CONDITIONAL, StorageReport, check_storage
from integration.services import EtcdService, S3Service, free_port
from woodpecker import LogStore, WalConfig
from woodpecker.objectstore.s3 import S3ObjectStore

REPO = Path(__file__).resolve().parents[2]
EVERY_CHECK = [
    "put",
    "get",
    "range get",
    "head",
    "list",
    "If-None-Match: * (new key)",
    "If-None-Match: * (existing key)",
    "If-Match (current etag)",
    "If-Match (stale etag)",
    "delete",
    "cleanup",
]


def results(report: StorageReport) -> dict[str, str]:
    return {c.name: c.result for c in report.checks}


def store(svc: S3Service, prefix: str, **options: str) -> S3ObjectStore:
    """An S3ObjectStore on ``svc`` with explicit credentials (independent of the environment)."""
    kwargs = {"access_key_id": svc.access_key_id, "secret_access_key": svc.secret_access_key}
    return S3ObjectStore.from_uri(svc.uri(prefix), **{**kwargs, **options})


def scratch_keys(svc: S3Service, prefix: str) -> list[str]:
    listed = svc.boto3_client().list_objects_v2(Bucket=svc.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_seaweedfs_with_etcd_is_usable_in_conditional_mode(
    seaweedfs_service: S3Service, etcd_service: EtcdService, unique_prefix: str
) -> None:
    objects = store(seaweedfs_service, unique_prefix)
    meta = etcd_service.uri(unique_prefix)
    try:
        report = await check_storage(objects, meta)
        assert [results(report)[name] for name in EVERY_CHECK] == ["ok"] * len(EVERY_CHECK)
        assert results(report)["meta lease lock"] == "ok"
        assert results(report)["WAL capability record"] == "-"  # no role has started yet
        assert report.mode == MODE_CONDITIONAL and report.exit_code == 0
        assert report.endpoint == seaweedfs_service.endpoint_url
        assert report.bucket == seaweedfs_service.bucket and report.addressing == "path"
        assert report.region == seaweedfs_service.region
        assert report.checksums == "request when_required, response when_required"
        assert scratch_keys(seaweedfs_service, f"{unique_prefix}/") == []
        # A role's LogStore records its probe; the check then reads the same verdict.
        wal = await LogStore.open(objects, meta, WalConfig())
        await wal.close()
        report = await check_storage(objects, meta)
        assert results(report)["WAL capability record"] == "ok"
        assert report.recorded is not None and report.recorded["conditional_writes"] is True
    finally:
        await objects.close()


async def test_seaweedfs_wrong_credentials_say_so(
    seaweedfs_service: S3Service, unique_prefix: str
) -> None:
    objects = store(seaweedfs_service, unique_prefix, secret_access_key="not-the-secret")
    try:
        report = await check_storage(objects)
    finally:
        await objects.close()
    assert results(report)["put"] == "FAILED" and report.exit_code == 1
    assert report.conditional_writes is None
    assert report.fix is not None and "rejected the credentials" in report.fix


async def test_moto_is_usable_in_conditional_mode(
    moto_service: S3Service, unique_prefix: str
) -> None:
    objects = store(moto_service, unique_prefix)
    try:
        report = await check_storage(objects)
    finally:
        await objects.close()
    assert [results(report)[name] for name in EVERY_CHECK] == ["ok"] * len(EVERY_CHECK)
    assert report.mode == MODE_CONDITIONAL and report.exit_code == 0
    assert scratch_keys(moto_service, f"{unique_prefix}/") == []


async def test_moto_missing_bucket_says_create_it(moto_service: S3Service) -> None:
    objects = S3ObjectStore.from_uri(
        f"s3://no-such-bucket-here/x?endpoint={moto_service.endpoint_url}&region=us-east-1",
        access_key_id=moto_service.access_key_id,
        secret_access_key=moto_service.secret_access_key,
    )
    try:
        report = await check_storage(objects)
    finally:
        await objects.close()
    assert results(report)["put"] == "FAILED" and report.exit_code == 1
    assert report.fix is not None and "'no-such-bucket-here' does not exist" in report.fix


async def test_unreachable_endpoint_says_so() -> None:
    uri = f"s3://canopy/x?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    objects = S3ObjectStore.from_uri(uri, access_key_id="k", secret_access_key="s")
    try:
        report = await check_storage(objects)
    finally:
        await objects.close()
    assert results(report)["put"] == "FAILED" and report.exit_code == 1
    assert report.fix is not None and "unreachable" in report.fix


def test_cli_subprocess_against_seaweedfs_and_etcd(
    seaweedfs_service: S3Service, etcd_service: EtcdService, unique_prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANOPY_")}
    env.update(seaweedfs_service.env(), AWS_EC2_METADATA_DISABLED="true")
    argv = [
        sys.executable,
        "-m",
        "cluster.storage_check",
        "--object-store",
        seaweedfs_service.uri(unique_prefix),
        "--meta",
        etcd_service.uri(unique_prefix),
    ]
    done = subprocess.run(
        [*argv, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["usable"] is True and report["mode"] == MODE_CONDITIONAL
    assert all(c["ok"] is not False for c in report["checks"])
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "RESULT: NOT usable (exit 1)" in done.stdout
    assert "FIX: the server rejected the credentials" in done.stdout
