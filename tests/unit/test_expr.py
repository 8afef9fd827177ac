"""cluster.expr: each construct of the filter language against a plain-Python oracle.

Every case is ``(expression, predicate over a row dict)``: the ids Canopy's plan selects from
the Arrow table must equal the ids the predicate selects from the same rows as Python dicts.
The predicates spell out Milvus' semantics by hand: null / missing / wrongly typed values never
match, except that ``!=`` / ``not in`` / ``not`` on a JSON path match rows lacking the key, and
``not`` keeps rows whose value is null out (segcore's data/valid bitmaps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pytest
from test_expr_fixture import (
    MISSING,
    ROWS,
    SCHEMA,
    TABLE,
    dyn,
    ids_where,
    is_num,
    jcmp,
    matching_ids,
    meta,
)

from cluster.expr import compile_filter

Row = dict[str, Any]
Case = tuple[str, Callable[[Row], bool]]


def _in(v: Any, values: list[Any]) -> bool:
    return any(jcmp(v, "==", x) for x in values)


def _exists(v: Any) -> bool:
    return v is not MISSING and v is not None and v != {}


def _contains(v: Any, x: Any) -> bool:
    def same(a: Any, b: Any) -> bool:
        if isinstance(b, list):
            return isinstance(a, list) and len(a) == len(b) and all(map(same, a, b))
        return jcmp(a, "==", b)

    return isinstance(v, list) and any(same(e, x) for e in v)


def _elem(r: Row, col: str, i: int) -> Any:
    arr = r[col]
    return arr[i] if arr is not None and i < len(arr) else MISSING


def _len(v: Any) -> int:
    return len(v) if isinstance(v, list) else -1


def _like_a_b(s: str) -> bool:
    return len(s) == 3 and s[0] == "a" and s[2] == "b"


SCALAR: list[Case] = [
    ("age > 30", lambda r: r["age"] > 30),
    ("age >= 30", lambda r: r["age"] >= 30),
    ("age < 0", lambda r: r["age"] < 0),
    ("age <= -1", lambda r: r["age"] <= -1),
    ("age == 42", lambda r: r["age"] == 42),
    ("age != 42", lambda r: r["age"] != 42),
    ("30 < age", lambda r: r["age"] > 30),
    ("-1 >= age", lambda r: r["age"] <= -1),
    ("age > 10.5", lambda r: r["age"] > 10.5),
    ("age == 10.0", lambda r: r["age"] == 10),
    ("score > 2.5", lambda r: r["score"] > 2.5),
    ("score == 2.25", lambda r: r["score"] == 2.25),
    ("price <= 50.5", lambda r: r["price"] <= 50.5),
    ("id == 0x10", lambda r: r["id"] == 16),
    ("id == 0b101", lambda r: r["id"] == 5),
    ("id == 010", lambda r: r["id"] == 8),
    ("price > 1e1", lambda r: r["price"] > 10),
    ("active == true", lambda r: r["active"]),
    ("active == True", lambda r: r["active"]),
    ("active != TRUE", lambda r: not r["active"]),
    ("active", lambda r: r["active"]),
    ("not active", lambda r: not r["active"]),
    ("!active", lambda r: not r["active"]),
    ("name == 'apple'", lambda r: r["name"] == "apple"),
    ('name != "apple"', lambda r: r["name"] != "apple"),
    ('name > "b"', lambda r: r["name"] > "b"),
    ('name >= "apricot"', lambda r: r["name"] >= "apricot"),
    ('name == ""', lambda r: r["name"] == ""),
    ('name == "\\u65e5\\u672c"', lambda r: r["name"] == "日本"),
    ('name == "日本"', lambda r: r["name"] == "日本"),
    ("rank > 3", lambda r: r["rank"] is not None and r["rank"] > 3),
    ("rank == 3", lambda r: r["rank"] == 3),
    ("rank != 3", lambda r: r["rank"] is not None and r["rank"] != 3),
    ("not rank == 3", lambda r: r["rank"] is not None and r["rank"] != 3),
    ("not (rank > 3)", lambda r: r["rank"] is not None and not r["rank"] > 3),
    ("rank is null", lambda r: r["rank"] is None),
    ("rank IS NOT NULL", lambda r: r["rank"] is not None),
    ("rank is not null and rank < 5", lambda r: r["rank"] is not None and r["rank"] < 5),
    ("age is null", lambda r: False),
    ("age > rank", lambda r: r["rank"] is not None and r["age"] > r["rank"]),
    ("age == rank", lambda r: r["age"] == r["rank"]),
    ("age != rank", lambda r: r["rank"] is not None and r["age"] != r["rank"]),
    ("score < price", lambda r: r["score"] < r["price"]),
    ('name < "b" and name > "a"', lambda r: "a" < r["name"] < "b"),
]

RANGES: list[Case] = [
    ("10 < age < 40", lambda r: 10 < r["age"] < 40),
    ("10 <= age <= 40", lambda r: 10 <= r["age"] <= 40),
    ("40 > age >= 10", lambda r: 10 <= r["age"] < 40),
    ("40 >= age > 10", lambda r: 10 < r["age"] <= 40),
    ("-1 <= rank < 4", lambda r: r["rank"] is not None and -1 <= r["rank"] < 4),
    ('"a" <= name < "b"', lambda r: "a" <= r["name"] < "b"),
    ("1.5 < score <= 5", lambda r: 1.5 < r["score"] <= 5),
    ("not (10 < age < 40)", lambda r: not 10 < r["age"] < 40),
]

TERMS: list[Case] = [
    ("age in [1, 2, 3, 42]", lambda r: r["age"] in (1, 2, 3, 42)),
    ("age not in [1, 2, 3]", lambda r: r["age"] not in (1, 2, 3)),
    ("age IN [1, 2, 3,]", lambda r: r["age"] in (1, 2, 3)),
    ("rank in [1, 2]", lambda r: r["rank"] in (1, 2)),
    ("rank not in [1, 2]", lambda r: r["rank"] is not None and r["rank"] not in (1, 2)),
    ("name in ['apple', \"cherry\"]", lambda r: r["name"] in ("apple", "cherry")),
    ('name not in ["apple"]', lambda r: r["name"] != "apple"),
    ("id in []", lambda r: False),
    ("id not in []", lambda r: True),
    ("score in [2.25, 2.5]", lambda r: r["score"] in (2.25, 2.5)),
    ("active in [true]", lambda r: r["active"]),
    ("age in [-1, -2]", lambda r: r["age"] in (-1, -2)),
]

LIKES: list[Case] = [
    ('name like "a%"', lambda r: r["name"].startswith("a")),
    ('name LIKE "%e"', lambda r: r["name"].endswith("e")),
    ('name like "%an%"', lambda r: "an" in r["name"]),
    ('name like "apple"', lambda r: r["name"] == "apple"),
    ('name like "%"', lambda r: True),
    ('name like "%p%e"', lambda r: "p" in r["name"] and r["name"].endswith("e")),
    ('name like "a_b"', lambda r: _like_a_b(r["name"])),
    ('name like "a\\%b"', lambda r: r["name"] == "a%b"),
    ('name like "a\\\\_b"', lambda r: r["name"] == "a_b"),
    ('name like "__"', lambda r: len(r["name"]) == 2),
    ('name like "日%"', lambda r: r["name"].startswith("日")),
    ('name like "%.%"', lambda r: "." in r["name"]),
    ('not name like "a%"', lambda r: not r["name"].startswith("a")),
]

LOGIC: list[Case] = [
    ("age > 30 and active", lambda r: r["age"] > 30 and r["active"]),
    ("age > 30 or rank == 1", lambda r: r["age"] > 30 or r["rank"] == 1),
    (
        "age > 30 && rank == 1 || name == 'apple'",
        lambda r: (r["age"] > 30 and r["rank"] == 1) or r["name"] == "apple",
    ),
    ("not (age > 30 or rank == 1)", lambda r: not (r["age"] > 30 or r["rank"] == 1)),
    # Milvus' valid bits: "and" ORs them, so a null rank does not keep "not" from matching.
    (
        "not (rank > 3 and age > 10)",
        lambda r: not (r["rank"] is not None and r["rank"] > 3 and r["age"] > 10),
    ),
    ("not (rank > 3 or rank < 1)", lambda r: r["rank"] is not None and 1 <= r["rank"] <= 3),
    (
        "(age > 10 and (rank < 3 or active)) or id == 1",
        lambda r: (
            (r["age"] > 10 and ((r["rank"] is not None and r["rank"] < 3) or r["active"]))
            or r["id"] == 1
        ),
    ),
    (
        "age > 30 AND NOT active OR id < 3",
        lambda r: (r["age"] > 30 and not r["active"]) or r["id"] < 3,
    ),
    ("Age > 1 oR id == 2", lambda r: r["id"] == 2),  # Age: a (missing) dynamic key
    ("not not active", lambda r: r["active"]),
    ("true", lambda r: True),
    ("false or id == 3", lambda r: r["id"] == 3),
    ("1 == 1", lambda r: True),
    ("id == 2 and true", lambda r: r["id"] == 2),
]

ARITH: list[Case] = [
    ("age * 2 + 1 > 61", lambda r: r["age"] * 2 + 1 > 61),
    ("age % 2 == 0", lambda r: math.fmod(r["age"], 2) == 0),
    ("age % 3 == -1", lambda r: math.fmod(r["age"], 3) == -1),
    ("age / 3 == -1", lambda r: int(r["age"] / 3) == -1),
    ("age / 4 == 2", lambda r: int(r["age"] / 4) == 2),
    ("age - 5 <= 0", lambda r: r["age"] - 5 <= 0),
    ("2 * age < 40", lambda r: 2 * r["age"] < 40),
    ("age + rank > 10", lambda r: r["rank"] is not None and r["age"] + r["rank"] > 10),
    ("-age > 3", lambda r: -r["age"] > 3),
    ("age ** 2 > 400", lambda r: r["age"] ** 2 > 400),
    ("price / 2 > 10", lambda r: r["price"] / 2 > 10),
    ("age * 1.5 > 30", lambda r: r["age"] * 1.5 > 30),
    ("(age + 1) * 2 == 20", lambda r: (r["age"] + 1) * 2 == 20),
    ("100 - age < 50", lambda r: 100 - r["age"] < 50),
    ("age / rank > 5", lambda r: bool(r["rank"]) and int(r["age"] / r["rank"]) > 5),
    ("age % rank == 0", lambda r: bool(r["rank"]) and math.fmod(r["age"], r["rank"]) == 0),
    ("age > 2 * 10 + 1", lambda r: r["age"] > 21),
    ("age > -(3 + 2)", lambda r: r["age"] > -5),
    ("age < 2 ** 4", lambda r: r["age"] < 16),
    ("age == 7 / 2", lambda r: r["age"] == 3),
    ("age == -7 % 3", lambda r: r["age"] == -1),
    ("age == -7 / 2", lambda r: r["age"] == -3),
    ("age > 1 - -1", lambda r: r["age"] > 2),
    ("id == -9223372036854775808 + 9223372036854775807 + 2", lambda r: r["id"] == 1),
]

JSON: list[Case] = [
    ('meta["a"] == 1', lambda r: jcmp(meta(r, "a"), "==", 1)),
    ('meta["a"] == 1.0', lambda r: jcmp(meta(r, "a"), "==", 1)),
    ('meta["a"] != 1', lambda r: r["meta"] is not None and not jcmp(meta(r, "a"), "==", 1)),
    ('meta["a"] > 1', lambda r: jcmp(meta(r, "a"), ">", 1)),
    ('meta["a"] >= 2.5', lambda r: jcmp(meta(r, "a"), ">=", 2.5)),
    ("meta['a'] < 0", lambda r: jcmp(meta(r, "a"), "<", 0)),
    ('meta["a"] == "x"', lambda r: jcmp(meta(r, "a"), "==", "x")),
    ('meta["a"] > "0"', lambda r: jcmp(meta(r, "a"), ">", "0")),
    ('meta["a"] != "x"', lambda r: r["meta"] is not None and meta(r, "a") != "x"),
    ('meta["a"] == true', lambda r: meta(r, "a") is True),
    ('meta["a"] == [1, 2]', lambda r: meta(r, "a") == [1, 2]),
    ('meta["a"] in [1, "x"]', lambda r: _in(meta(r, "a"), [1, "x"])),
    (
        'meta["a"] not in [1, 2, 3]',
        lambda r: r["meta"] is not None and not _in(meta(r, "a"), [1, 2, 3]),
    ),
    ('meta["a"] in [true]', lambda r: meta(r, "a") is True),
    ('meta["a"] in [[1, 2], 10]', lambda r: meta(r, "a") in ([1, 2], 10)),
    ('meta["c"]["d"] == 1', lambda r: jcmp(meta(r, "c", "d"), "==", 1)),
    ('meta["c"]["d"] == "d"', lambda r: meta(r, "c", "d") == "d"),
    ('meta["b"][0] == 0', lambda r: jcmp(meta(r, "b", 0), "==", 0)),
    ('meta["b"][1] > 2', lambda r: jcmp(meta(r, "b", 1), ">", 2)),
    ('meta["s"] like "hel%"', lambda r: str(meta(r, "s")).startswith("hel") and is_s(meta(r, "s"))),
    ('meta["s"] like "h_llo"', lambda r: meta(r, "s") in ("hello", "h_llo")),
    ('meta["a"] is null', lambda r: not _exists(meta(r, "a"))),  # also null rows (Milvus)
    ('not exists meta["a"]', lambda r: not _exists(meta(r, "a"))),
    ('meta["a"] is not null', lambda r: _exists(meta(r, "a"))),
    ('exists meta["c"]', lambda r: _exists(meta(r, "c"))),
    ('EXISTS meta["c"]["d"]', lambda r: _exists(meta(r, "c", "d"))),
    ("meta is null", lambda r: r["meta"] is None),
    ("meta is not null", lambda r: r["meta"] is not None),
    ('meta["a"] + 1 > 2', lambda r: is_num(meta(r, "a")) and meta(r, "a") + 1 > 2),
    ('meta["a"] * 2 == 5', lambda r: is_num(meta(r, "a")) and meta(r, "a") * 2 == 5),
    ('meta["a"] % 2 == 1', lambda r: is_num(meta(r, "a")) and math.fmod(meta(r, "a"), 2) == 1),
    ('1 < meta["a"] < 5', lambda r: jcmp(meta(r, "a"), ">", 1) and jcmp(meta(r, "a"), "<", 5)),
    ("not meta['a'] == 1", lambda r: r["meta"] is not None and not jcmp(meta(r, "a"), "==", 1)),
    ('json_contains(meta["b"], 3)', lambda r: _contains(meta(r, "b"), 3)),
    ('JSON_CONTAINS(meta["b"], "s")', lambda r: _contains(meta(r, "b"), "s")),
    ('json_contains(meta["b"], true)', lambda r: _contains(meta(r, "b"), True)),
    ('json_contains(meta["b"], [1, 2])', lambda r: _contains(meta(r, "b"), [1, 2])),
    (
        'json_contains_all(meta["b"], [1, 2])',
        lambda r: _contains(meta(r, "b"), 1) and _contains(meta(r, "b"), 2),
    ),
    (
        'json_contains_any(meta["b"], [4, 5])',
        lambda r: _contains(meta(r, "b"), 4) or _contains(meta(r, "b"), 5),
    ),
    ('json_contains_any(meta["b"], [])', lambda r: False),
    ('json_contains_all(meta["b"], [])', lambda r: isinstance(meta(r, "b"), list)),
    ('array_contains(meta["b"], 1)', lambda r: _contains(meta(r, "b"), 1)),
    ('array_length(meta["b"]) == 2', lambda r: _len(meta(r, "b")) == 2),
    ('array_length(meta["b"]) > 0', lambda r: _len(meta(r, "b")) > 0),
    ('not array_length(meta["b"]) == 2', lambda r: _len(meta(r, "b")) not in (-1, 2)),
    ("not array_length(tags) == 0", lambda r: bool(r["tags"])),
    (
        'not json_contains(meta["b"], 3)',
        lambda r: r["meta"] is not None and not _contains(meta(r, "b"), 3),
    ),
]


def is_s(v: Any) -> bool:
    return isinstance(v, str)


DYNAMIC: list[Case] = [
    ('color == "red"', lambda r: dyn(r, "color") == "red"),
    ('color != "red"', lambda r: dyn(r, "color") != "red"),
    ('$meta["color"] == "red"', lambda r: dyn(r, "color") == "red"),
    ('color in ["red", "blue"]', lambda r: dyn(r, "color") in ("red", "blue")),
    ("color == 3", lambda r: jcmp(dyn(r, "color"), "==", 3)),
    ("color is null", lambda r: not _exists(dyn(r, "color"))),
    ("color is not null", lambda r: _exists(dyn(r, "color"))),
    ("exists color", lambda r: _exists(dyn(r, "color"))),
    ("color like 'r%'", lambda r: is_s(dyn(r, "color")) and dyn(r, "color").startswith("r")),
    ("n > 2", lambda r: jcmp(dyn(r, "n"), ">", 2)),
    ("n == 2.5", lambda r: jcmp(dyn(r, "n"), "==", 2.5)),
    ('n == "5"', lambda r: dyn(r, "n") == "5"),
    ("n % 2 == 1", lambda r: is_num(dyn(r, "n")) and math.fmod(dyn(r, "n"), 2) == 1),
    ("n is null", lambda r: not _exists(dyn(r, "n"))),
    ("flag", lambda r: dyn(r, "flag") is True),
    ("flag == false", lambda r: dyn(r, "flag") is False),
    ("not flag", lambda r: dyn(r, "flag") is not True),
    ('nested["k"] == 2', lambda r: jcmp(dyn(r, "nested", "k"), "==", 2)),
    ("json_contains(l, 3)", lambda r: _contains(dyn(r, "l"), 3)),
    ("array_length(l) == 0", lambda r: dyn(r, "l") == []),
    ("l[0] == 0", lambda r: jcmp(dyn(r, "l", 0), "==", 0)),
    ("undefined_key == 1", lambda r: False),
    ("undefined_key != 1", lambda r: True),
    ('$meta["nested"]["k"] >= 1', lambda r: jcmp(dyn(r, "nested", "k"), ">=", 1)),
    ("n > 2 and age > 20", lambda r: jcmp(dyn(r, "n"), ">", 2) and r["age"] > 20),
]

ARRAYS: list[Case] = [
    ("tags[0] == 3", lambda r: _elem(r, "tags", 0) == 3),
    ("tags[1] > 5", lambda r: jcmp(_elem(r, "tags", 1), ">", 5)),
    ("tags[3] >= 0", lambda r: _elem(r, "tags", 3) is not MISSING),
    ("tags[0] != 3", lambda r: _elem(r, "tags", 0) not in (MISSING, 3)),
    ("not tags[0] == 3", lambda r: r["tags"] is not None and _elem(r, "tags", 0) != 3),
    ("tags[9] is null", lambda r: True),
    ("tags[0] is not null", lambda r: _elem(r, "tags", 0) is not MISSING),
    ("array_contains(tags, 3)", lambda r: 3 in (r["tags"] or ())),
    ("ARRAY_CONTAINS(tags, 3)", lambda r: 3 in (r["tags"] or ())),
    ("json_contains(tags, 4)", lambda r: 4 in (r["tags"] or ())),
    ("array_contains(tags, 3.0)", lambda r: 3 in (r["tags"] or ())),
    ("array_contains(tags, 3.5)", lambda r: False),
    ("array_contains_all(tags, [1, 2])", lambda r: {1, 2} <= set(r["tags"] or ())),
    ("array_contains_all(tags, [2, 2])", lambda r: 2 in (r["tags"] or ())),
    ("array_contains_any(tags, [7, 8])", lambda r: bool({7, 8} & set(r["tags"] or ()))),
    ("array_contains_all(tags, [])", lambda r: r["tags"] is not None),
    ("array_contains_any(tags, [])", lambda r: False),
    ("not array_contains(tags, 3)", lambda r: r["tags"] is not None and 3 not in r["tags"]),
    ("array_length(tags) == 0", lambda r: r["tags"] == []),
    ("array_length(tags) >= 2", lambda r: len(r["tags"] or ()) >= 2),
    ("tags is null", lambda r: r["tags"] is None),
    ("tags is not null", lambda r: r["tags"] is not None),
    ("tags == [1, 2]", lambda r: r["tags"] == [1, 2]),
    ("tags == []", lambda r: r["tags"] == []),
    ("tags != [1, 2]", lambda r: r["tags"] is not None and r["tags"] != [1, 2]),
    ("tags[0] in [1, 2]", lambda r: _elem(r, "tags", 0) in (1, 2)),
    (
        "tags[0] + tags[1] > 8",
        lambda r: len(r["tags"] or ()) > 1 and r["tags"][0] + r["tags"][1] > 8,
    ),
    ('array_contains(words, "x")', lambda r: "x" in r["words"]),
    ('words[0] == "xy"', lambda r: _elem(r, "words", 0) == "xy"),
    ('words[0] like "x%"', lambda r: str(_elem(r, "words", 0)).startswith("x")),
    ('array_contains_any(words, ["y", "z"])', lambda r: bool({"y", "z"} & set(r["words"]))),
    ('array_contains_all(words, ["x", "y"])', lambda r: {"x", "y"} <= set(r["words"])),
    ("array_length(words) == 3", lambda r: len(r["words"]) == 3),
    ('words == ["x", "y"]', lambda r: r["words"] == ["x", "y"]),
]

ALL_CASES = SCALAR + RANGES + TERMS + LIKES + LOGIC + ARITH + JSON + DYNAMIC + ARRAYS


@pytest.mark.parametrize(("expr", "oracle"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_matches_the_oracle(expr: str, oracle: Callable[[Row], bool]) -> None:
    assert matching_ids(expr) == ids_where(oracle)


def test_cases_are_not_trivial() -> None:
    """Most cases select some rows but not all, so they discriminate."""
    trivial = [e for e, f in ALL_CASES if len(ids_where(f)) in (0, len(ROWS))]
    assert len(trivial) < len(ALL_CASES) // 8, trivial


def test_same_answer_on_chunked_tables_and_record_batches() -> None:
    chunked = pa.concat_tables([TABLE.slice(0, 30), TABLE.slice(30, 7), TABLE.slice(37)])
    assert chunked.column("id").num_chunks == 3
    batches = TABLE.to_batches(max_chunksize=25)
    sliced = TABLE.slice(10, 50)
    for expr, _ in ALL_CASES:
        want = matching_ids(expr)
        assert matching_ids(expr, chunked) == want, expr
        got = [i for batch in batches for i in matching_ids(expr, batch)]
        assert got == want, expr
        assert matching_ids(expr, sliced) == [i for i in want if 11 <= i <= 60], expr


def test_blank_expression_is_always_true() -> None:
    for expr in ("", "   ", "\n\t"):
        plan = compile_filter(expr, SCHEMA)
        assert plan.always_true and plan.fields == frozenset()
        assert plan.evaluate(TABLE).all() and plan.pk_values() is None
    assert not compile_filter("true", SCHEMA).always_true


@pytest.mark.parametrize(
    ("expr", "fields"),
    [
        ("age > 1", {"age"}),
        ('meta["a"] == 1 and color == "red"', {"meta", "$meta"}),
        ('$meta["x"] == 1', {"$meta"}),
        ("array_length(tags) > 1 or age + rank > 3", {"tags", "age", "rank"}),
        ("id in [1, 2]", {"id"}),
        ("1 == 1", set()),
    ],
)
def test_fields(expr: str, fields: set[str]) -> None:
    assert compile_filter(expr, SCHEMA).fields == frozenset(fields)


def test_missing_columns_read_as_null() -> None:
    """A table without a column the plan reads (older segment): null / ``{}``, no error."""
    table = TABLE.select(["id", "age"])
    assert matching_ids("rank is null", table) == [r["id"] for r in ROWS]
    assert matching_ids("rank > 1 or meta['a'] == 1 or array_contains(tags, 1)", table) == []
    assert matching_ids("color != 'red'", table) == [r["id"] for r in ROWS]
    assert matching_ids("name like 'a%' or words[0] == 'x' or tags[0] == 1", table) == []
    assert matching_ids("age > 30", table) == ids_where(lambda r: r["age"] > 30)


def test_bad_json_bytes_are_missing_values() -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "meta": pa.array([b'{"a": 1}', b"not json", None], pa.binary()),
            "$meta": pa.array([b"[1]", b'{"k": 2}', b"{"], pa.binary()),
        }
    )
    assert matching_ids('meta["a"] == 1', table) == [1]
    assert matching_ids('meta["a"] != 1', table) == [2]
    assert matching_ids("k == 2", table) == [2]
    assert matching_ids("k != 2", table) == [1, 3]


def test_empty_table() -> None:
    empty = TABLE.slice(0, 0)
    for expr, _ in ALL_CASES[::5]:
        assert compile_filter(expr, SCHEMA).evaluate(empty).shape == (0,)


def test_large_json_integers_compare_exactly() -> None:
    """int64 JSON values compare exactly (not through float64); a value beyond int64 still
    compares (as a double)."""
    big = 2**62 + 1
    docs = [{"v": big, "u": 1}, {"v": big + 1, "u": 2**64 - 1}, {"v": -big}]
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "$meta": pa.array([orjson.dumps(d) for d in docs], pa.binary()),
        }
    )
    assert matching_ids(f"v == {big}", table) == [1]
    assert matching_ids(f"v > {big}", table) == [2]
    assert matching_ids(f"v in [{big + 1}, {-big}]", table) == [2, 3]
    assert matching_ids("u > 9223372036854775807", table) == [2]


def test_plan_is_reusable_and_results_are_independent() -> None:
    plan = compile_filter("age > 30 and rank is not null", SCHEMA)
    want = ids_where(lambda r: r["age"] > 30 and r["rank"] is not None)
    first = plan.evaluate(TABLE)
    first[:] = False  # the caller owns the result
    assert TABLE.column("id").to_numpy()[plan.evaluate(TABLE)].tolist() == want
