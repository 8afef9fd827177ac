"""ObjectStore micro-benchmark: PUT/GET latency and PUT throughput per backend, one table.

Per backend it measures

* PUT and GET latency (p50/p99, sequential, one request at a time) for 4 KiB and 1 MiB objects;
* aggregate PUT throughput (MiB/s) for 2 MiB and 8 MiB objects with 1 and 8 requests in flight.

Backends are object store URIs (``--store file:///tmp/x --store s3://bucket/p?endpoint=...``)
or the words ``seaweedfs`` / ``moto``, which start that S3 server locally (127.0.0.1, free ports)
for the run and stop it after. Without ``--store`` it runs ``memory://``, ``file://<tmpdir>``
and ``seaweedfs``. Objects are written under a fresh ``bench-<id>/`` prefix and deleted after.

    python bench/objectstore.py
    python bench/objectstore.py --store seaweedfs --store moto --iterations 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tables import format_table  # bench/tables.py: run as python bench/<name>.py

from woodpecker.objectstore import open_object_store
from woodpecker.objectstore.base import ObjectStore

KiB = 1024
MiB = 1024 * KiB
LATENCY_SIZES = (4 * KiB, 1 * MiB)
THROUGHPUT_SIZES = (2 * MiB, 8 * MiB)
IN_FLIGHT = (1, 8)
WARMUP = 3
SERVERS = ("seaweedfs", "moto")


@dataclass
class Row:
    backend: str
    measurement: str
    ops: int
    p50_ms: float
    p99_ms: float
    mib_s: float


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (seconds), ``q`` in (0, 100]."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"


def make_row(backend: str, name: str, lat: list[float], nbytes: int, wall: float) -> Row:
    return Row(
        backend,
        name,
        len(lat),
        percentile(lat, 50) * 1e3,
        percentile(lat, 99) * 1e3,
        nbytes / MiB / wall if wall > 0 else 0.0,
    )


class Bench:
    def __init__(self, store: ObjectStore, backend: str, iterations: int, volume: int) -> None:
        self.store = store
        self.backend = backend
        self.iterations = iterations
        self.volume = volume  # bytes written per throughput measurement
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}/"
        self.written: list[str] = []
        self.counter = 0

    def key(self, kind: str) -> str:
        self.counter += 1
        key = f"{self.prefix}{kind}/{self.counter:08d}"
        self.written.append(key)
        return key

    async def latency(self, size: int) -> list[Row]:
        data = os.urandom(size)
        label = size_label(size)
        for _ in range(WARMUP):
            await self.store.put(self.key("warm"), data)
        put_lat: list[float] = []
        wall = time.perf_counter()
        for _ in range(self.iterations):
            key = self.key(f"lat{label}")
            t = time.perf_counter()
            await self.store.put(key, data)
            put_lat.append(time.perf_counter() - t)
        put_wall = time.perf_counter() - wall
        target = self.written[-1]
        get_lat: list[float] = []
        wall = time.perf_counter()
        for _ in range(self.iterations):
            t = time.perf_counter()
            got = await self.store.get(target)
            get_lat.append(time.perf_counter() - t)
            if len(got) != size:
                raise RuntimeError(f"{self.backend}: GET returned {len(got)} bytes, not {size}")
        get_wall = time.perf_counter() - wall
        n = self.iterations * size
        return [
            make_row(self.backend, f"PUT {label}", put_lat, n, put_wall),
            make_row(self.backend, f"GET {label}", get_lat, n, get_wall),
        ]

    async def throughput(self, size: int, in_flight: int) -> Row:
        data = os.urandom(size)
        count = max(2 * in_flight, -(-self.volume // size))
        await self.store.put(self.key("warm"), data)
        sem = asyncio.Semaphore(in_flight)
        lat: list[float] = []

        async def one(key: str) -> None:
            async with sem:
                t = time.perf_counter()
                await self.store.put(key, data)
                lat.append(time.perf_counter() - t)

        keys = [self.key(f"tp{size_label(size)}x{in_flight}") for _ in range(count)]
        wall = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for key in keys:
                group.create_task(one(key))
        wall = time.perf_counter() - wall
        name = f"PUT {size_label(size)} x{in_flight} in flight"
        return make_row(self.backend, name, lat, count * size, wall)

    async def cleanup(self) -> None:
        sem = asyncio.Semaphore(32)

        async def delete(key: str) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await self.store.delete(key)

        async with asyncio.TaskGroup() as group:
            for key in self.written:
                group.create_task(delete(key))

    async def run(self, progress: Callable[[str], None]) -> list[Row]:
        rows: list[Row] = []
        try:
            for size in LATENCY_SIZES:
                progress(f"{self.backend}: latency {size_label(size)}")
                rows += await self.latency(size)
            for size in THROUGHPUT_SIZES:
                for in_flight in IN_FLIGHT:
                    progress(f"{self.backend}: throughput {size_label(size)} x{in_flight}")
                    rows.append(await self.throughput(size, in_flight))
        finally:
            await self.cleanup()
        return rows


def render(rows: list[Row], title: str) -> str:
    header = ("backend", "measurement", "ops", "p50 ms", "p99 ms", "MiB/s")
    body = [
        (
            r.backend,
            r.measurement,
            str(r.ops),
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.mib_s:.1f}",
        )
        for r in rows
    ]
    right = (False, False, True, True, True, True)
    return format_table(title, header, body, right, [r.backend for r in rows])


@dataclass
class Target:
    label: str
    uri: str
    options: dict[str, object]


@contextlib.contextmanager
def started_server(kind: str, workdir: Path, progress: Callable[[str], None]) -> Iterator[Target]:
    """Start SeaweedFS or moto via ``integration.services`` and stop it afterwards."""
    from integration import services

    if kind == "seaweedfs":
        svc = services.start_seaweedfs(workdir / "seaweedfs", progress=progress)
    else:
        svc = services.start_moto(progress=progress)
    try:
        yield Target(
            kind,
            svc.uri("bench"),
            {"access_key_id": svc.access_key_id, "secret_access_key": svc.secret_access_key},
        )
    finally:
        services.stop(svc)


def short_label(uri: str) -> str:
    scheme = uri.split(":", 1)[0]
    if scheme in ("memory", "file"):
        return scheme
    return uri.split("?", 1)[0]


async def bench_target(target: Target, args: argparse.Namespace, progress) -> list[Row]:
    store = open_object_store(target.uri, **target.options)
    try:
        return await Bench(store, target.label, args.iterations, args.volume_mib * MiB).run(
            progress
        )
    finally:
        await store.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure ObjectStore PUT/GET latency (4 KiB, 1 MiB) and PUT throughput "
            "(2 MiB, 8 MiB objects, 1 and 8 in flight) per backend; print one table."
        )
    )
    parser.add_argument(
        "--store",
        action="append",
        metavar="URI",
        help=(
            "backend to measure (repeatable): an object store URI (memory://, file:///dir, "
            "s3://bucket/prefix?endpoint=...), or 'seaweedfs' / 'moto' to start that S3 "
            "server locally for the run. Default: memory://, file://<tmpdir>, seaweedfs"
        ),
    )
    parser.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=100,
        help="sequential requests per latency measurement (default 100)",
    )
    parser.add_argument(
        "--volume-mib",
        type=int,
        default=128,
        help="MiB written per throughput measurement (default 128)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.volume_mib < 1:
        parser.error("--iterations and --volume-mib must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="canopy-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        stores = args.store or ["memory://", f"file://{workdir / 'files'}", "seaweedfs"]
        targets: list[Target] = []
        for spec in stores:
            if spec in SERVERS:
                targets.append(stack.enter_context(started_server(spec, workdir, progress)))
            else:
                targets.append(Target(short_label(spec), spec, {}))
        started = time.perf_counter()
        for target in targets:
            rows += asyncio.run(bench_target(target, args, progress))
        elapsed = time.perf_counter() - started
    title = (
        f"ObjectStore benchmark: latency n={args.iterations} sequential; throughput "
        f"{args.volume_mib} MiB per row; {elapsed:.0f} s"
    )
    print(render(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
