"""cluster.expr errors: every bad filter is an ExprError (Milvus 1100) with the offending
position, and nothing else ever escapes -- checked on a table of known mistakes and by fuzzing
(random token soup, random characters, mutations of valid expressions)."""

from __future__ import annotations

import random
import string
from typing import Any

import numpy as np
import pytest
from test_expr import ALL_CASES
from test_expr_fixture import SCHEMA, STATIC, TABLE

from cluster.expr import ExprError, compile_filter
from cluster.expr.parser import MAX_DEPTH
from cluster.milvus.status import ParameterInvalid, status_for
from cluster.schema import CollectionSchema

# (expression, detail substring, position: an int or the substring the error points at)
ERRORS: list[tuple[str, str, int | str]] = [
    ("age >", "unexpected end of expression", 5),
    ("(age > 1", "expected ')' to close '(' at position 0", 8),
    ("age > 1)", "unexpected ')'", ")"),
    ("age > 1 and", "unexpected end of expression", 11),
    ("and age > 1", "unexpected keyword 'and'", 0),
    ("age not 5", "unexpected 'not'", "not"),
    ("age >> 1", "bitwise operators are not supported", ">>"),
    ("age & 1 == 1", "bitwise operators are not supported", "&"),
    ("age = 1", "use '==' to compare", "="),
    ("name =~ 'a.*'", "regular expression match is not supported", "=~"),
    ("age @ 1", "unexpected character '@'", "@"),
    ('name == "abc', "unterminated string literal", '"'),
    ("name == r'abc", "unterminated string literal", "r'"),
    ('name == "\\x4"', "invalid escape sequence", "\\"),
    ("age > 99999999999999999999", "out of the range of int64", "9"),
    ("age > -9223372036854775809", "out of the range of int64", "9"),
    ("age > 1abc", "invalid number literal '1abc'", "1"),
    ("age > 1.5.2", "invalid number literal", "1"),
    ("age > 09", "invalid octal literal '09'", "0"),
    ("meta[] == 1", "a JSON key must be a quoted string", "]"),
    ("meta[''] == 1", "empty JSON key", "''"),
    ("meta[a] == 1", "a JSON key must be a quoted string", "a]"),
    ("age is nul", "expected 'null' after 'is'", "nul"),
    ("{} > 1", "expected a template name", "}"),
    ("1 < age > 3", "after a comparison; combine comparisons with 'and'", ">"),
    ("age == 1 == 2", "after a comparison", "== 2"),
    ("age in [1] in [2]", "after a comparison", "in [2]"),
    ("age > 'a'", "comparisons between Int32 and VarChar are not supported", ">"),
    ("name > 1", "comparisons between VarChar and Int64 are not supported", ">"),
    ("age == true", "comparisons between Int32 and Bool are not supported", "=="),
    ("active > true", "invalid range operations on boolean expr", ">"),
    ("score == [1]", "comparisons between Float and Array are not supported", "=="),
    ("'a' > 1", "comparison operations cannot be applied to two incompatible operands", ">"),
    ("vec == 1", "vector field vec (FloatVector) cannot be filtered", 0),
    ("vec is null", "vector field vec", 0),
    ("age[0] == 1", "Int32 data type not supported accessed with []", "["),
    ("tags['a'] == 1", "can only access array field with one integer index", "["),
    ("tags[0][1] == 1", "can only access array field with one integer index", "[0]"),
    ("tags > 1", "can not comparisons array fields directly", ">"),
    ("tags + 1 > 1", "can not comparisons array fields directly", "+"),
    ("tags == 1", "can not comparisons array fields directly", "=="),
    ("tags == ['a']", "can't compare between array element type: Int64 and VarChar", "=="),
    ("meta['a'] > age", "two column comparison with JSON type is not supported", ">"),
    ("meta['a'] < [1]", "invalid range operation '<' between JSON and Array", "<"),
    ("meta['a'] > true", "invalid range operation '>' between JSON and Bool", ">"),
    ("exists age", "exists operations are only supported on json field", "exists"),
    ("exists meta", "exists operations are only supported on json key", "exists"),
    ("age + 1", "predicate is not a boolean expression", 0),
    ("'abc'", "predicate is not a boolean expression", 0),
    ("[1, 2]", "predicate is not a boolean expression", 0),
    ("tags", "predicate is not a boolean expression", 0),
    ("(1 == 1) == true", "a boolean expression cannot be used as a value here", "1 =="),
    ("age > (age > 1)", "a boolean expression cannot be used as a value here", "age > 1)"),
    ("10 < age < 5", "invalid range: lowerbound is greater than upperbound", 0),
    ("5 >= age > 5", "invalid range: lowerbound is greater than upperbound", 0),
    ("1 < 2 < age", "range operations are only supported on fields", "2"),
    ("age in 5", "the right-hand side of 'in' must be a list", "5"),
    ("age in [1, 'a']", "value 'a' in list cannot be casted to Int32", "["),
    ("name in [true]", "value 'true' in list cannot be casted to VarChar", "["),
    ("age in [age]", "list elements must be constants", "age]"),
    ("1 in [1]", "'in' can only be used on non-const expression", 0),
    ("tags in [[1]]", "'in' on a whole array field is not supported", 0),
    ("age like 'a%'", "like operation on non-string or no-json field is unsupported", "like"),
    ("name like 1", "the pattern of like must be a string", "1"),
    ("name like name", "the pattern of like must be a string", 10),
    ("age + 1 like 'a'", "the left operand of like is invalid", 0),
    ("age % 1.5 == 0", "modulo can only apply on integer types", "%"),
    ("score % 2 == 0", "modulo can only apply on integer types", "%"),
    ("age / 0 > 1", "division or modulus by zero", "/"),
    ("age % (1 - 1) == 0", "division or modulus by zero", "%"),
    ("age > 'a' + 1", "'+' cannot perform arithmetic between VarChar and Int64", "+"),
    ("name + 1 > 1", "'+' cannot perform arithmetic between VarChar and Int64", "+"),
    ("-name > 1", "unary '-' cannot be applied to VarChar", "-"),
    ("not age", "predicate is not a boolean expression", "age"),
    ("foo(age)", "unknown function 'foo'", 0),
    ("text_match(name, 'a')", "text_match is not supported yet", 0),
    ("RANDOM_SAMPLE(0.5)", "RANDOM_SAMPLE is not supported yet", 0),
    ("json_contains(meta['b'])", "json_contains takes 2 arguments, got 1", 0),
    ("array_length(tags, 1) > 0", "array_length takes 1 argument, got 2", 0),
    ("json_contains(meta['b'], 1) == true", "is a predicate, not a value", 0),
    ("json_contains_all(tags, 1)", "ContainsAll operation element must be an array", "1)"),
    ("json_contains_any(meta['b'], 'x')", "ContainsAny operation element must be an array", "'x'"),
    (
        "array_contains(tags, 'a')",
        "can't compare between array element type: Int64 and VarChar",
        "'a'",
    ),
    ("array_contains(age, 1)", "contains operation are only supported on json or array", "age"),
    ("array_contains(meta['b'], age)", "only supported explicitly specified element", "age)"),
    ("array_length(age) == 1", "array_length operation are only supported on json or array", "age"),
    ("age is null is null", "after a comparison", 12),
    ("age + 1 is null", "'is null' can only be applied on a field or a JSON path", 0),
    ("age > {x}", "the value of expression template variable name {x} is not found", "{"),
]


def _position(expr: str, where: int | str) -> int:
    if isinstance(where, int):
        return where
    pos = expr.rfind(where) if where in (")", "]") else expr.find(where)
    assert pos >= 0, (expr, where)
    return pos


@pytest.mark.parametrize(("expr", "detail", "where"), ERRORS, ids=[e[0] for e in ERRORS])
def test_error(expr: str, detail: str, where: int | str) -> None:
    with pytest.raises(ExprError) as info:
        compile_filter(expr, SCHEMA)
    err = info.value
    assert detail in err.detail
    assert err.position == _position(expr, where), (err.detail, err.position)
    assert err.expr == expr


@pytest.mark.parametrize(
    ("expr", "detail"),
    [
        ("y > 1", "field y not exist (there is no dynamic json field in schema"),
        ("$meta['a'] == 1", "there is no dynamic json field in schema"),
        ("x['a'] == 1", "Int64 data type not supported accessed with []"),
        ("v > 1", "vector field v (FloatVector)"),
        ("pk in [1]", "value '1' in list cannot be casted to VarChar"),
        ("pk == 1", "comparisons between VarChar and Int64 are not supported"),
    ],
)
def test_errors_without_dynamic_field(expr: str, detail: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_filter(expr, STATIC)
    assert detail in info.value.detail


def test_error_is_a_milvus_1100_with_the_expression_and_position() -> None:
    with pytest.raises(ExprError) as info:
        compile_filter("age > 'a'", SCHEMA)
    err = info.value
    assert isinstance(err, ParameterInvalid)
    assert str(err) == (
        "failed to create query plan: cannot parse expression: age > 'a', error: comparisons "
        "between Int32 and VarChar are not supported (at position 4): invalid parameter"
    )
    status = status_for(err)
    assert status.code == 1100 and status.reason == str(err)
    assert status.extra_info["is_input_error"] == "true"


@pytest.mark.parametrize(
    "expr",
    [
        "(" * (MAX_DEPTH + 5) + "age > 1" + ")" * (MAX_DEPTH + 5),
        "not " * 5000 + "active",
        "-" * 5000 + "age > 1",
        "age + " * 5000 + "1 > 0",
        "[" * 5000 + "1" + "]" * 5000 + " == meta['a']",
        "meta" + "['a']" * 5000 + " == 1",
        "(" * 100000,
    ],
    ids=["parens", "nots", "minuses", "long-sum", "nested-lists", "long-path", "open-parens"],
)
def test_deep_nesting_is_an_error_not_a_crash(expr: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_filter(expr, SCHEMA)
    assert "nested deeper than" in info.value.detail


def test_long_flat_expressions_are_fine() -> None:
    """Long ``or`` chains and lists are flat, not deep."""
    expr = " or ".join(f"id == {i}" for i in range(5000))
    assert compile_filter(expr, SCHEMA).evaluate(TABLE).sum() == TABLE.num_rows
    expr = "id in [" + ", ".join(map(str, range(100_000))) + "]"
    assert compile_filter(expr, SCHEMA).evaluate(TABLE).sum() == TABLE.num_rows


# --- fuzzing --------------------------------------------------------------------------------------

_TOKENS = (
    "age", "name", "meta", '["a"]', "[0]", "['b']", "tags", "words", "$meta", "color", "n", "vec",
    "rank", "active", "(", ")", "[", "]", "{", "}", ",", "and", "or", "not", "in", "like", "is",
    "null", "exists", "IS NOT NULL", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
    "**", "&&", "||", "!", "1", "0", "-1", "2.5", "1e3", ".5", "0x1F", "010", '"a%"', "'x'",
    '"\\u00e9"', "r'\\d'", "true", "False", "json_contains", "array_length", "array_contains_all",
    "JSON_CONTAINS_ANY", "{a}", "{l}", " ", "\\", '"', "'", "日", "=", "&", ".", "$", "#", "\n",
)  # fmt: skip
_TEMPLATES: dict[str, Any] = {"a": 3, "l": [1, 2]}


def _check(expr: str, schema: CollectionSchema = SCHEMA) -> bool:
    """True if ``expr`` compiled (and then evaluated cleanly), False on ExprError."""
    try:
        plan = compile_filter(expr, schema, _TEMPLATES)
    except ExprError as err:
        assert 0 <= err.position <= len(expr), (expr, err.position)
        assert expr in str(err)
        return False
    mask = plan.evaluate(TABLE)
    assert mask.dtype == np.bool_ and mask.shape == (TABLE.num_rows,), expr
    plan.pk_values()
    return True


def _mutate(rng: random.Random, expr: str) -> str:
    pos = rng.randrange(len(expr) + 1)
    op = rng.randrange(4)
    if op == 0:
        return expr[:pos] + expr[pos + 1 :]
    if op == 1:
        return expr[:pos] + rng.choice(string.printable + "日é") + expr[pos:]
    if op == 2:
        j = rng.randrange(len(expr) + 1)
        return expr[: min(pos, j)] + expr[max(pos, j) :]
    return expr[:pos] + rng.choice(_TOKENS) + expr[pos:]


def test_fuzz_token_soup() -> None:
    rng = random.Random(1)
    outcomes = [
        _check(
            "".join(rng.choice(_TOKENS) + rng.choice(("", " ")) for _ in range(rng.randint(1, 12)))
        )
        for _ in range(4000)
    ]
    assert 0 < sum(outcomes) < len(outcomes)


def test_fuzz_random_characters() -> None:
    rng = random.Random(2)
    alphabet = string.printable + "日é\x00\u2028"
    for _ in range(3000):
        _check("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))))


def test_fuzz_mutated_valid_expressions() -> None:
    rng = random.Random(3)
    ok = 0
    for _ in range(6000):
        expr = rng.choice(ALL_CASES)[0]
        for _ in range(rng.randint(1, 3)):
            expr = _mutate(rng, expr)
        ok += _check(expr)
        _check(expr, STATIC)
    assert ok > 500
