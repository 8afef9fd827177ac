"""Open a MetaStore from a URI: ``memory://``, ``sqlite:///path.db``, ``etcd://host:port/prefix``."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from woodpecker.clock import Clock
from woodpecker.errors import InvalidArgument
from woodpecker.meta.base import MetaStore

SCHEMES = (
    "memory://",
    "sqlite:///relative/path.db or sqlite:////absolute/path.db",
    "etcd://host:port[,host:port...][/prefix][?timeout=SECONDS]",
)
DEFAULT_ETCD_PORT = 2379


def open_meta_store(uri: str, *, clock: Clock | None = None) -> MetaStore:
    """Return the backend ``uri`` names, ready to use (connections and files open lazily, on the
    first call). Raises ``InvalidArgument`` for a malformed or unsupported URI."""
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidArgument(f"bad meta store URI {uri!r}; use one of: " + "; ".join(SCHEMES))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        from woodpecker.meta.memory import MemoryMetaStore

        if rest.strip("/"):
            raise InvalidArgument(
                f"memory meta store URI {uri!r} takes no name; share the store instance instead"
            )
        return MemoryMetaStore(clock)
    if scheme == "sqlite":
        from woodpecker.meta.sqlite import SqliteMetaStore

        if not rest.startswith("/") or len(rest) < 2:
            raise InvalidArgument(
                f"sqlite meta store URI {uri!r} names no file; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        path = unquote(rest[1:].split("?", 1)[0])
        return SqliteMetaStore(path, clock)
    if scheme == "etcd":
        return _open_etcd(uri, clock)
    raise InvalidArgument(f"unsupported meta store URI {uri!r}; use one of: " + "; ".join(SCHEMES))


def _open_etcd(uri: str, clock: Clock | None) -> MetaStore:
    from woodpecker.meta.etcd import EtcdMetaStore

    parts = urlsplit(uri)
    if not parts.netloc:
        raise InvalidArgument(f"etcd meta store URI {uri!r} names no host; write etcd://host:port")
    endpoints: list[tuple[str, int]] = []
    for hostport in parts.netloc.split(","):
        host, sep, port = hostport.rpartition(":")
        if not sep:
            host, port = hostport, str(DEFAULT_ETCD_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"etcd meta store URI {uri!r}: bad endpoint {hostport!r}")
        endpoints.append((host.strip("[]"), int(port)))
    options = dict(parse_qsl(parts.query))
    timeout = options.pop("timeout", "5")
    if options:
        raise InvalidArgument(f"etcd meta store URI {uri!r}: unknown options {sorted(options)}")
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidArgument(f"etcd meta store URI {uri!r}: timeout must be > 0 seconds")
    return EtcdMetaStore(endpoints, unquote(parts.path), clock=clock, timeout=seconds)
