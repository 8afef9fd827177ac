"""Bulk-load a Parquet file into a Canopy collection, batch by batch, with a progress bar.

    python examples/ingest_parquet.py --make-sample 100000 sample.parquet   # a seeded file
    python examples/ingest_parquet.py sample.parquet --collection sample

The file is read in record batches (``--batch`` rows each) and every batch goes to
``Client.insert`` as an Arrow ``RecordBatch`` -- the SDK's columnar fast path, no Python loop
over rows. When the collection does not exist it is created from the Parquet schema:

    fixed_size_list<float32|float64>[dim]  -> FLOAT_VECTOR(dim)   (indexed: AUTOINDEX, --metric)
    int64 column named --pk (default "id") -> INT64 primary key
    string / large_string column as --pk   -> VARCHAR primary key
    int8 / int16 / int32 / int64           -> INT8 / INT16 / INT32 / INT64
    float32 / float64                      -> FLOAT / DOUBLE
    bool                                   -> BOOL
    string / large_string                  -> VARCHAR(--max-length)

Exactly one vector column is needed; any other Arrow type is refused before anything is
created. Values must not be null (the fields are created non-nullable). Rows go in as they are:
inserting the same file twice gives every key twice (use upserts for that, not this script).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sdk import Client, DataType

SAMPLE_DIM = 64
_SCALARS = {
    pa.int8(): DataType.INT8,
    pa.int16(): DataType.INT16,
    pa.int32(): DataType.INT32,
    pa.int64(): DataType.INT64,
    pa.float32(): DataType.FLOAT,
    pa.float64(): DataType.DOUBLE,
    pa.bool_(): DataType.BOOL,
    pa.string(): DataType.VARCHAR,
    pa.large_string(): DataType.VARCHAR,
}


# --- the progress bar -----------------------------------------------------------------------------


class Progress:
    """``[#####.....]  40.0%  40,000/100,000 rows  12,345 rows/s  ETA 5s`` redrawn in place
    (``\\r``) on ``out`` at most every ``interval`` seconds, and once more by ``close()``."""

    def __init__(self, total: int, out: TextIO = sys.stderr, interval: float = 0.2) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.out = out
        self.interval = interval
        self.start = time.monotonic()
        self._drawn = 0.0

    def update(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        self.out.write("\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        eta = f"ETA {(self.total - self.done) / rate:,.0f}s" if 0 < rate and frac < 1 else ""
        self.out.write(
            f"\r[{bar:<30}] {frac:6.1%}  {self.done:,}/{self.total:,} rows  "
            f"{rate:,.0f} rows/s  {eta:<12}"
        )
        self.out.flush()


# --- schema mapping -------------------------------------------------------------------------------


def _vector_dim(t: pa.DataType) -> int:
    """The dim of a float vector column type, or 0 when ``t`` is not one."""
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        return t.list_size
    return 0


def schema_from_arrow(client: Client, arrow: pa.Schema, pk: str, max_length: int):
    """A collection schema for ``arrow`` (see the module docstring); raises ValueError."""
    if pk not in arrow.names:
        raise ValueError(f"no primary-key column {pk!r} in the file (columns: {arrow.names})")
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    vectors = []
    for field in arrow:
        dim = _vector_dim(field.type)
        dtype = _SCALARS.get(field.type)
        if dim:
            schema.add_field(field.name, DataType.FLOAT_VECTOR, dim=dim)
            vectors.append(field.name)
        elif dtype is None:
            raise ValueError(f"column {field.name!r}: Arrow type {field.type} has no mapping")
        elif field.name == pk and dtype not in (DataType.INT64, DataType.VARCHAR):
            raise ValueError(f"primary key {pk!r} must be int64 or string, not {field.type}")
        elif dtype == DataType.VARCHAR:
            schema.add_field(field.name, dtype, max_length=max_length, is_primary=field.name == pk)
        else:
            schema.add_field(field.name, dtype, is_primary=field.name == pk)
    if len(vectors) != 1:
        raise ValueError(f"need exactly one fixed_size_list<float> column, found {vectors}")
    return schema, vectors[0]


def ensure_collection(client: Client, name: str, arrow: pa.Schema, args: argparse.Namespace):
    """Create ``name`` from the Parquet schema (indexed and loaded) unless it exists."""
    if client.has_collection(name):
        print(f"collection {name!r} exists; appending", file=sys.stderr)
        return
    schema, vector = schema_from_arrow(client, arrow, args.pk, args.max_length)
    index = client.prepare_index_params()
    index.add_index(vector, index_type="AUTOINDEX", metric_type=args.metric)
    client.create_collection(name, schema=schema, index_params=index)
    print(f"created collection {name!r} from the Parquet schema", file=sys.stderr)


# --- ingest and sample ----------------------------------------------------------------------------


def ingest(client: Client, path: Path, name: str, batch_rows: int) -> int:
    """Insert every row of ``path`` in batches of ``batch_rows``; returns the rows inserted."""
    file = pq.ParquetFile(path)
    progress = Progress(file.metadata.num_rows)
    try:
        for batch in file.iter_batches(batch_size=batch_rows):
            result = client.insert(name, batch)
            progress.update(result["insert_count"])
    finally:
        progress.close()
    return progress.done


def make_sample(path: Path, rows: int, dim: int, seed: int) -> None:
    """A seeded file: ``id`` int64, ``title`` string, ``price`` float64, ``year`` int32,
    ``in_stock`` bool, ``embedding`` fixed_size_list<float32>[dim]."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    table = pa.table(
        {
            "id": ids,
            "title": [f"item {i}" for i in range(rows)],
            "price": np.round(rng.uniform(1, 100, rows), 2),
            "year": rng.integers(1990, 2025, rows, dtype=np.int32),
            "in_stock": rng.random(rows) < 0.5,
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.random(rows * dim, dtype=np.float32)), dim
            ),
        }
    )
    pq.write_table(table, path, row_group_size=min(max(rows, 1), 50_000))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path, metavar="PATH.parquet")
    p.add_argument("--uri", default="http://127.0.0.1:19530")
    p.add_argument("--collection", help="default: the file name without .parquet")
    p.add_argument("--batch", type=int, default=10_000, help="rows per insert (default 10000)")
    p.add_argument("--pk", default="id", help="the primary-key column (default id)")
    p.add_argument("--metric", default="COSINE", help="COSINE, L2 or IP (new collections)")
    p.add_argument("--max-length", type=int, default=65_535, help="VARCHAR max_length")
    p.add_argument("--flush", action="store_true", help="flush (seal to Parquet) at the end")
    p.add_argument(
        "--make-sample", type=int, metavar="N", help="write N seeded sample rows to PATH and exit"
    )
    p.add_argument("--dim", type=int, default=SAMPLE_DIM, help="sample vector dim (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_sample is not None:
        make_sample(args.path, args.make_sample, args.dim, args.seed)
        print(f"wrote {args.make_sample} rows to {args.path}")
        return 0
    name = args.collection or args.path.stem
    with Client(uri=args.uri) as client:
        try:
            ensure_collection(client, name, pq.read_schema(args.path), args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        start = time.monotonic()
        rows = ingest(client, args.path, name, args.batch)
        if args.flush:
            client.flush(name)
        seconds = time.monotonic() - start
    print(f"inserted {rows} rows into {name!r} in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
