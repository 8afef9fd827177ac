"""bench/sdk.py end to end at toy sizes: it starts its own standalone, runs every case and
prints one table with every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HEADER = ["case", "collection", "rows/s", "p50", "ms", "p99", "ms", "x", "pymilvus"]
CASES = [
    f"insert {shape} {kind}"
    for kind in ("quick", "schema")
    for shape in ("pymilvus rows", "sdk rows", "sdk numpy", "sdk arrow")
]


def _row(lines: list[str], label: str) -> list[str] | None:
    """The cells of the first table row whose words start with ``label``'s words."""
    want = label.split()
    return next((line.split() for line in lines if line.split()[: len(want)] == want), None)


def test_bench_sdk_prints_every_row() -> None:
    cmd = [sys.executable, str(REPO / "bench" / "sdk.py")]
    cmd += ["--rows", "200", "--batch", "100", "--dim", "8", "--queries", "12"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("SDK vs pymilvus against canopy standalone: 200 rows x 8-d")
    assert lines[1].split() == HEADER
    for case in CASES:
        cells = _row(lines, case)
        assert cells is not None, f"no row {case!r} in\n{done.stdout}"
        assert cells[-4].replace(",", "").isdigit()  # rows/s
        assert float(cells[-1]) > 0  # x pymilvus
    for who in ("pymilvus", "sdk"):
        cells = _row(lines, f"search nq=1 {who} schema")
        assert cells is not None, f"no search row for {who} in\n{done.stdout}"
        p50, p99 = float(cells[-3]), float(cells[-2])
        assert 0 < p50 <= p99


def test_bench_sdk_help() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sdk.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for flag in ("--rows", "--dim", "--batch", "--repeat", "--seed"):
        assert flag in done.stdout
