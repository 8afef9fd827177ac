"""Insert throughput through pymilvus ``MilvusClient.insert``, several servers side by side.

Each target gets a fresh collection (INT64 pk, auto_id off, one ``--dim`` float32 vector field)
and ``--batches`` inserts of ``--rows-per-batch`` rows (default 20 x 5,000 x 128-d = 100k rows),
then one ``flush``. Rows are lists of dicts with the vector as a list of Python floats, the way
most applications call the client; they are built before the clock starts.

Columns: rows/s over the whole run (first send to last ack), vector payload MiB/s, per-batch
latency p50/p99 (with 20 batches p99 is the slowest batch), and the wall time of the final
``flush()`` (pymilvus polls GetFlushState, so it includes the client's polling interval).

Targets (``--targets``, comma-separated, default all):

* ``standalone``: ``canopy standalone`` as a subprocess on a temp data dir (embedded defaults:
  file:// objects, sqlite meta).
* ``standalone-s3``: the same process on SeaweedFS + etcd (started by the benchmark): the
  storage's share of the cluster row's cost.
* ``cluster``: ``integration.cluster.LocalCluster(proxies=2, streaming_nodes=2)`` (coordinator,
  proxies and streaming nodes on SeaweedFS + etcd). With ``--clients 2`` each client talks to
  its own proxy. Prints "LocalCluster not available" when it cannot be imported.
* ``lite``: milvus-lite (the pure-Python Milvus server from PyPI) in its own venv, cached under
  ``${XDG_CACHE_HOME:-~/.cache}/canopy/milvus-lite-venv`` (built on first use, ~1 min), run as
  ``milvus-lite server`` in a subprocess. Always one client: it does not support concurrent
  writers to one collection.

Two "floor" rows come first (``--no-floor`` drops them): ``client build only`` times pymilvus
turning the rows into an ``InsertRequest`` and serialising it, in-process, without sending it;
``null server`` runs the same inserts against a do-nothing gRPC server (it acknowledges every
Insert without looking at it). No Python server behind pymilvus can beat the null-server row
with the same number of clients.

Every client is a separate process (``--clients`` of them, each with its share of the batches;
they start together); the servers are separate processes too. Clients and servers share the
machine's cores.

    python bench/insert.py
    python bench/insert.py --targets standalone,lite
    python bench/insert.py --targets cluster --clients 2 --batches 40
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
COLLECTION = "bench_insert"
ALL_TARGETS = ("standalone", "standalone-s3", "cluster", "lite")
LITE_VERSION = "3.2.2"
START_TIMEOUT = 60.0
WORKER_TIMEOUT = 600.0


# --- the measurement (a client process) ------------------------------------------------------


def build_batches(
    indices: list[int], rows_per_batch: int, dim: int, seed: int = 0
) -> list[list[dict[str, Any]]]:
    """The batches with these indices: pks ``index * rows_per_batch + j``; vectors from one
    pool of ``rows_per_batch`` random float32 vectors (as Python float lists), rotated per
    batch, so 100k rows do not need 100k distinct 128-float lists in memory."""
    rng = np.random.default_rng(seed)
    pool = [v.tolist() for v in rng.random((rows_per_batch, dim), dtype=np.float32)]
    batches = []
    for b in indices:
        base = b * rows_per_batch
        shift = (b * 7919) % rows_per_batch
        batches.append(
            [
                {"id": base + j, "vec": pool[(j + shift) % rows_per_batch]}
                for j in range(rows_per_batch)
            ]
        )
    return batches


def create_collection(uri: str, dim: int) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri)
    try:
        if client.has_collection(COLLECTION):
            client.drop_collection(COLLECTION)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection(COLLECTION, schema=schema)
    finally:
        client.close()


def worker(args: argparse.Namespace) -> None:
    """One client: build its batches, say "ready", wait for "go" on stdin, insert them one by
    one, print a JSON line with per-batch latencies and wall-clock start/end."""
    from pymilvus import MilvusClient

    indices = [int(i) for i in args.worker_batches.split(",") if i]
    batches = build_batches(indices, args.rows_per_batch, args.dim)
    client = MilvusClient(uri=args.uri)
    build_request = None
    if args.build_only:
        conn = client._get_connection()  # private: the request builder MilvusClient.insert uses

        def build_request(rows: list[dict[str, Any]]) -> int:
            request = conn._prepare_row_insert_request(COLLECTION, rows)
            return len(request.SerializeToString())

        build_request(batches[0][:1])  # fetch and cache the schema outside the clock

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    latencies: list[float] = []
    inserted = 0
    start = time.time()
    for rows in batches:
        t0 = time.perf_counter()
        if build_request is not None:
            build_request(rows)
            inserted += len(rows)
        else:
            inserted += int(client.insert(COLLECTION, rows)["insert_count"])
        latencies.append(time.perf_counter() - t0)
    end = time.time()
    client.close()
    print(json.dumps({"start": start, "end": end, "latencies": latencies, "rows": inserted}))


@dataclass
class Row:
    target: str
    clients: int = 0
    rows: int = 0
    rows_s: float | None = None
    mib_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    flush_s: float | None = None
    note: str = ""


def measure(
    target: str,
    uris: list[str],
    args: argparse.Namespace,
    *,
    clients: int,
    build_only: bool = False,
    flush: bool = True,
) -> Row:
    """Create the collection, run ``clients`` worker processes (client k on ``uris[k % n]``,
    batches k, k + clients, ...), then flush from this process and drop the collection."""
    from pymilvus import MilvusClient

    create_collection(uris[0], args.dim)
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in range(clients):
            share = range(k, args.batches, clients)
            cmd = [
                sys.executable,
                __file__,
                "--worker-batches",
                ",".join(map(str, share)),
                "--uri",
                uris[k % len(uris)],
                "--rows-per-batch",
                str(args.rows_per_batch),
                "--dim",
                str(args.dim),
            ]
            if build_only:
                cmd.append("--build-only")
            procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"client process did not start (said {line!r})")
        for p in procs:  # all clients are ready: start them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=WORKER_TIMEOUT)
            if p.returncode != 0:
                raise RuntimeError(f"client process failed (exit {p.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    total = sum(r["rows"] for r in results)
    expected = args.batches * args.rows_per_batch
    if total != expected:
        raise RuntimeError(f"{total} rows acknowledged, expected {expected}")
    row = Row(
        target,
        clients=clients,
        rows=total,
        rows_s=total / elapsed,
        mib_s=total * args.dim * 4 / MiB / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
    )
    client = MilvusClient(uri=uris[0])
    try:
        if flush:
            t0 = time.perf_counter()
            client.flush(COLLECTION)
            row.flush_s = time.perf_counter() - t0
        client.drop_collection(COLLECTION)
    finally:
        client.close()
    return row


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    import grpc
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        milvus_pb2_grpc.MilvusServiceStub(channel).GetVersion(
            milvus_pb2.GetVersionRequest(), timeout=1
        )
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


@contextlib.contextmanager
def server_process(
    cmd: list[str], port: int, log: Path, stop_signal: int = signal.SIGTERM, **popen: Any
) -> Iterator[str]:
    """Run a Milvus-protocol server; yield its URI once it answers GetVersion."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"server did not start: {' '.join(cmd)}\n" + "\n".join(tail))
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_null(port: int) -> None:
    """A do-nothing Milvus server: DDL in a dict, every Insert acknowledged unread."""
    import grpc
    from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

    def ok() -> common_pb2.Status:
        return common_pb2.Status(code=0)

    class Null(milvus_pb2_grpc.MilvusServiceServicer):
        def __init__(self) -> None:
            self.schemas: dict[str, schema_pb2.CollectionSchema] = {}
            self.ts = int(time.time() * 1000) << 18

        def next_ts(self) -> int:
            self.ts += 1
            return self.ts

        def Connect(self, request, context):  # type: ignore[no-untyped-def]
            return milvus_pb2.ConnectResponse(status=ok(), identifier=1)

        def GetVersion(self, request, context):  # type: ignore[no-untyped-def]
            return milvus_pb2.GetVersionResponse(status=ok(), version="null")

        def CreateCollection(self, request, context):  # type: ignore[no-untyped-def]
            schema = schema_pb2.CollectionSchema.FromString(request.schema)
            for i, f in enumerate(schema.fields):
                f.fieldID = 100 + i
            self.schemas[request.collection_name] = schema
            return ok()

        def DescribeCollection(self, request, context):  # type: ignore[no-untyped-def]
            schema = self.schemas.get(request.collection_name)
            if schema is None:
                return milvus_pb2.DescribeCollectionResponse(
                    status=common_pb2.Status(code=100, reason="collection not found")
                )
            return milvus_pb2.DescribeCollectionResponse(
                status=ok(),
                schema=schema,
                collectionID=1,
                collection_name=request.collection_name,
                shards_num=1,
                update_timestamp=1,
            )

        def HasCollection(self, request, context):  # type: ignore[no-untyped-def]
            return milvus_pb2.BoolResponse(
                status=ok(), value=request.collection_name in self.schemas
            )

        def DropCollection(self, request, context):  # type: ignore[no-untyped-def]
            self.schemas.pop(request.collection_name, None)
            return ok()

        def Insert(self, request, context):  # type: ignore[no-untyped-def]
            return milvus_pb2.MutationResult(
                status=ok(),
                insert_cnt=request.num_rows,
                IDs=schema_pb2.IDs(int_id=request.fields_data[0].scalars.long_data),
                timestamp=self.next_ts(),
            )

        def Flush(self, request, context):  # type: ignore[no-untyped-def]
            ts = self.next_ts()
            return milvus_pb2.FlushResponse(
                status=ok(),
                coll_segIDs={n: schema_pb2.LongArray() for n in request.collection_names},
                coll_flush_ts=dict.fromkeys(request.collection_names, ts),
            )

        def GetFlushState(self, request, context):  # type: ignore[no-untyped-def]
            return milvus_pb2.GetFlushStateResponse(status=ok(), flushed=True)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[
            ("grpc.max_receive_message_length", 256 * MiB),
            ("grpc.max_send_message_length", 256 * MiB),
        ],
    )
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(Null(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "canopy"


def lite_venv() -> Path:
    """The python of a venv with milvus-lite (and this environment's pymilvus, whose
    ``grpc_gen`` the lite server imports); built once, rebuilt when a pinned version or the
    interpreter changes."""
    import fcntl

    import pymilvus

    venv = cache_root() / "milvus-lite-venv"
    python = venv / "bin" / "python"
    stamp = {
        "milvus-lite": LITE_VERSION,
        "pymilvus": pymilvus.__version__,
        "python": sys.version.split()[0],
        "base": os.path.realpath(sys.base_prefix),
    }
    stamp_file = venv / "canopy-venv.json"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "milvus-lite-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(stamp_file.read_text()) == stamp and python.exists():
                return python
        shutil.rmtree(venv, ignore_errors=True)
        print(f"building {venv} (milvus-lite {LITE_VERSION}; once) ...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            done = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--quiet",
                    f"milvus-lite=={LITE_VERSION}",
                    f"pymilvus=={pymilvus.__version__}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"pip install milvus-lite=={LITE_VERSION} failed (is the package index "
                    f"reachable?): {done.stderr.strip()[-500:]}"
                )
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        stamp_file.write_text(json.dumps(stamp) + "\n")
    return python


# --- targets ---------------------------------------------------------------------------------


def run_floor(args: argparse.Namespace, tmp: Path) -> list[Row]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve-null", str(port)]
    with server_process(cmd, port, tmp / "null.log") as uri:
        build = measure("client build only", [uri], args, clients=1, build_only=True, flush=False)
        build.note = "rows -> InsertRequest + serialise, in-process, not sent"
        null = measure("null server", [uri], args, clients=args.clients)
        null.note = "do-nothing gRPC server: the pymilvus + gRPC ceiling"
    return [build, null]


def run_standalone(args: argparse.Namespace, tmp: Path) -> list[Row]:
    port = free_port()
    cmd = [sys.executable, "-m", "cluster", "standalone", "--data-dir", str(tmp / "standalone")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    with server_process(cmd, port, tmp / "standalone.log", cwd=REPO) as uri:
        row = measure("canopy standalone", [uri], args, clients=args.clients)
    row.note = "file:// objects + sqlite meta"
    return [row]


def run_standalone_s3(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """The same single process on SeaweedFS + etcd: separates the storage's cost from the cost
    of running the roles as separate processes (the cluster row)."""
    from integration.services import etcd_running, seaweedfs_running

    with etcd_running(tmp / "etcd") as etcd, seaweedfs_running(tmp / "s3") as s3:
        port = free_port()
        cmd = [sys.executable, "-m", "cluster", "standalone", "--data-dir", str(tmp / "sa-s3")]
        cmd += ["--object-store", s3.uri("bench"), "--meta", etcd.uri("bench")]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
        env = {**os.environ, **s3.env()}
        with server_process(cmd, port, tmp / "standalone-s3.log", cwd=REPO, env=env) as uri:
            row = measure("canopy standalone (S3)", [uri], args, clients=args.clients)
    row.note = "one process on SeaweedFS + etcd"
    return [row]


def run_cluster(args: argparse.Namespace, tmp: Path) -> list[Row]:
    try:
        from integration.cluster import LocalCluster  # type: ignore[import-not-found]
    except ImportError as exc:
        return [Row("canopy LocalCluster", note=f"LocalCluster not available ({exc})")]
    with LocalCluster(proxies=2, streaming_nodes=2) as cluster:
        uris = list(getattr(cluster, "proxy_uris", None) or [cluster.uri])
        row = measure("canopy LocalCluster", uris, args, clients=args.clients)
    row.note = f"2 proxies + 2 streaming nodes, SeaweedFS + etcd; {min(args.clients, len(uris))}"
    row.note += " proxy uri(s) used"
    return [row]


def run_lite(args: argparse.Namespace, tmp: Path) -> list[Row]:
    python = lite_venv()
    port = free_port()
    cmd = [str(python), "-m", "milvus_lite", "server", "--data-dir", str(tmp / "lite")]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with server_process(
        cmd, port, tmp / "lite.log", stop_signal=signal.SIGINT, env=env, cwd=tmp
    ) as uri:
        row = measure(f"milvus-lite {LITE_VERSION}", [uri], args, clients=1)
    row.note = "pure-Python server, own venv; 1 client (no concurrent writers)"
    return [row]


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], list[Row]]] = {
    "standalone": run_standalone,
    "standalone-s3": run_standalone_s3,
    "cluster": run_cluster,
    "lite": run_lite,
}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="default: %(default)s")
    parser.add_argument("--batches", type=int, default=20, help="default: %(default)s")
    parser.add_argument("--rows-per-batch", type=int, default=5000, help="default: %(default)s")
    parser.add_argument("--dim", type=int, default=128, help="default: %(default)s")
    parser.add_argument(
        "--clients", type=int, default=1, help="client processes per target (default: 1)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the two floor rows")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    # internal: one client process / the null server
    parser.add_argument("--worker-batches", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-null", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null is not None:
        serve_null(args.serve_null)
        return
    if args.worker_batches is not None:
        worker(args)
        return

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(ALL_TARGETS)}")
    if args.clients < 1 or args.batches < 1 or args.rows_per_batch < 1 or args.dim < 1:
        parser.error("--clients, --batches, --rows-per-batch and --dim must be positive")

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    import pymilvus
    from tables import format_table  # bench/tables.py: run as python bench/insert.py

    rows: list[Row] = []
    groups: list[str] = []
    with tempfile.TemporaryDirectory(prefix="canopy-bench-insert-") as tmp_name:
        tmp = Path(tmp_name)
        plan: list[tuple[str, Callable[[argparse.Namespace, Path], list[Row]]]] = []
        if not args.no_floor:
            plan.append(("floor", run_floor))
        plan += [(t, RUNNERS[t]) for t in targets]
        for name, runner in plan:
            (tmp / name).mkdir()
            print(f"... {name}", file=sys.stderr, flush=True)
            try:
                got = runner(args, tmp / name)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                got = [Row(name, note=f"failed: {type(exc).__name__}: {exc}".splitlines()[0])]
            rows += got
            groups += [name] * len(got)

    title = (
        f"MilvusClient.insert: {args.batches} batches x {args.rows_per_batch} rows x "
        f"{args.dim}-d float32, INT64 pk (pymilvus {pymilvus.__version__}; "
        f"{os.cpu_count()} cores shared by clients and servers)"
    )
    header = ["target", "clients", "rows", "rows/s", "MiB/s", "p50 ms", "p99 ms", "flush s", "note"]
    body = [
        [
            r.target,
            str(r.clients) if r.clients else "-",
            f"{r.rows:,}" if r.rows else "-",
            _fmt(r.rows_s, ",.0f"),
            _fmt(r.mib_s, ".1f"),
            _fmt(r.p50_ms, ".1f"),
            _fmt(r.p99_ms, ".1f"),
            _fmt(r.flush_s, ".2f"),
            r.note,
        ]
        for r in rows
    ]
    right = [False, True, True, True, True, True, True, True, False]
    print(format_table(title, header, body, right, groups))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))


if __name__ == "__main__":
    main()
