"""Vector index benchmark: build, recall and speed of sealed-segment search, one table.

Data: ``cluster.query.testing.clustered_vectors`` (``--rows`` 100,000 base and ``--queries``
1,000 query vectors, 128-d, 1,000 Gaussian clusters, seeded); ground truth is exact. The
segment is written with ``write_segment`` to ``memory://``, indexed with ``build_index`` (HNSW
M16/efC200, L2) and loaded as a query node does (``LocalCache`` + ``SealedSegment``), so the
numbers include everything a request pays on the query node but the RPC.

Rows:

* ``HNSW`` at ef 64/128/256, nq=1 (one request per query) and nq=100 (batches);
* ``FLAT``: exact search over the same segment (no index);
* filtered search at 1 % / 10 % / 50 % selectivity (a random mask): ``exact`` over the
  candidates, HNSW ``post-filter`` (ef / selectivity neighbours, filtered), HNSW ``allow-list``
  (hnswlib's filter callback), and ``auto`` (what ``cluster.query.plan`` picks), ef=64;
* the AUTOINDEX threshold: FLAT vs HNSW on the first ``--small-rows`` (10,000) rows.

QPS is queries per second of wall time; p50/p99 are per-request latencies (one request = nq
queries). ``--filtered-queries`` (200) bounds the FLAT nq=1 and filtered nq=1 runs (three
times that for filtered nq=100).

    python bench/index.py
    python bench/index.py --rows 20000 --queries 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# One BLAS thread, as a query node should run (parallelism comes from concurrent requests and
# segments): on a busy 2-core machine OpenBLAS's helper threads add ~8 ms stalls to small
# matrix products. Set OPENBLAS_NUM_THREADS to measure otherwise. Must precede numpy's import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tables import format_table  # bench/tables.py: run as python bench/<name>.py

from cluster.index import IndexSpec, build_index
from cluster.query import LocalCache, SealedSegment, Strategy
from cluster.query.testing import clustered_vectors, recall, segment_table
from cluster.storage import write_segment
from cluster.streaming.search import exact_search, row_norms
from woodpecker.objectstore import MemoryObjectStore

MiB = 1024 * 1024
K = 10


@dataclass
class Row:
    group: str
    rows: int
    index: str
    search: str
    selectivity: str
    ef: str
    nq: int
    recall: float
    qps: float
    p50: float
    p99: float


def truth(x: np.ndarray, q: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    norm2, inv = row_norms(x)
    return exact_search([(0, x)], q, K, "L2", n=len(x), norm2=norm2, inv_norm=inv, mask=mask)[0]


async def measure(
    seg: SealedSegment,
    q: np.ndarray,
    gt: np.ndarray,
    nq: int,
    *,
    ef: int | None = None,
    mask: np.ndarray | None = None,
    strategy: Strategy | None = None,
) -> tuple[float, float, float, float, set[str]]:
    """``(recall, qps, p50 ms, p99 ms, strategies used)`` over ``q`` in requests of ``nq``."""
    found, lat, used = [], [], set()
    await seg.search(q[:nq], "vec", K, "L2", ef=ef, mask=mask, strategy=strategy)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(q), nq):
        t = time.perf_counter()
        res = await seg.search(q[i : i + nq], "vec", K, "L2", ef=ef, mask=mask, strategy=strategy)
        lat.append(time.perf_counter() - t)
        found.append(res.offsets)
        used.add(str(res.strategy))
    total = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return (
        recall(np.concatenate(found), gt),
        len(q) / total,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        used,
    )


async def load(
    store: MemoryObjectStore, cache: LocalCache, x: np.ndarray, segment_id: int, index: bool
) -> tuple[SealedSegment, float, int]:
    """Write ``x`` as a segment, build HNSW if ``index``; return the loaded segment, the build
    seconds and the index file size."""
    manifest = await write_segment(
        store, "bench", 1, 1, segment_id, segment_table(x), channel="c", pk_field="id"
    )
    if not index:
        seg = await SealedSegment.load(manifest, cache)
        await seg.vectors("vec")
        return seg, 0.0, 0
    spec = IndexSpec.from_params(
        segment_id, 101, "vec", {"index_type": "HNSW", "metric_type": "L2"}
    )
    started = time.perf_counter()
    built = await build_index(store, "bench", manifest, spec)
    seconds = time.perf_counter() - started
    return await SealedSegment.load(manifest, cache, [built]), seconds, built.total_bytes


async def run(args: argparse.Namespace, progress) -> tuple[list[Row], str]:  # type: ignore[no-untyped-def]
    x, q = clustered_vectors(args.rows, args.queries, seed=args.seed)
    progress(f"ground truth for {len(q)} queries over {len(x):,} rows")
    gt = truth(x, q)
    store = MemoryObjectStore()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="canopy-bench-index-") as tmp:
        cache = await LocalCache.open(store, Path(tmp), max_bytes=8 << 30)
        progress("building HNSW M16/efC200")
        hnsw, build_s, index_bytes = await load(store, cache, x, 1, True)
        flat, _, _ = await load(store, cache, x, 2, False)
        n = len(x)
        for nq in (1, 100):
            for ef in (64, 128, 256):
                progress(f"HNSW ef={ef} nq={nq}")
                r, qps, p50, p99, _ = await measure(hnsw, q, gt, nq, ef=ef)
                rows.append(Row("hnsw", n, "HNSW", "graph", "100%", str(ef), nq, r, qps, p50, p99))
        sub = slice(0, args.filtered_queries)
        for nq in (1, 100):
            progress(f"FLAT nq={nq}")
            qs, gts = (q[sub], gt[sub]) if nq == 1 else (q, gt)
            r, qps, p50, p99, _ = await measure(flat, qs, gts, nq)
            rows.append(Row("flat", n, "FLAT", "exact", "100%", "-", nq, r, qps, p50, p99))
        rng = np.random.default_rng(args.seed + 1)
        for sel in (0.01, 0.1, 0.5):
            mask = rng.random(n) < sel
            for nq in (1, 100):
                qf = q[: args.filtered_queries * (1 if nq == 1 else 3)]
                gtf = truth(x, qf, mask)
                for strategy in (Strategy.EXACT, Strategy.POST_FILTER, Strategy.ALLOW_LIST, None):
                    name = "auto" if strategy is None else str(strategy)
                    progress(f"filter {sel:.0%} {name} nq={nq}")
                    r, qps, p50, p99, used = await measure(
                        hnsw, qf, gtf, nq, ef=64, mask=mask, strategy=strategy
                    )
                    if strategy is None:
                        name = "auto: " + "+".join(sorted(used))
                    rows.append(
                        Row(
                            f"filter{sel}",
                            n,
                            "HNSW",
                            name,
                            f"{sel:.0%}",
                            "64",
                            nq,
                            r,
                            qps,
                            p50,
                            p99,
                        )
                    )
        small = args.small_rows
        xs = x[:small]
        gts = truth(xs, q)
        progress(f"AUTOINDEX threshold: {small:,} rows")
        small_hnsw, small_build, _ = await load(store, cache, xs, 3, True)
        small_flat, _, _ = await load(store, cache, xs, 4, False)
        for nq in (1, 100):
            r, qps, p50, p99, _ = await measure(small_flat, q, gts, nq)
            rows.append(Row("small", small, "FLAT", "exact", "100%", "-", nq, r, qps, p50, p99))
            r, qps, p50, p99, _ = await measure(small_hnsw, q, gts, nq, ef=64)
            rows.append(Row("small", small, "HNSW", "graph", "100%", "64", nq, r, qps, p50, p99))
    title = (
        f"Sealed-segment search: {n:,} clustered 128-d rows (1,000 clusters), {len(q):,} queries, "
        f"k={K}, L2. HNSW M16/efC200 build {build_s:.1f} s ({index_bytes / MiB:.0f} MiB file); "
        f"{small:,} rows: {small_build:.1f} s. "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    return rows, title


def render(rows: list[Row], title: str) -> str:
    header = [
        "rows",
        "index",
        "search",
        "filter",
        "ef",
        "nq",
        "recall@10",
        "QPS",
        "p50 ms",
        "p99 ms",
    ]
    body = [
        [
            f"{r.rows:,}",
            r.index,
            r.search,
            r.selectivity,
            r.ef,
            str(r.nq),
            f"{r.recall:.3f}",
            f"{r.qps:,.0f}",
            f"{r.p50:.2f}",
            f"{r.p99:.2f}",
        ]
        for r in rows
    ]
    right = [True, False, False, True, True, True, True, True, True, True]
    return format_table(title, header, body, right, [r.group for r in rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--filtered-queries", type=int, default=200)
    p.add_argument("--small-rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows, title = asyncio.run(run(args, progress))
    print(render(rows, title))
    progress(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
