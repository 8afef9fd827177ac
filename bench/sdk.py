"""Insert rows/s and search latency: Canopy's SDK (``sdk.Client``) beside pymilvus, one run.

Starts its own ``canopy standalone`` (subprocess on a free loopback port, temp data dir) and
inserts ``--rows`` rows of ``--dim``-d float32 vectors (INT64 pk) in batches of ``--batch``,
one fresh collection per case, in each of these input shapes:

* ``pymilvus rows``: ``MilvusClient.insert`` with a list of dicts (vector = list of floats);
* ``sdk rows``: ``sdk.Client.insert`` with the same list of dicts;
* ``sdk numpy``: a dict of numpy columns (``id`` int64, ``vector`` float32 ``(n, dim)``);
* ``sdk arrow``: a ``pyarrow.Table`` (``vector`` as ``fixed_size_list<float32, dim>``);
* ``sdk numpy bulk`` / ``sdk arrow bulk``: all ``--rows`` in ONE ``insert`` call, which the SDK
  sends as ~4 MiB requests, three in flight (``sdk/_bulk.py``); its p50/p99 is that one call;

for two collection kinds: ``quick`` (``create_collection(name, dimension=dim)``: dynamic field
on, so every row carries ``$meta = {}``) and ``schema`` (explicit schema, no dynamic field).
Every case inserts the same seeded data; row dicts, numpy arrays and tables are built before the
clock starts. rows/s is over the whole case (first send to last ack); p50/p99 are per batch;
``x pymilvus`` is rows/s over ``pymilvus rows`` of the same collection kind (median of the
``--repeat`` passes; the passes run the cases interleaved, each pass on fresh collections).

Then the last ``schema`` collection is flushed, indexed (HNSW M=16 efConstruction=200, polled
until every row is indexed) and loaded, and ``--queries`` nq=1 searches (top 10, ef=64,
default consistency of each client) run through pymilvus and through the SDK with the same
query vectors (as lists of floats), after 10 warm-up requests each.

    python bench/sdk.py
    python bench/sdk.py --rows 200000 --batch 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# Run as ``python bench/sdk.py`` this file's folder is sys.path[0], where ``import sdk`` would
# find this file: the repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

START_TIMEOUT = 60.0
INDEX_TIMEOUT = 600.0
SEARCH_LIMIT = 10
EF = 64
KINDS = ("quick", "schema")
SHAPES = (
    "pymilvus rows",
    "sdk rows",
    "sdk numpy",
    "sdk arrow",
    "sdk numpy bulk",
    "sdk arrow bulk",
)


def _bench_module(name: str) -> ModuleType:
    """A sibling bench module by path (the bench folder is not on sys.path, see above)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- data -------------------------------------------------------------------------------------


@dataclass
class Data:
    """The batches in every input shape; all shapes hold the same rows."""

    dim: int
    pool: np.ndarray  # (batch, dim) float32
    starts: list[int]
    sizes: list[int]
    rows: list[list[dict[str, Any]]] = field(default_factory=list)
    numpy: list[dict[str, np.ndarray]] = field(default_factory=list)
    arrow: list[pa.Table] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sizes)


def build_data(rows: int, dim: int, batch: int, seed: int) -> Data:
    """Batch ``b`` has pks ``b * batch + j`` and the vectors of one seeded pool of ``batch``
    vectors rotated by ``b * 7919`` (so 100k rows need no 100k distinct float lists)."""
    rng = np.random.default_rng(seed)
    pool = rng.random((batch, dim), dtype=np.float32)
    pool_lists = pool.tolist()
    data = Data(dim, pool, [], [])
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        shift = ((start // batch) * 7919) % batch
        order = (np.arange(n) + shift) % batch
        ids = np.arange(start, start + n, dtype=np.int64)
        vectors = pool[order]
        data.starts.append(start)
        data.sizes.append(n)
        data.rows.append([{"id": start + j, "vector": pool_lists[k]} for j, k in enumerate(order)])
        data.numpy.append({"id": ids, "vector": vectors})
        flat = pa.array(vectors.reshape(-1), pa.float32())
        data.arrow.append(
            pa.table({"id": pa.array(ids), "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})
        )
    return data


# --- collections ------------------------------------------------------------------------------


def create(client: Any, name: str, kind: str, dim: int) -> None:
    """A fresh collection: ``quick`` = quick setup (dynamic field, AUTOINDEX, loaded);
    ``schema`` = INT64 ``id`` + ``vector`` only, no index, not loaded."""
    from pymilvus import DataType, MilvusClient

    if client.has_collection(name):
        client.drop_collection(name)
    if kind == "quick":
        client.create_collection(name, dimension=dim, metric_type="L2")
        return
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema)


# --- measurement ------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str
    shape: str
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rows_s(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def insert_case(
    client: Any, name: str, batches: Sequence[Any], expected: int
) -> tuple[float, list[float]]:
    """Insert every batch; ``(rows/s, per-batch seconds)``."""
    latencies = []
    inserted = 0
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        inserted += int(client.insert(name, batch)["insert_count"])
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    if inserted != expected:
        raise RuntimeError(f"{name}: {inserted} rows acknowledged, expected {expected}")
    return expected / elapsed, latencies


def run_inserts(
    pm: Any, sc: Any, data: Data, repeat: int, progress: Callable[[str], None]
) -> tuple[list[Case], str]:
    """Every (kind, shape) case ``repeat`` times; the name of the last ``schema`` collection
    (kept for the search phase)."""
    clients = {"pymilvus": pm, "sdk": sc}
    inputs = {
        "pymilvus rows": data.rows,
        "sdk rows": data.rows,
        "sdk numpy": data.numpy,
        "sdk arrow": data.arrow,
        "sdk numpy bulk": [{k: np.concatenate([b[k] for b in data.numpy]) for k in data.numpy[0]}],
        "sdk arrow bulk": [pa.concat_tables(data.arrow).combine_chunks()],
    }
    cases = {(k, s): Case(k, s) for k in KINDS for s in SHAPES}
    keep = ""
    for r in range(repeat):
        for kind in KINDS:
            for shape in SHAPES:
                name = f"bench_sdk_{kind}_{shape.replace(' ', '_')}_{r}"
                create(pm, name, kind, data.dim)
                progress(f"pass {r + 1}/{repeat}: {kind} / {shape}")
                client = clients[shape.split()[0]]
                rate, lat = insert_case(client, name, inputs[shape], data.total)
                cases[kind, shape].rates.append(rate)
                cases[kind, shape].latencies += lat
                if kind == "schema" and shape == "sdk numpy":
                    if keep:
                        pm.drop_collection(keep)
                    keep = name
                else:
                    pm.drop_collection(name)
    return list(cases.values()), keep


def prepare_search(pm: Any, name: str, rows: int, progress: Callable[[str], None]) -> None:
    """flush, HNSW index (polled until every row is indexed), load."""
    index_ready = _bench_module("search").index_ready
    progress(f"flush + HNSW index + load of {name}")
    pm.flush(name)
    params = pm.prepare_index_params()
    params.add_index(
        field_name="vector",
        index_name="vector_hnsw",
        index_type="HNSW",
        metric_type="L2",
        params={"M": 16, "efConstruction": 200},
    )
    pm.create_index(name, params, sync=False)
    deadline = time.monotonic() + INDEX_TIMEOUT
    while not index_ready(pm.describe_index(name, "vector_hnsw"), rows):
        if time.monotonic() > deadline:
            raise TimeoutError(f"index of {name} not ready after {INDEX_TIMEOUT:.0f} s")
        time.sleep(0.2)
    pm.load_collection(name)


def search_latencies(client: Any, name: str, queries: list[list[float]]) -> list[float]:
    """nq=1 search latencies (seconds) of every query, after 10 warm-up requests."""

    def one(q: list[float]) -> int:
        res = client.search(
            name,
            data=[q],
            limit=SEARCH_LIMIT,
            anns_field="vector",
            search_params={"metric_type": "L2", "params": {"ef": EF}},
        )
        return len(res[0])

    for q in queries[:10]:
        one(q)
    out = []
    for q in queries:
        t = time.perf_counter()
        if not one(q):
            raise RuntimeError(f"a search of {name} found nothing")
        out.append(time.perf_counter() - t)
    return out


# --- server -----------------------------------------------------------------------------------


@contextlib.contextmanager
def standalone(tmp: Path) -> Iterator[str]:
    """``canopy standalone`` on a free loopback port and ``tmp``; yields its uri."""
    insert = _bench_module("insert")
    port = insert.free_port()
    cmd = [sys.executable, "-m", "cluster", "standalone", "--data-dir", str(tmp / "data")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    with insert.server_process(cmd, port, tmp / "standalone.log", cwd=REPO) as uri:
        yield uri


# --- report -----------------------------------------------------------------------------------


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(
    cases: list[Case], search: dict[str, list[float]], args: argparse.Namespace, versions: str
) -> str:
    tables = _bench_module("tables")
    base = {c.kind: c.rows_s for c in cases if c.shape == "pymilvus rows"}
    header = ["case", "collection", "rows/s", "p50 ms", "p99 ms", "x pymilvus"]
    body: list[list[str]] = []
    groups: list[str] = []
    for c in cases:
        ratio = None if not c.rows_s or not base.get(c.kind) else c.rows_s / base[c.kind]
        body.append(
            [
                f"insert {c.shape}",
                c.kind,
                _f(c.rows_s, ",.0f"),
                _f(percentile(c.latencies, 0.5) * 1000 if c.latencies else None, ".1f"),
                _f(percentile(c.latencies, 0.99) * 1000 if c.latencies else None, ".1f"),
                _f(ratio, ".2f"),
            ]
        )
        groups.append(f"insert {c.kind}")
    pm_p50 = statistics.median(search["pymilvus"]) if search.get("pymilvus") else None
    for who, lat in search.items():
        p50 = statistics.median(lat) if lat else None
        body.append(
            [
                f"search nq=1 {who}",
                "schema",
                "-",
                _f(p50 * 1000 if p50 else None, ".2f"),
                _f(percentile(lat, 0.99) * 1000 if lat else None, ".2f"),
                _f(pm_p50 / p50 if pm_p50 and p50 else None, ".2f"),
            ]
        )
        groups.append("search")
    title = (
        f"SDK vs pymilvus against canopy standalone: {args.rows:,} rows x {args.dim}-d float32 in "
        f"batches of {args.batch:,}, {args.repeat} pass(es); search: {args.queries} queries, "
        f"top {SEARCH_LIMIT}, HNSW ef={EF} ({versions}; {os.cpu_count()} cores shared by client "
        f"and server). x pymilvus: rows/s ratio for inserts, pymilvus p50 / p50 for search"
    )
    return tables.format_table(title, header, body, [False, False, True, True, True, True], groups)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=100_000, help="default: %(default)s")
    parser.add_argument("--dim", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--batch", type=int, default=10_000, help="default: %(default)s")
    parser.add_argument("--repeat", type=int, default=1, help="passes (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--uri", help="use this running server instead of starting one")
    args = parser.parse_args(argv)
    for name in ("rows", "dim", "batch", "repeat", "queries"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import pymilvus
    from pymilvus import MilvusClient

    import sdk

    began = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[bench {time.perf_counter() - began:5.0f}s] {message}", file=sys.stderr, flush=True)

    data = build_data(args.rows, args.dim, args.batch, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    queries = rng.random((args.queries, args.dim), dtype=np.float32).tolist()
    with contextlib.ExitStack() as stack:
        uri = args.uri
        if uri is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="canopy-bench-sdk-")))
            uri = stack.enter_context(standalone(tmp))
        pm = MilvusClient(uri=uri)
        stack.callback(pm.close)
        sc = sdk.Client(uri=uri)
        stack.callback(sc.close)
        cases, keep = run_inserts(pm, sc, data, args.repeat, progress)
        prepare_search(pm, keep, args.rows, progress)
        progress(f"searches: {args.queries} x pymilvus, sdk")
        search = {
            "pymilvus": search_latencies(pm, keep, queries),
            "sdk": search_latencies(sc, keep, queries),
        }
        pm.drop_collection(keep)
    print(render(cases, search, args, f"pymilvus {pymilvus.__version__}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
