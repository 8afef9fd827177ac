"""The bound plan: the checked, typed tree the evaluator runs (the binder's output).

Values (per-row operands) and predicates (per-row booleans) are frozen dataclasses. A value's
``kind`` is ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"json"`` (a JSON path: any type
per row), ``"array"`` (a whole ARRAY column), ``"list"`` / ``"object"`` (constants) or ``"num"``
(arithmetic over JSON: int or float per row). Comparisons carry their ``domain`` (``"num"``,
``"str"``, ``"bool"``, ``"json_eq"``, ``"array_eq"``) so the evaluator never re-derives types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster.schema import DataType

__all__ = [
    "Arith",
    "ArrayColumn",
    "BoolConst",
    "Column",
    "Compare",
    "Const",
    "Contains",
    "Element",
    "Exists",
    "InList",
    "IsNull",
    "JsonPath",
    "Length",
    "Like",
    "Logic",
    "Not",
    "Pred",
    "Truthy",
    "Value",
    "kind_of",
    "type_name",
]

# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """A literal or template value: int, float, str, bool, list (of constants) or dict."""

    value: Any


@dataclass(frozen=True, slots=True)
class Column:
    """A scalar column (BOOL, INT*, FLOAT, DOUBLE, VARCHAR)."""

    name: str
    kind: str
    dtype: DataType


@dataclass(frozen=True, slots=True)
class ArrayColumn:
    """A whole ARRAY column; ``element`` is the elements' kind."""

    name: str
    element: str
    element_dtype: DataType


@dataclass(frozen=True, slots=True)
class Element:
    """``arr[index]`` of an ARRAY column: missing when the row's array is shorter."""

    name: str
    index: int
    kind: str
    dtype: DataType


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A value inside the JSON column ``column`` (a JSON field or ``$meta``); ``path`` of
    object keys (str) and list indexes (int); ``()`` is the whole document."""

    column: str
    path: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Length:
    """``array_length(operand)``: int; missing when the JSON value is not a list."""

    operand: ArrayColumn | JsonPath


@dataclass(frozen=True, slots=True)
class Arith:
    """``left op right``, op in ``+ - * / % **``; C semantics for int ``/`` and ``%``."""

    op: str
    left: Value
    right: Value
    kind: str


Value = Const | Column | ArrayColumn | Element | JsonPath | Length | Arith

# --- predicates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``, op in ``== != < <= > >=`` (``!=`` on a JSON path is bound as
    ``Not(==)``); ``right`` is a Const unless both sides are non-JSON values."""

    op: str
    left: Value
    right: Value
    domain: str


@dataclass(frozen=True, slots=True)
class InList:
    """``operand in values``; ``domain`` as for Compare, or ``"json"`` (mixed types)."""

    operand: Value
    values: tuple[Any, ...]
    domain: str


@dataclass(frozen=True, slots=True)
class Like:
    """``operand like pattern``, compiled to ``mode`` in ``eq prefix suffix infix regex``."""

    operand: Value
    mode: str
    needle: str


@dataclass(frozen=True, slots=True)
class IsNull:
    """The row's value is null (column), missing (array element) or the JSON row is null."""

    operand: Value


@dataclass(frozen=True, slots=True)
class Exists:
    """The JSON path is present and neither null nor ``{}`` (Milvus' ``exists``)."""

    path: JsonPath


@dataclass(frozen=True, slots=True)
class Contains:
    """``mode`` ``one`` / ``all`` / ``any`` of ``values`` among the list's elements."""

    mode: str
    operand: ArrayColumn | JsonPath
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Truthy:
    """A boolean value used as a predicate (``flag``, ``meta["ok"]``): equal to true."""

    operand: Value


@dataclass(frozen=True, slots=True)
class Logic:
    """``and`` / ``or`` of two or more predicates."""

    op: str
    children: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Pred


@dataclass(frozen=True, slots=True)
class BoolConst:
    value: bool


Pred = Compare | InList | Like | IsNull | Exists | Contains | Truthy | Logic | Not | BoolConst

# --- helpers --------------------------------------------------------------------------------------


def kind_of(v: Value) -> str:
    """The kind of a value (see module doc)."""
    match v:
        case Const(value=x):
            if isinstance(x, bool):
                return "bool"
            if isinstance(x, int):
                return "int"
            if isinstance(x, float):
                return "float"
            if isinstance(x, str):
                return "str"
            return "list" if isinstance(x, list) else "object"
        case Column(kind=k) | Element(kind=k) | Arith(kind=k):
            return k
        case ArrayColumn():
            return "array"
        case JsonPath():
            return "json"
        case Length():
            return "int"
    raise AssertionError(v)


_CONST_NAMES = {
    "bool": "Bool",
    "int": "Int64",
    "float": "Double",
    "str": "VarChar",
    "list": "Array",
    "object": "JSON",
}


def type_name(v: Value) -> str:
    """Milvus' name of a value's type for messages: ``Int64``, ``VarChar``, ``Array[Int64]``."""
    match v:
        case Const():
            return _CONST_NAMES[kind_of(v)]
        case Column(dtype=d) | Element(dtype=d):
            return d.milvus_name
        case ArrayColumn(element_dtype=d):
            return f"Array[{d.milvus_name}]"
        case JsonPath():
            return "JSON"
        case Length():
            return "Int64"
        case Arith(kind=k):
            return {"int": "Int64", "float": "Double"}.get(k, "JSON")
    raise AssertionError(v)
