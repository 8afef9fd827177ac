"""Shared pytest fixtures: real services, unique key prefixes, tier markers.

Session fixtures (each started lazily on first use, stopped at the end of the session):

* ``etcd_service`` -> :class:`integration.services.EtcdService`
* ``seaweedfs_service`` -> :class:`integration.services.S3Service` (kind "seaweedfs")
* ``moto_service`` -> :class:`integration.services.S3Service` (kind "moto")

External services instead of local processes:

* ``CANOPY_TEST_ETCD_ENDPOINT=host:port`` -> ``etcd_service`` uses that etcd.
* ``CANOPY_TEST_S3_ENDPOINT=http://host:port`` -> ``seaweedfs_service`` uses that S3 server
  (kind "external"), with ``CANOPY_TEST_S3_BUCKET`` (default "canopy", must exist),
  ``CANOPY_TEST_S3_REGION`` (default ``AWS_DEFAULT_REGION`` or us-east-1) and
  ``CANOPY_TEST_S3_ACCESS_KEY_ID`` / ``CANOPY_TEST_S3_SECRET_ACCESS_KEY`` (default the
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment).

While ``seaweedfs_service`` is in use, the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) are set to its credentials, so code that takes
credentials from the environment (a bare ``s3://`` URI) works; moto accepts any credentials.

Every test under ``tests/unit`` is marked ``unit``, ``tests/contract`` ``contract``,
``tests/integration`` ``integration`` (and ``sim``/``compat``/``e2e`` likewise).
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.services import (
    DEFAULT_BUCKET,
    DEFAULT_REGION,
    EtcdService,
    S3Service,
    start_etcd,
    start_moto,
    start_seaweedfs,
    stop,
)

TESTS_DIR = Path(__file__).resolve().parent

# First directory under tests/ -> marker.
DIR_MARKERS = {
    "unit": "unit",
    "contract": "contract",
    "integration": "integration",
    "sim": "sim",
    "simulation": "sim",
    "compat": "compat",
    "e2e": "e2e",
}


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI timeout, scripts/test's trap) ends the run like Ctrl-C, so session fixtures
    # still stop the services they started.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = Path(item.path).resolve().relative_to(TESTS_DIR)
        except ValueError:
            continue
        if len(rel.parts) > 1 and (marker := DIR_MARKERS.get(rel.parts[0])):
            item.add_marker(getattr(pytest.mark, marker))


# --- services ------------------------------------------------------------------------------------


def _set_aws_env(mp: pytest.MonkeyPatch, svc: S3Service, *, overwrite: bool) -> None:
    if not overwrite and os.environ.get("AWS_ACCESS_KEY_ID"):
        return
    for key, value in svc.env().items():
        mp.setenv(key, value)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def etcd_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdService]:
    """A running etcd (local process, or ``CANOPY_TEST_ETCD_ENDPOINT``)."""
    external = os.environ.get("CANOPY_TEST_ETCD_ENDPOINT")
    if external:
        host, _, port = external.removeprefix("http://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise pytest.UsageError(
                f"CANOPY_TEST_ETCD_ENDPOINT must be host:port, got {external!r}"
            )
        yield EtcdService(host, int(port), None, None)
        return
    svc = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield svc
    finally:
        stop(svc)


@pytest.fixture(scope="session")
def seaweedfs_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """A running SeaweedFS S3 server (or the external S3 of ``CANOPY_TEST_S3_ENDPOINT``)."""
    external = os.environ.get("CANOPY_TEST_S3_ENDPOINT")
    if external:
        endpoint = external if "://" in external else f"http://{external}"
        key_id = os.environ.get(
            "CANOPY_TEST_S3_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "")
        )
        secret = os.environ.get(
            "CANOPY_TEST_S3_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        )
        if not key_id or not secret:
            raise pytest.UsageError(
                "CANOPY_TEST_S3_ENDPOINT needs credentials: set CANOPY_TEST_S3_ACCESS_KEY_ID and "
                "CANOPY_TEST_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            )
        svc = S3Service(
            endpoint_url=endpoint.rstrip("/"),
            bucket=os.environ.get("CANOPY_TEST_S3_BUCKET", DEFAULT_BUCKET),
            region=os.environ.get(
                "CANOPY_TEST_S3_REGION", os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION)
            ),
            access_key_id=key_id,
            secret_access_key=secret,
            pid=None,
            kind="external",
        )
    else:
        svc = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    mp = pytest.MonkeyPatch()
    try:
        _set_aws_env(mp, svc, overwrite=True)
        yield svc
    finally:
        mp.undo()
        stop(svc)


@pytest.fixture(scope="session")
def moto_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """A running moto S3 server (in memory; accepts any credentials)."""
    svc = start_moto(data_dir=tmp_path_factory.mktemp("moto"))
    mp = pytest.MonkeyPatch()
    try:
        _set_aws_env(mp, svc, overwrite=False)
        yield svc
    finally:
        mp.undo()
        stop(svc)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test (its name plus a short random suffix), safe in object keys
    and etcd keys: ``test_put_get-memory-3f9c2a1b``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-.")[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def meta_uri(
    request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str
) -> Callable[[str], str]:
    """``meta_uri(kind)`` for kind memory / sqlite / etcd: a MetaStore URI private to this test
    (etcd: the session's real etcd under ``unique_prefix``)."""

    def make(kind: str) -> str:
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{tmp_path}/meta.db"
        if kind == "etcd":
            return request.getfixturevalue("etcd_service").uri(unique_prefix)
        raise ValueError(f"unknown meta backend {kind!r}")

    return make


@pytest.fixture(scope="session")
def local_cluster_services(
    etcd_service: EtcdService, seaweedfs_service: S3Service
) -> tuple[EtcdService, S3Service]:
    """The shared ``local_cluster`` (integration.pytest_plugin) runs on the session services."""
    return etcd_service, seaweedfs_service
