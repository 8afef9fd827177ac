"""A real ``canopy standalone`` process for compat tests, and reading its flushed data back.

``StandaloneProcess`` starts ``python -m cluster standalone`` on a free loopback port with an
embedded data directory (file:// objects, sqlite meta) in its own session, waits until it
answers GetVersion, and stops it by signal. ``read_visible_rows`` reads the Parquet segments and
delete logs of a collection straight from the data directory with the storage layer's readers
(the read path is a later milestone) and recomputes which rows are visible.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

from cluster.storage.deltas import read_deltas
from cluster.storage.segment_files import list_segments
from cluster.storage.segment_reader import read_segment
from integration.services import free_port
from woodpecker.objectstore import open_object_store

START_TIMEOUT = 30.0


def answers(port: int) -> bool:
    """GetVersion over a fresh channel (pymilvus caches connections per address, so a
    MilvusClient probe can "succeed" against the previous, stopped process)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        stub.GetVersion(milvus_pb2.GetVersionRequest(), timeout=1)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


class StandaloneProcess:
    """``canopy standalone --data-dir DATA --port PORT`` as a child process; its output goes to
    ``standalone-PORT.log`` next to the data directory."""

    def __init__(self, data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def objects_uri(self) -> str:
        """Where the embedded standalone keeps its objects (segments and WAL blocks)."""
        return f"file://{self.data_dir.resolve()}/objects"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"standalone-{self.port}.log"

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cluster",
                    "standalone",
                    "--data-dir",
                    str(self.data_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"standalone exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if answers(self.port):
                return
            time.sleep(0.1)
        raise AssertionError(
            f"canopy standalone did not answer within {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> StandaloneProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_if_running()


def read_visible_rows(
    objects_uri: str, collection_id: int, columns: Sequence[str] = ("id",)
) -> dict[Any, dict[str, Any]]:
    """pk -> {column: value, ..., "partition_id": id} of the rows visible after every insert
    and delete in the collection's flushed segments: the newest version of each pk, unless a
    newer delete hides it (an upsert's delete shares its insert's timestamp). ``columns`` must
    start with the primary-key field."""
    pk_name = columns[0]
    wanted = list(dict.fromkeys([*columns, "_ts"]))

    async def read() -> tuple[list[dict[str, Any]], list[tuple[Any, int]]]:
        store = open_object_store(objects_uri)
        rows: list[dict[str, Any]] = []
        deletes: list[tuple[Any, int]] = []
        try:
            for manifest in await list_segments(store, "", collection_id):
                table = await read_segment(store, manifest, columns=wanted)
                for row in table.to_pylist():
                    row["partition_id"] = manifest.partition_id
                    rows.append(row)
                pks, tss = await read_deltas(store, manifest)
                deletes += zip(pks.to_pylist(), tss.to_pylist(), strict=True)
        finally:
            await store.close()
        return rows, deletes

    rows, deletes = asyncio.run(read())
    latest_delete: dict[Any, int] = {}
    for pk, ts in deletes:
        latest_delete[pk] = max(ts, latest_delete.get(pk, 0))
    newest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        pk = row[pk_name]
        if pk not in newest or row["_ts"] > newest[pk]["_ts"]:
            newest[pk] = row
    return {pk: row for pk, row in newest.items() if latest_delete.get(pk, -1) <= row["_ts"]}
