"""A seeded differential run: the same random writes and reads sent to Canopy and to milvus-lite.

``generate(seed, steps)`` draws a sequence of :class:`Op` (insert / upsert batches, delete by
ids, delete by filter, flush, and read checkpoints: query, get, count, FLAT search) on the
collection of :func:`create_collection` (INT64 pk, FLOAT_VECTOR dim 8, VARCHAR, INT64, DOUBLE,
BOOL, nullable INT64, JSON, ARRAY(INT64), dynamic field). ``run(canopy, lite, seed, ops)``
applies each op to both servers (``consistency_level="Strong"`` everywhere) and raises
:class:`Mismatch` -- naming the seed, the step, the op and both answers -- at the first read
whose answers differ: query / get rows (sorted by pk, every output field, floats with a
tolerance) and counts must be identical; a search must return the same distances (sorted,
1e-4 relative) and the same pks except those tied at the k-th distance. A request that fails on
one side only is a mismatch; failing on both is agreement.

Filters come from the Milvus grammar minus what milvus-lite does differently from Milvus (see
``test_expr_milvus_lite.py``): no ``%`` / ``**`` / chained ranges / integer ``/``, no ``in`` on
JSON paths, no bare boolean fields, no JSON booleans in the data (milvus-lite: ``true == 1``),
and ``not`` / ``!=`` / ``not in`` only over non-nullable scalar and ARRAY fields (milvus-lite
uses SQL three-valued logic for nulls and missing JSON keys; Milvus does not) -- except the
atoms ``rank != k`` and ``not (rank > k)``, where both leave out the null rows.

Other milvus-lite deviations the generator steers around:

- its upsert merges the new row onto the old one (Milvus replaces the row): dynamic keys a new
  row lacks would survive there. Every row of a pk therefore carries the same dynamic keys
  (:func:`dynamic_keys`), which makes both semantics give the same rows.
- a search without ``output_fields`` returns every field there (Milvus: none), so searches
  always name their output fields.
- inserting an existing pk (Milvus keeps both rows) is never generated; upserts never repeat a
  pk within a batch.
- a query whose whole filter is ``id in [..]`` returns a row per listed id there (a repeated
  id: a repeated row; Milvus: one), so such lists never repeat an id.

Delete by filter is sent as ``delete(filter=...)`` to both (``NATIVE_DELETE_BY_FILTER``; False
runs it as a Strong query of the filter's ids on each server followed by a delete of those ids).

Found by this test and fixed: in a LocalCluster with query nodes, a read racing a compaction
commit could miss the rows of the compacted segment for ~0.1-0.3 s (the query node had already
released the input and silently left it out; now it answers ``SegmentsNotServed`` and the
streaming node reads the segment itself).

``python tests/compat/differential.py --canopy URI --lite URI --seed N`` replays one seed.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymilvus import DataType, MilvusClient

NATIVE_DELETE_BY_FILTER = True
DIM = 8
STRONG = "Strong"
PK = "id"
SCALARS = ["name", "n", "price", "flag", "rank", "meta", "tags"]
DYNAMIC = ["color", "level"]
WORDS = ["apple", "apricot", "banana", "avocado", "cherry", "pineapple", "kiwi", "a_b", "", "日本"]
PRICES = [-2.5, 0.0, 1.25, 10.0, 33.3]
COLORS = ["red", "green", "blue"]
MSGS = ["hello", "help", "world", "x"]
SHARED_VECTORS = [[0.5] * DIM, [-0.25, 0.75] * (DIM // 2), [0.125 * i for i in range(DIM)]]


class Mismatch(AssertionError):
    """Canopy and milvus-lite answered one step differently."""


@dataclass(frozen=True)
class Op:
    """One step: ``kind`` is insert | upsert | delete_ids | delete_filter | flush | query | get
    | count | search; ``args`` are the pymilvus keyword arguments the driver sends."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = {k: (f"<{len(v)} rows>" if k == "data" else v) for k, v in self.args.items()}
        return f"{self.kind}({shown})"


# --- schema and rows -------------------------------------------------------------------------


def create_collection(client: MilvusClient, name: str) -> None:
    """(Re)create ``name`` with the differential schema and a FLAT L2 index, loaded."""
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(enable_dynamic_field=True)
    schema.add_field(PK, DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("name", DataType.VARCHAR, max_length=64)
    schema.add_field("n", DataType.INT64)
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("flag", DataType.BOOL)
    schema.add_field("rank", DataType.INT64, nullable=True)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index, consistency_level=STRONG)
    client.load_collection(name)


def dynamic_keys(pk: int) -> list[str]:
    """The dynamic keys every row of ``pk`` carries (fixed per pk, see the module docstring)."""
    return [k for k, keep in (("color", pk % 3 != 0), ("level", pk % 4 != 1)) if keep]


def make_vector(rng: random.Random) -> list[float]:
    """Mostly fresh; one in five from a small shared pool, so distances tie (across pks, and
    between a query and stored rows)."""
    if rng.random() < 0.2:
        return list(SHARED_VECTORS[rng.randrange(len(SHARED_VECTORS))])
    return [round(rng.uniform(-1, 1), 3) for _ in range(DIM)]


def make_row(rng: random.Random, pk: int) -> dict[str, Any]:
    """A row of ``pk``: every field set (``rank`` null at times), JSON keys present at times."""
    meta: dict[str, Any] = {}
    if rng.random() < 0.7:
        meta["a"] = rng.choice(
            [rng.randint(-5, 5), rng.randint(-5, 5), rng.choice(MSGS), rng.choice([2.5, 3.0])]
        )
    if rng.random() < 0.5:
        meta["s"] = rng.choice(MSGS)
    if rng.random() < 0.6:
        meta["b"] = [rng.randint(0, 5) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.4:
        meta["c"] = {"d": rng.randint(0, 3)}
    row: dict[str, Any] = {
        PK: pk,
        "vec": make_vector(rng),
        "name": rng.choice(WORDS) + (str(rng.randint(0, 9)) if rng.random() < 0.5 else ""),
        "n": rng.randint(-20, 20),
        "price": rng.choice(PRICES) if rng.random() < 0.5 else round(rng.uniform(-50, 50), 2),
        "flag": rng.random() < 0.5,
        "rank": None if rng.random() < 0.3 else rng.randint(0, 5),
        "meta": meta,
        "tags": [rng.randint(0, 9) for _ in range(rng.randint(0, 5))],
    }
    for key in dynamic_keys(pk):
        row[key] = rng.choice(COLORS) if key == "color" else rng.randint(0, 10)
    return row


# --- filters ---------------------------------------------------------------------------------


def _q(s: str) -> str:
    return f'"{s}"'


def _ints(rng: random.Random, lo: int, hi: int, most: int = 4) -> str:
    return "[" + ", ".join(str(rng.randint(lo, hi)) for _ in range(rng.randint(1, most))) + "]"


def _cmp(rng: random.Random) -> str:
    return rng.choice(["==", "!=", "<", "<=", ">", ">="])


def _pos_cmp(rng: random.Random) -> str:
    return rng.choice(["==", "<", "<=", ">", ">="])


# Atoms over non-nullable fields: safe under ``not`` in both servers.
NEGATABLE: list[Callable[[random.Random], str]] = [
    lambda r: f"n {_cmp(r)} {r.randint(-20, 20)}",
    lambda r: f"price {_cmp(r)} {round(r.uniform(-50, 50), 1)}",
    lambda r: f"price {_cmp(r)} {r.choice(PRICES)}",
    lambda r: f"price in [{r.choice(PRICES)}, {r.choice(PRICES)}]",
    lambda r: f"n == price or n > {r.randint(-20, 20)}",
    lambda r: f"name {_cmp(r)} {_q(r.choice(WORDS))}",
    lambda r: f"name like {_q(r.choice(['a', 'ap', 'b', 'pi', 'k']) + '%')}",
    lambda r: f"name like {_q('%' + r.choice(['e', 'le', 'a', '3', 'o']))}",
    lambda r: f"name like {_q('%' + r.choice(['an', 'pp', 'ri', '_', '本']) + '%')}",
    lambda r: f"name like {_q(r.choice(['a_b', '_pple', 'ki__', 'a%e']))}",
    lambda r: 'name == ""',
    lambda r: f"id in {sorted(set(r.sample(range(120), r.randint(1, 6))))}",
    lambda r: f"n in {_ints(r, -20, 20)}",
    lambda r: f"n not in {_ints(r, -20, 20)}",
    lambda r: "name in [" + ", ".join(_q(w) for w in r.sample(WORDS, 2)) + "]",
    lambda r: f"flag == {r.choice(['true', 'false'])}",
    lambda r: f"id < {r.randint(0, 300)}",
    lambda r: f"n > {r.randint(-20, 0)} and n < {r.randint(0, 20)}",
    lambda r: f"n * {r.randint(2, 3)} + {r.randint(-5, 5)} > {r.randint(-30, 30)}",
    lambda r: f"n - {r.randint(1, 9)} <= {r.randint(-20, 20)}",
    lambda r: f"price / 2 > {r.randint(-25, 25)}",
    lambda r: f"-n > {r.randint(-10, 10)}",
    lambda r: "price < n",
    lambda r: f"array_contains(tags, {r.randint(0, 9)})",
    lambda r: f"array_contains_all(tags, {_ints(r, 0, 9, 2)})",
    lambda r: f"array_contains_any(tags, {_ints(r, 0, 9, 3)})",
    lambda r: f"array_length(tags) {_cmp(r)} {r.randint(0, 5)}",
    lambda r: f"json_contains(tags, {r.randint(0, 9)})",
    lambda r: "true",
    lambda r: f"flag != true and n != {r.randint(-20, 20)}",
]
# Atoms over nullable fields, JSON paths, dynamic keys and array elements: positive only.
POSITIVE: list[Callable[[random.Random], str]] = [
    lambda r: f"rank {_pos_cmp(r)} {r.randint(0, 5)}",
    lambda r: f"rank is {r.choice(['', 'not '])}null",
    lambda r: f'meta["a"] {_pos_cmp(r)} {r.randint(-5, 5)}',
    lambda r: f'meta["a"] {_pos_cmp(r)} {r.choice([2.5, 3.0, 3])}',
    lambda r: f'meta["a"] == {_q(r.choice(MSGS))}',
    lambda r: f'meta["a"] + 1 > {r.randint(-4, 6)}',
    lambda r: 'meta["s"] like "hel%"',
    lambda r: f'meta["c"]["d"] == {r.randint(0, 3)}',
    lambda r: f'meta["b"][0] {_pos_cmp(r)} {r.randint(0, 5)}',
    lambda r: f'json_contains(meta["b"], {r.randint(0, 5)})',
    lambda r: f'json_contains_all(meta["b"], {_ints(r, 0, 5, 2)})',
    lambda r: f'json_contains_any(meta["b"], {_ints(r, 0, 5, 3)})',
    lambda r: f'exists meta["{r.choice(["a", "c", "s"])}"]',
    lambda r: f'meta["a"] is {r.choice(["", "not "])}null',
    lambda r: f"color == {_q(r.choice(COLORS))}",
    lambda r: "color in [" + ", ".join(_q(c) for c in r.sample(COLORS, 2)) + "]",
    lambda r: f"level {_pos_cmp(r)} {r.randint(0, 10)}",
    lambda r: f'$meta["level"] >= {r.randint(0, 10)}',
    lambda r: f"color is {r.choice(['', 'not '])}null",
    lambda r: f"tags[{r.randint(0, 2)}] {_pos_cmp(r)} {r.randint(0, 9)}",
    lambda r: f"rank > 2 and level < {r.randint(0, 10)}",
    lambda r: f"rank != {r.randint(0, 5)}",
    lambda r: f"not (rank > {r.randint(0, 5)})",
    lambda r: f"n + rank > {r.randint(-20, 20)}",
    lambda r: f'meta["a"] * 2 == {r.randint(-5, 5) * 2}',
    lambda r: f'meta["b"][1] > {r.randint(0, 5)}',
    lambda r: f"color like {_q(r.choice(['r%', '%e', '%ee%']))}",
    lambda r: f'$meta["color"] == {_q(r.choice(COLORS))}',
    lambda r: f"level + n > {r.randint(-10, 20)}",
    lambda r: f"tags[0] + tags[1] > {r.randint(0, 15)}",
    lambda r: f'array_contains(meta["b"], {r.randint(0, 5)})',
    lambda r: f'array_contains_any(meta["b"], {_ints(r, 0, 5, 3)})',
    lambda r: "nothere == 1",
]


def make_filter(rng: random.Random, depth: int = 2, negatable_only: bool = False) -> str:
    """A random filter; ``not`` only wraps sub-filters built from NEGATABLE atoms."""
    roll = rng.random()
    if depth == 0 or roll < 0.45:
        pool = NEGATABLE if negatable_only or rng.random() < 0.55 else POSITIVE
        return rng.choice(pool)(rng)
    if roll < 0.6:
        return f"not ({make_filter(rng, depth - 1, negatable_only=True)})"
    joiner = rng.choice(["and", "or"])
    left = make_filter(rng, depth - 1, negatable_only)
    right = make_filter(rng, depth - 1, negatable_only)
    return f"({left}) {joiner} ({right})"


# --- the operation sequence ------------------------------------------------------------------


@dataclass
class _Keys:
    """Which pks the generator has written (it does not model deletes: a pk may be gone)."""

    rng: random.Random
    used: list[int] = field(default_factory=list)
    next_pk: int = 0

    def fresh(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            self.next_pk += self.rng.randint(1, 3)  # gaps: ids that never existed
            out.append(self.next_pk)
        self.used += out
        return out

    def some(self, count: int) -> list[int]:
        return self.rng.sample(self.used, min(count, len(self.used)))

    def missing(self) -> int:
        """A pk never written: a gap between written ones, or one past them all."""
        gaps = sorted(set(range(1, self.next_pk)) - set(self.used))
        if gaps and self.rng.random() < 0.6:
            return self.rng.choice(gaps)
        return self.next_pk + self.rng.randint(1, 50)


def _fields(rng: random.Random) -> list[str]:
    pool = [*SCALARS, *DYNAMIC, "vec"]
    if rng.random() < 0.1:
        return ["*"]
    return rng.sample(pool, rng.randint(1, 4))


def _insert(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    return {"data": [make_row(rng, pk) for pk in keys.fresh(rng.randint(3, 25))]}


def _upsert(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    pks = keys.some(rng.randint(1, 12)) + keys.fresh(rng.randint(0, 5))
    return {"data": [make_row(rng, pk) for pk in pks]}


def _delete_ids(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    ids = [*keys.some(rng.randint(1, 8)), keys.missing()]
    return {"ids": ids + ids[:1]}  # a repeated id too


def _get(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    ids = [*keys.some(rng.randint(1, 10)), keys.missing()]
    return {"ids": list(dict.fromkeys(ids)), "output_fields": _fields(rng)}


def _count(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    return {"filter": "" if rng.random() < 0.15 else make_filter(rng)}


def _search(rng: random.Random, keys: _Keys) -> dict[str, Any]:
    data = [make_vector(rng) for _ in range(rng.randint(1, 3))]
    args = {"data": data, "limit": rng.choice([1, 5, 10, 20]), "output_fields": _fields(rng)}
    if rng.random() < 0.6:
        args["filter"] = make_filter(rng)
    return args


Builder = Callable[[random.Random, _Keys], dict[str, Any]]
# kind -> (weight, builder of the op's arguments)
OPS: dict[str, tuple[int, Builder]] = {
    "insert": (14, _insert),
    "upsert": (12, _upsert),
    "delete_ids": (8, _delete_ids),
    "delete_filter": (6, lambda r, k: {"filter": make_filter(r, depth=1)}),
    "flush": (5, lambda r, k: {}),
    "query": (20, lambda r, k: {"filter": make_filter(r), "output_fields": _fields(r)}),
    "get": (10, _get),
    "count": (10, _count),
    "search": (15, _search),
}


def _op(rng: random.Random, keys: _Keys) -> Op:
    kind = rng.choices(list(OPS), weights=[w for w, _ in OPS.values()])[0]
    return Op(kind, OPS[kind][1](rng, keys))


def generate(seed: int, steps: int) -> list[Op]:
    """``steps`` ops; the first inserts a batch so the reads have rows to find."""
    rng = random.Random(seed)
    keys = _Keys(rng)
    ops = [Op("insert", {"data": [make_row(rng, pk) for pk in keys.fresh(40)]})]
    ops += [_op(rng, keys) for _ in range(steps - 1)]
    return ops


# --- comparing answers -----------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Plain Python values (numpy scalars become floats / ints; tuples lists)."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str | bytes):
        return value.item()
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types (``1`` is not ``1.0`` nor ``True``), floats to 1e-6
    relative (FLOAT / vector values pass through float32)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def rows_diff(canopy: list[dict[str, Any]], lite: list[dict[str, Any]]) -> str | None:
    """None when both row lists hold the same rows (any order); else what differs."""
    a = {r[PK]: r for r in canopy}
    b = {r[PK]: r for r in lite}
    if len(a) != len(canopy) or len(b) != len(lite):
        return (
            f"duplicate pks: canopy {len(canopy)} rows / {len(a)} pks, lite {len(lite)} / {len(b)}"
        )
    notes = []
    if a.keys() - b.keys():
        notes.append(f"only canopy: {sorted(a.keys() - b.keys())}")
    if b.keys() - a.keys():
        notes.append(f"only lite: {sorted(b.keys() - a.keys())}")
    for pk in sorted(a.keys() & b.keys()):
        if not same(a[pk], b[pk]):
            notes.append(f"pk {pk}: canopy {a[pk]} != lite {b[pk]}")
    return "; ".join(notes[:6]) or None


def _close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)


def _inner_pks(hits: list[dict[str, Any]], edge: float | None) -> set[Any]:
    """The pks of ``hits`` not tied at the k-th distance ``edge`` (None: fewer than k hits)."""
    return {h["id"] for h in hits if edge is None or not _close(h["distance"], edge)}


def hits_diff(canopy: list[dict[str, Any]], lite: list[dict[str, Any]], limit: int) -> str | None:
    """None when two hit lists of one query agree: same length, distances equal (sorted,
    1e-4 relative), pks equal except those tied at the k-th distance, entities equal."""
    if len(canopy) != len(lite):
        return f"{len(canopy)} hits != {len(lite)} hits"
    da = sorted(h["distance"] for h in canopy)
    db = sorted(h["distance"] for h in lite)
    if not all(_close(x, y) for x, y in zip(da, db, strict=True)):
        return f"distances {da} != {db}"
    edge = da[-1] if da and len(da) == limit else None
    ia, ib = _inner_pks(canopy, edge), _inner_pks(lite, edge)
    if ia != ib:
        return f"pks {sorted(ia)} != {sorted(ib)} (ties at {edge} left out)"
    ents = {h["id"]: h["entity"] for h in lite}
    for h in canopy:
        if h["id"] in ents and not same(h["entity"], ents[h["id"]]):
            return f"pk {h['id']}: entity {h['entity']} != {ents[h['id']]}"
    return None


# --- the driver ------------------------------------------------------------------------------


def _ids_of(client: MilvusClient, name: str, expr: str) -> list[int]:
    rows = client.query(name, filter=expr, output_fields=[PK], consistency_level=STRONG)
    return sorted(r[PK] for r in rows)


def apply(client: MilvusClient, name: str, op: Op) -> Any:
    """Send ``op``; a read returns its normalized answer, a write None (or the ids a
    non-native delete-by-filter selected)."""
    a = op.args
    if op.kind == "insert":
        client.insert(name, a["data"])
    elif op.kind == "upsert":
        client.upsert(name, a["data"])
    elif op.kind == "delete_ids":
        client.delete(name, ids=a["ids"])
    elif op.kind == "delete_filter":
        if NATIVE_DELETE_BY_FILTER:
            client.delete(name, filter=a["filter"])
            return None
        ids = _ids_of(client, name, a["filter"])
        if ids:
            client.delete(name, ids=ids)
        return ids
    elif op.kind == "flush":
        client.flush(name)
    elif op.kind == "query":
        return normalize(client.query(name, consistency_level=STRONG, **a))
    elif op.kind == "get":
        return normalize(client.get(name, consistency_level=STRONG, **a))
    elif op.kind == "count":
        res = client.query(name, output_fields=["count(*)"], consistency_level=STRONG, **a)
        return normalize(res[0]["count(*)"])
    elif op.kind == "search":
        res = client.search(name, anns_field="vec", consistency_level=STRONG, **a)
        return [normalize(list(hits)) for hits in res]
    else:
        raise ValueError(f"unknown op {op.kind!r}")
    return None


def compare(op: Op, canopy: Any, lite: Any) -> str | None:
    """None when the two answers to ``op`` agree; else a description of the difference."""
    if isinstance(canopy, Exception) or isinstance(lite, Exception):
        if isinstance(canopy, Exception) and isinstance(lite, Exception):
            return None
        return "only one side failed"
    if op.kind in ("query", "get"):
        return rows_diff(canopy, lite)
    if op.kind == "search":
        for i, (a, b) in enumerate(zip(canopy, lite, strict=True)):
            diff = hits_diff(a, b, op.args["limit"])
            if diff:
                return f"query vector {i}: {diff}"
        return None if len(canopy) == len(lite) else "different nq"
    return None if canopy == lite else "different"


def _attempt(client: MilvusClient, name: str, op: Op) -> Any:
    try:
        return apply(client, name, op)
    except Exception as exc:  # a failed request is an answer too
        return exc


def run(canopy: MilvusClient, lite: MilvusClient, seed: int, ops: Sequence[Op]) -> int:
    """Create the collection on both, apply ``ops`` to both; raise :class:`Mismatch` at the
    first disagreement. Returns the number of read checkpoints compared."""
    name = f"diff_{seed}"
    for client in (canopy, lite):
        create_collection(client, name)
    checked = 0
    for step, op in enumerate(ops):
        a = _attempt(canopy, name, op)
        b = _attempt(lite, name, op)
        diff = compare(op, a, b)
        if diff is not None:
            raise Mismatch(
                f"seed {seed} step {step}: {op}\n  difference: {diff}\n"
                f"  canopy: {_shown(a)}\n  lite:   {_shown(b)}"
            )
        checked += op.kind in ("query", "get", "count", "search", "delete_filter")
    for client in (canopy, lite):
        client.drop_collection(name)
    return checked


def _shown(answer: Any, limit: int = 3000) -> str:
    text = repr(answer)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canopy", required=True, help="URI of a Canopy server")
    parser.add_argument("--lite", required=True, help="URI of a milvus-lite server")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    checked = run(
        MilvusClient(args.canopy),
        MilvusClient(args.lite),
        args.seed,
        generate(args.seed, args.steps),
    )
    print(f"seed {args.seed}: {checked} reads agree")


if __name__ == "__main__":
    main()
