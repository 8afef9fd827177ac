"""Sealed-segment I/O benchmark: write and read throughput of one segment, one table.

One segment of ``--rows`` (default 100,000) rows: int64 pk, a ``--dim`` (default 128) float32
vector, a VARCHAR title, the dynamic ``$meta`` JSON, ``_row_id`` and ``_ts``. Per backend it
measures (median of ``--repeat`` runs, each on a fresh segment and a fresh reader):

* ``write``: ``write_segment`` (Parquet encode + conditional PUT of the insert file + manifest);
* ``read all`` / ``read vec`` / ``read pk``: ``SegmentReader.read`` of every column, of the
  vector column only, of the pk only (footer GET + column chunk range GETs + decode);
* ``read pk+vec ts<=50%``: pk and vector with a ``filter_ts`` that keeps half the rows;
* ``append 1k deletes`` / ``read deltas``: one delta file and the manifest CAS; reading it back.

"MiB moved" is what crossed the ObjectStore interface (PUT + GET bytes, from ``Metered``),
MiB/s that over the wall time, and "% of file" it against the insert file size: what column
projection and ``_ts`` pruning save.

Backends are object store URIs or ``seaweedfs`` (started locally for the run). Without
``--store`` it runs ``memory://``, ``file://<tmpdir>`` and ``seaweedfs``.

    python bench/segment_io.py
    python bench/segment_io.py --store memory:// --rows 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tables import format_table  # bench/tables.py: run as python bench/<name>.py

from cluster.storage import (
    SegmentManifest,
    SegmentReader,
    append_deltas,
    delete_segment,
    read_deltas,
    read_manifest,
    write_segment,
)
from woodpecker.objectstore import Metered, open_object_store

MiB = 1024 * 1024
TS0 = 460_000_000_000 << 18


@dataclass
class Row:
    backend: str
    operation: str
    seconds: float
    puts: int
    gets: int
    moved: float  # bytes PUT + GET
    file_bytes: int  # insert file size, 0 for delta operations

    @property
    def mib_s(self) -> float:
        return self.moved / MiB / self.seconds if self.seconds > 0 else 0.0


def make_table(rows: int, dim: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(1000, dim)).astype(np.float32)
    x = centers[rng.integers(0, 1000, rows)] + 0.3 * rng.normal(size=(rows, dim)).astype(np.float32)
    ids = np.arange(rows)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim),
            "title": pa.array([f"document {i} about topic {i % 97}" for i in range(rows)]),
            "$meta": pa.array([json.dumps({"n": i, "even": i % 2 == 0}) for i in range(rows)]),
            "_row_id": pa.array(ids + 1_000_000, pa.int64()),
            "_ts": pa.array(ids.astype(np.uint64) + TS0),
        }
    )


class Bench:
    def __init__(self, store: Metered, label: str, table: pa.Table, repeat: int) -> None:
        self.store = store
        self.label = label
        self.table = table
        self.repeat = repeat
        self.root = f"bench-{uuid.uuid4().hex[:8]}"
        self.next_segment = 1
        self.segments: list[int] = []

    async def _write(self) -> SegmentManifest:
        sid = self.next_segment
        self.next_segment += 1
        self.segments.append(sid)
        return await write_segment(
            self.store, self.root, 1, 1, sid, self.table, channel="bench", pk_field="id"
        )

    async def measure(
        self, name: str, run: Callable[[], Awaitable[object]], file_bytes: int
    ) -> Row:
        times, puts, gets, moved = [], [], [], []
        for _ in range(self.repeat):
            self.store.meter.reset()
            started = time.perf_counter()
            await run()
            times.append(time.perf_counter() - started)
            ops = self.store.meter.ops
            puts.append(ops["put"].requests)
            gets.append(ops["get"].requests)
            moved.append(ops["put"].bytes + ops["get"].bytes)
        return Row(
            self.label,
            name,
            statistics.median(times),
            int(statistics.median(puts)),
            int(statistics.median(gets)),
            statistics.median(moved),
            file_bytes,
        )

    async def run(self, progress: Callable[[str], None]) -> list[Row]:
        progress(f"{self.label}: write")
        m = await self._write()  # warm-up, and the segment the reads use
        size = m.insert_files[0].size
        rows = [await self.measure("write", self._write, size)]
        half = TS0 + self.table.num_rows // 2 - 1
        reads: list[tuple[str, list[str] | None, int | None]] = [
            ("read all", None, None),
            ("read vec", ["vec"], None),
            ("read pk", ["id"], None),
            ("read pk+vec ts<=50%", ["id", "vec"], half),
        ]
        for name, columns, filter_ts in reads:
            progress(f"{self.label}: {name}")

            async def read(columns=columns, filter_ts=filter_ts) -> None:  # type: ignore[no-untyped-def]
                table = await SegmentReader(self.store, m).read(columns, filter_ts=filter_ts)
                assert table.num_rows > 0

            rows.append(await self.measure(name, read, size))
        progress(f"{self.label}: deltas")
        pks = np.arange(0, self.table.num_rows, max(1, self.table.num_rows // 1000))[:1000]
        tss = np.full(len(pks), TS0 + self.table.num_rows, np.uint64)

        async def append() -> None:
            await append_deltas(self.store, self.root, 1, 1, m.segment_id, pks, tss)

        rows.append(await self.measure("append 1k deletes", append, 0))
        fresh = await read_manifest(self.store, self.root, 1, 1, m.segment_id)

        async def deltas() -> None:
            await read_deltas(self.store, fresh)

        rows.append(await self.measure(f"read deltas ({len(fresh.delta_files)} files)", deltas, 0))
        return rows

    async def cleanup(self) -> None:
        for sid in self.segments:
            with contextlib.suppress(Exception):
                await delete_segment(self.store, self.root, 1, 1, sid)


def render(rows: list[Row], title: str) -> str:
    header = ("backend", "operation", "median s", "PUTs", "GETs", "MiB moved", "MiB/s", "% of file")
    body = [
        (
            r.backend,
            r.operation,
            f"{r.seconds:.3f}",
            str(r.puts),
            str(r.gets),
            f"{r.moved / MiB:.2f}",
            f"{r.mib_s:.0f}",
            f"{100 * r.moved / r.file_bytes:.1f}" if r.file_bytes else "",
        )
        for r in rows
    ]
    right = (False, False, True, True, True, True, True, True)
    return format_table(title, header, body, right, [r.backend for r in rows])


@contextlib.contextmanager
def seaweedfs(workdir: Path, progress: Callable[[str], None]) -> Iterator[tuple[str, dict]]:
    from integration import services

    svc = services.start_seaweedfs(workdir / "seaweedfs", progress=progress)
    try:
        options = {"access_key_id": svc.access_key_id, "secret_access_key": svc.secret_access_key}
        yield svc.uri("bench"), options
    finally:
        services.stop(svc)


async def bench_store(
    label: str, uri: str, options: dict, table: pa.Table, repeat: int, progress
) -> list[Row]:  # type: ignore[no-untyped-def]
    store = Metered(open_object_store(uri, **options))
    bench = Bench(store, label, table, repeat)
    try:
        return await bench.run(progress)
    finally:
        await bench.cleanup()
        await store.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure sealed-segment write/read throughput (Parquet + ObjectStore) for one "
            "segment of ROWS x DIM float vectors with scalar columns; print one table."
        )
    )
    parser.add_argument(
        "--store",
        action="append",
        metavar="URI",
        help=(
            "backend (repeatable): an object store URI (memory://, file:///dir, "
            "s3://bucket/prefix?endpoint=...) or 'seaweedfs' to start one locally. "
            "Default: memory://, file://<tmpdir>, seaweedfs"
        ),
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows (default 100000)")
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (default 128)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.rows < 2 or args.dim < 1 or args.repeat < 1:
        parser.error("--rows must be >= 2, --dim and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    table = make_table(args.rows, args.dim)
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="canopy-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        specs = args.store or ["memory://", f"file://{workdir / 'files'}", "seaweedfs"]
        for spec in specs:
            if spec == "seaweedfs":
                uri, options = stack.enter_context(seaweedfs(workdir, progress))
                label = "seaweedfs"
            else:
                uri, options, label = spec, {}, spec.split("?", 1)[0].split(":", 1)[0]
            rows += asyncio.run(bench_store(label, uri, options, table, args.repeat, progress))
    title = (
        f"Segment I/O: {args.rows:,} rows x {args.dim}-d float32 + pk, varchar, $meta, "
        f"_row_id, _ts ({table.nbytes / MiB:.1f} MiB in Arrow); median of {args.repeat}"
    )
    print(render(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
