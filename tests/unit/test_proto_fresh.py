"""The checked-in gRPC bindings (``cluster/proto/canopy_pb2*.py``) are what ``scripts/gen_proto``
makes from ``cluster/proto/canopy.proto`` today.

The generator runs from its own cached venv (pinned grpcio-tools, built on first use: about ten
seconds with the package index reachable). When that venv cannot be built the test fails, saying
why (the check must not silently stop running); when the files differ it fails, saying how to
regenerate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_proto"
GENERATED = ("canopy_pb2.py", "canopy_pb2_grpc.py", "feed_pb2.py", "feed_pb2_grpc.py")


def test_generated_bindings_are_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    if result.returncode != 0:
        if "could not install grpcio-tools" in result.stderr:
            pytest.fail(
                "scripts/gen_proto cannot build its generator venv (is the package index "
                f"reachable?):\n{result.stderr}"
            )
        pytest.fail(f"scripts/gen_proto failed ({result.returncode}):\n{result.stderr}")
    stale = [
        name
        for name in GENERATED
        if (tmp_path / name).read_bytes() != (ROOT / "cluster" / "proto" / name).read_bytes()
    ]
    assert not stale, (
        f"cluster/proto/{', '.join(stale)} differ from what cluster/proto/canopy.proto generates: "
        "run scripts/gen_proto and commit the result"
    )


def test_bindings_load_with_the_runtime_protobuf_and_grpc() -> None:
    from cluster.proto import canopy_pb2, canopy_pb2_grpc

    assert canopy_pb2.DESCRIPTOR.package == "canopy.v1"
    assert {s.name for s in canopy_pb2.DESCRIPTOR.services_by_name.values()} == {
        "Coordinator",
        "Catalog",
        "Streaming",
        "QueryNode",
    }
    assert canopy_pb2_grpc.CoordinatorStub and canopy_pb2_grpc.add_StreamingServicer_to_server
