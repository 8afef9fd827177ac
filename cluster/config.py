"""The configuration of a distributed Canopy deployment: one YAML file shared by every role,
with environment overrides.

``canopy coordinator|proxy|streaming-node|data-node --config canopy.yaml`` reads
:class:`CanopyConfig` with :func:`load_config`. Every key is documented in
``deploy/canopy.example.yaml`` (a test checks that file against these dataclasses, both ways).

Contract:

- The YAML maps onto the dataclasses below; nested sections are nested mappings. A key this
  module does not know is an error naming the key and the known ones (a typo never passes
  silently); so is a value of the wrong type.
- Environment variables override the file: ``CANOPY_<KEY>`` for a top-level key and
  ``CANOPY_<SECTION>__<KEY>`` (double underscore) for a key in a section, upper-case, e.g.
  ``CANOPY_META=etcd://10.0.0.5:2379/canopy`` or ``CANOPY_PROXY__PORT=19531``. Values are parsed
  as the key's type (``true``/``false`` for booleans).
- Missing keys take the defaults below. ``meta`` and ``object_store`` have none: a distributed
  deployment must name its etcd and its S3 bucket (the error says so).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from woodpecker.config import WalConfig
from woodpecker.errors import InvalidArgument

__all__ = [
    "CanopyConfig",
    "ConfigError",
    "CoordinatorSection",
    "DataNodeSection",
    "HealthSection",
    "LogSection",
    "ProxySection",
    "StreamingSection",
    "config_keys",
    "load_config",
]

ENV_PREFIX = "CANOPY_"
DEFAULT_COORDINATOR_PORT = 19600
DEFAULT_PROXY_PORT = 19530


class ConfigError(InvalidArgument):
    """The configuration file or an override is invalid: the message says which key and why."""


@dataclass
class CoordinatorSection:
    host: str = "127.0.0.1"  # listen address of the coordinator's gRPC service
    port: int = DEFAULT_COORDINATOR_PORT
    address: str = ""  # how the other roles reach it; default host:port
    rebalance_interval: float = 2.0  # seconds between channel-balancing rounds

    def target(self) -> str:
        return self.address or f"{self.host}:{self.port}"


@dataclass
class ProxySection:
    host: str = "127.0.0.1"  # listen address of the Milvus API
    port: int = DEFAULT_PROXY_PORT
    route_retry_for: float = 15.0  # seconds a write waits for a moved channel's new owner


@dataclass
class StreamingSection:
    host: str = "127.0.0.1"  # listen address of the streaming service
    port: int = 0  # 0 = any free port (the session records the real one)
    advertise: str = ""  # address other roles use to reach this node; default host:port
    session_ttl: float = 10.0  # seconds without keepalive before channels move elsewhere
    time_tick_interval: float = 0.2  # seconds between time ticks on an idle channel
    # cache of sealed segments no query node serves (kept across restarts); "" = a temp dir
    sealed_cache_dir: str = ""
    sealed_cache_gb: float = 4.0  # size bound of that cache (least recently used goes first)


@dataclass
class DataNodeSection:
    embedded: bool = True  # run one index-build worker inside `canopy coordinator`
    concurrency: int = 1  # index builds at once per data node
    build_threads: int = 0  # threads per HNSW build; 0 = every core
    poll_interval: float = 1.0  # seconds an idle worker waits before asking for work again
    build_lease: float = 30.0  # seconds a build stays with its node without a heartbeat
    session_ttl: float = 10.0  # `canopy data-node`: seconds without keepalive before it is gone
    compaction: bool = True  # merge small sealed segments and purge deleted rows
    compaction_interval: float = 10.0  # seconds between planning passes of a worker
    compaction_small_rows: int = 100_000  # segments below this many rows are merged
    compaction_max_inputs: int = 16  # segments merged into one at most
    compaction_max_rows: int = 200_000  # rows of a merged segment at most
    compaction_delete_ratio: float = 0.2  # rewrite a segment once deletes hit this share of rows
    compaction_retention: float = 5.0  # deletes newer than now minus this are never purged
    compaction_drop_delay: float = 10.0  # seconds compacted segments stay readable after commit
    compaction_lease: float = 30.0  # seconds a compaction stays with its node without heartbeat


@dataclass
class QueryNodeSection:
    host: str = "127.0.0.1"  # listen address of the query node's gRPC service
    port: int = 0  # 0 = any free port (the session records the real one)
    advertise: str = ""  # address streaming nodes use to reach it; default host:port
    session_ttl: float = 10.0  # seconds without keepalive before its segments move elsewhere
    cache_dir: str = ""  # SSD cache of sealed segments (kept across restarts); "" = a temp dir
    cache_gb: float = 16.0  # size bound of the cache directory (least recently used goes first)
    refresh_interval: float = 1.0  # seconds between re-reads of delete logs and new indexes


@dataclass
class LogSection:
    level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    format: str = "text"  # text or json (one JSON object per line)


@dataclass
class HealthSection:
    host: str = "127.0.0.1"  # listen address of the HTTP health endpoint (/healthz, /readyz)
    port: int = 0  # 0 = no health endpoint; containers and Kubernetes use 9091


@dataclass
class CanopyConfig:
    meta: str = ""  # meta store URI, e.g. etcd://127.0.0.1:2379/canopy
    object_store: str = ""  # object store URI, e.g. s3://bucket/prefix?endpoint=http://...
    channels: int = 4  # physical channels (WAL logs); fixed when the cluster is first started
    coordinator: CoordinatorSection = field(default_factory=CoordinatorSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    streaming: StreamingSection = field(default_factory=StreamingSection)
    datanode: DataNodeSection = field(default_factory=DataNodeSection)
    querynode: QueryNodeSection = field(default_factory=QueryNodeSection)
    wal: WalConfig = field(default_factory=WalConfig)
    log: LogSection = field(default_factory=LogSection)
    health: HealthSection = field(default_factory=HealthSection)

    def check(self, *, needs_objects: bool = True) -> None:
        """Raise :class:`ConfigError` if a key the roles need is missing or out of range."""
        if not self.meta:
            raise ConfigError(
                "meta is not set: give the meta store URI (e.g. etcd://127.0.0.1:2379/canopy) "
                "in the config file or as CANOPY_META"
            )
        if needs_objects and not self.object_store:
            raise ConfigError(
                "object_store is not set: give the object store URI (e.g. "
                "s3://bucket/prefix?endpoint=http://127.0.0.1:8333) in the config file or as "
                "CANOPY_OBJECT_STORE"
            )
        if self.channels < 1:
            raise ConfigError(f"channels must be at least 1, got {self.channels}")
        for name, port in (
            ("coordinator.port", self.coordinator.port),
            ("proxy.port", self.proxy.port),
            ("streaming.port", self.streaming.port),
            ("querynode.port", self.querynode.port),
        ):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be a TCP port (0-65535), got {port}")
        if self.streaming.session_ttl <= 0:
            raise ConfigError("streaming.session_ttl must be positive")
        qn = self.querynode
        if min(qn.session_ttl, qn.cache_gb, qn.refresh_interval) <= 0:
            raise ConfigError(
                "querynode.session_ttl, querynode.cache_gb and querynode.refresh_interval must "
                "be positive"
            )
        dn = self.datanode
        floor = 3 * max(1.0, self.querynode.refresh_interval)
        if dn.compaction and dn.compaction_drop_delay < floor:
            raise ConfigError(
                f"datanode.compaction_drop_delay must be at least {floor:g} s (3 x the slowest "
                "sealed-segment refresh interval): readers that listed the compacted segments "
                "must still find them readable"
            )
        if dn.concurrency < 1 or dn.build_threads < 0:
            raise ConfigError("datanode.concurrency must be >= 1 and datanode.build_threads >= 0")
        if min(dn.poll_interval, dn.build_lease, dn.session_ttl) <= 0:
            raise ConfigError(
                "datanode.poll_interval, datanode.build_lease and datanode.session_ttl must be "
                "positive"
            )
        if (
            min(dn.compaction_interval, dn.compaction_lease, dn.compaction_max_rows) <= 0
            or dn.compaction_max_inputs < 2
            or min(dn.compaction_small_rows, dn.compaction_retention, dn.compaction_drop_delay) < 0
            or not 0 < dn.compaction_delete_ratio <= 1
        ):
            raise ConfigError(
                "datanode.compaction_*: interval, lease and max_rows must be positive, "
                "max_inputs >= 2, small_rows, retention and drop_delay >= 0, and delete_ratio "
                "in (0, 1]"
            )
        if self.log.format not in ("text", "json"):
            raise ConfigError(f"log.format must be text or json, got {self.log.format!r}")
        try:
            self.wal.validate()
        except Exception as exc:
            raise ConfigError(f"wal: {exc}") from None


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> CanopyConfig:
    """The configuration from ``path`` (YAML; None = defaults only) with the ``CANOPY_*``
    overrides of ``env`` (default ``os.environ``) applied. Raises :class:`ConfigError`."""
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        raw = loaded or {}
    config = _build(CanopyConfig, raw, "")
    _apply_env(config, os.environ if env is None else env)
    return config


def config_keys(cls: type = CanopyConfig, prefix: str = "") -> list[str]:
    """Every key as a dotted path (``proxy.port``, ``wal.max_bytes``), sections excluded."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys += config_keys(kind, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(prefix + f.name)
    return keys


# --- building dataclasses from YAML and env -------------------------------------------------------


def _build(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key {path!r}; known keys here: {', '.join(sorted(names))}"
            )
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{path} is a section: give a mapping of keys, got {value!r}")
            values[key] = _build(kind, value, f"{path}.")  # type: ignore[arg-type]
        else:
            values[key] = _coerce(kind, value, path)
    return cls(**values)


def _scalar_type(kind: Any) -> tuple[type, bool]:
    """``(type, optional)`` of a field annotation such as ``int`` or ``float | None``."""
    args = typing.get_args(kind)
    if args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) < len(args)
    return kind, False


def _coerce(kind: Any, value: Any, path: str) -> Any:
    base, optional = _scalar_type(kind)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path} needs a {base.__name__} value, got null")
    if isinstance(value, str) and base is not str:
        return _parse(base, value, path)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (base is int and isinstance(value, bool)) or not isinstance(value, base):
        raise ConfigError(f"{path} needs a {base.__name__} value, got {value!r}")
    return value


def _parse(base: type, text: str, path: str) -> Any:
    text = text.strip()
    try:
        if base is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        return base(text)
    except ValueError:
        raise ConfigError(f"{path} needs a {base.__name__} value, got {text!r}") from None


def _apply_env(config: CanopyConfig, env: Mapping[str, str]) -> None:
    keys = {ENV_PREFIX + key.upper().replace(".", "__"): key for key in config_keys()}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = keys.get(name)
        if key is None:
            if "__" in name or name[len(ENV_PREFIX) :].lower() in {
                f.name for f in dataclasses.fields(CanopyConfig)
            }:
                raise ConfigError(f"unknown config override {name}")
            continue  # CANOPY_* variables of other tools (e.g. CANOPY_SERVICES_PID_DIR)
        target: Any = config
        *sections, leaf = key.split(".")
        for section in sections:
            target = getattr(target, section)
        kind = typing.get_type_hints(type(target))[leaf]
        parsed = _coerce(kind, value, f"{key} (from {name})")
        if dataclasses.is_dataclass(target) and target.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            _replace_frozen(config, sections, leaf, parsed)
        else:
            setattr(target, leaf, parsed)


def _replace_frozen(config: CanopyConfig, sections: list[str], leaf: str, value: Any) -> None:
    """Set ``leaf`` in a frozen section (``wal``) by replacing the section."""
    parent: Any = config
    for section in sections[:-1]:
        parent = getattr(parent, section)
    frozen = getattr(parent, sections[-1])
    setattr(parent, sections[-1], dataclasses.replace(frozen, **{leaf: value}))
