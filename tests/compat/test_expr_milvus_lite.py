"""cluster.expr against milvus-lite: the same rows, the same filters, the same ids.

milvus-lite 3.2.2 (the pure-Python Milvus server from PyPI, run in its own cached venv built by
``bench/insert.py``, see ``lite_server.py``) gets the ``tests/unit`` expression fixture rows
through pymilvus; every filter of ``test_expr.ALL_CASES`` that milvus-lite also implements the
Milvus way is run with ``query(filter=...)`` and must select exactly the ids Canopy's plan
selects.

Left out, with the reason (milvus-lite, not Milvus, differs; Canopy follows Milvus' planparserv2
and segcore, see ``cluster/expr``): it parses no ``%``, ``**``, hex / binary / octal literals,
``\\u`` or ``\\%`` escapes, chained ranges, list literals outside ``in``, ``in`` on JSON paths or
array elements, ``array_length`` of a JSON path, or bare JSON booleans; it uses SQL
three-valued logic (Milvus: a null inside ``and`` / ``or`` does not stop ``not`` from matching;
``!=`` / ``not`` on a JSON path match rows lacking the key); it compares JSON ``true`` equal to
``1``; it divides integers as floats (Milvus truncates); and it counts a missing JSON list or a
null ARRAY as length 0 (newer Milvus: unknown).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "tests" / "unit"
if str(UNIT) not in sys.path:  # the shared fixture lives with the unit tests
    sys.path.insert(0, str(UNIT))

from lite_server import lite_server  # noqa: E402
from test_expr import ALL_CASES  # noqa: E402
from test_expr_fixture import MISSING, ROWS, matching_ids  # noqa: E402
from test_expr_templates import SENDABLE  # noqa: E402

COLLECTION = "expr_diff"

DIFFERENT = {
    # syntax milvus-lite does not parse
    "id == 0x10",
    "id == 0b101",
    "id == 010",
    'name == "\\u65e5\\u672c"',
    'name like "a\\%b"',
    "10 < age < 40",
    "10 <= age <= 40",
    "40 > age >= 10",
    "40 >= age > 10",
    "-1 <= rank < 4",
    '"a" <= name < "b"',
    "1.5 < score <= 5",
    "not (10 < age < 40)",
    '1 < meta["a"] < 5',
    "age % 2 == 0",
    "age % 3 == -1",
    "age % rank == 0",
    "age == -7 % 3",
    'meta["a"] % 2 == 1',
    "n % 2 == 1",
    "age ** 2 > 400",
    "age < 2 ** 4",
    'meta["a"] == [1, 2]',
    'json_contains(meta["b"], [1, 2])',
    "tags == [1, 2]",
    "tags == []",
    "tags != [1, 2]",
    'words == ["x", "y"]',
    'meta["a"] in [1, "x"]',
    'meta["a"] not in [1, 2, 3]',
    'meta["a"] in [true]',
    'meta["a"] in [[1, 2], 10]',
    "tags[0] in [1, 2]",
    'array_length(meta["b"]) == 2',
    'array_length(meta["b"]) > 0',
    'not array_length(meta["b"]) == 2',
    "flag",
    "not flag",
    # null / missing semantics (SQL three-valued logic in milvus-lite)
    "rank not in [1, 2]",
    "not (age > 30 or rank == 1)",
    "not (rank > 3 and age > 10)",
    'meta["a"] != 1',
    'meta["a"] != "x"',
    "not meta['a'] == 1",
    'not json_contains(meta["b"], 3)',
    'color != "red"',
    "undefined_key != 1",
    "not tags[0] == 3",
    "not array_contains(tags, 3)",
    "array_length(tags) == 0",
    "array_length(l) == 0",
    # JSON true == 1 in milvus-lite
    'meta["a"] == 1',
    'meta["a"] == 1.0',
    'meta["a"] == true',
    'json_contains(meta["b"], true)',
    'array_contains(meta["b"], 1)',
    # integer division
    "age / 3 == -1",
    "age / 4 == 2",
    "age / rank > 5",
    "age == 7 / 2",
    "age == -7 / 2",
}
AGREED = [expr for expr, _ in ALL_CASES if expr not in DIFFERENT]
# milvus-lite has no templates: it gets the values inlined as literals.
INLINABLE = {
    "age > {a} and name in {names}",
    "{hi} >= age",
    "age * {k} > {t}",
    "score >= {f}",
    "active == {b}",
    "array_contains_any(tags, {ts})",
    "array_contains(tags, {t})",
    "name like {p}",
    "id in {ids} or {f}",
}
TEMPLATES = [(e, t) for e, t, _ in SENDABLE if e in INLINABLE]


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items() if x is not MISSING}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pymilvus import DataType, MilvusClient

    with lite_server(tmp_path_factory.mktemp("lite")) as uri:
        client = MilvusClient(uri)
        schema = MilvusClient.create_schema(enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("name", DataType.VARCHAR, max_length=64)
        schema.add_field("age", DataType.INT32)
        schema.add_field("score", DataType.FLOAT)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field("active", DataType.BOOL)
        schema.add_field("rank", DataType.INT64, nullable=True)
        schema.add_field("meta", DataType.JSON, nullable=True)
        schema.add_field(
            "tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8, nullable=True
        )
        schema.add_field(
            "words", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=8, max_length=16
        )
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        client.create_collection(COLLECTION, schema=schema, index_params=index)
        rows = []
        for r in ROWS:
            row = {k: _clean(v) for k, v in r.items() if k != "$meta"}
            row.update(_clean(r["$meta"]))
            rows.append(row)
        client.insert(COLLECTION, rows)
        client.load_collection(COLLECTION)
        yield client
        client.close()


def _lite_ids(client: Any, expr: str) -> list[int]:
    res = client.query(COLLECTION, filter=expr, output_fields=["id"], limit=len(ROWS))
    return sorted(r["id"] for r in res)


def test_enough_expressions_are_compared() -> None:
    assert len(AGREED) >= 50
    assert DIFFERENT <= {expr for expr, _ in ALL_CASES}  # no stale exclusions


@pytest.mark.parametrize("expr", AGREED)
def test_same_ids_as_milvus_lite(lite: Any, expr: str) -> None:
    assert matching_ids(expr) == _lite_ids(lite, expr)


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(map(_literal, v)) + "]"
    return json.dumps(v)


@pytest.mark.parametrize(("expr", "templates"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_templates_same_ids_as_inlined_literals(
    lite: Any, expr: str, templates: dict[str, Any]
) -> None:
    inlined = re.sub(r"\{(\w+)\}", lambda m: _literal(templates[m.group(1)]), expr)
    assert matching_ids(expr, templates=templates) == _lite_ids(lite, inlined)
