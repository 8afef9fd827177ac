"""``canopy dev ...``: developer commands, registered through the ``canopy.commands`` entry
point group (see :mod:`cluster.cli`).

``canopy dev services up|down|status [--state-dir DIR]`` runs a local etcd and SeaweedFS (S3)
in the background for development. ``up`` prints ``export`` lines on stdout (progress goes to
stderr), so ``eval "$(canopy dev services up)"`` sets the AWS environment in the current shell.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from cluster.cli import CommandError
from integration.services import DevServices, ServiceError

DEFAULT_STATE_DIR = ".canopy-dev"
STATE_DIR_ENV = "CANOPY_DEV_STATE_DIR"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``canopy dev`` to the top-level ``canopy`` parser."""
    dev = subparsers.add_parser(
        "dev",
        help="developer tools: local etcd + S3 (SeaweedFS) services",
        description="Developer tools.",
    )
    dev.set_defaults(func=_help_of(dev))
    dev_sub = dev.add_subparsers(title="commands", dest="dev_command", metavar="COMMAND")

    services = dev_sub.add_parser(
        "services",
        help="run a local etcd and SeaweedFS S3 server in the background",
        description=(
            "Run a local etcd (MetaStore) and SeaweedFS S3 server (ObjectStore) in the "
            "background, bound to 127.0.0.1 on free ports. Their data, logs and the PIDs live "
            "in the state directory."
        ),
    )
    services.set_defaults(func=_help_of(services))
    svc_sub = services.add_subparsers(title="commands", dest="services_command", metavar="COMMAND")

    def state_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            type=Path,
            default=Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)),
            metavar="DIR",
            help=f"where data, logs and services.json live (default: ${STATE_DIR_ENV} or "
            f"./{DEFAULT_STATE_DIR})",
        )

    up = svc_sub.add_parser(
        "up",
        help="start etcd and SeaweedFS",
        description=(
            "Start etcd and SeaweedFS, wait until both are healthy and print the endpoints. "
            "stdout carries only shell lines (exports and comments), so "
            '`eval "$(canopy dev services up)"` sets the AWS credentials in your shell.'
        ),
    )
    state_dir_option(up)
    up.add_argument(
        "--bucket", default="canopy", help="S3 bucket created at start (default: canopy)"
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for each service to become healthy (default: 60)",
    )
    up.set_defaults(func=_cmd_up)

    down = svc_sub.add_parser(
        "down",
        help="stop the services started by `up`",
        description="Stop the services recorded in the state directory.",
    )
    state_dir_option(down)
    down.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="grace period after SIGTERM before SIGKILL (default: 10)",
    )
    down.set_defaults(func=_cmd_down)

    status = svc_sub.add_parser(
        "status",
        help="show whether the services are running",
        description="Show the recorded services and their health.",
    )
    state_dir_option(status)
    status.set_defaults(func=_cmd_status)


def _help_of(parser: argparse.ArgumentParser) -> Any:
    def show_help(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show_help


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _error(exc: ServiceError) -> CommandError:
    # one line: the first line names the log; the log tail is left out
    return CommandError((str(exc).splitlines() or ["unknown error"])[0])


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        state = DevServices.up(
            args.state_dir, bucket=args.bucket, progress=_progress, timeout=args.timeout
        )
    except ServiceError as exc:
        raise _error(exc) from None
    etcd, s3 = state["services"]["etcd"], state["services"]["s3"]
    q = shlex.quote
    lines = [
        f"# etcd       {etcd['endpoint']}  (pid {etcd['pid']})",
        f"# SeaweedFS  S3 {s3['endpoint_url']}  bucket {s3['bucket']}  (pid {s3['pid']})",
        *(f"export {k}={q(v)}" for k, v in state["env"].items()),
        "# the distributed roles (canopy coordinator|proxy|streaming-node) read these:",
        f"export CANOPY_META={q(state['uris']['meta'])}",
        f"export CANOPY_OBJECT_STORE={q(state['uris']['object_store'])}",
        "# use them:",
        f"#   canopy standalone --object-store {q(state['uris']['object_store'])} "
        f"--meta {q(state['uris']['meta'])}",
        "# run the tests against them instead of starting fresh ones:",
        f"#   export CANOPY_TEST_ETCD_ENDPOINT={etcd['endpoint']} "
        f"CANOPY_TEST_S3_ENDPOINT={s3['endpoint_url']} CANOPY_TEST_S3_BUCKET={s3['bucket']}",
        f"# stop them: canopy dev services down --state-dir {q(state['state_dir'])}",
    ]
    print("\n".join(lines), flush=True)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = DevServices.down(args.state_dir, timeout=args.timeout, progress=_progress)
    except ServiceError as exc:
        raise _error(exc) from None
    what = ", ".join(stopped) if stopped else "nothing was running"
    print(f"dev services stopped: {what} (state removed from {args.state_dir.resolve()})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        state = DevServices.status(args.state_dir)
    except ServiceError as exc:
        raise _error(exc) from None
    if state is None:
        print(f"no dev services recorded in {args.state_dir.resolve()}")
        return 1
    all_ok = True
    for name, record in state["services"].items():
        where = record.get("endpoint") or record.get("endpoint_url")
        if record["running"]:
            health = "healthy" if record["healthy"] else "NOT answering"
        else:
            health = "not running"
        all_ok = all_ok and record["healthy"]
        print(f"{name:5} {where}  pid {record['pid']}  {health}")
    print(f"object store: {state['uris']['object_store']}")
    print(f"meta:         {state['uris']['meta']}")
    return 0 if all_ok else 1
