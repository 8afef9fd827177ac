"""The ``canopy`` command line.

Built in: ``canopy version``. Further command groups come from Python entry points in the group
``canopy.commands``: each entry point is a function ``register(subparsers)`` that adds its
subparser(s) and sets ``func`` (called with the parsed arguments, returning an exit code). This
keeps ``cluster`` free of imports from packages above it (``integration`` registers
``canopy dev``).

A user error is reported as one line on stderr and exit status 2, never a traceback: raise
:class:`CommandError` from a command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

PROG = "canopy"
ENTRY_POINT_GROUP = "canopy.commands"
EXIT_USAGE = 2

DESCRIPTION = """\
Canopy: a disaggregated vector database speaking the Milvus protocol, with its write-ahead log
in object storage."""

EPILOG = """\
Run `canopy COMMAND --help` for the options of a command."""


class CommandError(Exception):
    """A user-facing error: printed as one line on stderr, exit status ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _version() -> str:
    try:
        return metadata.version("canopy")
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed: python3 -m pip install -e .)"


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"{PROG} {_version()}")
    return 0


STANDALONE_EPILOG = """\
examples:
  canopy standalone                                  # ./canopy-data, 127.0.0.1:19530
  canopy standalone --data-dir /var/lib/canopy --port 19531
  canopy standalone --object-store 's3://canopy/data?endpoint=http://127.0.0.1:8333' \\
                    --meta etcd://127.0.0.1:2379/canopy

then, from Python:  MilvusClient(uri="http://127.0.0.1:19530")"""


def _add_standalone(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subparsers.add_parser(
        "standalone",
        help="run every role in one process (embedded storage by default)",
        description=(
            "Run Canopy with every role in one process: coordinator, streaming node and the "
            "Milvus-API proxy. Without --object-store/--meta it keeps everything under "
            "--data-dir (file:// objects, sqlite meta); stop with Ctrl-C or SIGTERM."
        ),
        epilog=STANDALONE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("--data-dir", default="./canopy-data", help="embedded data directory")
    cmd.add_argument("--object-store", default="", help="object store URI (s3://, file://)")
    cmd.add_argument("--meta", default="", help="meta store URI (etcd://, sqlite:///)")
    cmd.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=19530, help="listen port (default 19530)")
    cmd.add_argument(
        "--channels",
        type=int,
        default=2,
        help="physical channels (WAL logs); fixed when the data directory is first used",
    )
    cmd.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    cmd.add_argument(
        "--health-host",
        default=os.environ.get("CANOPY_HEALTH__HOST", "127.0.0.1"),
        help="listen address of the HTTP health endpoint (default $CANOPY_HEALTH__HOST or "
        "127.0.0.1)",
    )
    cmd.add_argument(
        "--health-port",
        type=int,
        default=_env_int("CANOPY_HEALTH__PORT", 0),
        help="serve GET /healthz and /readyz on this port (default $CANOPY_HEALTH__PORT or 0: "
        "none)",
    )
    cmd.set_defaults(func=_cmd_standalone)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        _warn(f"{name}={value!r} is not an integer; using {default}")
        return default


def _cmd_standalone(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from woodpecker.errors import CanopyError

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from cluster.standalone import Standalone, StandaloneConfig

    if args.channels < 1:
        raise CommandError("--channels must be at least 1")
    config = StandaloneConfig(
        data_dir=args.data_dir,
        object_store=args.object_store,
        meta=args.meta,
        host=args.host,
        port=args.port,
        channels=args.channels,
        health_host=args.health_host,
        health_port=args.health_port,
    )
    try:
        asyncio.run(Standalone(config).serve_forever())
    except CanopyError as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}", exit_code=1) from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}", exit_code=1) from None
    return 0


ROLE_EPILOG = """\
configuration: a YAML file (every key: deploy/canopy.example.yaml) plus environment
overrides CANOPY_<KEY> / CANOPY_<SECTION>__<KEY>, e.g.
  CANOPY_META=etcd://127.0.0.1:2379/canopy CANOPY_PROXY__PORT=19531 canopy proxy -c canopy.yaml

start order does not matter: roles wait for each other (coordinator first is fastest)."""

ROLES = {
    "coordinator": (
        "run the coordinator (timestamps, catalog, channel assignment)",
        "Run the coordinator: the timestamp oracle, the catalog (databases, collections, "
        "partitions), the segment registry, the channel manager that assigns each WAL "
        "channel to one live streaming node, and the index build scheduler (plus one build "
        "worker with datanode.embedded). One per cluster.",
    ),
    "proxy": (
        "run a Milvus-API proxy (stateless; run several behind a load balancer)",
        "Run a stateless proxy serving the Milvus gRPC API (pymilvus connects here). It sends "
        "DDL to the coordinator and each write to the streaming node owning its shard.",
    ),
    "streaming-node": (
        "run a streaming node (owns WAL channels, writes segments)",
        "Run a streaming node: it takes over the WAL channels the coordinator assigns to it, "
        "stamps and appends writes, keeps growing segments and flushes sealed ones to object "
        "storage as Parquet.",
    ),
    "data-node": (
        "run a data node (builds the indexes of sealed segments)",
        "Run a data node: it claims the index builds the coordinator schedules for sealed "
        "segments, builds them (HNSW) and writes the index files to object storage. Optional: "
        "with datanode.embedded (the default) the coordinator runs one build worker itself.",
    ),
    "query-node": (
        "run a query node (serves searches and queries over sealed segments)",
        "Run a query node: the coordinator assigns it sealed segments of loaded collections; it "
        "loads them (with their indexes) through a local SSD cache and answers the sealed part "
        "of searches and queries for the streaming nodes. Optional: without query nodes the "
        "streaming nodes serve sealed segments themselves.",
    ),
}


def _add_roles(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for role, (summary, description) in ROLES.items():
        cmd = subparsers.add_parser(
            role,
            help=summary,
            description=description,
            epilog=ROLE_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument(
            "-c",
            "--config",
            default=None,
            help="YAML config file (default: $CANOPY_CONFIG, else defaults + env overrides)",
        )
        cmd.add_argument(
            "--print-config",
            action="store_true",
            help="print the effective configuration (file + env) as YAML and exit",
        )
        cmd.set_defaults(func=_cmd_role, role=role)


def _cmd_role(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from cluster.config import load_config
    from woodpecker.errors import CanopyError

    path = args.config or os.environ.get("CANOPY_CONFIG") or None
    try:
        config = load_config(path)
    except CanopyError as exc:
        raise CommandError(str(exc)) from None
    if args.print_config:
        import yaml

        print(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), end="")
        return 0
    from cluster.roles import (
        CoordinatorRole,
        DataNodeRole,
        ProxyRole,
        QueryNodeRole,
        StreamingRole,
        serve,
    )
    from cluster.roles.base import configure_logging

    configure_logging(config.log.level, config.log.format, args.role)
    factory = {
        "coordinator": CoordinatorRole,
        "proxy": ProxyRole,
        "streaming-node": StreamingRole,
        "data-node": DataNodeRole,
        "query-node": QueryNodeRole,
    }[args.role]
    try:
        role = factory(config)
        asyncio.run(serve(role, config.health.host, config.health.port))
    except CanopyError as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}", exit_code=1) from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}", exit_code=1) from None
    except Exception as exc:  # the failing part logged its traceback already
        raise CommandError(
            f"{args.role} stopped after a failure: {type(exc).__name__}: {exc}", exit_code=1
        ) from None
    return 0


HEALTH_EPILOG = """\
exit status: 0 healthy (or ready, with --ready), 1 not, 2 usage error. Used by the container
image's HEALTHCHECK; Kubernetes probes GET the same paths directly."""


def _add_health(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subparsers.add_parser(
        "health",
        help="probe the HTTP health endpoint of a running Canopy process",
        description=(
            "Ask a running Canopy process (standalone or any role started with a health port) "
            "whether it is alive (GET /healthz) or serving (GET /readyz, with --ready), print "
            "its answer and exit 0 when it says ok."
        ),
        epilog=HEALTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    host = os.environ.get("CANOPY_HEALTH__HOST", "")
    cmd.add_argument(
        "--host",
        default="127.0.0.1" if host in ("", "0.0.0.0", "::") else host,
        help="host of the endpoint (default 127.0.0.1, or $CANOPY_HEALTH__HOST)",
    )
    cmd.add_argument(
        "--port",
        type=int,
        default=_env_int("CANOPY_HEALTH__PORT", 9091),
        help="port of the endpoint (default $CANOPY_HEALTH__PORT or 9091)",
    )
    cmd.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    cmd.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    cmd.set_defaults(func=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    path = "/readyz" if args.ready else "/healthz"
    url = f"http://{args.host}:{args.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            body = json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:  # 503 carries the reasons
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise CommandError(f"no answer from {url}: {exc}", exit_code=1) from None
    reasons = body.get("reasons") or []
    status = body.get("status", "unknown")
    print(f"{body.get('role', '?')}: {status}" + "".join(f"\n  - {r}" for r in reasons))
    return 0 if status == "ok" else 1


def _load_plugins(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken installation must not take the CLI down
        _warn(f"cannot list command plugins: {exc}")
        return
    seen: set[str] = set()
    for ep in sorted(entry_points, key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        try:
            register: Callable[..., object] = ep.load()
            register(subparsers)
        except Exception as exc:
            _warn(
                f"command plugin {ep.name!r} ({ep.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            )


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    version = subparsers.add_parser(
        "version", help="print the Canopy version", description="Print the Canopy version."
    )
    version.set_defaults(func=_cmd_version)
    _add_standalone(subparsers)
    _add_roles(subparsers)
    _add_health(subparsers)
    _load_plugins(subparsers)
    return parser


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_blas() -> None:
    """Make numpy's BLAS single-threaded unless the environment already says otherwise (call it
    before numpy is imported). Reads are many small matrix products, run concurrently from
    the event loop and worker threads; OpenBLAS' multithreaded path for them was erratic and
    slow on small machines (measured on 2 cores, 10,000 x 128-d growing rows: proxy Search
    p50 9.4 ms with BLAS threads, 1.1 ms without)."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_TUNING = {  # bytes; an explicit MALLOC_*_ environment variable wins
    _M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 64 << 20),
    _M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 256 << 20),
    _M_TOP_PAD: ("MALLOC_TOP_PAD_", 64 << 20),
}


def keep_large_buffers_in_heap() -> None:
    """Let glibc reuse freed multi-megabyte buffers instead of returning them to the kernel at
    once. A server allocates a few fresh buffers of a request's size per insert (gRPC receive,
    decode, WAL entry); from mmap each costs page faults on first touch: about 2,700 per
    10,000 x 128-d insert, a third of its server time (measured with bench/sdk.py: standalone
    insert rows/s +28% with these settings). Memory stays bounded by the trim threshold.
    No-op where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    for param, (env, value) in _MALLOC_TUNING.items():
        if env not in os.environ:
            mallopt(param, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``canopy`` command line; returns the exit status."""
    single_threaded_blas()
    keep_large_buffers_in_heap()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = func(args)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
