"""cluster.expr: ``{name}`` templates (as Python values and as pymilvus' TemplateValue protos)
and the primary-key fast path ``FilterPlan.pk_values``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pymilvus.client.prepare import Prepare
from pymilvus.grpc_gen import schema_pb2
from test_expr_fixture import SCHEMA, STATIC, dyn, ids_where, jcmp, matching_ids, meta

from cluster.expr import ExprError, compile_filter, templates_from_proto

# --- templates ------------------------------------------------------------------------------------

TEMPLATE_CASES: list[tuple[str, dict[str, Any], Any]] = [
    (
        "age > {a} and name in {names}",
        {"a": 30, "names": ["apple", "cherry"]},
        lambda r: r["age"] > 30 and r["name"] in ("apple", "cherry"),
    ),
    ("{lo} < age <= {hi}", {"lo": 10, "hi": 40}, lambda r: 10 < r["age"] <= 40),
    ("{hi} >= age", {"hi": 5}, lambda r: r["age"] <= 5),
    ("age * {k} > {t}", {"k": 2, "t": 61}, lambda r: r["age"] * 2 > 61),
    ("score >= {f}", {"f": 2.5}, lambda r: r["score"] >= 2.5),
    ("active == {b}", {"b": False}, lambda r: not r["active"]),
    ('meta["a"] == {v}', {"v": "x"}, lambda r: meta(r, "a") == "x"),
    ('meta["a"] in {vs}', {"vs": [True, 1]}, lambda r: _one_or_true(meta(r, "a"))),
    ('meta["a"] in {vs}', {"vs": [[1, 2], [3]]}, lambda r: meta(r, "a") in ([1, 2], [3])),
    ("color not in {cs}", {"cs": ["red"]}, lambda r: dyn(r, "color") != "red"),
    (
        "array_contains_any(tags, {ts})",
        {"ts": [7, 8]},
        lambda r: bool({7, 8} & set(r["tags"] or ())),
    ),
    ("array_contains(tags, {t})", {"t": 3}, lambda r: 3 in (r["tags"] or ())),
    ("name like {p}", {"p": "a%"}, lambda r: r["name"].startswith("a")),
    ("{t}", {"t": True}, lambda r: True),
    ("id in {ids} or {f}", {"ids": [1, 2], "f": False}, lambda r: r["id"] in (1, 2)),
    # pymilvus 3.0.2 cannot send the rest (numpy scalars, tuples, mixed lists with strings).
    ("age > {a}", {"a": np.int32(70)}, lambda r: r["age"] > 70),
    ("id in {ids}", {"ids": (3, 4)}, lambda r: r["id"] in (3, 4)),
    ('meta["a"] in {vs}', {"vs": [1, "x"]}, lambda r: _one_or_x(meta(r, "a"))),
]
SENDABLE = TEMPLATE_CASES[:-3]


def _one_or_true(v: Any) -> bool:
    return jcmp(v, "==", 1) or v is True


def _one_or_x(v: Any) -> bool:
    return jcmp(v, "==", 1) or v == "x"


@pytest.mark.parametrize(
    ("expr", "templates", "oracle"), TEMPLATE_CASES, ids=[c[0] for c in TEMPLATE_CASES]
)
def test_templates(expr: str, templates: dict[str, Any], oracle: Any) -> None:
    assert matching_ids(expr, templates=templates) == ids_where(oracle)


@pytest.mark.parametrize(
    ("expr", "templates"), [c[:2] for c in SENDABLE], ids=[c[0] for c in SENDABLE]
)
def test_templates_through_pymilvus_protos(expr: str, templates: dict[str, Any]) -> None:
    """The values pymilvus sends for ``expr_params`` give the same plan as the Python values."""
    protos = Prepare.prepare_expression_template(templates)
    decoded = templates_from_proto(protos)
    assert decoded == templates
    assert matching_ids(expr, templates=decoded) == matching_ids(expr, templates=templates)


def test_template_protos_of_every_shape() -> None:
    values = {
        "i": 7,
        "f": 1.5,
        "s": "x",
        "b": True,
        "li": [1, 2],
        "lf": [1.5, 2.5],
        "ls": ["a"],
        "lb": [True, False],
        "nested": [[1, 2], [3]],
        "mixed": [1, True, 2.5],
        "empty": [],
    }
    assert templates_from_proto(Prepare.prepare_expression_template(values)) == values
    mixed = schema_pb2.TemplateValue()
    mixed.array_val.json_data.data.extend([b'"a"', b"1", b'{"k": [1]}', b"{bad"])
    unset = schema_pb2.TemplateValue()
    got = templates_from_proto({"m": mixed, "u": unset})
    assert got == {"m": ["a", 1, {"k": [1]}, b"{bad"], "u": None}


@pytest.mark.parametrize(
    ("expr", "templates", "detail", "position"),
    [
        ("age > {a}", {}, "the value of expression template variable name {a} is not found", 6),
        ("age > {a}", {"b": 1}, "template variable name {a} is not found", 6),
        (
            "age in {a}",
            {"a": 1},
            "the value of term expression template variable {a} is not array",
            7,
        ),
        ("age > {a}", {"a": "x"}, "comparisons between Int32 and VarChar are not supported", 4),
        ("age in {a}", {"a": ["x"]}, "value 'x' in list cannot be casted to Int32", 7),
        ("age > {a}", {"a": b"x"}, "template value {a} of type bytes is not supported", 6),
        ("age > {a}", {"a": None}, "template value {a} of type NoneType is not supported", 6),
        ("age > {a}", {"a": float("nan")}, "float nan is not finite", 6),
        ("age > {a}", {"a": 2**64}, "out of the range of int64", 6),
        ("age in {a}", {"a": [1, {2}]}, "template value {a} of type set is not supported", 7),
        ("name like {p}", {"p": 1}, "the pattern of like must be a string", 10),
        ("{a}", {"a": 1}, "predicate is not a boolean expression", 0),
    ],
)
def test_template_errors(expr: str, templates: dict[str, Any], detail: str, position: int) -> None:
    with pytest.raises(ExprError) as info:
        compile_filter(expr, SCHEMA, templates)
    assert detail in info.value.detail
    assert info.value.position == position


# --- primary keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "keys"),
    [
        ("id in [3, 1, 3]", [3, 1]),
        ("id == 5", [5]),
        ("5 == id", [5]),
        ("id == 5 or id in [1, 2]", [5, 1, 2]),
        ("id == 1 || (id == 2 or id in [3])", [1, 2, 3]),
        ("(id in [7])", [7]),
        ("id in [1.0, 2.5]", [1]),
        ("id in []", []),
        ("id IN [-9223372036854775808, 9223372036854775807]", [-(2**63), 2**63 - 1]),
        ("id in {ids}", [4, 2]),
    ],
)
def test_pk_values(expr: str, keys: list[int]) -> None:
    plan = compile_filter(expr, SCHEMA, {"ids": [4, 2]})
    got = plan.pk_values()
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    assert got.tolist() == keys
    assert sorted(matching_ids(expr, templates={"ids": [4, 2]})) == sorted(
        k for k in keys if 1 <= k <= 80
    )


@pytest.mark.parametrize(
    "expr",
    [
        "id > 5",
        "id != 5",
        "id in [1] and age > 1",
        "not id in [1]",
        "id not in [1]",
        "age in [1]",
        "id in [1] or age == 1",
        "id + 0 == 1",
        "",
        "true",
    ],
)
def test_no_pk_values(expr: str) -> None:
    assert compile_filter(expr, SCHEMA).pk_values() is None


def test_varchar_pk_values() -> None:
    assert compile_filter('pk in ["b", "a", "b"]', STATIC).pk_values() == ["b", "a"]
    assert compile_filter("pk == 'x' or pk == \"y\"", STATIC).pk_values() == ["x", "y"]
    assert compile_filter("pk in []", STATIC).pk_values() == []
    assert compile_filter("pk > 'a'", STATIC).pk_values() is None


def test_long_key_lists() -> None:
    """pymilvus' delete / get send ``pk in [...]`` with many keys: the lexer's list fast path
    must give the same keys as the general path."""
    keys = list(range(-50_000, 50_000, 3))
    plan = compile_filter("id in [" + ", ".join(map(str, keys)) + ",]", SCHEMA)
    assert plan.pk_values().tolist() == keys  # type: ignore[union-attr]
    strs = [f"k{i}" for i in range(20_000)]
    quoted = (f"'{k}'" if i % 2 else f'"{k}"' for i, k in enumerate(strs))
    assert compile_filter("pk in [" + ",".join(quoted) + "]", STATIC).pk_values() == strs
    assert compile_filter("pk in ['a\\\"b', 'c\\n', \"\"]", STATIC).pk_values() == [
        'a"b',
        "c\n",
        "",
    ]
    assert compile_filter("id in [1, 010, 0x10, -1]", SCHEMA).pk_values().tolist() == [  # type: ignore[union-attr]
        1,
        8,
        16,
        -1,
    ]
    with pytest.raises(ExprError, match="out of the range of int64"):
        compile_filter("id in [1, 9223372036854775808]", SCHEMA)
