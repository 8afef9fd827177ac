"""The pymilvus 2.6.x compat job: the same MilvusClient flow, run by the newest 2.6 release.

A session fixture builds a venv with ``pymilvus==PYMILVUS_26`` + numpy (nothing else from the
main environment) and caches it under ``${XDG_CACHE_HOME:-~/.cache}/canopy/pymilvus26-venv``;
``canopy-venv.json`` in it records the pinned version and the interpreter, and the venv is
rebuilt only when they change (a build takes ~15 s; a cached run ~0 s). A failed build, e.g. an
unreachable package index, fails the test with pip's output; it is never skipped.

The flow runs as ``venv/bin/python tests/compat/milvus_flow.py --pause-after-flush`` against a
``canopy standalone`` started from the main environment: the script prints one JSON line after
its flush and waits on stdin while the test reads the Parquet segments back, then finishes and
writes its result, which ``check_flow_result`` judges exactly as for the pinned pymilvus.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest
from test_pymilvus_flow import (
    FlowTarget,
    FlushedSnapshot,
    check_flow_result,
    snapshot_after_flush,
)

# The newest 2.6.x release (``pip index versions pymilvus``); bump it to follow 2.6 fixes.
PYMILVUS_26 = "2.6.17"
FLOW_SCRIPT = Path(__file__).resolve().parent / "milvus_flow.py"
BUILD_TIMEOUT = 300.0
FLOW_TIMEOUT = 120.0


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "canopy"


def _stamp() -> dict[str, str]:
    return {
        "pymilvus": PYMILVUS_26,
        "python": sys.version.split()[0],
        "base": os.path.realpath(sys.base_prefix),
    }


def _run_build_step(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"building the pymilvus {PYMILVUS_26} venv: {what} did not finish within "
            f"{BUILD_TIMEOUT:.0f} s; is the package index reachable? ({' '.join(cmd)})\n"
            f"{exc.stderr or ''}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"building the pymilvus {PYMILVUS_26} venv: {what} failed (exit {done.returncode}); "
            f"is the package index reachable and does it serve pymilvus=={PYMILVUS_26}?\n"
            f"$ {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
            pytrace=False,
        )


def ensure_venv(venv: Path) -> Path:
    """The venv's python, building the venv first unless its stamp matches ``_stamp()``."""
    python = venv / "bin" / "python"
    stamp_file = venv / "canopy-venv.json"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions build it once
        with contextlib.suppress(OSError, ValueError):
            if json.loads(stamp_file.read_text()) == _stamp() and python.exists():
                return python
        shutil.rmtree(venv, ignore_errors=True)
        try:
            _run_build_step([sys.executable, "-m", "venv", str(venv)], "python -m venv")
            _run_build_step(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--quiet",
                    f"pymilvus=={PYMILVUS_26}",
                    "numpy",
                ],
                f"pip install pymilvus=={PYMILVUS_26} numpy",
            )
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        stamp_file.write_text(json.dumps(_stamp()) + "\n")  # last: marks the venv complete
    return python


@pytest.fixture(scope="session")
def pymilvus26_python() -> Path:
    python = ensure_venv(cache_root() / "pymilvus26-venv")
    version = subprocess.run(
        [str(python), "-c", "import pymilvus; print(pymilvus.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_isolated_env(),
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == PYMILVUS_26, version.stdout
    return python


def _isolated_env() -> dict[str, str]:
    """The environment minus what would let the main environment's packages leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """A reader thread turning ``stream`` into a queue of lines (None at EOF)."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_flow_with_pymilvus_26(
    pymilvus26_python: Path, flow_target: FlowTarget, tmp_path: Path
) -> None:
    out = tmp_path / "result26.json"
    stderr_path = tmp_path / "flow26.stderr"
    cmd = [
        str(pymilvus26_python),
        str(FLOW_SCRIPT),
        "--uri",
        flow_target.uri,
        "--out",
        str(out),
        "--pause-after-flush",
    ]
    snapshot: FlushedSnapshot | None = None
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            env=_isolated_env(),
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            lines = _lines(proc.stdout)
            while True:
                try:
                    line = lines.get(timeout=FLOW_TIMEOUT)
                except queue.Empty:
                    pytest.fail(
                        f"the 2.6 flow said nothing for {FLOW_TIMEOUT:.0f} s:\n"
                        f"{stderr_path.read_text()[-3000:]}"
                    )
                if line is None:  # finished without pausing: a step before the flush failed
                    break
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == "flushed":
                        snapshot = snapshot_after_flush(flow_target, event)
                        proc.stdin.write("\n")
                        proc.stdin.flush()
                        break
            rc = proc.wait(timeout=FLOW_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert out.exists(), f"the 2.6 flow wrote no result (exit {rc}):\n{stderr_path.read_text()}"
    result = json.loads(out.read_text())
    check_flow_result(result, snapshot, pymilvus_prefix=PYMILVUS_26)
    assert snapshot is not None
    assert rc == 0
