"""The programs in ``examples/`` run as users run them -- subprocesses against a real
``canopy standalone`` -- and do what they claim: the quickstart prints its results; the
Parquet loader writes a sample, creates the collection from its schema and loads every row;
the SQLite mirror reproduces the collection's content, resumes from its stored token without
applying any change twice, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from standalone_process import StandaloneProcess

from sdk import Client, DataType

pytestmark = pytest.mark.compat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneProcess]:
    with StandaloneProcess(tmp_path_factory.mktemp("examples") / "data") as proc:
        yield proc


def command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / script), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command(script, *args), capture_output=True, text=True, env=env(), timeout=180
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr}"
    return done


def count(client: Client, name: str) -> int:
    (row,) = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return row["count(*)"]


# --- quickstart -----------------------------------------------------------------------------------


def test_quickstart(server: StandaloneProcess) -> None:
    out = run("quickstart.py", "--uri", server.uri).stdout.splitlines()
    assert "nearest to doc 0: 0 'doc 0'" in out
    assert "count: 199" in out  # 200 inserted, one deleted; the upsert replaced id 7
    assert "get 7: [{'id': 7, 'title': 'doc 7 (edited)'}]" in out
    assert [line for line in out if line.startswith("change:")] == [
        "change: insert 100 row(s), first key 0",
        "change: insert 100 row(s), first key 100",
        "change: upsert 1 row(s), first key 7",
    ]
    assert any(line.startswith(f"cluster: [('{server.address}'") for line in out)
    with Client(uri=server.uri) as client:
        assert count(client, "quickstart") == 199


# --- ingest_parquet -------------------------------------------------------------------------------


def test_ingest_parquet_sample(server: StandaloneProcess, tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    run("ingest_parquet.py", str(path), "--make-sample", "5000", "--dim", "16", "--seed", "3")
    file_rows = pq.read_metadata(path).num_rows
    assert file_rows == 5000
    done = run("ingest_parquet.py", str(path), "--uri", server.uri, "--batch", "700")
    assert "inserted 5000 rows into 'items'" in done.stdout
    assert "700/5,000 rows" in done.stderr  # the bar after the first batch
    assert "100.0%  5,000/5,000 rows" in done.stderr
    with Client(uri=server.uri) as client:
        fields = {f["name"]: f["type"] for f in client.describe_collection("items")["fields"]}
        assert fields == {
            "id": DataType.INT64,
            "title": DataType.VARCHAR,
            "price": DataType.DOUBLE,
            "year": DataType.INT32,
            "in_stock": DataType.BOOL,
            "embedding": DataType.FLOAT_VECTOR,
        }
        assert count(client, "items") == file_rows
        sample = pq.read_table(path).take([0, 1234, 4999]).to_pylist()
        got = client.get("items", ids=[r["id"] for r in sample], consistency_level="Strong")
    by_id = {r["id"]: r for r in got}
    for want in sample:
        have = by_id[want["id"]]
        np.testing.assert_array_equal(
            np.float32(have.pop("embedding")), np.float32(want.pop("embedding"))
        )
        assert have == want


# --- mirror_sqlite --------------------------------------------------------------------------------

MIRRORED = "mirrored"


def mirror_args(server: StandaloneProcess, db: Path) -> list[str]:
    return ["--uri", server.uri, "--collection", MIRRORED, "--db", str(db)]


def mirrored(db: Path) -> tuple[dict[Any, dict[str, Any]], dict[Any, int], int]:
    """(pk -> doc, pk -> writes, changes applied) from the mirror database."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT pk, doc, writes FROM {MIRRORED}").fetchall()
        (changes,) = conn.execute(
            "SELECT changes FROM mirror_state WHERE collection = ?", (MIRRORED,)
        ).fetchone()
    return {pk: json.loads(doc) for pk, doc, _ in rows}, {pk: w for pk, _, w in rows}, changes


def content(client: Client) -> dict[Any, dict[str, Any]]:
    rows = client.query(MIRRORED, filter="id >= 0", consistency_level="Strong")
    return {row.pop("id"): row for row in rows}


def put(client: Client, ids: list[int], n: int, *, upsert: bool = True) -> None:
    rows = [{"id": i, "vector": [float(i), float(n), 0.5, 1.0], "n": n} for i in ids]
    (client.upsert if upsert else client.insert)(MIRRORED, rows)


def test_mirror_sqlite_applies_resumes_and_stops(server: StandaloneProcess, tmp_path: Path) -> None:
    db = tmp_path / "mirror.sqlite"
    writes: dict[int, int] = {}  # pk -> writes the mirror must count (reset by a delete)

    def wrote(ids: list[int]) -> None:
        for i in ids:
            writes[i] = writes.get(i, 0) + 1

    def deleted(ids: list[int]) -> None:
        for i in ids:
            writes.pop(i)

    with Client(uri=server.uri) as client:
        client.create_collection(MIRRORED, dimension=4, num_shards=1)  # one change per call
        put(client, list(range(20)), 0, upsert=False)
        wrote(list(range(20)))
        put(client, [0, 1, 2, 3, 4], 1)
        wrote([0, 1, 2, 3, 4])
        put(client, [0, 1], 2)
        wrote([0, 1])
        client.delete(MIRRORED, ids=[10, 11])
        client.delete(MIRRORED, filter="id in [12]")
        deleted([10, 11, 12])

        first = run("mirror_sqlite.py", *mirror_args(server, db), "--until-idle", "2")
        assert "applied 5 changes this run, 5 in all" in first.stdout
        docs, counts, changes = mirrored(db)
        assert docs == content(client)
        assert counts == writes and changes == 5

        # resume: only the new changes are applied, each once
        put(client, [0, 1, 2], 3)
        wrote([0, 1, 2])
        client.delete(MIRRORED, ids=[13])
        deleted([13])
        put(client, [100, 101, 102, 10], 0, upsert=False)  # 10 was deleted: a fresh row
        wrote([100, 101, 102, 10])
        second = run("mirror_sqlite.py", *mirror_args(server, db), "--until-idle", "2")
        assert "applied 3 changes this run, 8 in all" in second.stdout
        docs, counts, changes = mirrored(db)
        assert docs == content(client)
        assert counts == writes and changes == 8
        assert counts[0] == 4 and counts[10] == 1

        # a long-running mirror follows new writes and stops cleanly on Ctrl-C
        proc = subprocess.Popen(
            command("mirror_sqlite.py", *mirror_args(server, db)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        try:
            put(client, [3], 4)
            wrote([3])
            deadline = time.monotonic() + 60
            while mirrored(db)[2] < 9:
                assert time.monotonic() < deadline, "the mirror did not apply the new change"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130 and "stopped" in stderr
        assert "applied 1 changes this run, 9 in all" in stdout
        docs, counts, changes = mirrored(db)
        assert docs == content(client)
        assert counts == writes and changes == 9
