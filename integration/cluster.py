"""A distributed Canopy on this machine: real etcd, a real S3 server (SeaweedFS) and each role
as its own process on free loopback ports.

    with LocalCluster(proxies=2, streaming_nodes=2) as cluster:
        client = MilvusClient(uri=cluster.uri)
        ...
        cluster.kill("streaming-0")        # SIGKILL: a crash
        cluster.start_node("streaming-0")  # comes back with the same ports and config

Contract:

- ``start()`` (or ``with``) starts etcd and SeaweedFS unless given running ones (``etcd=``,
  ``s3=``: then the cluster uses its own key prefix and object prefix on them and leaves them
  running), writes one ``canopy.yaml`` under ``work_dir``, starts the coordinator, the
  streaming nodes and the proxies (``python -m cluster <role> --config canopy.yaml``), and
  returns once every proxy reports healthy (CheckHealth: the catalog answers and every physical
  channel has a live streaming node). On failure it stops what it started and raises
  :class:`~integration.processes.ServiceError` with the failing role's log tail.
- Nodes are named ``coordinator``, ``proxy-0..``, ``streaming-0..``, ``query-0..`` and
  ``data-0..`` (``query_nodes``, default 0: the streaming nodes serve sealed segments
  themselves; ``data_nodes``, default 0: the coordinator's embedded worker builds the indexes;
  with data nodes the config sets ``datanode.embedded: false``). Query nodes cache segments under
  ``work_dir/cache/query-N`` (kept across their restarts). Each keeps its ports across restarts, so
  :attr:`uri` stays valid; a data node listens on none (it counts as started once it logs that
  it builds). :meth:`kill` is a SIGKILL of the node's process group,
  :meth:`stop_node` a SIGTERM (clean shutdown) and :meth:`start_node` starts a stopped or killed
  node again; :meth:`restart` is both. ``stop()`` stops every node, then the services it started.
- Logs: ``work_dir/logs/<node>.log`` (roles) and the services' own logs under ``work_dir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from integration.processes import (
    ServiceError,
    free_port,
    kill_pid,
    launch,
    log_tail,
    stop_pid,
)
from integration.services import EtcdService, S3Service, start_etcd, start_seaweedfs, stop

__all__ = ["LocalCluster", "NodeProcess"]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90.0
DATA_NODE_STARTED = "building indexes"  # DataNodeRole's start line


@dataclass
class NodeProcess:
    """One role process of the cluster. ``port`` is its listen port (fixed across restarts)."""

    name: str
    role: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    """See the module docstring."""

    def __init__(
        self,
        *,
        proxies: int = 2,
        streaming_nodes: int = 2,
        data_nodes: int = 0,
        query_nodes: int = 0,
        channels: int = 4,
        work_dir: Path | str | None = None,
        etcd: EtcdService | None = None,
        s3: S3Service | None = None,
        session_ttl: float = 3.0,
        log_level: str = "INFO",
        config: dict[str, Any] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        if proxies < 1 or streaming_nodes < 1 or channels < 1 or min(data_nodes, query_nodes) < 0:
            raise ValueError(
                "a cluster needs at least one proxy, streaming node and channel "
                "(data and query nodes >= 0)"
            )
        self.proxies = proxies
        self.streaming_nodes = streaming_nodes
        self.data_nodes = data_nodes
        self.query_nodes = query_nodes
        self.channels = channels
        self.session_ttl = session_ttl
        self.log_level = log_level
        self.extra_config = config or {}
        self.start_timeout = start_timeout
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="canopy-cluster-")).resolve()
        self.etcd = etcd
        self.s3 = s3
        self._own_etcd = etcd is None
        self._own_s3 = s3 is None
        self.prefix = f"canopy-{uuid.uuid4().hex[:8]}"
        self.nodes: dict[str, NodeProcess] = {}
        self.config_path = self.work_dir / "canopy.yaml"
        self._started = False

    # --- addresses -----------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:PORT`` of proxy 0, for ``MilvusClient(uri=...)``."""
        return self.proxy_uris[0]

    @property
    def proxy_uris(self) -> list[str]:
        return [f"http://{n.address}" for n in self.nodes.values() if n.role == "proxy"]

    @property
    def meta_uri(self) -> str:
        assert self.etcd is not None, "not started"
        return self.etcd.uri(self.prefix)

    @property
    def object_store_uri(self) -> str:
        """Where WAL blocks and segments live (needs the S3 credentials of :meth:`s3_env`)."""
        assert self.s3 is not None, "not started"
        return self.s3.uri(self.prefix)

    def s3_env(self) -> dict[str, str]:
        assert self.s3 is not None, "not started"
        return self.s3.env()

    def names(self, role: str | None = None) -> list[str]:
        return [n.name for n in self.nodes.values() if role is None or n.role == role]

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self._started:
            return self
        self._started = True
        try:
            self._start_services()
            self._write_config()
            self._define_nodes()
            self.start_node("coordinator")
            for name in self.names("streaming"):
                self.start_node(name, wait=False)
            for name in self.names("proxy") + self.names("query") + self.names("data"):
                self.start_node(name, wait=False)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (proxies first), then the services this cluster started."""
        order = (
            self.names("proxy")
            + self.names("data")
            + self.names("query")
            + self.names("streaming")
            + self.names("coordinator")
        )
        for name in order:
            with contextlib.suppress(Exception):
                self.stop_node(name)
        if self._own_s3 and self.s3 is not None:
            with contextlib.suppress(Exception):
                stop(self.s3)
            self.s3 = None
        if self._own_etcd and self.etcd is not None:
            with contextlib.suppress(Exception):
                stop(self.etcd)
            self.etcd = None
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self._started = False

    def _start_services(self) -> None:
        if self.etcd is None:
            self.etcd = start_etcd(self.work_dir / "etcd")
        if self.s3 is None:
            self.s3 = start_seaweedfs(self.work_dir / "seaweedfs")

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "meta": self.meta_uri,
            "object_store": self.object_store_uri,
            "channels": self.channels,
            "coordinator": {"host": LOOPBACK, "port": free_port(), "rebalance_interval": 1.0},
            "proxy": {"host": LOOPBACK},
            "streaming": {"host": LOOPBACK, "session_ttl": self.session_ttl},
            "querynode": {"host": LOOPBACK, "session_ttl": self.session_ttl},
            "log": {"level": self.log_level},
        }
        if self.data_nodes:
            config["datanode"] = {"embedded": False}
        for section, values in self.extra_config.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        self.config = config
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _define_nodes(self) -> None:
        logs = self.work_dir / "logs"
        base_env = dict(os.environ)
        base_env.update(self.s3_env())
        base_env["PYTHONUNBUFFERED"] = "1"
        self.nodes["coordinator"] = NodeProcess(
            "coordinator",
            "coordinator",
            self.config["coordinator"]["port"],
            base_env,
            logs / "coordinator.log",
        )
        for i in range(self.streaming_nodes):
            port = free_port()
            env = {**base_env, "CANOPY_STREAMING__PORT": str(port)}
            self.nodes[f"streaming-{i}"] = NodeProcess(
                f"streaming-{i}", "streaming", port, env, logs / f"streaming-{i}.log"
            )
        for i in range(self.proxies):
            port = free_port()
            env = {**base_env, "CANOPY_PROXY__PORT": str(port)}
            self.nodes[f"proxy-{i}"] = NodeProcess(
                f"proxy-{i}", "proxy", port, env, logs / f"proxy-{i}.log"
            )
        for i in range(self.query_nodes):
            port = free_port()
            env = {
                **base_env,
                "CANOPY_QUERYNODE__PORT": str(port),
                "CANOPY_QUERYNODE__CACHE_DIR": str(self.work_dir / "cache" / f"query-{i}"),
            }
            self.nodes[f"query-{i}"] = NodeProcess(
                f"query-{i}", "query", port, env, logs / f"query-{i}.log"
            )
        for i in range(self.data_nodes):
            self.nodes[f"data-{i}"] = NodeProcess(
                f"data-{i}", "data", 0, base_env, logs / f"data-{i}.log"
            )

    # --- nodes ---------------------------------------------------------------------------------

    def node(self, name: str) -> NodeProcess:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self.nodes)}") from None

    def start_node(self, name: str, *, wait: bool = True) -> None:
        """Start ``name`` (stopped or killed before) and wait until it listens."""
        node = self.node(name)
        if node.running:
            return
        command = {"streaming": "streaming-node", "data": "data-node", "query": "query-node"}.get(
            node.role, node.role
        )
        argv = [sys.executable, "-m", "cluster", command, "--config", str(self.config_path)]
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(node.log_path, "ab") as f:
            f.write(f"--- start {node.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
        node.proc = launch(argv, node.log_path, self.work_dir, node.env, detached=False)
        node.starts += 1
        if wait:
            self._wait_listening(node)

    def kill(self, name: str) -> None:
        """SIGKILL the node (a crash: no clean shutdown, its lease expires on its own)."""
        node = self.node(name)
        if node.proc is not None:
            kill_pid(node.proc.pid)
            node.proc = None

    def stop_node(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM the node and wait for its clean shutdown (SIGKILL after ``timeout``)."""
        node = self.node(name)
        if node.proc is not None:
            stop_pid(node.proc.pid, timeout=timeout)
            node.proc = None

    def restart(self, name: str, *, kill: bool = False) -> None:
        (self.kill if kill else self.stop_node)(name)
        self.start_node(name)

    # --- readiness -----------------------------------------------------------------------------

    def _wait_listening(self, node: NodeProcess, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            self._check_alive(node)
            if node.role == "data":  # no port: started once it says so (after its session)
                if DATA_NODE_STARTED in _since_last_start(node.log_path):
                    return
                time.sleep(0.05)
                continue
            with contextlib.suppress(OSError):
                with socket.create_connection((LOOPBACK, node.port), timeout=0.5):
                    return
            time.sleep(0.05)
        raise ServiceError(
            f"{node.name} did not listen on {node.address} within the timeout "
            f"(log: {node.log_path})\n{log_tail(node.log_path)}"
        )

    def _check_alive(self, node: NodeProcess) -> None:
        if node.proc is not None and node.proc.poll() is not None:
            raise ServiceError(
                f"{node.name} exited with code {node.proc.returncode} "
                f"(log: {node.log_path})\n{log_tail(node.log_path)}"
            )

    def health(self, name: str) -> tuple[bool, list[str]]:
        """A proxy's CheckHealth answer: (healthy, reasons)."""
        import grpc
        from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

        node = self.node(name)
        with grpc.insecure_channel(node.address) as channel:
            stub = milvus_pb2_grpc.MilvusServiceStub(channel)
            reply = stub.CheckHealth(milvus_pb2.CheckHealthRequest(), timeout=5)
        if reply.status.code != 0:
            return False, [reply.status.reason]
        return reply.isHealthy, list(reply.reasons)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until every running proxy reports healthy (all channels served)."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last: list[str] = []
        for node in self.nodes.values():
            if node.proc is not None:
                self._wait_listening(node, max(1.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                self._check_alive(node)
            ready = True
            for name in self.names("proxy"):
                if not self.node(name).running:
                    continue
                try:
                    healthy, last = self.health(name)
                except Exception as exc:  # not answering yet
                    healthy, last = False, [f"{type(exc).__name__}: {exc}"]
                ready = ready and healthy
            if ready:
                return
            time.sleep(0.1)
        raise ServiceError(
            f"the cluster did not become ready: {'; '.join(last)}\n"
            + "\n".join(f"{n.name}: {n.log_path}" for n in self.nodes.values())
        )


def _since_last_start(path: Path) -> str:
    """The node's log after the last ``--- start`` marker :meth:`LocalCluster.start_node` wrote."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text.rsplit("--- start ", 1)[-1]
