"""Search latency through pymilvus ``MilvusClient.search`` against ``canopy standalone``.

One collection (INT64 pk, one ``--dim`` float32 vector field, L2), ``--rows`` rows inserted in
batches of 2,000 and never flushed: every row is growing data in the streaming node's memory
(exact search). Then ``--queries`` sequential searches per row of the table, after a warm-up:

* ``nq=1 top-10`` (the default client call), ``nq=10 top-10``, ``nq=1 top-100``;
* ``nq=1 top-10 + filter`` (``id % 2 == 0``, evaluated over every row each time);
* ``query get`` (``get(ids=[one key])``).

Columns: p50 / p99 latency (ms) and queries/s of one sequential client (nq queries per call).
The first row, ``null server`` (``--no-floor`` drops it), runs the same nq=1 call against a
do-nothing gRPC server that answers every Search with an empty result: the protocol floor no
Python server behind pymilvus can beat.

    python bench/search.py
    python bench/search.py --rows 100000 --queries 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


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
            data = schema_pb2.SearchResultData(num_queries=request.nq, top_k=10)
            data.topks.extend([0] * request.nq)
            return milvus_pb2.SearchResults(status=common_pb2.Status(), results=data)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(Null(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def timed(call: Callable[[], Any], n: int, nq: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, queries/s) of ``n`` sequential calls after 10 warm-up calls."""
    for _ in range(10):
        call()
    lat = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        lat.append(time.perf_counter() - started)
    return (
        statistics.median(lat) * 1000,
        float(np.percentile(lat, 99)) * 1000,
        nq * n / sum(lat),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=500, help="calls per table row")
    parser.add_argument("--no-floor", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from insert import free_port, server_process
    from pymilvus import MilvusClient
    from tables import format_table  # bench/tables.py: run as python bench/search.py

    rng = np.random.default_rng(0)
    base = rng.random((args.rows, args.dim), dtype=np.float32)
    queries = rng.random((10, args.dim), dtype=np.float32)
    rows: list[tuple[str, tuple[float, float, float]]] = []
    if not args.no_floor:
        port = free_port()
        server = serve_null(port)
        client = MilvusClient(uri=f"http://127.0.0.1:{port}")
        rows.append(
            (
                "null server, nq=1 top-10",
                timed(lambda: client.search("c", queries[:1]), args.queries, 1),
            )
        )
        client.close()
        server.stop(0)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cmd = [sys.executable, "-m", "cluster", "standalone", "--data-dir", f"{tmp}/data"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
        with server_process(cmd, port, Path(tmp) / "standalone.log", cwd=REPO) as uri:
            client = MilvusClient(uri=uri)
            client.create_collection("bench", dimension=args.dim, metric_type="L2")
            for start in range(0, args.rows, 2000):
                chunk = base[start : start + 2000]
                client.insert(
                    "bench", [{"id": start + i, "vector": v} for i, v in enumerate(chunk)]
                )
            one, ten = queries[:1], queries
            cases: list[tuple[str, Callable[[], Any], int]] = [
                ("nq=1 top-10", lambda: client.search("bench", one, limit=10), 1),
                ("nq=10 top-10", lambda: client.search("bench", ten, limit=10), 10),
                ("nq=1 top-100", lambda: client.search("bench", one, limit=100), 1),
                (
                    "nq=1 top-10 + filter",
                    lambda: client.search("bench", one, limit=10, filter="id % 2 == 0"),
                    1,
                ),
                ("query get", lambda: client.get("bench", ids=[args.rows // 2]), 1),
            ]
            for name, call, nq in cases:
                rows.append((f"standalone, {name}", timed(call, args.queries, nq)))
            client.close()
    title = (
        f"pymilvus search on canopy standalone: {args.rows:,} growing {args.dim}-d rows "
        f"(exact), {args.queries} sequential calls per row"
    )
    body = [[name, f"{p50:.2f}", f"{p99:.2f}", f"{qps:,.0f}"] for name, (p50, p99, qps) in rows]
    print(
        format_table(
            title, ["case", "p50 ms", "p99 ms", "queries/s"], body, [False, True, True, True]
        )
    )


if __name__ == "__main__":
    main()
