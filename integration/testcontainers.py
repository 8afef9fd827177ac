"""Canopy in containers for your own tests, in the style of testcontainers-python's modules.

    from integration.testcontainers import CanopyContainer

    with CanopyContainer() as canopy:                  # canopy standalone, embedded storage
        client = MilvusClient(uri=canopy.uri)

    with CanopyCluster(proxies=2, streaming_nodes=2) as cluster:   # etcd + S3 + every role
        client = MilvusClient(uri=cluster.uri)

The pytest plugin that comes with Canopy offers both as fixtures (``canopy_container``,
``canopy_cluster``; see ``integration/pytest_plugin.py``). Needs ``pip install
'canopy[testcontainers]'`` and the images ``canopy:latest`` and, for :class:`CanopyCluster`,
``canopy-services:latest`` (``bash deploy/build-image.sh --services``; ``CANOPY_IMAGE`` and
``CANOPY_SERVICES_IMAGE`` name others).

Contract:

- ``start()`` (or ``with``) returns once the Milvus API answers ``Connect`` (a cluster: once
  every role reports ready on its health endpoint and every proxy answers); on failure it
  raises :class:`ContainerStartError` with the logs of the container that failed and removes
  what it started. ``stop()`` removes the containers (and the cluster's network).
- Networking: by default containers get their own network and publish the Milvus port on the
  Docker host (bound to 127.0.0.1 when the daemon is local), as on any Docker host. Where the
  daemon has no bridge network (``dockerd --bridge=none``), or with
  ``CANOPY_TESTCONTAINERS_NETWORK=host``, they share the host's network instead and listen on
  127.0.0.1, on free ports. ``bridge`` forces the former.
- Ryuk (testcontainers' reaper) is used unless ``TESTCONTAINERS_RYUK_DISABLED=true``, as
  testcontainers itself decides; ``stop()`` removes everything in either case.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Self

import grpc
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from integration.processes import free_port
from integration.services import (
    DEFAULT_BUCKET,
    DEFAULT_REGION,
    SEAWEEDFS_ACCESS_KEY_ID,
    SEAWEEDFS_SECRET_ACCESS_KEY,
    etcd_argv,
    seaweedfs_argv,
    seaweedfs_identities_json,
)

__all__ = [
    "NETWORK_ENV",
    "CanopyCluster",
    "CanopyContainer",
    "ContainerStartError",
    "default_image",
    "default_services_image",
]

NETWORK_ENV = "CANOPY_TESTCONTAINERS_NETWORK"
MILVUS_PORT = 19530
HEALTH_PORT = 9091
DATA_DIR = "/var/lib/canopy"
LOOPBACK = "127.0.0.1"


def default_image() -> str:
    return os.environ.get("CANOPY_IMAGE", "canopy:latest")


def default_services_image() -> str:
    return os.environ.get("CANOPY_SERVICES_IMAGE", "canopy-services:latest")


class ContainerStartError(RuntimeError):
    """A container did not come up: the message carries its name and the tail of its logs."""


def _host_network(container: DockerContainer) -> bool:
    """Whether to use the host's network (see the module docstring)."""
    mode = os.environ.get(NETWORK_ENV, "auto").strip().lower()
    if mode not in ("auto", "host", "bridge"):
        raise ValueError(f"{NETWORK_ENV}={mode!r}: use auto, host or bridge")
    if mode != "auto":
        return mode == "host"
    docker = container.get_docker_client().client
    return not docker.networks.list(names=["bridge"])


def _local_daemon(container: DockerContainer) -> bool:
    """Whether the daemon runs on this machine (a unix socket or named pipe): then published
    ports are bound to 127.0.0.1 and reached there."""
    base_url = str(container.get_docker_client().client.api.base_url)
    return base_url.startswith(("http+unix://", "http+docker://", "npipe://"))


def _logs_tail(container: DockerContainer, lines: int = 40) -> str:
    try:
        stdout, stderr = container.get_logs()
    except Exception as exc:  # the container may be gone already
        return f"(no logs: {exc})"
    text = (stdout + stderr).decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _wait(what: str, container: DockerContainer, check: Callable[[], bool], timeout: float) -> None:
    """Until ``check()`` is true; raises :class:`ContainerStartError` with the container's
    logs when it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise ContainerStartError(f"{what} exited:\n{_logs_tail(container)}")
        if time.monotonic() > deadline:
            raise ContainerStartError(
                f"{what} not ready after {timeout:.0f} s:\n{_logs_tail(container)}"
            )
        time.sleep(0.25)


def _milvus_connects(target: str) -> bool:
    """Whether the Milvus API at ``host:port`` answers Connect with success."""
    from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        reply = stub.Connect(milvus_pb2.ConnectRequest(), timeout=3)
        return reply.status.code == 0 and reply.status.error_code == common_pb2.Success


def _ready_in_container(container: DockerContainer, health_port: int) -> bool:
    result = container.exec(["canopy", "health", "--ready", "--port", str(health_port)])
    return result.exit_code == 0


class CanopyContainer(DockerContainer):
    """``canopy standalone`` in a container (see the module docstring). ``uri`` is what
    ``MilvusClient(uri=...)`` takes once started."""

    def __init__(
        self,
        image: str | None = None,
        *,
        args: list[str] | tuple[str, ...] = (),
        start_timeout: float = 90.0,
        **kwargs: Any,
    ) -> None:
        """``args`` go after ``canopy standalone --host H --port P --data-dir D`` (e.g.
        ``["--channels", "4"]``); ``kwargs`` as for testcontainers' ``DockerContainer``."""
        super().__init__(image or default_image(), **kwargs)
        self.args = list(args)
        self.start_timeout = start_timeout
        self.host_network = False
        self.local = True
        self._port = MILVUS_PORT

    def _configure(self) -> None:
        self.host_network = _host_network(self)
        if self.host_network:
            self._port = free_port()
            self.with_kwargs(network_mode="host")
            self.with_env("CANOPY_HEALTH__HOST", LOOPBACK)
            self.with_env("CANOPY_HEALTH__PORT", str(free_port()))
            host = LOOPBACK
        else:
            self._port = MILVUS_PORT
            self.local = _local_daemon(self)
            self.ports[MILVUS_PORT] = (LOOPBACK, None) if self.local else None
            host = "0.0.0.0"
        self.with_command(
            [
                *("standalone", "--host", host, "--port", str(self._port)),
                *("--data-dir", DATA_DIR, *self.args),
            ]
        )

    def start(self) -> Self:
        super().start()
        try:
            _wait(
                "canopy standalone",
                self,
                lambda: _milvus_connects(self.address),
                self.start_timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        """``host:port`` of the Milvus API."""
        if self.host_network:
            return f"{LOOPBACK}:{self._port}"
        host = LOOPBACK if self.local else self.get_container_host_ip()
        return f"{host}:{self.get_exposed_port(MILVUS_PORT)}"

    @property
    def uri(self) -> str:
        return f"http://{self.address}"

    def get_connection_url(self) -> str:
        """The same as :attr:`uri` (the name testcontainers' modules use)."""
        return self.uri


class CanopyCluster:
    """A small distributed Canopy in containers on one network: etcd and SeaweedFS (from the
    services image), a coordinator, streaming nodes, optional query and data nodes, and
    proxies. Every role is configured by ``CANOPY_*`` environment variables only."""

    def __init__(
        self,
        image: str | None = None,
        services_image: str | None = None,
        *,
        proxies: int = 1,
        streaming_nodes: int = 2,
        query_nodes: int = 0,
        data_nodes: int = 0,
        channels: int = 2,
        start_timeout: float = 120.0,
    ) -> None:
        if proxies < 1 or streaming_nodes < 1 or channels < 1:
            raise ValueError("a cluster needs at least one proxy, streaming node and channel")
        self.image = image or default_image()
        self.services_image = services_image or default_services_image()
        self.counts = {
            "streaming": streaming_nodes,
            "query": query_nodes,
            "data": data_nodes,
            "proxy": proxies,
        }
        self.channels = channels
        self.start_timeout = start_timeout
        self.host_network = False
        self.local = True
        self.containers: dict[str, DockerContainer] = {}
        self._network: Network | None = None
        self._ports: dict[str, int] = {}
        self._name = f"canopy-{uuid.uuid4().hex[:8]}"

    # --- addresses -----------------------------------------------------------------------------

    def _address(self, name: str, port: int) -> tuple[str, int]:
        """(host, port) where ``name`` listens, as the other containers reach it."""
        if self.host_network:
            return LOOPBACK, self._ports.setdefault(f"{name}:{port}", free_port())
        return name, port

    def _bind(self) -> str:
        return LOOPBACK if self.host_network else "0.0.0.0"

    @property
    def proxy_addresses(self) -> list[str]:
        """``host:port`` of every proxy's Milvus API, from the test's side."""
        out = []
        for i in range(self.counts["proxy"]):
            name = f"proxy-{i}"
            if self.host_network:
                host, port = self._address(name, MILVUS_PORT)
                out.append(f"{host}:{port}")
            else:
                container = self.containers[name]
                host = LOOPBACK if self.local else container.get_container_host_ip()
                out.append(f"{host}:{container.get_exposed_port(MILVUS_PORT)}")
        return out

    @property
    def uri(self) -> str:
        return f"http://{self.proxy_addresses[0]}"

    @property
    def uris(self) -> list[str]:
        return [f"http://{a}" for a in self.proxy_addresses]

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        probe = DockerContainer(self.image)
        self.host_network = _host_network(probe)
        self.local = _local_daemon(probe)
        if not self.host_network:
            self._network = Network()
            self._network.create()
        self._start_services()
        self._run_role("coordinator", "coordinator")
        for role in ("streaming", "query", "data"):
            for i in range(self.counts[role]):
                self._run_role(f"{role}-{i}", _COMMANDS[role])
        for i in range(self.counts["proxy"]):
            self._run_role(f"proxy-{i}", "proxy")
        for name, container in self.containers.items():
            if name in ("etcd", "s3"):
                continue
            health = self._address(name, HEALTH_PORT)[1]
            _wait(
                name,
                container,
                lambda c=container, p=health: _ready_in_container(c, p),
                self.start_timeout,
            )
        for i, address in enumerate(self.proxy_addresses):
            _wait(
                f"proxy-{i}",
                self.containers[f"proxy-{i}"],
                lambda a=address: _milvus_connects(a),
                self.start_timeout,
            )

    def stop(self) -> None:
        """Remove every container (roles first, then the services) and the network."""
        for name in reversed(list(self.containers)):
            try:
                self.containers.pop(name).stop()
            except Exception:  # keep removing the rest
                pass
        if self._network is not None:
            try:
                self._network.remove()
            except Exception:
                pass
            self._network = None

    def kill(self, name: str) -> None:
        """SIGKILL a container's process (a crash); the container stays, exited."""
        self.containers[name].get_wrapped_container().kill()

    def logs(self, name: str, lines: int = 200) -> str:
        return _logs_tail(self.containers[name], lines)

    # --- containers ----------------------------------------------------------------------------

    def _container(
        self, name: str, image: str, entrypoint: list[str] | None = None
    ) -> DockerContainer:
        container = DockerContainer(image).with_name(f"{self._name}-{name}")
        kwargs: dict[str, Any] = {"entrypoint": entrypoint} if entrypoint else {}
        if self.host_network:
            kwargs["network_mode"] = "host"
        container.with_kwargs(**kwargs)  # (it replaces earlier kwargs: one call only)
        if not self.host_network:
            assert self._network is not None
            container.with_network(self._network).with_network_aliases(name)
        return container

    def _launch(self, name: str, container: DockerContainer) -> None:
        self.containers[name] = container
        container.start()

    def _start_services(self) -> None:
        bind = self._bind()
        client = self._address("etcd", 2379)
        peer = self._address("etcd", 2380)
        etcd = self._container("etcd", self.services_image, ["etcd"])
        etcd.with_command(
            etcd_argv(
                "etcd",
                f"{DATA_DIR}/etcd",
                client_urls=(f"http://{bind}:{client[1]}", f"http://{client[0]}:{client[1]}"),
                peer_urls=(f"http://{bind}:{peer[1]}", f"http://{peer[0]}:{peer[1]}"),
                token=self._name,
            )[1:]
        )
        self._launch("etcd", etcd)

        ports = tuple(self._seaweedfs_port(p) for p in (9333, 9340, 8888, 8333, 23646))
        identities = f"{DATA_DIR}/s3-identities.json"
        s3 = self._container("s3", self.services_image, ["weed"])
        s3.with_command(
            seaweedfs_argv(
                "weed",
                DATA_DIR,
                ip=self._address("s3", 8333)[0],
                bind=bind,
                ports=ports,  # type: ignore[arg-type]
                identities=identities,
                bucket=DEFAULT_BUCKET,
            )[1:]
        )
        secrets = seaweedfs_identities_json(SEAWEEDFS_ACCESS_KEY_ID, SEAWEEDFS_SECRET_ACCESS_KEY)
        s3.with_copy_into_container(secrets.encode(), identities)
        self._launch("s3", s3)

        _wait("etcd", etcd, lambda: _etcd_healthy(etcd, client[1]), self.start_timeout)
        _wait("s3", s3, lambda: _bucket_exists(s3, ports[3]), self.start_timeout)

    def _seaweedfs_port(self, port: int) -> int:
        if not self.host_network:
            return port
        key = f"s3:{port}"
        if key not in self._ports:  # weed also listens on port + 10000 (gRPC)
            self._ports[key] = free_port(pair_with_grpc_twin=True)
        return self._ports[key]

    def _role_env(self) -> dict[str, str]:
        etcd_host, etcd_port = self._address("etcd", 2379)
        s3_host, s3_port = self._address("s3", 8333)
        coord_host, coord_port = self._address("coordinator", 19600)
        env = {
            "CANOPY_META": f"etcd://{etcd_host}:{etcd_port}/canopy",
            "CANOPY_OBJECT_STORE": (
                f"s3://{DEFAULT_BUCKET}/canopy?endpoint=http://{s3_host}:{s3_port}"
                f"&region={DEFAULT_REGION}"
            ),
            "AWS_ACCESS_KEY_ID": SEAWEEDFS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SEAWEEDFS_SECRET_ACCESS_KEY,
            "CANOPY_CHANNELS": str(self.channels),
            "CANOPY_COORDINATOR__HOST": self._bind(),
            "CANOPY_COORDINATOR__PORT": str(coord_port),
            "CANOPY_COORDINATOR__ADDRESS": f"{coord_host}:{coord_port}",
            "CANOPY_HEALTH__HOST": self._bind(),
        }
        if self.counts["data"]:
            env["CANOPY_DATANODE__EMBEDDED"] = "false"
        return env

    def _run_role(self, name: str, command: str) -> None:
        container = self._container(name, self.image).with_command([command])
        env = self._role_env()
        env["CANOPY_HEALTH__PORT"] = str(self._address(name, HEALTH_PORT)[1])
        section = _SECTIONS.get(command)
        if section is not None:
            port = MILVUS_PORT if section == "PROXY" else 19700
            host, port = self._address(name, port)
            env[f"CANOPY_{section}__HOST"] = self._bind()
            env[f"CANOPY_{section}__PORT"] = str(port)
            if section != "PROXY":
                env[f"CANOPY_{section}__ADVERTISE"] = f"{host}:{port}"
            elif not self.host_network:
                container.ports[MILVUS_PORT] = (LOOPBACK, None) if self.local else None
        for key, value in env.items():
            container.with_env(key, value)
        self._launch(name, container)


_COMMANDS = {"streaming": "streaming-node", "query": "query-node", "data": "data-node"}
# the config section of a role that listens (data nodes and the coordinator are set above)
_SECTIONS = {"streaming-node": "STREAMING", "query-node": "QUERYNODE", "proxy": "PROXY"}


def _etcd_healthy(container: DockerContainer, port: int) -> bool:
    script = (
        "import json, urllib.request; "
        f"r = urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2); "
        "raise SystemExit(0 if json.load(r).get('health') == 'true' else 1)"
    )
    return container.exec(["python3", "-c", script]).exit_code == 0


def _bucket_exists(container: DockerContainer, port: int) -> bool:
    script = (
        "import boto3; "
        f"c = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', "
        f"region_name='{DEFAULT_REGION}', aws_access_key_id='{SEAWEEDFS_ACCESS_KEY_ID}', "
        f"aws_secret_access_key='{SEAWEEDFS_SECRET_ACCESS_KEY}'); "
        f"c.head_bucket(Bucket='{DEFAULT_BUCKET}')"
    )
    return container.exec(["python3", "-c", script]).exit_code == 0
