"""milvus-lite as a real server process for differential tests.

``lite_server`` builds (once, cached) the milvus-lite venv of ``bench/insert.py`` and runs
``python -m milvus_lite server`` on a free loopback port under that venv, yielding its URI; the
process is stopped with SIGINT on exit. A venv that cannot be built fails the test (the
comparison needs the real peer), it never skips.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_bench_insert() -> ModuleType:
    """``bench/insert.py`` as a module (it owns the venv builder and the process helpers)."""
    spec = importlib.util.spec_from_file_location("bench_insert", REPO / "bench" / "insert.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def lite_server(tmp: Path) -> Iterator[str]:
    """A milvus-lite server with its data under ``tmp``; yields its ``http://`` URI."""
    bench = load_bench_insert()
    try:
        python = bench.lite_venv()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot build the milvus-lite venv (is the package index reachable?): {exc}")
    port = bench.free_port()
    cmd = [str(python), "-m", "milvus_lite", "server", "--data-dir", str(tmp / "data")]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with bench.server_process(
        cmd, port, tmp / "lite.log", stop_signal=signal.SIGINT, env=env, cwd=tmp
    ) as uri:
        yield uri
