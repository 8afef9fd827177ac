"""WAL append benchmark: throughput, latency and cost beside the raw PUT ceiling; one table.

Per backend (``file://`` in a temp dir with sqlite meta; SeaweedFS started locally with etcd or
sqlite meta) it measures, in one run:

* the raw ObjectStore PUT ceiling on a fresh client of the same store: aggregate MiB/s of 2 MiB
  objects with 8 in flight, and MiB/s and latency p50/p99 of 2 MiB PUTs sent one at a time,
  before and after the WAL runs; around each saturation run the 8-in-flight figure again
  (stores drift: SeaweedFS slows down as it fills, a VM disk's fsync speed varies), so each
  saturation row is compared with the ceiling measured under the same conditions;
* for each payload size (default 1 KiB, 16 KiB, 256 KiB) and workload
  - ``append x1`` / ``append x8``: 1 or 8 appenders, each awaiting ``writer.append`` in a loop,
  - ``nowait sat``: one producer keeping ``--window-mib`` of ``append_nowait`` entries in
    flight (saturation),
  the append throughput (payload MiB/s, and % of the PUT ceiling), append latency p50/p99 (call
  to acknowledgement), PUTs per MiB appended (from ``LogStore.meter``), and the
  append-to-visible latency of two tailing readers: one on the writer's own LogStore (woken by
  the writer) and one on a second LogStore instance (polling, as a reader in another process).

Targets: saturation >= 85 % of the PUT ceiling for large batches (the 256 KiB rows), <= 0.6 PUT
per MiB at saturation, p99 append latency <= max_interval + 2 x PUT p99 (the append rows; a
saturated writer's latency is its queue). Saturation rows run without readers so they measure the
writer alone (readers in the same process share its event loop).

    python bench/wal.py
    python bench/wal.py --backend seaweedfs --sizes 16,256 --duration 10 --meta sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import struct
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from woodpecker import LogStore, MessageId, WalConfig
from woodpecker.meta.base import MetaStore
from woodpecker.meta.uri import open_meta_store
from woodpecker.objectstore import open_object_store
from woodpecker.objectstore.base import ObjectStore

KiB = 1024
MiB = 1024 * KiB
CEILING_OBJECT = 2 * MiB
CEILING_IN_FLIGHT = 8
WORKLOADS = ("append x1", "append x8", "nowait sat")
BACKENDS = ("file", "seaweedfs")
TARGET_CEILING_PCT = 85.0
TARGET_PUTS_PER_MIB = 0.6

Progress = Callable[[str], None]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of ``samples``, ``q`` in (0, 100]; NaN without samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB and size % MiB == 0 else f"{size // KiB} KiB"


# --- backends ----------------------------------------------------------------------------------


@dataclass
class Backend:
    """How to open fresh object store clients and meta stores for one backend."""

    name: str
    open_objects: Callable[[], ObjectStore]
    open_meta: Callable[[], MetaStore]
    share_meta: bool  # sqlite allows one opener: the second LogStore shares the instance


@contextlib.contextmanager
def file_backend(workdir: Path) -> Iterator[Backend]:
    root = workdir / "file-objects"
    db = workdir / "file-meta.db"
    yield Backend(
        "file",
        lambda: open_object_store(f"file://{root}"),
        lambda: open_meta_store(f"sqlite:///{db}"),
        share_meta=True,
    )


@contextlib.contextmanager
def seaweedfs_backend(workdir: Path, meta: str, progress: Progress) -> Iterator[Backend]:
    from integration import services

    with contextlib.ExitStack() as stack:
        s3 = services.start_seaweedfs(workdir / "seaweedfs", progress=progress)
        stack.callback(services.stop, s3)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        uri = s3.uri(prefix)
        creds = {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key}
        if meta == "etcd":
            etcd = services.start_etcd(workdir / "etcd", progress=progress)
            stack.callback(services.stop, etcd)
            meta_uri = etcd.uri(prefix)
        else:
            meta_uri = f"sqlite:///{workdir / 'seaweedfs-meta.db'}"
        yield Backend(
            f"seaweedfs+{meta}",
            lambda: open_object_store(uri, **creds),
            lambda: open_meta_store(meta_uri),
            share_meta=meta != "etcd",
        )


# --- raw PUT ceiling ---------------------------------------------------------------------------


class RawPuts:
    """Raw ObjectStore PUTs of 2 MiB objects on a fresh client; ``cleanup`` deletes them."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.data = os.urandom(CEILING_OBJECT)
        self.prefix = f"bench-ceiling-{uuid.uuid4().hex[:8]}/"
        self.keys: list[str] = []

    def _key(self) -> str:
        self.keys.append(f"{self.prefix}{len(self.keys):08d}")
        return self.keys[-1]

    async def warm_up(self) -> None:
        for _ in range(3):  # connections, directories
            await self.store.put(self._key(), self.data)

    async def run(self, count: int, in_flight: int) -> tuple[list[float], float]:
        """PUT ``count`` objects, ``in_flight`` at a time: (latencies, aggregate MiB/s)."""
        lat: list[float] = []
        sem = asyncio.Semaphore(in_flight)

        async def one(k: str) -> None:
            async with sem:
                t = time.perf_counter()
                await self.store.put(k, self.data)
                lat.append(time.perf_counter() - t)

        batch = [self._key() for _ in range(count)]
        wall = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in batch:
                group.create_task(one(k))
        wall = time.perf_counter() - wall
        return lat, count * CEILING_OBJECT / MiB / wall

    async def aggregate(self, volume: int) -> tuple[list[float], float]:
        return await self.run(
            max(4 * CEILING_IN_FLIGHT, volume // CEILING_OBJECT), CEILING_IN_FLIGHT
        )

    async def cleanup(self) -> None:
        sem = asyncio.Semaphore(32)

        async def delete(k: str) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await self.store.delete(k)

        await asyncio.gather(*(delete(k) for k in self.keys))
        self.keys.clear()


@dataclass
class Ceiling:
    mib_s: float  # aggregate, CEILING_IN_FLIGHT in flight
    p50: float  # seconds, one PUT at a time
    p99: float
    loaded_p50: float  # seconds, CEILING_IN_FLIGHT in flight
    loaded_p99: float
    puts: int  # PUTs in the aggregate measurement
    seq_puts: int  # PUTs in the sequential latency measurement
    seq_mib_s: float  # their throughput, one PUT at a time
    after: Ceiling | None = None  # the same measurement repeated after the WAL runs

    @property
    def best_mib_s(self) -> float:
        """The best raw PUT throughput measured (x8 or x1, before or after). (On file:// one
        PUT at a time can beat 8 in flight.)"""
        runs = [self, self.after] if self.after else [self]
        return max(max(c.mib_s, c.seq_mib_s) for c in runs)

    @property
    def strict_p99(self) -> float:
        """The lower of the two sequential PUT p99s: the latency budget's PUT term."""
        return min(self.p99, self.after.p99 if self.after else float("inf"))


async def measure_ceiling(raw: RawPuts, volume: int, iterations: int) -> Ceiling:
    await raw.warm_up()
    seq, seq_mib_s = await raw.run(iterations, 1)
    loaded, mib_s = await raw.aggregate(volume)
    await raw.cleanup()
    return Ceiling(
        mib_s,
        percentile(seq, 50),
        percentile(seq, 99),
        percentile(loaded, 50),
        percentile(loaded, 99),
        len(loaded),
        iterations,
        seq_mib_s,
    )


# --- WAL runs ----------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    workload: str
    payload: int
    appends: int = 0
    mib_s: float = 0.0
    pct: float = float("nan")
    ceil_mib_s: float = float("nan")  # the raw PUT MiB/s ``pct`` is measured against
    p50: float = float("nan")
    p99: float = float("nan")
    budget: float = float("nan")  # seconds; NaN where the latency target does not apply
    puts_per_mib: float = float("nan")
    vis: tuple[float, float] = (float("nan"), float("nan"))
    vis2: tuple[float, float] = (float("nan"), float("nan"))
    ceiling: Ceiling | None = None
    interval: float = 0.0


def make_payload(base: bytes) -> bytes:
    """``base`` with its first 8 bytes replaced by the send time (perf_counter, seconds)."""
    return struct.pack("<d", time.perf_counter()) + base[8:]


@dataclass
class Tail:
    """A tailing reader recording append-to-visible latency from the payload timestamps."""

    reader: Any
    samples: list[float] = field(default_factory=list)
    last: MessageId | None = None

    async def run(self, until: asyncio.Future[MessageId]) -> None:
        while True:
            msg = await self.reader.read_next(timeout=0.5)
            if msg is not None:
                (sent,) = struct.unpack_from("<d", msg.payload)
                self.samples.append(time.perf_counter() - sent)
                self.last = msg.id
            if until.done() and (self.last is not None and self.last >= until.result()):
                return


async def one_run(
    store: LogStore,
    store2: LogStore | None,
    backend: str,
    workload: str,
    size: int,
    args: argparse.Namespace,
) -> Row:
    name = f"bench-{workload.replace(' ', '-')}-{size}-{uuid.uuid4().hex[:6]}"
    log_ = await store.create_log(name)
    writer = await log_.open_writer()
    base = os.urandom(max(size, 8))
    for _ in range(3):  # warm-up: first segment, connections
        await writer.append(make_payload(base))
    tails: list[Tail] = []
    if store2 is not None:
        for st in (store, store2):
            lg = await st.open_log(name)
            tails.append(Tail(await lg.open_reader(MessageId.LATEST)))
    last_acked: asyncio.Future[MessageId] = asyncio.get_running_loop().create_future()
    tail_tasks = [asyncio.create_task(t.run(last_acked)) for t in tails]

    latencies: list[float] = []
    last: list[MessageId] = []
    puts_before = store.meter.meter.ops["put"].requests
    started = time.perf_counter()
    deadline = started + args.duration

    async def appender() -> None:
        mid = None
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            mid = await writer.append(make_payload(base))
            latencies.append(time.perf_counter() - t)
        if mid is not None:
            last.append(mid)

    async def saturate() -> None:
        window = args.window_mib * MiB
        chunk = max(1, MiB // size)
        inflight: deque[asyncio.Future[MessageId]] = deque()
        nbytes = 0
        mid = None
        while time.perf_counter() < deadline:
            for _ in range(chunk):
                if nbytes >= window:
                    break
                t = time.perf_counter()
                fut = writer.append_nowait(make_payload(base))
                fut.add_done_callback(lambda _f, t=t: latencies.append(time.perf_counter() - t))
                inflight.append(fut)
                nbytes += size
            while nbytes >= window or (inflight and inflight[0].done()):
                mid = await inflight.popleft()
                nbytes -= size
            await asyncio.sleep(0)
        while inflight:
            mid = await inflight.popleft()
        if mid is not None:
            last.append(mid)

    if workload == "nowait sat":
        await saturate()
    else:
        n = 8 if workload.endswith("x8") else 1
        await asyncio.gather(*(appender() for _ in range(n)))
    wall = time.perf_counter() - started
    puts = store.meter.meter.ops["put"].requests - puts_before
    last_acked.set_result(max(last))
    if tail_tasks:
        done, pending = await asyncio.wait(tail_tasks, timeout=10)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
    await writer.close()
    for tail in tails:
        await tail.reader.close()

    appended = len(latencies) * size / MiB
    row = Row(backend, workload, size, appends=len(latencies), interval=writer._interval)
    row.mib_s = appended / wall
    row.p50, row.p99 = percentile(latencies, 50), percentile(latencies, 99)
    row.puts_per_mib = puts / appended if appended else float("nan")
    if len(tails) == 2:
        row.vis = (percentile(tails[0].samples, 50), percentile(tails[0].samples, 99))
        row.vis2 = (percentile(tails[1].samples, 50), percentile(tails[1].samples, 99))
    if args.delete_logs:
        await store.delete_log(name)
    return row


async def bench_backend(
    backend: Backend, args: argparse.Namespace, progress: Progress
) -> list[Row]:
    raw = RawPuts(backend.open_objects())
    config = WalConfig(max_interval=args.max_interval)
    if args.max_block_kib is not None:
        config = dataclasses.replace(config, max_block_bytes=int(args.max_block_kib * KiB))
    objects = [backend.open_objects(), backend.open_objects()]
    meta = backend.open_meta()
    meta2 = meta if backend.share_meta else backend.open_meta()
    owned: list[Any] = [raw.store, *objects, meta] + ([] if meta2 is meta else [meta2])
    rows: list[Row] = []
    try:
        progress(f"{backend.name}: raw PUT ceiling (before the WAL runs)")
        ceiling = await measure_ceiling(raw, args.ceiling_mib * MiB, args.iterations)
        store = await LogStore.open(objects[0], meta, config)
        store2 = await LogStore.open(objects[1], meta2, config)
        try:
            for size in args.sizes:
                for workload in WORKLOADS:
                    progress(f"{backend.name}: {workload}, {size_label(size)} payloads")
                    sat = workload == "nowait sat"
                    if sat:  # the raw ceiling right around the run: same conditions
                        _, before = await raw.aggregate(args.sat_ceiling_mib * MiB)
                        await raw.cleanup()
                    readers = store2 if not sat or args.saturation_readers else None
                    row = await one_run(store, readers, backend.name, workload, size, args)
                    if sat:
                        _, after = await raw.aggregate(args.sat_ceiling_mib * MiB)
                        await raw.cleanup()
                        row.ceil_mib_s = max(before, after)
                    rows.append(row)
        finally:
            await store2.close()
            await store.close()
        progress(f"{backend.name}: raw PUT ceiling (after the WAL runs)")
        ceiling.after = await measure_ceiling(raw, args.ceiling_mib * MiB, args.iterations)
    finally:
        with contextlib.suppress(Exception):
            await raw.cleanup()
        for thing in owned:
            await thing.close()
    for row in rows:
        row.ceiling = ceiling
        if row.ceil_mib_s != row.ceil_mib_s:  # NaN: not a saturation row
            row.ceil_mib_s = ceiling.best_mib_s
        row.pct = 100 * row.mib_s / row.ceil_mib_s
        if row.workload != "nowait sat":
            row.budget = row.interval + 2 * ceiling.strict_p99
    return rows


# --- output ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1e3:.1f}"


def render(rows: list[Row], title: str) -> str:
    header = (
        "backend",
        "workload",
        "payload",
        "appends",
        "MiB/s",
        "ceil",
        "% ceil",
        "p50 ms",
        "p99 ms",
        "p99 tgt",
        "PUT/MiB",
        "vis p50",
        "vis p99",
        "poll p50",
        "poll p99",
    )
    body: list[tuple[str, ...]] = []
    previous = None
    for r in rows:
        if r.ceiling is not None and r.backend != previous:
            best = r.ceiling.best_mib_s
            for when, c in (("pre", r.ceiling), ("post", r.ceiling.after)):
                if c is None:
                    continue
                body.append(
                    (
                        r.backend,
                        f"raw PUT x{CEILING_IN_FLIGHT} {when}",
                        size_label(CEILING_OBJECT),
                        str(c.puts),
                        f"{c.mib_s:.1f}",
                        f"{best:.0f}",
                        f"{100 * c.mib_s / best:.0f}",
                        ms(c.loaded_p50),
                        ms(c.loaded_p99),
                        "",
                        f"{MiB / CEILING_OBJECT:.2f}",
                        "",
                        "",
                        "",
                        "",
                    )
                )
                body.append(
                    (r.backend, f"raw PUT x1 {when}", size_label(CEILING_OBJECT),
                     str(c.seq_puts), f"{c.seq_mib_s:.1f}", f"{best:.0f}",
                     f"{100 * c.seq_mib_s / best:.0f}", ms(c.p50), ms(c.p99), "",
                     f"{MiB / CEILING_OBJECT:.2f}", "", "", "", "")
                )  # fmt: skip
        previous = r.backend
        body.append(
            (
                r.backend,
                r.workload,
                size_label(r.payload),
                str(r.appends),
                f"{r.mib_s:.2f}" if r.mib_s < 10 else f"{r.mib_s:.1f}",
                f"{r.ceil_mib_s:.0f}",
                f"{r.pct:.1f}" if r.pct < 10 else f"{r.pct:.0f}",
                ms(r.p50),
                ms(r.p99),
                ms(r.budget),
                f"{r.puts_per_mib:.2f}" if r.puts_per_mib < 100 else f"{r.puts_per_mib:.0f}",
                ms(r.vis[0]),
                ms(r.vis[1]),
                ms(r.vis2[0]),
                ms(r.vis2[1]),
            )
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title, line(header), rule]
    last_backend = None
    for cells in body:
        if last_backend is not None and cells[0] != last_backend:
            out.append(rule)
        out.append(line(cells))
        last_backend = cells[0]
    return "\n".join(out)


def verdicts(rows: list[Row]) -> list[str]:
    """One line per backend and target: the measured value, the target, ok or MISS."""
    out: list[str] = []
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        sat = [r for r in mine if r.workload == "nowait sat"]
        if sat:
            big = max(sat, key=lambda r: r.payload)
            ok = big.pct >= TARGET_CEILING_PCT
            out.append(
                f"{backend}: saturation {size_label(big.payload)}: {big.pct:.0f} % of the PUT "
                f"ceiling (target >= {TARGET_CEILING_PCT:.0f} %): {'ok' if ok else 'MISS'}"
            )
            worst = max(sat, key=lambda r: r.puts_per_mib)
            ok = worst.puts_per_mib <= TARGET_PUTS_PER_MIB
            out.append(
                f"{backend}: PUTs per MiB at saturation: max {worst.puts_per_mib:.2f} "
                f"({size_label(worst.payload)}; target <= {TARGET_PUTS_PER_MIB}): "
                f"{'ok' if ok else 'MISS'}"
            )
        lat = [r for r in mine if r.budget == r.budget]
        misses = [r for r in lat if r.p99 > r.budget]
        detail = ", ".join(f"{r.workload} {size_label(r.payload)} {ms(r.p99)} ms" for r in misses)
        out.append(
            f"{backend}: p99 append latency within max_interval + 2 x PUT p99 "
            f"({ms(lat[0].budget) if lat else '-'} ms): {len(lat) - len(misses)}/{len(lat)} rows"
            + (f"; MISS: {detail}" if misses else ": ok")
        )
    return out


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(part) * KiB) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --sizes {text!r}: KiB numbers, e.g. 1,16,256"
        ) from None
    if not sizes or min(sizes) < 8:
        raise argparse.ArgumentTypeError("--sizes needs payloads of at least 8 bytes")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure WAL append throughput, latency, PUT cost and visibility latency beside "
            "the raw ObjectStore PUT ceiling; print one table."
        )
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="backend to measure (repeatable; default: file and seaweedfs)",
    )
    parser.add_argument(
        "--meta",
        choices=("etcd", "sqlite"),
        default="etcd",
        help="meta store for the SeaweedFS backend (default etcd, started locally)",
    )
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[KiB, 16 * KiB, 256 * KiB],
        help="payload sizes in KiB, comma-separated (default 1,16,256)",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run (default 4)")
    parser.add_argument(
        "--max-interval",
        type=float,
        default=None,
        help="WalConfig.max_interval in seconds (default: per store, 10 ms file, 200 ms S3)",
    )
    parser.add_argument(
        "--max-block-kib",
        type=float,
        default=None,
        help="WalConfig.max_block_bytes in KiB (default 2048)",
    )
    parser.add_argument(
        "--window-mib",
        type=int,
        default=32,
        help="MiB of append_nowait entries kept in flight by the saturation run (default 32)",
    )
    parser.add_argument(
        "--ceiling-mib",
        type=int,
        default=128,
        help="MiB written by the raw PUT ceiling measurement (default 128)",
    )
    parser.add_argument(
        "--sat-ceiling-mib",
        type=int,
        default=64,
        help="MiB of raw PUTs measured right before and right after each saturation run; the "
        "better of the two is that run's ceiling (default 64)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=30,
        help="sequential 2 MiB PUTs for the raw PUT latency (default 30)",
    )
    parser.add_argument(
        "--saturation-readers",
        action="store_true",
        help="attach the tailing readers to the saturation runs too",
    )
    parser.add_argument(
        "--keep-logs", dest="delete_logs", action="store_false", help="keep the benchmark logs"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if min(args.window_mib, args.ceiling_mib, args.sat_ceiling_mib, args.iterations) < 1:
        parser.error("--window-mib, --ceiling-mib, --sat-ceiling-mib, --iterations must be >= 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="canopy-walbench-") as tmp:
        workdir = Path(tmp)
        for name in args.backend or BACKENDS:
            with contextlib.ExitStack() as stack:
                if name == "file":
                    backend = stack.enter_context(file_backend(workdir))
                else:
                    backend = stack.enter_context(seaweedfs_backend(workdir, args.meta, progress))
                rows += asyncio.run(bench_backend(backend, args, progress))
    elapsed = time.perf_counter() - started
    title = (
        f"WAL benchmark, {elapsed:.0f} s: {args.duration:g} s per run; saturation keeps "
        f"{args.window_mib} MiB in flight; ceiling = raw PUTs of {size_label(CEILING_OBJECT)} "
        "objects, 8 in flight and 1 at a time, before (pre) and after (post) the WAL runs;\n"
        "ceil = raw MiB/s a row is compared with: the best of those four, or for a saturation "
        "run the better of 8-in-flight raw PUTs measured right before and right after it;\n"
        "latencies in ms; vis = tailing reader on the writer's LogStore (woken by the writer), "
        "poll = tailing reader on a second LogStore (polls, like another process)"
    )
    print(render(rows, title))
    print()
    print("\n".join(verdicts(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
