"""Shared fixture for the ``test_expr*`` suites (imported by them as ``test_expr_fixture``): a
schema with every filterable type, seeded rows as plain Python dicts (the oracle's view) and the
same rows as an Arrow table (Canopy's view), plain-Python helpers with Milvus' null / JSON
semantics for writing oracles, and a check that the rows cover the interesting cases."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from cluster.expr import compile_filter
from cluster.milvus.columns import arrow_schema
from cluster.schema import CollectionSchema, DataType, FieldSchema

MISSING: Any = object()

SCHEMA = CollectionSchema(
    "t",
    (
        FieldSchema(100, "id", DataType.INT64, is_primary=True),
        FieldSchema(101, "name", DataType.VARCHAR, max_length=64),
        FieldSchema(102, "age", DataType.INT32),
        FieldSchema(103, "score", DataType.FLOAT),
        FieldSchema(104, "price", DataType.DOUBLE),
        FieldSchema(105, "active", DataType.BOOL),
        FieldSchema(106, "rank", DataType.INT64, nullable=True),
        FieldSchema(107, "meta", DataType.JSON, nullable=True),
        FieldSchema(
            108, "tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8, nullable=True
        ),
        FieldSchema(
            109,
            "words",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=8,
            max_length=16,
        ),
        FieldSchema(110, "vec", DataType.FLOAT_VECTOR, dim=2),
        FieldSchema(111, "$meta", DataType.JSON, is_dynamic=True),
    ),
    enable_dynamic_field=True,
)

STATIC = CollectionSchema(  # no dynamic field, VARCHAR primary key
    "s",
    (
        FieldSchema(100, "pk", DataType.VARCHAR, is_primary=True, max_length=16),
        FieldSchema(101, "x", DataType.INT64),
        FieldSchema(102, "v", DataType.FLOAT_VECTOR, dim=2),
    ),
)

NAMES = ["apple", "banana", "avocado", "cherry", "apricot", "Äpfel", "", "a%b", "a_b", "日本", "ab"]


def _maybe(rng: random.Random, *choices: Any) -> Any:
    return rng.choice(choices)


def make_rows(n: int = 80, seed: int = 7) -> list[dict[str, Any]]:
    """Seeded rows covering nulls, missing keys and mixed JSON types."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        meta: Any = None
        if rng.random() > 0.15:
            meta = {}
            a = _maybe(rng, 1, 2, 3, 2.5, -1, "x", "1", True, False, None, MISSING, [1, 2], 10)
            if a is not MISSING:
                meta["a"] = a
            if rng.random() < 0.6:
                meta["b"] = [rng.randint(0, 5) for _ in range(rng.randint(0, 4))]
                if rng.random() < 0.2:
                    meta["b"].append(_maybe(rng, "s", 1.5, True, [1, 2]))
            if rng.random() < 0.5:
                meta["c"] = {"d": _maybe(rng, 1, 2, "d", None)}
            if rng.random() < 0.4:
                meta["s"] = _maybe(rng, "hello", "help", "world", "", "h_llo")
        dyn: dict[str, Any] = {}
        color = _maybe(rng, "red", "green", "blue", 3, MISSING, MISSING)
        if color is not MISSING:
            dyn["color"] = color
        n_val = _maybe(rng, 1, 2, 3, 4, 5, 2.5, "5", None, MISSING)
        if n_val is not MISSING:
            dyn["n"] = n_val
        if rng.random() < 0.5:
            dyn["flag"] = rng.random() < 0.5
        if rng.random() < 0.4:
            dyn["nested"] = {"k": rng.randint(0, 3)}
        if rng.random() < 0.4:
            dyn["l"] = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
        rows.append(
            {
                "id": i + 1,
                "name": rng.choice(NAMES),
                "age": rng.randint(-5, 80),
                "score": rng.randint(0, 40) / 4,
                "price": rng.randint(0, 1000) / 10,
                "active": rng.random() < 0.5,
                "rank": None if rng.random() < 0.25 else rng.randint(0, 9),
                "meta": meta,
                "tags": None
                if rng.random() < 0.15
                else [rng.randint(0, 9) for _ in range(rng.randint(0, 4))],
                "words": [rng.choice(["x", "y", "z", "xy"]) for _ in range(rng.randint(0, 3))],
                "vec": [float(i), 1.0],
                "$meta": dyn,
            }
        )
    return rows


def make_table(rows: list[dict[str, Any]], schema: CollectionSchema = SCHEMA) -> pa.Table:
    """The rows as Canopy stores them (JSON and ``$meta`` as JSON bytes)."""
    target = arrow_schema(schema)
    cols = {}
    for f in schema.fields:
        values = [r[f.name] for r in rows]
        if f.dtype == DataType.JSON:
            values = [None if v is None else orjson.dumps(v) for v in values]
        cols[f.name] = pa.array(values, target.field(f.name).type)
    return pa.table(cols, schema=target)


ROWS = make_rows()
TABLE = make_table(ROWS)


def matching_ids(expr: str, table: pa.Table | pa.RecordBatch = TABLE, **kw: Any) -> list[int]:
    mask = compile_filter(expr, SCHEMA, **kw).evaluate(table)
    assert mask.dtype == np.bool_ and mask.shape == (table.num_rows,)
    return table.column("id").to_numpy()[mask].tolist()


# --- oracle helpers (plain Python, Milvus semantics) -------------------------------------------


def jget(doc: Any, *path: Any) -> Any:
    """The JSON value at ``path`` (MISSING when absent or the row is null)."""
    for key in path:
        if isinstance(doc, dict):
            doc = doc.get(str(key), MISSING)
        elif isinstance(doc, list) and isinstance(key, int):
            doc = doc[key] if key < len(doc) else MISSING
        else:
            return MISSING
    return MISSING if doc is None and path == () else doc


def is_num(v: Any) -> bool:
    return type(v) in (int, float)


def jcmp(v: Any, op: str, lit: Any) -> bool:
    """A JSON value compared with a literal: False unless both have the same JSON type."""
    if isinstance(lit, bool):
        same = type(v) is bool
    elif isinstance(lit, int | float):
        same = is_num(v)
    else:
        same = type(v) is type(lit)
    if not same:
        return False
    return {
        "==": v == lit,
        "<": v < lit,
        "<=": v <= lit,
        ">": v > lit,
        ">=": v >= lit,
    }[op]


def dyn(r: dict[str, Any], *path: Any) -> Any:
    return jget(r["$meta"], *path)


def meta(r: dict[str, Any], *path: Any) -> Any:
    return MISSING if r["meta"] is None else jget(r["meta"], *path)


def ids_where(pred: Any, rows: list[dict[str, Any]] = ROWS) -> list[int]:
    return [r["id"] for r in rows if pred(r)]


def test_fixture_covers_the_edge_cases() -> None:
    assert any(r["rank"] is None for r in ROWS) and any(r["rank"] is not None for r in ROWS)
    assert any(r["meta"] is None for r in ROWS) and any(r["tags"] is None for r in ROWS)
    assert any(r["tags"] == [] for r in ROWS) and any(len(r["tags"] or ()) > 2 for r in ROWS)
    kinds = {type(meta(r, "a")) for r in ROWS}
    assert {int, float, str, bool, type(None), list} <= kinds
    assert any(meta(r, "a") is MISSING and r["meta"] is not None for r in ROWS)
    assert {type(dyn(r, "n")) for r in ROWS} >= {int, float, str, type(None)}
    assert any(dyn(r, "color") is MISSING for r in ROWS)
    assert TABLE.num_rows == len(ROWS) == 80
