"""Streaming-node insert benchmark: rows/s through ``StreamingNode.insert``, one table.

Each run starts a coordinator (``LocalCoordinator``: TSO, ids, catalog) and a streaming node
serving one physical channel, creates a collection (int64 pk + ``--dim`` float32 vector, one
shard) and inserts ``--batches`` batches of ``--rows`` rows with 1 and with ``--concurrency``
concurrent callers. Each insert is timed from the call to its ``WriteAck`` (stamped, appended
to the WAL, durable, applied to the growing segment). The seal policy is set so nothing seals
during the run: this measures the write path, not the flush. Batches are built before timing.

Columns: rows/s and MiB/s of vector payload, insert latency p50/p99, WAL PUTs per batch (from
``LogStore.meter``). Backends: ``memory`` (memory:// objects + memory meta) and ``file``
(file:// in a temp dir + sqlite meta).

    python bench/streaming_insert.py
    python bench/streaming_insert.py --backend file --batches 400 --concurrency 16

Each row runs in a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymilvus import DataType as PDataType
from pymilvus import MilvusClient
from pymilvus.client.prepare import Prepare

from cluster.coordinator.catalog import Catalog
from cluster.coordinator.service import LocalCoordinator
from cluster.milvus.columns import arrow_schema
from cluster.schema import from_request_bytes
from cluster.streaming.config import StreamingConfig
from cluster.streaming.node import StreamingNode
from cluster.streaming.policy import SegmentPolicy
from woodpecker import LogStore
from woodpecker.meta import open_meta_store
from woodpecker.objectstore import open_object_store

MiB = 1024 * 1024


async def run(backend: str, batches: int, rows: int, dim: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="canopy-bench-") as tmp:
        if backend == "memory":
            objects = open_object_store("memory://")
            meta = open_meta_store("memory://")
        else:
            objects = open_object_store(f"file://{tmp}/objects")
            meta = open_meta_store(f"sqlite:///{tmp}/meta.db")
        coordinator = LocalCoordinator(meta, catalog=Catalog(meta, num_physical_channels=1))
        await coordinator.start()
        s = MilvusClient.create_schema(auto_id=False)
        s.add_field("id", PDataType.INT64, is_primary=True)
        s.add_field("vec", PDataType.FLOAT_VECTOR, dim=dim)
        req = Prepare.create_collection_request("bench", s)
        info = await coordinator.catalog.create_collection(
            "default", "bench", req.schema, create_ts=await coordinator.allocate_timestamp()
        )
        schema = arrow_schema(from_request_bytes(info.schema))
        rng = np.random.default_rng(0)
        tables = []
        for b in range(batches):
            vec = pa.FixedSizeListArray.from_arrays(
                pa.array(rng.random(rows * dim, dtype=np.float32)), dim
            )
            pks = pa.array(np.arange(b * rows, (b + 1) * rows, dtype=np.int64))
            tables.append(pa.Table.from_arrays([pks, vec], schema=schema))
        store = await LogStore.open(objects, meta)
        config = StreamingConfig(
            storage_root="segments",
            policy=SegmentPolicy(max_rows=None, max_bytes=None, max_age=None, max_idle=None),
            max_pending_bytes=256 * MiB,
        )
        node = StreamingNode(
            store, objects, coordinator, channels=list(info.pchannels), config=config
        )
        await node.start()
        pid, vchannel = info.partitions[0].partition_id, info.vchannels[0]
        latencies: list[float] = []
        queue = list(reversed(tables))

        async def caller() -> None:
            while queue:
                table = queue.pop()
                t0 = time.perf_counter()
                await node.insert(info.collection_id, pid, vchannel, table)
                latencies.append(time.perf_counter() - t0)

        puts0 = store.meter.meter.ops["put"].requests
        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        puts = store.meter.meter.ops["put"].requests - puts0
        growing = sum(g.num_rows for g in node.growing_segments(info.collection_id, vchannel))
        assert growing == batches * rows, (growing, batches * rows)
        await node.close()
        await store.close()
        await coordinator.close()
        await objects.close()
        await meta.close()
    latencies.sort()
    return {
        "rows_s": batches * rows / elapsed,
        "mib_s": batches * rows * dim * 4 / MiB / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "puts_per_batch": puts / batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["memory", "file", "all"], default="all")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "CALLERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one measurement, in a fresh process (a run's GiB of buffers do not linger)
        backend, callers = args.one[0], int(args.one[1])
        print(json.dumps(asyncio.run(run(backend, args.batches, args.rows, args.dim, callers))))
        return
    backends = ["memory", "file"] if args.backend == "all" else [args.backend]
    print(f"StreamingNode.insert: {args.batches} batches x {args.rows} rows x {args.dim}-d float32")
    header = f"{'backend':<8} {'callers':>7} {'rows/s':>11} {'MiB/s':>8} {'p50 ms':>8} "
    header += f"{'p99 ms':>8} {'PUT/batch':>9}"
    print(header)
    print("-" * len(header))
    for backend in backends:
        for callers in sorted({1, args.concurrency}):
            cmd = [sys.executable, __file__, "--one", backend, str(callers)]
            cmd += [
                "--batches",
                str(args.batches),
                "--rows",
                str(args.rows),
                "--dim",
                str(args.dim),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{backend:<8} {callers:>7} {r['rows_s']:>11,.0f} {r['mib_s']:>8.1f} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['puts_per_batch']:>9.2f}"
            )


if __name__ == "__main__":
    main()
