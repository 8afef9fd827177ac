"""Search benchmark through pymilvus ``MilvusClient``: Canopy standalone and milvus-lite side by
side in one run, on the same data, with exact ground truth.

Data: ``cluster.query.testing.clustered_vectors`` (seeded): ``--rows`` (100,000) base vectors
and ``--queries`` (1,000) query vectors, ``--dim`` (128), 1,000 Gaussian clusters. Ground truth
is an exact numpy L2 top-10 computed in this process (no code of the systems under test).

Each target runs as its own server process on a temp data dir, and the client does what an
application does: create a collection (INT64 pk ``id``, FLOAT_VECTOR ``vec``, L2), insert the
rows in batches of 5,000, ``flush``, ``create_index`` HNSW (M=16, efConstruction=200, as
``bench/index.py``), poll ``describe_index`` until every row is indexed, ``load_collection``,
then searches:

* ``search`` rows: HNSW ``ef`` 64 / 128 / 256 x ``nq`` 1 (one request per query) and 100
  (requests of 100 queries), top-10, consistency Bounded (no wait for the newest writes;
  the data is flushed and indexed before the clock starts), plus one ``search Strong`` row
  at ef=64 nq=1 for comparison (``--no-strong`` drops it). Columns: ``queries`` searched
  (milvus-lite gets the first ``--lite-queries`` only: it answers ~15 queries/s at nq=1),
  ``recall@10`` against the ground truth, ``QPS`` (queries per second of wall time, one
  sequential client), ``p50`` / ``p99`` per request in ms (nq=100 makes only queries / 100
  requests, so its p99 is about their maximum).
* ``null server``: the same nq=1 call against a do-nothing gRPC server that answers every
  Search with zero hits: the pymilvus + gRPC floor no Python server can beat.

The second table: ``insert s`` (all batches), ``flush s`` (the ``flush()`` call, which polls
GetFlushState), ``flush->index ready s`` (from the start of ``flush()`` until
``describe_index`` reports ``indexed_rows == total_rows`` and nothing pending; polled every
0.2 s, ``create_index(sync=False)`` so pymilvus's 0.5 s wait loop is not counted), ``load s``;
the ``raw hnswlib`` row is ``hnswlib.Index.add_items`` over the same rows in this process (same
M / efConstruction / seed, every core, no server running): the floor for Canopy's build.

The third table: first-search latency after a restart. ``cold``: the standalone restarted
with its segment cache (``DATA/cache``) removed, so the first search reads the segment and its
index from the object store (``file://`` on local disk here: the OS page cache may hold the
files, so this is a lower bound for a real SSD-cache miss against S3); ``warm``: restarted
with the cache kept. milvus-lite gets one ``restart`` row (it has no separate cache).

    python bench/search.py
    python bench/search.py --rows 20000 --queries 200 --targets canopy
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent

COLLECTION = "bench_search"
K = 10
M = 16
EF_CONSTRUCTION = 200
EFS = (64, 128, 256)
BATCH_ROWS = 5000
HNSW_SEED = 100  # cluster.index.hnsw.build_graph's default
INDEX_TIMEOUT = 1800.0
INDEX_POLL = 0.2  # seconds between describe_index calls while the index builds
ALL_TARGETS = ("canopy", "lite")
RAW = "raw hnswlib"
Progress = Callable[[str], None]


# --- pure helpers (unit-tested) ---------------------------------------------------------------


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 100) -> np.ndarray:
    """Row numbers of the ``k`` nearest base rows per query by squared L2, nearest first,
    ``(nq, k)`` int64; ties broken by row number."""
    base64 = base.astype(np.float64)
    norms = np.einsum("ij,ij->i", base64, base64)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].astype(np.float64)
        d = norms[None, :] - 2.0 * (q @ base64.T)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        rows = np.arange(len(q))[:, None]
        order = np.lexsort((part, d[rows, part]), axis=1)
        out[start : start + len(q)] = part[rows, order]
    return out


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean over queries of ``|found_i ∩ truth_i| / k`` (``k`` = truth's width)."""
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} results for {len(truth)} queries")
    if not len(truth):
        return 1.0
    k = truth.shape[1]
    hits = [len(set(f[:k]) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(sum(hits)) / (k * len(truth))


def latency_stats(lat_s: Sequence[float], queries: int) -> tuple[float, float, float]:
    """``(QPS, p50 ms, p99 ms)`` of sequential requests with latencies ``lat_s`` (seconds)
    answering ``queries`` queries in all."""
    ms = np.asarray(lat_s) * 1000.0
    return queries / float(sum(lat_s)), float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def child_cpu_seconds() -> float | None:
    """User + system CPU seconds so far of this process's live child processes (the servers),
    all threads included; None where ``/proc`` is missing."""
    me, tick, total = os.getpid(), os.sysconf("SC_CLK_TCK"), 0.0
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- result records ---------------------------------------------------------------------------


@dataclass
class SearchRow:
    target: str
    case: str
    ef: str
    nq: int
    queries: int
    recall: float | None
    qps: float
    p50: float
    p99: float


@dataclass
class BuildRow:
    target: str
    index: str
    insert_s: float | None = None
    flush_s: float | None = None
    ready_s: float | None = None
    ready_cpu_s: float | None = None
    load_s: float | None = None
    note: str = ""


@dataclass
class FirstRow:
    target: str
    restart: str
    first_ms: float
    second_ms: float
    note: str = ""


@dataclass
class Results:
    search: list[SearchRow] = field(default_factory=list)
    build: list[BuildRow] = field(default_factory=list)
    first: list[FirstRow] = field(default_factory=list)


# --- servers ----------------------------------------------------------------------------------


def serve_null(port: int) -> Any:
    """A gRPC server answering every Search with zero hits (the protocol floor)."""
    import grpc
    from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

    class Null(milvus_pb2_grpc.MilvusServiceServicer):
        def Connect(self, request: Any, context: Any) -> Any:
            return milvus_pb2.ConnectResponse(status=common_pb2.Status(), identifier=1)

        def GetVersion(self, request: Any, context: Any) -> Any:
            return milvus_pb2.GetVersionResponse(status=common_pb2.Status(), version="v2.6.0")

        def Search(self, request: Any, context: Any) -> Any:
            data = schema_pb2.SearchResultData(num_queries=request.nq, top_k=K)
            data.topks.extend([0] * request.nq)
            return milvus_pb2.SearchResults(status=common_pb2.Status(), results=data)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(Null(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


@contextlib.contextmanager
def canopy_server(data_dir: Path, log: Path) -> Iterator[str]:
    from insert import free_port, server_process

    port = free_port()
    cmd = [sys.executable, "-m", "cluster", "standalone", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    with server_process(cmd, port, log, cwd=REPO) as uri:
        yield uri


@contextlib.contextmanager
def lite_server(data_dir: Path, log: Path) -> Iterator[str]:
    from insert import free_port, lite_venv, server_process

    python = lite_venv()
    port = free_port()
    cmd = [str(python), "-m", "milvus_lite", "server", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with server_process(
        cmd, port, log, stop_signal=signal.SIGINT, env=env, cwd=data_dir.parent
    ) as uri:
        yield uri


# --- client-side phases -----------------------------------------------------------------------


def create_and_fill(client: Any, x: np.ndarray, progress: Progress) -> float:
    """Fresh collection, every row inserted; returns the insert seconds."""
    from pymilvus import DataType, MilvusClient

    if client.has_collection(COLLECTION):
        client.drop_collection(COLLECTION)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=x.shape[1])
    client.create_collection(COLLECTION, schema=schema, consistency_level="Bounded")
    started = time.perf_counter()
    for start in range(0, len(x), BATCH_ROWS):
        chunk = x[start : start + BATCH_ROWS].tolist()
        client.insert(COLLECTION, [{"id": start + i, "vec": v} for i, v in enumerate(chunk)])
        if (start // BATCH_ROWS) % 5 == 4:
            progress(f"inserted {start + len(chunk):,} rows")
    return time.perf_counter() - started


def index_ready(info: dict[str, Any], rows: int) -> bool:
    """``describe_index`` says every row is indexed (Milvus's fields; a server that reports no
    row counts is ready when its state says Finished)."""
    if "indexed_rows" in info:
        return int(info["indexed_rows"]) >= rows and int(info.get("pending_index_rows", 0)) == 0
    return str(info.get("state", "")).endswith("Finished")


def flush_and_index(
    client: Any, rows: int, progress: Progress
) -> tuple[float, float, float | None]:
    """``(flush seconds, flush -> index-ready seconds, the server's CPU seconds meanwhile)``."""
    cpu = child_cpu_seconds()
    started = time.perf_counter()
    client.flush(COLLECTION)
    flushed = time.perf_counter()
    params = client.prepare_index_params()
    params.add_index(
        field_name="vec",
        index_name="vec_hnsw",
        index_type="HNSW",
        metric_type="L2",
        params={"M": M, "efConstruction": EF_CONSTRUCTION},
    )
    client.create_index(COLLECTION, params, sync=False)  # we poll (pymilvus sleeps 0.5 s)
    deadline = time.monotonic() + INDEX_TIMEOUT
    last = -1
    while True:
        info = client.describe_index(COLLECTION, "vec_hnsw")
        if index_ready(info, rows):
            break
        done = int(info.get("indexed_rows", 0))
        if done != last:
            progress(f"indexed {done:,} / {rows:,} rows ({time.perf_counter() - started:.0f} s)")
            last = done
        if time.monotonic() > deadline:
            raise TimeoutError(f"index not ready after {INDEX_TIMEOUT:.0f} s: {info}")
        time.sleep(INDEX_POLL)
    ready = time.perf_counter() - started
    after = child_cpu_seconds()
    return flushed - started, ready, None if cpu is None or after is None else after - cpu


def search_ids(
    client: Any, q: np.ndarray, ef: int, consistency: str, limit: int = K
) -> list[list[int]]:
    res = client.search(
        COLLECTION,
        data=q,
        limit=limit,
        anns_field="vec",
        search_params={"metric_type": "L2", "params": {"ef": ef}},
        consistency_level=consistency,
    )
    return [[int(hit["id"]) for hit in hits] for hits in res]


def run_searches(
    client: Any,
    target: str,
    q: np.ndarray,
    gt: np.ndarray,
    consistency: str,
    cases: Sequence[tuple[int, int]],
    progress: Progress,
) -> list[SearchRow]:
    """One row per ``(ef, nq)``: ``q`` in requests of ``nq``, after 5 warm-up requests."""
    rows = []
    for ef, nq in cases:
        progress(f"{target}: ef={ef} nq={nq} {consistency}: {len(q)} queries")
        for i in range(5):
            search_ids(client, q[(i * nq) % len(q) :][:nq], ef, consistency)
        found: list[list[int]] = []
        lat = []
        for start in range(0, len(q), nq):
            t = time.perf_counter()
            found += search_ids(client, q[start : start + nq], ef, consistency)
            lat.append(time.perf_counter() - t)
        qps, p50, p99 = latency_stats(lat, len(q))
        r = recall_at_k(found, gt)
        case = "search" if consistency == "Bounded" else f"search {consistency}"
        rows.append(SearchRow(target, case, str(ef), nq, len(q), r, qps, p50, p99))
    return rows


def first_search(uri: str, q: np.ndarray) -> tuple[float, float]:
    """``(first, second)`` search latency in ms of a new client after ``load_collection``."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        client.load_collection(COLLECTION)
        lat = []
        for i in range(2):
            t = time.perf_counter()
            search_ids(client, q[i : i + 1], EFS[0], "Bounded")
            lat.append((time.perf_counter() - t) * 1000)
        return lat[0], lat[1]
    finally:
        client.close()


# --- targets ----------------------------------------------------------------------------------


def search_cases() -> list[tuple[int, int]]:
    """``(ef, nq)`` of the Bounded rows."""
    return [(ef, nq) for nq in (1, 100) for ef in EFS]


def fill_and_measure(
    uri: str,
    target: str,
    x: np.ndarray,
    q: np.ndarray,
    gt: np.ndarray,
    args: argparse.Namespace,
    progress: Progress,
) -> tuple[BuildRow, list[SearchRow]]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        insert_s = create_and_fill(client, x, progress)
        progress(f"{target}: flush + create_index HNSW M{M}/efC{EF_CONSTRUCTION}")
        flush_s, ready_s, ready_cpu_s = flush_and_index(client, len(x), progress)
        started = time.perf_counter()
        client.load_collection(COLLECTION)
        load_s = time.perf_counter() - started
        build = BuildRow(target, f"HNSW M{M} efC{EF_CONSTRUCTION}", insert_s, flush_s, ready_s)
        build.load_s, build.ready_cpu_s = load_s, ready_cpu_s
        rows = run_searches(client, target, q, gt, "Bounded", search_cases(), progress)
        if not args.no_strong:
            rows += run_searches(client, target, q, gt, "Strong", [(EFS[0], 1)], progress)
        return build, rows
    finally:
        client.close()


def run_canopy(
    args: argparse.Namespace,
    tmp: Path,
    x: np.ndarray,
    q: np.ndarray,
    gt: np.ndarray,
    out: Results,
    progress: Progress,
) -> None:
    data = tmp / "canopy"
    log = tmp / "canopy.log"
    with canopy_server(data, log) as uri:
        build, rows = fill_and_measure(uri, "canopy", x, q, gt, args, progress)
    build.note = "standalone: file:// objects, sqlite meta; embedded index build worker"
    out.build.append(build)
    out.search += rows
    cache = data / "cache"
    for label in ("cold", "warm"):
        if label == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        progress(f"canopy: restart ({label} cache), first search")
        with canopy_server(data, log) as uri:
            first, second = first_search(uri, q)
        note = "DATA/cache removed before start" if label == "cold" else "DATA/cache kept"
        out.first.append(FirstRow("canopy", label, first, second, note))


def run_lite(
    args: argparse.Namespace,
    tmp: Path,
    x: np.ndarray,
    q: np.ndarray,
    gt: np.ndarray,
    out: Results,
    progress: Progress,
) -> None:
    from insert import LITE_VERSION

    data = tmp / "lite" / "data"
    data.mkdir(parents=True)
    log = tmp / "lite.log"
    n = min(args.lite_queries, len(q))
    target = f"milvus-lite {LITE_VERSION}"
    with lite_server(data, log) as uri:
        build, rows = fill_and_measure(uri, target, x, q[:n], gt[:n], args, progress)
    build.note = "faiss IndexHNSWFlat; own venv"
    out.build.append(build)
    out.search += rows
    progress(f"{target}: restart, first search")
    with lite_server(data, log) as uri:
        first, second = first_search(uri, q)
    out.first.append(FirstRow(target, "restart", first, second, "same data dir"))


def run_null(args: argparse.Namespace, q: np.ndarray, out: Results, progress: Progress) -> None:
    from insert import free_port
    from pymilvus import MilvusClient

    progress("null server")
    port = free_port()
    server = serve_null(port)
    client = MilvusClient(uri=f"http://127.0.0.1:{port}")
    try:
        call = lambda i: client.search(COLLECTION, data=q[i : i + 1], limit=K)  # noqa: E731
        for i in range(10):
            call(i)
        lat = []
        for i in range(len(q)):
            t = time.perf_counter()
            call(i)
            lat.append(time.perf_counter() - t)
    finally:
        client.close()
        server.stop(0)
    qps, p50, p99 = latency_stats(lat, len(q))
    out.search.append(
        SearchRow("null server", "search (0 hits)", "-", 1, len(q), None, qps, p50, p99)
    )


def raw_hnswlib_build(x: np.ndarray) -> BuildRow:
    """hnswlib building the graph Canopy builds (one graph, same M / efConstruction / seed,
    every core), in this process: wall and CPU seconds."""
    import hnswlib

    index = hnswlib.Index(space="l2", dim=x.shape[1])
    started, cpu = time.perf_counter(), self_cpu_seconds()
    index.init_index(
        max_elements=len(x), ef_construction=EF_CONSTRUCTION, M=M, random_seed=HNSW_SEED
    )
    index.add_items(x, np.arange(len(x)), num_threads=-1)
    row = BuildRow(RAW, f"HNSW M{M} efC{EF_CONSTRUCTION}")
    row.ready_s, row.ready_cpu_s = time.perf_counter() - started, self_cpu_seconds() - cpu
    row.note = "add_items in-process, every core, no server running"
    return row


def build_ratio(rows: Sequence[BuildRow]) -> str:
    """``canopy / raw`` for wall and CPU seconds, when both rows are there."""
    canopy = next((b for b in rows if b.target == "canopy"), None)
    raw = next((b for b in rows if b.target == RAW), None)
    if canopy is None or raw is None or not canopy.ready_s or not raw.ready_s:
        return ""
    text = f"canopy / raw: wall {canopy.ready_s / raw.ready_s:.2f}x"
    if canopy.ready_cpu_s and raw.ready_cpu_s:
        text += f", CPU {canopy.ready_cpu_s / raw.ready_cpu_s:.2f}x"
    return text


# --- output -----------------------------------------------------------------------------------


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(results: Results, args: argparse.Namespace, load: Sequence[float]) -> str:
    """The three tables; ``load`` is the 1-minute load average at the start and the end."""
    from tables import format_table

    title = (
        f"MilvusClient.search: {args.rows:,} clustered {args.dim}-d rows (1,000 clusters, seed "
        f"{args.seed}), {args.queries:,} queries (milvus-lite: first {args.lite_queries}), "
        f"top-{K}, L2, HNSW M{M}/efC{EF_CONSTRUCTION}; one sequential client; "
        f"{os.cpu_count()} cores shared by client and server; load average "
        + " -> ".join(f"{x:.1f}" for x in load)
    )
    header = ["target", "case", "ef", "nq", "queries", "recall@10", "QPS", "p50 ms", "p99 ms"]
    body = [
        [
            r.target,
            r.case,
            r.ef,
            str(r.nq),
            f"{r.queries:,}",
            _f(r.recall, ".3f"),
            f"{r.qps:,.1f}",
            f"{r.p50:.2f}",
            f"{r.p99:.2f}",
        ]
        for r in results.search
    ]
    right = [False, False, True, True, True, True, True, True, True]
    parts = [format_table(title, header, body, right, [r.target for r in results.search])]

    header = ["target", "index", "insert s", "flush s", "flush->ready s", "CPU s", "load s"]
    header.append("note")
    body = [
        [
            b.target,
            b.index,
            _f(b.insert_s, ".1f"),
            _f(b.flush_s, ".2f"),
            _f(b.ready_s, ".1f"),
            _f(b.ready_cpu_s, ".1f"),
            _f(b.load_s, ".2f"),
            b.note,
        ]
        for b in results.build
    ]
    right = [False, False, True, True, True, True, True, False]
    title = f"Build: {args.rows:,} rows; CPU s: the server's CPU seconds from flush to index ready"
    ratio = build_ratio(results.build)
    parts.append(format_table(f"{title}; {ratio}" if ratio else title, header, body, right))

    header = ["target", "restart", "first search ms", "second search ms", "note"]
    body = [
        [f.target, f.restart, f"{f.first_ms:.1f}", f"{f.second_ms:.1f}", f.note]
        for f in results.first
    ]
    right = [False, False, True, True, False]
    parts.append(
        format_table(
            "First search after a restart + load_collection (ef=64, nq=1)", header, body, right
        )
    )
    return "\n\n".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=100_000, help="default: %(default)s")
    p.add_argument("--queries", type=int, default=1000, help="default: %(default)s")
    p.add_argument("--dim", type=int, default=128, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument(
        "--lite-queries", type=int, default=200, help="queries for milvus-lite (default: 200)"
    )
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="default: %(default)s")
    p.add_argument("--no-floor", action="store_true", help="skip the null-server row")
    p.add_argument("--no-raw", action="store_true", help="skip the raw hnswlib build")
    p.add_argument("--no-strong", action="store_true", help="skip the Strong row")
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(targets) - set(ALL_TARGETS):
        p.error(f"--targets: choose from {', '.join(ALL_TARGETS)}")
    args.targets = targets
    if args.queries % 100 or args.lite_queries % 100 or args.lite_queries < 100:
        p.error("--queries and --lite-queries must be multiples of 100 (nq=100 requests)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))  # insert.py, tables.py: run as python bench/...

    def progress(message: str) -> None:
        print(f"[bench {time.perf_counter() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    from cluster.query.testing import clustered_vectors

    load = [os.getloadavg()[0]]
    x, q = clustered_vectors(args.rows, args.queries, dim=args.dim, seed=args.seed)
    progress(f"exact ground truth: {len(q):,} queries x {len(x):,} rows")
    gt = exact_topk(x, q)
    results = Results()
    raw = None
    if not args.no_raw:
        progress(f"raw hnswlib build over {len(x):,} rows")
        raw = raw_hnswlib_build(x)
    if not args.no_floor:
        run_null(args, q, results, progress)
    runners = {"canopy": run_canopy, "lite": run_lite}
    with tempfile.TemporaryDirectory(prefix="canopy-bench-search-") as tmp:
        for name in args.targets:
            try:
                runners[name](args, Path(tmp), x, q, gt, results, progress)
            except Exception as exc:  # one failed target still leaves the others' rows
                traceback.print_exc(file=sys.stderr)
                reason = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
                results.build.append(BuildRow(name, "-", note=reason[:200]))
    if raw is not None:
        results.build.append(raw)
    load.append(os.getloadavg()[0])
    print(render(results, args, load))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
