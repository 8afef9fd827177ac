"""Name resolution, template substitution, type checks and constant folding: parse tree ->
:mod:`cluster.expr.bound` plan, or :class:`~cluster.expr.errors.ExprError` at the node's position.

Rules (Milvus' where it has one; "lenient" marks where Canopy accepts more):

* Names: a schema field; else, with dynamic fields enabled, a key of ``$meta``; else an error.
  ``x[...]`` indexes a JSON field / ``$meta`` (string keys, integer list indexes) or an ARRAY
  field (one integer index). Vector fields cannot appear in a filter.
* Comparisons: numbers with numbers (lenient: an integer field against a float literal compares
  numerically, Milvus refuses), strings with strings, bools with bools (``==`` / ``!=`` only), a
  JSON path with any literal (rows of another type never match ``== < ...`` and always match
  ``!=``), two non-JSON fields with each other, a whole ARRAY field only ``==`` / ``!=`` a list.
  ``!=`` on a JSON path is bound as ``not ==`` (Milvus: another type or a missing key is "not
  equal"); elsewhere a null value, or an array element past the end, matches neither.
* Arithmetic ``+ - * / % **`` on numeric fields, JSON paths, array elements and literals
  (lenient: any nesting and field-with-field; Milvus allows one field with one literal); ``%``
  needs integers; dividing by a literal zero is an error. Literal sub-expressions are folded
  (``**`` gives a float; int ``/`` and ``%`` truncate toward zero as in C/Go).
* Lenient: a bare boolean field or JSON path is a predicate (``flag`` means ``flag == true``),
  and so is a constant (``true``, ``1 == 1``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from cluster.expr import ast
from cluster.expr import bound as b
from cluster.expr.context import hash_key
from cluster.expr.errors import ExprError
from cluster.expr.lexer import INT64_MAX, INT64_MIN
from cluster.schema import SUPPORTED_TYPES, CollectionSchema, DataType

__all__ = ["Binder", "compile_like"]

_INT_TYPES = frozenset({DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64})
_KIND = {
    DataType.BOOL: "bool",
    DataType.FLOAT: "float",
    DataType.DOUBLE: "float",
    DataType.VARCHAR: "str",
    **dict.fromkeys(_INT_TYPES, "int"),
}
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NUMERIC = frozenset({"int", "float", "num"})
_ITEM_TYPES = {"num": frozenset({int, float}), "str": frozenset({str}), "bool": frozenset({bool})}
_CONTAINS = {
    "json_contains": "one",
    "array_contains": "one",
    "json_contains_all": "all",
    "array_contains_all": "all",
    "json_contains_any": "any",
    "array_contains_any": "any",
}
_CONTAINS_OP = {"one": "Contains", "all": "ContainsAll", "any": "ContainsAny"}
_UNSUPPORTED_FUNCTIONS = frozenset(
    {
        "text_match",
        "phrase_match",
        "random_sample",
        "element_filter",
        "match_all",
        "match_any",
        "match_least",
        "match_most",
        "match_exact",
        "st_equals",
        "st_touches",
        "st_overlaps",
        "st_crosses",
        "st_contains",
        "st_intersects",
        "st_within",
        "st_dwithin",
        "st_isvalid",
    }
)
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


class Binder:
    """Binds one parse tree against ``schema``; ``fields`` collects the columns it reads."""

    def __init__(
        self, src: str, schema: CollectionSchema, templates: Mapping[str, Any] | None
    ) -> None:
        self.src = src
        self.schema = schema
        self.templates = templates or {}
        self.fields: set[str] = set()

    def fail(self, detail: str, pos: int) -> NoReturn:
        raise ExprError(self.src, detail, pos)

    # --- predicates ---------------------------------------------------------------------------

    def predicate(self, node: ast.Node) -> b.Pred:
        """Bind a node that must produce a boolean per row."""
        match node:
            case ast.Logical(op=op, operands=operands):
                return b.Logic(op, tuple(self.predicate(x) for x in operands))
            case ast.Unary(op="not", operand=operand):
                return b.Not(self.predicate(operand))
            case ast.Compare(op=op, left=left, right=right, pos=pos):
                return self.compare(op, self.value(left), self.value(right), pos)
            case ast.Range():
                return self.range_(node)
            case ast.In():
                return self.in_(node)
            case ast.Like():
                return self.like(node)
            case ast.IsNull():
                return self.is_null(node)
            case ast.Exists(operand=operand, pos=pos):
                path = self.value(operand)
                return b.Exists(self.json_key_path(path, "exists", pos))
            case ast.Call(name=name, args=args, pos=pos) if name.lower() in _CONTAINS:
                return self.contains(name, args, pos)
        value = self.value(node)
        match value:
            case b.Const(value=bool(x)):
                return b.BoolConst(x)
            case b.Column(kind="bool") | b.Element(kind="bool") | b.JsonPath():
                return b.Truthy(value)
        self.fail(
            f"predicate is not a boolean expression: {b.type_name(value)} value", ast.start(node)
        )

    def compare(self, op: str, left: b.Value, right: b.Value, pos: int) -> b.Pred:
        if isinstance(left, b.Const) and isinstance(right, b.Const):
            return b.BoolConst(self.fold_compare(op, left.value, right.value, pos))
        if isinstance(left, b.Const):
            left, right, op = right, left, _FLIP[op]
        domain = self.compare_domain(op, left, right, pos)
        if op == "!=" and (isinstance(left, b.JsonPath) or domain in ("json_eq", "array_eq")):
            # Milvus: a JSON value of another type (or missing) is "not equal"
            return b.Not(b.Compare("==", left, right, domain))
        return b.Compare(op, left, right, domain)

    def compare_domain(self, op: str, left: b.Value, right: b.Value, pos: int) -> str:
        lk, rk = b.kind_of(left), b.kind_of(right)
        relational = op not in ("==", "!=")
        if "array" in (lk, rk):
            if not relational and isinstance(left, b.ArrayColumn) and rk == "list":
                for item in right.value:  # type: ignore[union-attr]
                    self.check_element(left, item, "==", pos)
                return "array_eq"
            self.fail("can not comparisons array fields directly", pos)
        if "json" in (lk, rk):
            if not isinstance(right, b.Const):
                self.fail("two column comparison with JSON type is not supported", pos)
            if rk in ("int", "float"):
                return "num"
            if rk == "str":
                return "str"
            if rk == "bool" and not relational:
                return "bool"
            if rk in ("list", "object") and not relational:
                return "json_eq"
            self.fail(f"invalid range operation {op!r} between JSON and {b.type_name(right)}", pos)
        if lk in _NUMERIC and rk in _NUMERIC:
            return "num"
        if lk == rk == "str":
            return "str"
        if lk == rk == "bool":
            if relational:
                self.fail("invalid range operations on boolean expr", pos)
            return "bool"
        self.fail(
            f"comparisons between {b.type_name(left)} and {b.type_name(right)} are not supported",
            pos,
        )

    def fold_compare(self, op: str, x: Any, y: Any, pos: int) -> bool:
        kx, ky = b.kind_of(b.Const(x)), b.kind_of(b.Const(y))
        ok = (
            (kx in _NUMERIC and ky in _NUMERIC)
            or kx == ky == "str"
            or (kx == ky and kx in ("bool", "list") and op in ("==", "!="))
        )
        if not ok:
            self.fail("comparison operations cannot be applied to two incompatible operands", pos)
        if kx == "list":
            equal = hash_key(x) == hash_key(y)
            return equal if op == "==" else not equal
        return bool(_OPS[op](x, y))

    def range_(self, node: ast.Range) -> b.Pred:
        lower, upper = self.value(node.lower), self.value(node.upper)
        operand = self.value(node.operand)
        if isinstance(operand, b.Const):
            self.fail("range operations are only supported on fields", ast.start(node.operand))
        if isinstance(lower, b.Const) and isinstance(upper, b.Const):
            lk, uk = b.kind_of(lower), b.kind_of(upper)
            if (lk in _NUMERIC and uk in _NUMERIC) or lk == uk == "str":
                both = node.lower_inclusive and node.upper_inclusive
                if lower.value > upper.value or (not both and lower.value == upper.value):
                    self.fail(
                        "invalid range: lowerbound is greater than upperbound", ast.start(node)
                    )
        return b.Logic(
            "and",
            (
                self.compare(">=" if node.lower_inclusive else ">", operand, lower, node.pos),
                self.compare("<=" if node.upper_inclusive else "<", operand, upper, node.pos),
            ),
        )

    def in_(self, node: ast.In) -> b.Pred:
        operand = self.value(node.operand)
        if isinstance(operand, b.Const):
            self.fail("'in' can only be used on non-const expression", ast.start(node.operand))
        values = self.value(node.values)
        if not isinstance(values, b.Const) or not isinstance(values.value, list):
            if isinstance(node.values, ast.Placeholder):
                self.fail(
                    f"the value of term expression template variable {{{node.values.name}}} "
                    "is not array",
                    node.values.pos,
                )
            self.fail("the right-hand side of 'in' must be a list", ast.start(node.values))
        kind = b.kind_of(operand)
        if kind == "array":
            self.fail("'in' on a whole array field is not supported", ast.start(node.operand))
        items = values.value
        if kind == "json":
            domain = "json"
        else:
            domain = "num" if kind in _NUMERIC else kind
            allowed = _ITEM_TYPES[domain]
            if not set(map(type, items)) <= allowed:  # one C-level pass for long key lists
                bad = next(x for x in items if type(x) not in allowed)
                self.fail(
                    f"value '{_fmt(bad)}' in list cannot be casted to {b.type_name(operand)}",
                    node.values.pos,
                )
        pred: b.Pred = b.InList(operand, tuple(items), domain)
        return b.Not(pred) if node.negated else pred

    def like(self, node: ast.Like) -> b.Pred:
        operand = self.value(node.operand)
        if isinstance(operand, b.Const | b.Arith | b.Length):
            self.fail("the left operand of like is invalid", ast.start(node.operand))
        if b.kind_of(operand) not in ("str", "json"):
            self.fail("like operation on non-string or no-json field is unsupported", node.pos)
        pattern = self.value(node.pattern)
        if not isinstance(pattern, b.Const) or not isinstance(pattern.value, str):
            self.fail("the pattern of like must be a string", ast.start(node.pattern))
        mode, needle = compile_like(pattern.value)
        return b.Like(operand, mode, needle)

    def is_null(self, node: ast.IsNull) -> b.Pred:
        operand = self.value(node.operand)
        pred: b.Pred
        match operand:
            case b.JsonPath(path=path) if path:
                pred = b.Exists(operand)
                return pred if node.negated else b.Not(pred)
            case b.Column() | b.ArrayColumn() | b.Element() | b.JsonPath():
                pred = b.IsNull(operand)
                return b.Not(pred) if node.negated else pred
        self.fail(
            "'is null' can only be applied on a field or a JSON path", ast.start(node.operand)
        )

    def json_key_path(self, value: b.Value, what: str, pos: int) -> b.JsonPath:
        if not isinstance(value, b.JsonPath):
            self.fail(f"{what} operations are only supported on json field", pos)
        if not value.path:
            self.fail(f"{what} operations are only supported on json key", pos)
        return value

    def contains(self, name: str, args: tuple[ast.Node, ...], pos: int) -> b.Pred:
        mode = _CONTAINS[name.lower()]
        op = _CONTAINS_OP[mode]
        if len(args) != 2:
            self.fail(f"{name} takes 2 arguments, got {len(args)}", pos)
        operand = self.value(args[0])
        if not isinstance(operand, b.JsonPath | b.ArrayColumn):
            self.fail(
                f"{op.lower()} operation are only supported on json or array fields now",
                args[0].pos,
            )
        element = self.value(args[1])
        if not isinstance(element, b.Const):
            self.fail(
                f"{op.lower()} operation are only supported explicitly specified element",
                args[1].pos,
            )
        if mode != "one" and not isinstance(element.value, list):
            self.fail(f"{op} operation element must be an array", args[1].pos)
        values = (element.value,) if mode == "one" else tuple(element.value)
        if isinstance(operand, b.ArrayColumn):
            for item in values:
                self.check_element(operand, item, op, args[1].pos)
        return b.Contains(mode, operand, values)

    def check_element(self, array: b.ArrayColumn, item: Any, op: str, pos: int) -> None:
        """``item`` can be compared with the elements of ``array``."""
        ik = b.kind_of(b.Const(item))
        if not (ik == array.element or (ik in _NUMERIC and array.element in _NUMERIC)):
            self.fail(
                f"{op} operation can't compare between array element type: "
                f"{array.element_dtype.milvus_name} and {b.type_name(b.Const(item))}",
                pos,
            )

    # --- values -------------------------------------------------------------------------------

    def value(self, node: ast.Node) -> b.Value:
        """Bind a node that must produce a value per row (or a constant)."""
        match node:
            case ast.Literal(value=v, pos=pos):
                return self.const(v, pos)
            case ast.ListLit(items=items):
                out = []
                for item in items:
                    if type(item) is ast.Literal:  # fast path for long lists
                        out.append(self.const(item.value, item.pos).value)
                        continue
                    v = self.value(item)
                    if not isinstance(v, b.Const):
                        self.fail("list elements must be constants", ast.start(item))
                    out.append(v.value)
                return b.Const(out)
            case ast.Placeholder(name=name, pos=pos):
                if name not in self.templates:
                    self.fail(
                        f"the value of expression template variable name {{{name}}} is not found",
                        pos,
                    )
                return self.const(self.templates[name], pos, template=name)
            case ast.Name() | ast.Index():
                return self.resolve(node)
            case ast.Unary(op="-" | "+", operand=operand, pos=pos):
                if (
                    node.op == "-"
                    and isinstance(operand, ast.Literal)
                    and type(operand.value) is int
                ):
                    return self.const(-operand.value, pos)  # so -9223372036854775808 is valid
                return self.negate(node.op, self.value(operand), pos)
            case ast.Arith(op=op, left=left, right=right, pos=pos):
                return self.arith(op, self.value(left), self.value(right), pos)
            case ast.Call(name=name, args=args, pos=pos):
                return self.call_value(name, args, pos)
        self.fail("a boolean expression cannot be used as a value here", ast.start(node))

    def const(self, v: Any, pos: int, template: str | None = None) -> b.Const:
        """A Const from a Python value (literals, templates); int64 range checked."""
        if isinstance(v, bool | np.bool_):
            return b.Const(bool(v))
        if isinstance(v, int | np.integer):
            if not INT64_MIN <= int(v) <= INT64_MAX:
                self.fail(f"integer {v} is out of the range of int64", pos)
            return b.Const(int(v))
        if isinstance(v, float | np.floating):
            if not math.isfinite(v):
                self.fail(f"float {v} is not finite", pos)
            return b.Const(float(v))
        if isinstance(v, str):
            return b.Const(v)
        if isinstance(v, list | tuple):
            if v and all(type(x) is int for x in v):  # fast path for long key lists
                if min(v) < INT64_MIN or max(v) > INT64_MAX:
                    self.fail(f"integer {max(v, key=abs)} is out of the range of int64", pos)
                return b.Const(list(v))
            if all(type(x) is str for x in v):
                return b.Const(list(v))
            return b.Const([self.const(x, pos, template).value for x in v])
        if isinstance(v, dict):
            return b.Const(v)
        what = f"template value {{{template}}}" if template else "value"
        self.fail(f"{what} of type {type(v).__name__} is not supported", pos)

    def resolve(self, node: ast.Name | ast.Index) -> b.Value:
        keys: list[str | int] = []
        first_index_pos = node.pos
        while isinstance(node, ast.Index):
            keys.append(node.key)
            first_index_pos = node.pos
            node = node.base
        keys.reverse()
        name, pos = node.name, node.pos
        dynamic = self.schema.dynamic_field
        if name == "$meta":
            if dynamic is None:
                self.fail("there is no dynamic json field in schema", pos)
            self.fields.add(dynamic.name)
            return b.JsonPath(dynamic.name, tuple(keys))
        f = self.schema.get_field(name)
        if f is None or f.is_dynamic:
            if dynamic is None:
                self.fail(
                    f"field {name} not exist (there is no dynamic json field in schema, need "
                    "to specified field name)",
                    pos,
                )
            self.fields.add(dynamic.name)
            return b.JsonPath(dynamic.name, (name, *keys))
        if f.dtype.is_vector:
            self.fail(f"vector field {name} ({f.dtype.milvus_name}) cannot be filtered", pos)
        if f.dtype not in SUPPORTED_TYPES:
            self.fail(f"filter on {f.dtype.milvus_name} field ({name}) is not supported", pos)
        self.fields.add(f.name)
        if f.dtype == DataType.JSON:
            return b.JsonPath(f.name, tuple(keys))
        if f.dtype == DataType.ARRAY:
            assert f.element_type is not None
            element = _KIND[f.element_type]
            if not keys:
                return b.ArrayColumn(f.name, element, f.element_type)
            if len(keys) > 1 or isinstance(keys[0], str):
                self.fail("can only access array field with one integer index", first_index_pos)
            return b.Element(f.name, int(keys[0]), element, f.element_type)
        if keys:
            self.fail(
                f"{f.dtype.milvus_name} data type not supported accessed with []", first_index_pos
            )
        return b.Column(f.name, _KIND[f.dtype], f.dtype)

    def call_value(self, name: str, args: tuple[ast.Node, ...], pos: int) -> b.Value:
        low = name.lower()
        if low == "array_length":
            if len(args) != 1:
                self.fail(f"{name} takes 1 argument, got {len(args)}", pos)
            operand = self.value(args[0])
            if not isinstance(operand, b.JsonPath | b.ArrayColumn):
                self.fail(
                    "array_length operation are only supported on json or array fields now",
                    args[0].pos,
                )
            return b.Length(operand)
        if low in _CONTAINS:
            self.fail(f"{name}(...) is a predicate, not a value", pos)
        if low in _UNSUPPORTED_FUNCTIONS:
            self.fail(f"{name} is not supported yet", pos)
        supported = ", ".join(sorted([*_CONTAINS, "array_length"]))
        self.fail(f"unknown function {name!r} (supported: {supported})", pos)

    def negate(self, op: str, v: b.Value, pos: int) -> b.Value:
        kind = b.kind_of(v)
        if kind not in _NUMERIC and kind != "json":
            self.fail(f"unary {op!r} cannot be applied to {b.type_name(v)}", pos)
        if op == "+":
            return v
        if isinstance(v, b.Const):
            return self.const(-v.value, pos)
        return self.arith("-", b.Const(0), v, pos)

    def arith(self, op: str, left: b.Value, right: b.Value, pos: int) -> b.Value:
        lk, rk = b.kind_of(left), b.kind_of(right)
        if "array" in (lk, rk):
            self.fail("can not comparisons array fields directly", pos)
        numeric = _NUMERIC | {"json"}
        if lk not in numeric or rk not in numeric:
            self.fail(
                f"{op!r} cannot perform arithmetic between {b.type_name(left)} and "
                f"{b.type_name(right)}",
                pos,
            )
        if op == "%" and ("float" in (lk, rk)):
            self.fail("modulo can only apply on integer types", pos)
        if isinstance(right, b.Const) and op in ("/", "%") and right.value == 0:
            self.fail("division or modulus by zero", pos)
        if isinstance(left, b.Const) and isinstance(right, b.Const):
            return self.const(_fold_arith(op, left.value, right.value), pos)
        if "json" in (lk, rk) or "num" in (lk, rk):
            kind = "num" if op != "**" else "float"
        elif "float" in (lk, rk) or op == "**":
            kind = "float"
        else:
            kind = "int"
        return b.Arith(op, left, right, kind)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _fold_arith(op: str, x: int | float, y: int | float) -> int | float:
    """Constant arithmetic with Go/C semantics; the caller checked types and zero divisors."""
    ints = isinstance(x, int) and isinstance(y, int)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if ints:
            q = abs(x) // abs(y)
            return q if (x >= 0) == (y >= 0) else -q
        return x / y
    if op == "%":
        if ints:
            r = abs(x) % abs(y)
            return r if x >= 0 else -r
        return math.fmod(x, y)
    try:  # "**"
        result = math.pow(float(x), float(y))
    except (OverflowError, ValueError):
        result = math.nan
    return result


def compile_like(pattern: str) -> tuple[str, str]:
    """(mode, needle) for a LIKE pattern: ``%`` any run, ``_`` one character, ``\\`` escapes.

    Modes: ``eq`` (no wildcard), ``prefix`` (``ab%``), ``suffix`` (``%ab``), ``infix``
    (``%ab%``), else ``regex`` (an anchored RE2 pattern, dot matching newlines).
    """
    parts: list[str | None] = []  # literal text chunks; None = %, "" never appears
    regex: list[str] = []
    simple = True
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            c = pattern[i + 1]
            i += 2
            _add_literal(parts, c)
            regex.append("\\" + c if c in _REGEX_SPECIAL else c)
            continue
        i += 1
        if c == "%":
            if not parts or parts[-1] is not None:
                parts.append(None)
                regex.append(".*")
        elif c == "_":
            simple = False
            regex.append(".")
        else:
            _add_literal(parts, c)
            regex.append("\\" + c if c in _REGEX_SPECIAL else c)
    if simple:
        literals = [p for p in parts if p is not None]
        wild = [k for k, p in enumerate(parts) if p is None]
        if not wild:
            return "eq", "".join(literals)
        if len(literals) == 0:
            return "prefix", ""
        if len(literals) == 1:
            if wild == [len(parts) - 1]:
                return "prefix", literals[0]
            if wild == [0]:
                return "suffix", literals[0]
            if wild == [0, 2]:
                return "infix", literals[0]
    return "regex", "(?s)^" + "".join(regex) + "$"


def _add_literal(parts: list[str | None], c: str) -> None:
    last = parts[-1] if parts else None
    if last is not None:
        parts[-1] = last + c
    else:
        parts.append(c)
