"""Search latency through pymilvus: ``canopy standalone`` (the baseline) against a LocalCluster
(coordinator, proxy, streaming node and, in the second cluster, two query nodes, as processes on
etcd + SeaweedFS), in one run.

Each target gets one collection (INT64 pk, ``--dim`` float vectors, ``--rows`` rows flushed into
one sealed segment, HNSW M16/efC100, loaded), then ``--queries`` sequential ``search`` calls
(nq=1, top-10, ef 64) per consistency level after a warm-up. Columns: p50 / p99 latency (ms) of
one sequential client. The cluster rows pay the hops a distributed read makes (proxy ->
streaming node -> query node) and the WAL on S3; the ratio to standalone is what to compare
(the machine is shared and noisy).

    python bench/cluster_search.py
    python bench/cluster_search.py --rows 20000 --queries 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def measure(uri: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri)
    if client.has_collection("bench_cluster_search"):
        client.drop_collection("bench_cluster_search")
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=args.dim)
    client.create_collection("bench_cluster_search", schema=schema, consistency_level="Bounded")
    rng = np.random.default_rng(0)
    for start in range(0, args.rows, 2000):
        batch = rng.random((min(2000, args.rows - start), args.dim), dtype=np.float32)
        rows = [{"id": start + i, "v": v.tolist()} for i, v in enumerate(batch)]
        client.insert("bench_cluster_search", rows)
    client.flush("bench_cluster_search")
    params = client.prepare_index_params()
    hnsw = {"M": 16, "efConstruction": 100}
    params.add_index("v", index_type="HNSW", metric_type="L2", params=hnsw)
    client.create_index("bench_cluster_search", params)
    client.load_collection("bench_cluster_search")
    query = rng.random((1, args.dim), dtype=np.float32).tolist()
    out = []
    for level in ("Bounded", "Strong"):

        def search(level: str = level) -> None:
            client.search(
                "bench_cluster_search", query, limit=10, search_params={"ef": 64},
                consistency_level=level,
            )  # fmt: skip

        for _ in range(20):
            search()
        took = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            search()
            took.append((time.perf_counter() - t0) * 1000)
        took.sort()
        out.append((level, took[len(took) // 2], took[int(len(took) * 0.99)]))
    client.drop_collection("bench_cluster_search")
    client.close()
    return out


@contextmanager
def standalone() -> Iterator[str]:
    sys.path.insert(0, str(REPO / "tests" / "compat"))
    from standalone_process import StandaloneProcess

    with tempfile.TemporaryDirectory() as tmp, StandaloneProcess(Path(tmp) / "data") as proc:
        yield proc.uri


@contextmanager
def cluster(query_nodes: int) -> Iterator[str]:
    from integration.cluster import LocalCluster

    with LocalCluster(proxies=1, streaming_nodes=1, query_nodes=query_nodes, channels=1) as c:
        yield c.uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from tables import format_table

    targets = [
        ("canopy standalone", standalone),
        ("LocalCluster, no query nodes", lambda: cluster(0)),
        ("LocalCluster, 2 query nodes", lambda: cluster(2)),
    ]
    body, groups, base = [], [], {}
    for name, start in targets:
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        with start() as uri:
            for level, p50, p99 in measure(uri, args):
                base.setdefault(level, p50)
                body.append([name, level, f"{p50:.2f}", f"{p99:.2f}", f"{p50 / base[level]:.1f}x"])
                groups.append(name)
    title = (
        f"MilvusClient.search nq=1 top-10 ef=64 over {args.rows:,} rows x {args.dim}-d (one sealed "
        f"segment, HNSW), {args.queries} sequential calls per row; p50 ratio vs standalone"
    )
    header = ["target", "consistency", "p50 ms", "p99 ms", "p50 vs standalone"]
    print(format_table(title, header, body, [False, False, True, True, True], groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
